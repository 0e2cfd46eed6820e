"""RateMeter: rates of a count over a sliding window, with scripted time."""

from __future__ import annotations

import pytest

from mcastcam.protocol.rates import RateMeter


def test_counter_read_once_a_window_gives_its_growth_per_second() -> None:
    m = RateMeter(1.0, start=10.0)
    m.observe(11.25, 50)  # 1.25 s since the start: 40/s
    assert m.rate(11.25) == pytest.approx(40.0)
    m.observe(12.25, 80)
    assert m.rate(12.25) == pytest.approx(30.0)
    m.observe(13.5, 80)
    assert m.rate(13.5) == 0.0


def test_regular_events_give_their_rate_and_decay_when_they_stop() -> None:
    m = RateMeter(2.0, start=0.0)
    for k in range(1, 301):  # 30 events/s for 10 s
        m.add(k / 30)
    assert m.rate(10.0) == pytest.approx(30.0, rel=0.02)
    assert m.rate(11.0) == pytest.approx(15.0, rel=0.05)  # half the window has events
    assert m.rate(12.5) == 0.0
    assert m.total == 300


def test_samples_are_bounded_and_reset_restarts() -> None:
    m = RateMeter(1000.0, start=0.0, max_samples=8)
    for k in range(1, 101):
        m.add(float(k), 2)
    assert len(m._samples) == 8
    assert m.rate(100.0) == pytest.approx(2.0)  # over what is kept
    m.observe(101.0, 5)  # the counter went back: a restart
    assert m.total == 5 and m.rate(101.0) == 0.0


def test_no_time_no_rate_and_bad_arguments() -> None:
    assert RateMeter(1.0, start=5.0).rate(5.0) == 0.0
    with pytest.raises(ValueError, match="window"):
        RateMeter(0.0, start=0.0)
    with pytest.raises(ValueError, match="max_samples"):
        RateMeter(1.0, start=0.0, max_samples=1)
