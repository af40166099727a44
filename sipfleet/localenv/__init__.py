"""The local environment shared by the demo (`sipfleet demo`) and the test suite.

- ``kubebin``: builds pinned Kubernetes/etcd/helm binaries from Go modules (cached by version).
- ``cluster``: a real control plane on loopback (etcd, kube-apiserver, controller-manager, scheduler).
- ``noderunner``: a node that runs Pods as local processes.
- ``siplab``: Kamailio proxy/registrar/edge nodes with failure injection and a wire log, and SIPp.

Nothing here is test-only: ``sipfleet cluster`` and ``sipfleet lab`` drive the same code.
"""
