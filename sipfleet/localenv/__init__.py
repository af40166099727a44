"""The local environment shared by the demo (`sipfleet demo`) and the test suite.

- ``kubebin``: builds pinned Kubernetes/etcd/helm binaries from Go modules (cached by version).
- ``cluster``: a real control plane on loopback (etcd, kube-apiserver, controller-manager, scheduler).
- ``noderunner``: a node that runs Pods as local processes.
- ``hostnet``: network namespaces, veths, bridges, addresses, nftables tables and the address plan
  (10.213.0.0/16), with a record so that teardown removes exactly what was created; the lab <-> cluster join.
- ``siplab``: Kamailio proxy/registrar/edge nodes and SIPp in network namespaces of their own, with failure
  injection (Kamailio-level and real network faults) and a wire log.

Nothing here is test-only: ``sipfleet cluster`` and ``sipfleet lab`` drive the same code.
"""
