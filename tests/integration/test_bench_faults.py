"""The CI subset of ``sipfleet bench faults`` (issue 13): a fleet in both route modes goes through a control
plane restart, operator and agent kills (supervisor and worker), the registrar down, an agent pod's link down and
a hostile registrar (10 Service-Route URIs), on the session's cluster; nothing may be lost (specs intact, every account hosted once, agents whole, all Ready
and in sync again). The matrix is printed; its timings are not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.lab, pytest.mark.slow]

SUBSET = ["apiserver-restart", "operator-kill", "supervisor-kill", "worker-kill", "registrar-down", "link-down",
          "hostile-registrar"]


def test_the_fault_subset_loses_nothing(cluster, tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sipfleet.cli", "bench", "faults", "-n", "8", "--faults", ",".join(SUBSET),
         "--outage", "10", "--timeout", "180", "--cluster", cluster.name, "--state-dir", str(cluster.dir),
         "--json", str(out)], capture_output=True, text=True, timeout=1500)
    print(proc.stdout[-4000:])
    rows = json.loads(out.read_text()) if out.exists() else []
    assert [r["fault"] for r in rows] == SUBSET, proc.stdout[-3000:] + proc.stderr[-3000:]
    for r in rows:
        assert not r["note"].startswith("the fault itself failed"), r
        assert r["lost"] == [] and r["recovery_s"] is not None, r
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the faults did something: the worker's and supervisor's accounts registered again
    by = {r["fault"]: r for r in rows}
    assert by["worker-kill"]["registers_total"] > 0
    # the hostile answers were contained: every account was taken out of Ready (quarantined), none was lost
    assert by["hostile-registrar"]["affected"] == by["hostile-registrar"]["accounts"]
