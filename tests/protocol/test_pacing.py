"""The pacer's run API (``tokens`` then one ``on_sent``) equals per-datagram pacing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.protocol.pacing import Pacer


@settings(max_examples=200, deadline=None)
@given(
    rate=st.one_of(st.none(), st.floats(1e4, 1e8)),
    steps=st.lists(
        st.tuples(st.floats(0, 0.02), st.lists(st.integers(60, 9000), max_size=80)),
        min_size=1, max_size=12,
    ),
)  # fmt: skip
def test_a_run_of_datagrams_paces_like_one_by_one(
    rate: float | None, steps: list[tuple[float, list[int]]]
) -> None:
    one, run = Pacer(), Pacer()
    one.set_rate(rate, 0.0)
    run.set_rate(rate, 0.0)
    now = 0.0
    for dt, sizes in steps:
        now += dt
        sent_one = 0
        for size in sizes:
            if not one.can_send(now):
                break
            one.on_sent(size, now)
            sent_one += 1
        spent, sent_run = 0, 0
        if sizes:  # as the sender does: the clock is read only when there is a datagram
            tokens = run.tokens(now)
            for size in sizes:
                if tokens <= spent:
                    break
                spent += size
                sent_run += 1
        if spent:
            run.on_sent(spent, now)
        assert sent_run == sent_one
        assert run.next_send_time() == pytest.approx(one.next_send_time())
    if rate is None:
        assert run.tokens(now) == float("inf")
