"""A real link fault in agent pods on the real node, through the operator (PJSIP issue 4066's drift path).

The same fault (siplab.linkfault: R holds a REGISTER while the pod's eth0 goes down and up inside the pod's netns,
twice, the second time between two retransmissions of the held REGISTER) hits the agent pod both accounts share
(one pjsua2 worker per route mode; needs the agent of issue 10):

* ``routeMode: account``: the agent's ``handleIpChange()`` meets the REGISTER in flight and the rebuilt
  registration client sends its REGISTER straight to E; the agent reports it and repairs it itself
  (``spec.drift.selfHeal``, the default; a RouteSelfHealed event), and the next REGISTER goes through P again
  (all read from the lab's wire log);
* ``routeMode: prevent``: the route is the worker process' global outbound proxy, so under the same fault no
  REGISTER of it ever reaches E.
"""

from __future__ import annotations

import time

import pytest

from sipfleet.localenv.siplab.linkfault import flap_during_held_register
from sipfleet.localenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]

ATTEMPTS = 3


def _mine(user: str):
    return lambda r: r.method == "REGISTER" and f":{user}@" in r.from_uri


def _calm(sipacc, name: str) -> None:
    sipacc.wait_condition(name, "Ready", timeout=120)
    wait_for(lambda: ((sipacc.get(name).get("status") or {}).get("ladder") or {}).get("phase", "Idle") == "Idle",
             timeout=60, message=f"{name}'s ladder Idle")


def _fault(sipacc, cluster, clean_lab, name: str, user: str):
    """Run the fault on ``name``'s pod; (run, the first REGISTER at E after it started or None)."""
    _calm(sipacc, name)
    pod = sipacc.get(name)["status"]["agent"]["pod"]
    netns = cluster.pod_netns(sipacc.ns, pod)
    mine = _mine(user)
    wait_for(lambda: not [r for r in clean_lab.wire(since=time.time() - 1.5) if mine(r)], timeout=60,
             message=f"{name} quiet on the wire")
    run = flap_during_held_register(clean_lab, netns, mine, who=f"pod {pod}")
    assert run.held is not None, f"{name}: no REGISTER through P after the first flap"
    try:
        at_e = clean_lab.wait_wire(mine, node="E", since=run.started, timeout=10)
    except TimeoutError:
        at_e = None
    return run, at_e


def test_account_mode_drifts_under_a_link_flap_and_is_repaired_prevent_mode_does_not(
        operator, sipacc, cluster, clean_lab, lab_user):
    lab = clean_lab
    users = {}
    for name, mode in (("acct", "account"), ("prev", "prevent")):
        user, password = lab_user(name)
        users[name] = user
        sipacc.secret(f"{name}-sip", user, password)
        spec = sipacc.spec(lab, user, f"{name}-sip", routeMode=mode)
        spec["registration"]["expiresSeconds"] = 3600  # no refresh of its own falls into the test
        sipacc.create(name, spec)
    _calm(sipacc, "acct")
    _calm(sipacc, "prev")
    # one pod, one pjsua2 worker per route mode: the link flap of that pod hits both
    assert sipacc.hosting_agent("acct") == sipacc.hosting_agent("prev")

    # account mode: drifts to E (within a few attempts: the second flap must fall between two retransmissions)
    for _attempt in range(ATTEMPTS):
        run, at_e = _fault(sipacc, cluster, lab, "acct", users["acct"])
        if at_e is not None:
            break
    else:
        pytest.fail(f"no REGISTER of the account-mode agent reached E in {ATTEMPTS} attempts")
    assert at_e.route and lab.ip("E") in at_e.route[0], at_e  # Route: <E;lr> only, P bypassed
    # the agent measured the drift and the account was repaired (a new account: no earlier drift or repair)
    def drift_and_repair():
        route = (sipacc.get("acct").get("status") or {}).get("route") or {}
        return route if route.get("lastDriftAt") and route.get("lastRepair") and route.get("inSync") else None

    route = wait_for(drift_and_repair, timeout=60, interval=0.3, message="drift reported and repaired")
    assert route["lastRepair"]["method"] == "recreate-account" and route["lastRepair"]["trigger"] == "self-heal", route
    assert route["driftCount"] >= 1 and route["selfHealCount"] >= 1, route
    via_p = wait_for(lambda: [r for r in lab.wire(since=at_e.at, node="P") if _mine(users["acct"])(r)
                              and r.at > at_e.at and r.route and lab.ip("P") in r.route[0]],
                     timeout=30, message="a REGISTER through P after the drift")
    assert via_p[0].call_id != at_e.call_id  # a new registration client
    wait_for(lambda: [e for e in sipacc.events("acct") if e.reason == "RouteSelfHealed"], timeout=30,
             message="the agent's RouteSelfHealed event")
    print(f"\nwire: drifted REGISTER at E -> REGISTER via P {1000 * (via_p[0].at - at_e.at):.1f} ms "
          f"(agent-measured {route['lastRepair'].get('durationMs')} ms)")
    sipacc.wait_condition("acct", "Ready", timeout=60)

    # prevent mode, the same fault: nothing of it ever reaches E
    for _attempt in range(ATTEMPTS):
        run, at_e = _fault(sipacc, cluster, lab, "prev", users["prev"])
        assert at_e is None, f"a prevent-mode REGISTER reached E: {at_e}"
    assert not [r for r in lab.wire(node="E") if _mine(users["prev"])(r)]
    assert sipacc.get("prev")["status"]["route"]["inSync"] is True
    sipacc.wait_condition("prev", "Ready", timeout=60)
