"""The receiver's pure core: liveness with scripted time, stream choice, restarts, reports."""

from __future__ import annotations

from mcastcam.protocol.codec import Heartbeat, ReceiverReport, decode, encode
from mcastcam.protocol.events import Followed, FrameReady, LivenessChanged, SessionEvent
from mcastcam.protocol.fragmenter import fragment_frame
from mcastcam.protocol.liveness import Liveness, LiveState
from mcastcam.protocol.receiver import ReceiverSession, parse_selector
from mcastcam.protocol.reports import Reporter

SENDER = ("198.18.0.1", 40000)


def heartbeat(stream_id: int, name: str, seq: int = 0, interval_ms: int = 1000) -> bytes:
    return encode(
        Heartbeat(
            stream_id=stream_id, seq=seq, name=name, host="198.18.0.1", source_state=0,
            width=640, height=480, fps_milli=30000, interval_ms=interval_ms, frames_sent=0,
            datagrams_sent=0, uptime_ns=0, send_ts_ns=123, audience=1,
        )
    )


def frame(stream_id: int, frame_id: int, seq: int, data: bytes = b"x" * 300) -> list[bytes]:
    parts = fragment_frame(
        data, stream_id=stream_id, first_seq=seq, frame_id=frame_id, capture_ts_ns=1,
        max_payload=100,
    )
    return [h + bytes(p) for h, p in parts]


def drain(s: ReceiverSession) -> list[SessionEvent]:
    out = []
    while (ev := s.next_event()) is not None:
        out.append(ev)
    return out


def run_timers(s: ReceiverSession, until: float) -> list[SessionEvent]:
    events: list[SessionEvent] = []
    while (t := s.get_timer()) is not None and t <= until:
        s.handle_timer(t)
        events += drain(s)
    s.handle_timer(until)
    return events + drain(s)


def test_liveness_alive_stale_lost_and_back() -> None:
    live = Liveness(lost_after=3)
    assert live.heard(1, 0.0, interval=1.0) is LiveState.ALIVE
    assert live.next_deadline() == 1.25  # one interval plus 25 % grace
    assert live.check(1.2) == []
    assert live.check(1.25) == [(1, LiveState.STALE)]
    assert live.next_deadline() == 3.0
    assert live.check(2.9) == []
    assert live.check(3.0) == [(1, LiveState.LOST)]
    assert live.check(10.0) == []  # lost once, said once
    assert live.next_deadline() is None
    assert live.heard(1, 10.5) is LiveState.ALIVE
    assert live.heard(1, 10.0) is None  # nothing newer than what we knew


def test_liveness_timeout_overrides_intervals_but_not_below_one() -> None:
    live = Liveness(timeout=2.0)
    live.heard(7, 0.0, interval=1.0)
    assert live.check(1.25) == [(7, LiveState.STALE)]
    assert live.check(2.0) == [(7, LiveState.LOST)]  # 2 s, not 3 intervals
    short = Liveness(timeout=0.5)  # shorter than the heartbeat interval: never between beats
    short.heard(7, 0.0, interval=1.0)
    assert short.check(1.0) == []
    assert short.check(1.25) == [(7, LiveState.LOST)]


def test_follows_the_first_stream_and_reports_its_liveness() -> None:
    s = ReceiverSession()
    s.receive_datagram(heartbeat(1, "cam"), SENDER, 0.0)
    events = drain(s)
    assert Followed(1, "cam", SENDER, None) in events
    for d in frame(1, 0, seq=1):
        s.receive_datagram(d, SENDER, 0.1)
    ready = [e for e in drain(s) if isinstance(e, FrameReady)]
    assert [bytes(e.frame.jpeg) for e in ready] == [b"x" * 300]
    changes = [e for e in run_timers(s, 4.0) if isinstance(e, LivenessChanged)]
    assert [(e.state, e.followed) for e in changes] == [
        (LiveState.STALE, True),
        (LiveState.LOST, True),
    ]
    assert s.status(4.0)["online"] is False


def test_restarted_sender_with_the_same_name_is_followed_at_its_first_heartbeat() -> None:
    s = ReceiverSession()
    s.receive_datagram(heartbeat(1, "cam"), SENDER, 0.0)
    drain(s)
    s.receive_datagram(heartbeat(2, "cam"), ("198.18.0.1", 40001), 5.0)  # new run, new id
    follows = [e for e in drain(s) if isinstance(e, Followed)]
    assert [(f.stream_id, f.previous) for f in follows] == [(2, 1)]


def test_another_name_is_not_followed_while_the_first_lives() -> None:
    s = ReceiverSession()
    s.receive_datagram(heartbeat(1, "cam"), SENDER, 0.0)
    s.receive_datagram(heartbeat(2, "door"), ("198.18.0.2", 40000), 0.1)
    assert s.followed == 1
    # cam goes silent; door keeps beating: once cam is lost, door is followed
    for t in (1.0, 2.0, 3.0):
        s.receive_datagram(heartbeat(2, "door", seq=int(t)), ("198.18.0.2", 40000), t)
        run_timers(s, t)
    run_timers(s, 3.2)
    assert s.followed == 2


def test_stream_picked_by_name_or_id() -> None:
    assert parse_selector("0x0000002a") == (42, None)
    assert parse_selector("42") == (42, None)
    assert parse_selector("kitchen") == (None, "kitchen")
    by_name = ReceiverSession(stream="door")
    by_name.receive_datagram(heartbeat(1, "cam"), SENDER, 0.0)
    by_name.receive_datagram(heartbeat(2, "door"), SENDER, 0.0)
    assert by_name.followed == 2
    by_id = ReceiverSession(stream="0x1")
    by_id.receive_datagram(heartbeat(2, "door"), SENDER, 0.0)
    by_id.receive_datagram(heartbeat(1, "cam"), SENDER, 0.0)
    assert by_id.followed == 1


def test_reports_go_to_the_followed_sender_on_the_timer() -> None:
    s = ReceiverSession(reporter=Reporter(9, "rx", "198.18.0.9", rng=None))
    s.receive_datagram(heartbeat(1, "cam"), SENDER, 0.0)  # followed from now on
    s.receive_datagram(heartbeat(1, "cam", seq=1), SENDER, 0.5)  # the reporter hears it
    drain(s)
    assert s.get_timer() == 1.0  # half an interval after the heartbeat
    run_timers(s, 1.0)
    (sent,) = s.datagrams_to_send(1.0)
    report = decode(sent[0])
    assert sent[1] == SENDER and isinstance(report, ReceiverReport)
    assert (report.stream_id, report.receiver_id, report.echo_ts_ns) == (1, 9, 123)
    assert report.held_ns == 500_000_000
    assert s.datagrams_to_send(1.0) == []
