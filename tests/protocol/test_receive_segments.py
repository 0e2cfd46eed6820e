"""``ReceiverSession.receive_segments`` (one call per UDP GRO buffer) is ``receive_datagram``
on each of its datagrams: same events, same frames, same counters, whatever the cuts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.protocol.events import FrameReady, SessionEvent
from mcastcam.protocol.receiver import ReceiverSession
from tests.protocol.symbols import symbols_of
from tests.protocol.test_receiver_session import heartbeat

SENDER = ("198.18.0.1", 40000)
T = 104


def stream(frames: int, lose: frozenset[int]) -> list[bytes]:
    """A heartbeat, then ``frames`` frames of 2–6 source symbols and 2 repair symbols each
    (every datagram T + 48 bytes but a frame's last source symbol), minus datagram indexes
    in ``lose``."""
    out = [heartbeat(7, "cam")]
    seq = 1
    for fid in range(frames):
        data = bytes((fid * 31 + i) % 251 for i in range(T * (2 + fid % 5) - 17 * (fid % 3)))
        symbols = symbols_of(data, fid, stream_id=7, seq=seq, symbol_size=T, repair=2, ts=fid)
        seq += len(symbols)
        out += symbols
    return [d for i, d in enumerate(out) if i not in lose]


def gro_buffers(datagrams: list[bytes], cuts: list[int]) -> list[tuple[bytes, int]]:
    """Coalesce runs of datagrams as UDP GRO does: equal sizes, only the last may be shorter;
    ``cuts`` ends a buffer early (at most 64 datagrams per buffer, like the driver's batch)."""
    out: list[tuple[bytes, int]] = []
    run: list[bytes] = []
    for i, d in enumerate(datagrams):
        if run and (len(d) > len(run[0]) or len(run[-1]) < len(run[0]) or len(run) == 64
                    or i in cuts):  # fmt: skip
            out.append((b"".join(run), len(run[0])))
            run = []
        run.append(d)
    if run:
        out.append((b"".join(run), len(run[0])))
    return out


def observe(s: ReceiverSession) -> list[Any]:
    events: list[SessionEvent] = []
    while (ev := s.next_event()) is not None:
        events.append(ev)
    frames = [(e.frame.frame_id, bytes(e.frame.jpeg)) for e in events if isinstance(e, FrameReady)]
    return [[type(e).__name__ for e in events], frames]


@settings(max_examples=60, deadline=None)
@given(
    frames=st.integers(1, 8),
    lose=st.frozensets(st.integers(1, 60), max_size=8),
    cuts=st.lists(st.integers(0, 70), max_size=10),
)
def test_segments_equal_datagram_by_datagram(frames: int, lose: frozenset[int],
                                             cuts: list[int]) -> None:  # fmt: skip
    datagrams = stream(frames, lose)
    one, batched = ReceiverSession(), ReceiverSession()
    now = 10.0
    for d in datagrams:
        one.receive_datagram(d, SENDER, now)
    for buf, seg in gro_buffers(datagrams, cuts):
        batched.receive_segments(memoryview(buf), seg, SENDER, now)
    seen = observe(one)
    assert observe(batched) == seen
    if not lose:  # the test is not vacuous: every frame is published
        assert [fid for fid, _ in seen[1]] == list(range(frames))
    assert batched.status(now) == one.status(now)
    assert batched.get_timer() == one.get_timer()


def test_an_empty_buffer_is_one_empty_datagram_and_bad_segments_are_refused() -> None:
    one, batched = ReceiverSession(), ReceiverSession()
    one.receive_datagram(b"", SENDER, 1.0)
    batched.receive_segments(memoryview(b""), 1, SENDER, 1.0)
    assert batched.status(1.0) == one.status(1.0)
    assert batched.reassembler.decode_errors == one.reassembler.decode_errors != {}
    with pytest.raises(ValueError):
        batched.receive_segments(memoryview(b"x"), 0, SENDER, 1.0)
