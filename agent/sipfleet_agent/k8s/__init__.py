"""The supervisor's Kubernetes edge: assignment watch, Secret reads, SipAccount status patches, Events."""

#: seconds any single API request (not a watch) may take: a request the apiserver never answers must not stall
#: the status writer or the assignment read for good (the kubernetes client has no timeout of its own)
API_TIMEOUT_S = 30.0
