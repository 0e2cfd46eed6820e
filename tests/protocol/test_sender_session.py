"""The pure sender core: pacing, latest-frame-wins, heartbeats, scripted time."""

from __future__ import annotations

from mcastcam.protocol.codec import Fragment, Heartbeat, decode
from mcastcam.protocol.events import FrameCompleted
from mcastcam.protocol.frame import CapturedFrame
from mcastcam.protocol.pacing import Pacer
from mcastcam.protocol.reassembly import Reassembler
from mcastcam.protocol.sender import SenderConfig, SenderSession


def run(session: SenderSession, start: float, until: float) -> list[tuple[float, bytes]]:
    """Drive the session like the shell does: send what is allowed, sleep to the timer."""
    out = []
    now = start
    while now <= until:
        for header, payload in session.datagrams_to_send(now):
            out.append((now, header + bytes(payload)))
        timer = session.get_timer()
        if timer is None:
            break
        now = max(timer, now + 1e-6)
    return out


def frame(n: int, size: int) -> CapturedFrame:
    return CapturedFrame(bytes([n % 256]) * size, n, 1_000_000 + n)


def test_pacer_holds_the_rate() -> None:
    p = Pacer(burst_interval=0.002, min_burst=1500)
    p.set_rate(1_000_000, 0.0)  # 1 MB/s: bucket holds 2000 bytes
    sent, now = 0, 0.0
    while now < 1.0:
        if p.can_send(now):
            p.on_sent(1000, now)
            sent += 1000
        else:
            t = p.next_send_time()
            assert t is not None and t > now
            now = t
    assert 990_000 <= sent <= 1_003_000


def test_frames_reassemble_and_heartbeats_go_first() -> None:
    s = SenderSession(SenderConfig(stream_id=5, name="cam", fps=30, spread=0.5), now=0.0)
    s.queue_frame(frame(1, 10_000), 0.0)
    sent = run(s, 0.0, 0.5)
    kinds = [type(decode(d)).__name__ for _, d in sent]
    assert kinds[0] == "Heartbeat"
    r = Reassembler()
    for t, d in sent:
        r.receive_datagram(d, ("127.0.0.1", 1), t)
    done = []
    while (ev := r.next_event()) is not None:
        if isinstance(ev, FrameCompleted):
            done.append(bytes(ev.frame.jpeg))
    assert done == [bytes([1]) * 10_000]
    assert s.stats.frames_sent == 1 and s.stats.datagrams_sent == 7


def test_fragments_are_spread_over_part_of_the_frame_interval() -> None:
    s = SenderSession(
        SenderConfig(stream_id=1, name="c", fps=30, spread=0.5, heartbeat_interval=0), now=0.0
    )
    s.queue_frame(frame(1, 200_000), 0.0)
    times = [t for t, _ in run(s, 0.0, 1.0)]
    assert len(times) == 140
    assert times[-1] <= 0.5 / 30 + 0.001  # done within half the frame interval
    assert times[-1] >= 0.5 / 30 * 0.8  # but not as one burst
    assert len([t for t in times if t == 0.0]) < len(times) / 3  # one 4 ms bucket at most


def test_max_rate_caps_the_bitrate() -> None:
    cfg = SenderConfig(stream_id=1, name="c", spread=0, max_rate=8_000_000, heartbeat_interval=0)
    s = SenderSession(cfg, now=0.0)
    s.queue_frame(frame(1, 500_000), 0.0)
    times = [t for t, _ in run(s, 0.0, 2.0)]
    assert 0.45 <= times[-1] <= 0.56  # ~524 kB on the wire at 1 MB/s


def test_latest_frame_wins_whole_frames_only() -> None:
    cfg = SenderConfig(stream_id=1, name="c", spread=0, max_rate=8_000_000, heartbeat_interval=0)
    s = SenderSession(cfg, now=0.0)
    s.queue_frame(frame(1, 100_000), 0.0)
    first = s.datagrams_to_send(0.0)
    assert first
    s.queue_frame(frame(2, 5000), 0.01)
    s.queue_frame(frame(3, 5000), 0.02)  # replaces frame 2, which is skipped
    rest = run(s, 0.02, 5.0)
    frags = [decode(h + bytes(p)) for h, p in first] + [decode(d) for _, d in rest]
    ids = [f.frame_id for f in frags if isinstance(f, Fragment)]
    assert sorted(set(ids)) == [0, 1]  # frame ids count frames sent, not captured
    payload_first = {bytes(f.payload)[:1] for f in frags if isinstance(f, Fragment)}
    assert payload_first == {b"\x01", b"\x03"}
    assert s.stats.frames_skipped == 1 and s.stats.frames_sent == 2


def test_heartbeats_every_interval_with_counters() -> None:
    s = SenderSession(SenderConfig(stream_id=9, name="cam", heartbeat_interval=1.0), now=100.0)
    sent = run(s, 100.0, 103.5)
    beats = [decode(d) for _, d in sent]
    assert all(isinstance(b, Heartbeat) for b in beats)
    assert [t for t, _ in sent] == [100.0, 101.0, 102.0, 103.0]
    last = beats[-1]
    assert isinstance(last, Heartbeat)
    assert last.name == "cam" and last.uptime_ns == 3_000_000_000 and last.interval_ms == 1000
    assert [b.seq for b in beats] == [0, 1, 2, 3]
