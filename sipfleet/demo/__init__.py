"""``sipfleet demo`` (``make demo``): sipfleet end to end on this machine, on a real local Kubernetes node and a
real SIP lab, with the images built from this checkout.

1. start (or reuse) the cluster ``demo`` (etcd, kube-apiserver, controller-manager, scheduler, containerd, a real
   kubelet and kube-proxy in a netns of its own) and the SIP lab ``demo`` (Kamailio P, R, E), add the examples'
   users at R, build the images (cached) and import them into the node, join lab and cluster at L2;
2. install ``charts/sipfleet`` with the real helm, the restricted Pod Security Standard enforced on the
   operator's and the accounts' namespaces;
3. ``kubectl apply`` the examples (rewritten to the lab's slot), wait until every SipAccount is Registered;
4. a real link flap in the agent pod of the ``routeMode: account`` example while R holds a REGISTER: the agent's
   ``handleIpChange()`` meets the REGISTER in flight and the account drifts to E (PJSIP issue 4066);
5. follow the detection and the repair; the verdict comes from the lab's wire log and the status history;
6. print the result and leave cluster and lab running (``--no-keep`` stops them; ``--down`` stops them later).

Modules (one concern each): :mod:`.cli` (options, the run, exits), :mod:`.context` (shared state and tools),
:mod:`.examples` (the manifests as applied), :mod:`.environment`, :mod:`.install`, :mod:`.accounts`,
:mod:`.fault`, :mod:`.follow`, :mod:`.finish` (the steps), :mod:`.watcher` (the status history),
:mod:`.agentlog` (the agent's log lines), :mod:`.verdict` (the pure verdict), :mod:`.timeline` (the table),
:mod:`.output` (printing).

Root is required (the cluster and the lab are made of network namespaces, cgroups and mounts).
"""

from .cli import main, register

__all__ = ["main", "register"]
