"""The host-path snapshot reads what it can and writes what it cannot read into the text; connect says how a
fresh connection went."""

import socket

from sipfleet.localenv.hostnet import diagnose


def test_connect_says_ok_for_a_listener_and_failed_for_a_closed_port():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        assert diagnose.connect("127.0.0.1", port).startswith("ok ")
    finally:
        srv.close()
    res = diagnose.connect("127.0.0.1", port)
    assert res.startswith("failed after ") and "refused" in res.lower()


def test_a_snapshot_of_a_missing_namespace_reports_each_item_instead_of_raising():
    text = diagnose.snapshot(netns="sipfleet-c-no-such-cluster-xyz", bridge="cbr0", node_ip="127.0.0.1", port=1,
                             host_link="lo")
    assert text.startswith("=== host path snapshot")
    assert "--- connect from host\nfailed after" in text
    assert "--- cluster: neighbours\n(unreadable: " in text
    assert "--- host: route to the node\n" in text and "127.0.0.1" in text.split("--- host: route to the node\n")[1]
