"""The supervisor's Kubernetes edge: assignment watch, Secret reads, SipAccount status patches, Events."""
