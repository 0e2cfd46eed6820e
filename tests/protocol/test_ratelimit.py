"""RateLimitedLog: once per reason per interval, counts since last time and in all."""

from __future__ import annotations

import logging

import pytest

from mcastcam.protocol.ratelimit import OTHER, RateLimitedLog

LOG = logging.getLogger("test.ratelimit")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.name == LOG.name]
    caplog.clear()
    return out


def test_first_event_logs_at_once_then_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    rl = RateLimitedLog(LOG, 60.0)
    rl.count("bad_magic", 0.0)
    assert lines(caplog) == ["dropped 1 datagram(s): bad_magic (1 in all)"]
    for i in range(99):
        rl.count("bad_magic", 1.0 + i * 0.5)
    assert lines(caplog) == []
    rl.flush(59.9)
    assert lines(caplog) == []
    rl.flush(60.0)
    assert lines(caplog) == ["dropped 99 datagram(s): bad_magic (100 in all)"]
    rl.flush(200.0)  # nothing new: nothing logged
    assert lines(caplog) == []
    rl.count("bad_magic", 200.0, n=5)
    assert lines(caplog) == ["dropped 5 datagram(s): bad_magic (105 in all)"]
    assert rl.totals() == {"bad_magic": 105}


def test_reasons_are_independent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rl = RateLimitedLog(LOG, 10.0, template="%(reason)s: %(since)d since last time")
    rl.count("a", 0.0)
    rl.count("b", 1.0)
    rl.count("a", 2.0)
    assert lines(caplog) == ["a: 1 since last time", "b: 1 since last time"]
    rl.flush(10.5)
    assert lines(caplog) == ["a: 1 since last time"]


def test_observe_takes_running_totals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rl = RateLimitedLog(LOG, 60.0)
    rl.observe("truncated", 0, 0.0)
    assert lines(caplog) == []
    rl.observe("truncated", 40, 1.0)
    rl.observe("truncated", 90, 2.0)
    assert lines(caplog) == ["dropped 40 datagram(s): truncated (40 in all)"]
    rl.observe("truncated", 90, 61.0)
    assert lines(caplog) == ["dropped 50 datagram(s): truncated (90 in all)"]


def test_table_of_reasons_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rl = RateLimitedLog(LOG, 60.0, max_reasons=4)
    for i in range(1000):
        rl.count(f"reason-{i}", 0.0)
    totals = rl.totals()
    assert len(totals) == 4
    assert totals[OTHER] == 997
    assert len(lines(caplog)) == 4


def test_level_and_bad_arguments(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    RateLimitedLog(LOG, 1.0, level=logging.INFO).count("x", 0.0)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    with pytest.raises(ValueError, match="interval"):
        RateLimitedLog(LOG, -1.0)
    with pytest.raises(ValueError, match="max_reasons"):
        RateLimitedLog(LOG, 1.0, max_reasons=0)
