"""The local environment shared by the demo (`sipfleet demo`) and the test suite: the workbench, never in the images.

- ``kubebin`` / ``binsets`` / ``prereq``: pinned Kubernetes, etcd, containerd, runc, CNI, BuildKit, helm binaries
  built from Go modules (cached by content hash), and what a machine needs to build and run them.
- ``cluster``: a real cluster (control plane and a real node: kubelet, containerd, kube-proxy) in a network
  namespace of its own.
- ``hostnet``: the host network objects sipfleet creates and removes (namespaces, veths, bridges, nftables), the
  address plan, and the state labs and clusters share; ``hoststate``: a snapshot of the host to compare.
- ``siplab``: Kamailio proxy/registrar/edge nodes in network namespaces, with failure injection and a wire log,
  and SIPp.
- ``imagebuild``: sipfleet's images from images/Dockerfile.* with BuildKit, no network inside the build.
- ``procs``: starting and stopping processes by PID.

Nothing here is test-only: ``sipfleet cluster``, ``sipfleet images`` and ``sipfleet lab`` drive the same code.
"""
