""""Last heard" and "online" live once, in the session's Liveness (scripted time, pure)."""

from __future__ import annotations

from mcastcam.protocol.events import LivenessChanged
from mcastcam.protocol.liveness import Liveness, LiveState
from mcastcam.protocol.reassembly import Reassembler, ReassemblyLimits
from mcastcam.protocol.receiver import ReceiverSession
from tests.protocol.test_receiver_session import SENDER, drain, heartbeat
from tests.protocol.test_receiver_session import frame as fragments


def test_reassembler_reports_to_the_liveness_it_is_given() -> None:
    live = Liveness()
    r = Reassembler(liveness=live)
    assert r.liveness is live
    r.receive_datagram(heartbeat(5, "cam"), SENDER, 2.0)
    assert live.last_heard(5) == 2.0 and live.state(5) is LiveState.ALIVE
    first, second, third = fragments(5, 0, seq=1, data=b"y" * 300)
    r.receive_datagram(first, SENDER, 3.0)  # a frame's first fragment: heard
    assert live.last_heard(5) == 3.0
    r.receive_datagram(second, SENDER, 3.5)  # allocates the frame's buffer: heard
    assert live.last_heard(5) == 3.5
    r.receive_datagram(third, SENDER, 3.9)  # the hot path does not touch it
    assert live.last_heard(5) == 3.5 and r.streams()[0].frames_completed == 1
    assert live.take_revived() == [5] and live.take_revived() == []


def test_idle_eviction_reads_last_heard_from_liveness() -> None:
    r = Reassembler(ReassemblyLimits(max_streams=1, stream_idle_timeout=5.0))
    r.receive_datagram(heartbeat(1, "a"), SENDER, 0.0)
    for d in fragments(1, 0, seq=1):  # heard again at 4 s: a frame (never evicted unless idle)
        r.receive_datagram(d, SENDER, 4.0)
    r.receive_datagram(heartbeat(2, "b"), SENDER, 8.0)  # idle only 4 s: refused
    assert r.decode_errors["too_many_streams"] == 1
    r.receive_datagram(heartbeat(2, "b"), SENDER, 9.0)  # idle 5 s: stream 1 is forgotten
    assert [s.stream_id for s in r.streams()] == [2]
    assert r.liveness.state(1) is None  # its own liveness is forgotten with it


def test_a_stream_heard_only_through_fragments_comes_back_alive_at_once() -> None:
    s = ReceiverSession()
    s.receive_datagram(heartbeat(1, "cam"), SENDER, 0.0)
    drain(s)
    s.handle_timer(3.0)
    assert [(e.state, e.followed) for e in drain(s) if isinstance(e, LivenessChanged)] == [
        (LiveState.LOST, True)
    ]
    assert s.offline_reason(1) == "sender cam lost: no datagram"
    first = fragments(1, 0, seq=1)[0]  # a lone first fragment, no frame completed
    s.receive_datagram(first, SENDER, 3.5)
    changes = [e for e in drain(s) if isinstance(e, LivenessChanged)]
    assert [(e.stream_id, e.name, e.state, e.followed) for e in changes] == [
        (1, "cam", LiveState.ALIVE, True)
    ]
    assert s.offline_reason(1) == "" and s.status(3.5)["online"] is True
    assert s.liveness.last_heard(1) == 3.5
    s.handle_timer(3.6)
    assert not [e for e in drain(s) if isinstance(e, LivenessChanged)]  # said once


def test_offline_reason_of_a_stream_never_heard() -> None:
    assert ReceiverSession().offline_reason(0x2A) == "sender 42 never heard"
