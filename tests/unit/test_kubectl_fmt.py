"""sipfleet.kubectl.fmt: percentiles, durations, times and aligned tables (colour only when asked)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sipfleet.kubectl import fmt

NOW = datetime(2026, 12, 2, 4, 30, 0, tzinfo=timezone.utc)


def test_percentile_nearest_rank():
    assert fmt.percentile([], 50) is None
    assert fmt.percentile([7.0], 99) == 7.0
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert fmt.percentile(values, 50) == 50.0
    assert fmt.percentile(values, 99) == 99.0
    assert fmt.percentile(values, 100) == 100.0
    assert fmt.percentile([300.0, 100.0, 200.0], 50) == 200.0  # unsorted input
    assert fmt.percentile([100.0, 200.0, 300.0, 900.0], 99) == 900.0


def test_durations():
    assert fmt.parse_duration("90s") == 90
    assert fmt.parse_duration("15m") == 900
    assert fmt.parse_duration("1h30m") == 5400
    assert fmt.parse_duration("2d") == 172800
    assert fmt.parse_duration("45") == 45
    for bad in ("", "1x", "h1", "1h 2m", "-5m"):
        with pytest.raises(ValueError):
            fmt.parse_duration(bad)


def test_times_and_age():
    t = fmt.parse_time("2026-12-02T04:29:58.123456Z")
    assert t == datetime(2026, 12, 2, 4, 29, 58, 123456, tzinfo=timezone.utc)
    assert fmt.parse_time("2026-12-02T04:29:58+00:00") == datetime(2026, 12, 2, 4, 29, 58, tzinfo=timezone.utc)
    assert fmt.parse_time("2026-12-02T04:29:58") == datetime(2026, 12, 2, 4, 29, 58, tzinfo=timezone.utc)
    assert fmt.parse_time("yesterday") is None and fmt.parse_time(None) is None
    assert fmt.iso(t) == "2026-12-02T04:29:58.123Z"
    assert fmt.clock(t) == "2026-12-02 04:29:58.123"
    assert fmt.age(NOW - timedelta(seconds=42), NOW) == "42s"
    assert fmt.age(NOW - timedelta(minutes=12), NOW) == "12m"
    assert fmt.age(NOW - timedelta(hours=5), NOW) == "5h"
    assert fmt.age(NOW - timedelta(days=3), NOW) == "3d"
    assert fmt.age(NOW + timedelta(seconds=5), NOW) == "0s"
    assert fmt.age(None, NOW) == "-"


def test_sizes_and_ms():
    assert fmt.size(None) == "-"
    assert fmt.size(48 * 1024 * 1024) == "48Mi"
    assert fmt.size(3 * 1024 ** 3) == "3.0Gi"
    assert fmt.ms(257.4) == "257 ms" and fmt.ms(None) == "-" and fmt.ms(12500) == "12.5 s"


def test_table_aligns_and_colours_only_when_asked():
    rows = [["alice", ("True", "green")], ["bobby-long-name", ("False", "red")]]
    plain = fmt.table(["NAME", "READY"], rows, colour=False)
    assert plain.splitlines() == [
        "NAME              READY",
        "alice             True",
        "bobby-long-name   False",
    ]
    assert "\x1b[" not in plain
    coloured = fmt.table(["NAME", "READY"], rows, colour=True)
    assert "\x1b[32mTrue\x1b[0m" in coloured and "\x1b[31mFalse\x1b[0m" in coloured
    # colour never shifts the columns: without the escapes the text is the plain table
    assert fmt._ANSI.sub("", coloured) == plain
    assert fmt.table(["A", "B"], [[None, 3]]).splitlines()[1] == "-   3"
