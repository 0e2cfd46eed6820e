"""No hijack and bounded state without a key (issue #12 §3-4, protocol §6): scripted time."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.errors import DecodeError
from mcastcam.protocol.codec import Heartbeat, decode, encode
from mcastcam.protocol.events import Followed, FrameReady
from mcastcam.protocol.liveness import GRACE, Liveness, LiveState
from mcastcam.protocol.receiver import ReceiverSession
from tests.protocol.test_receiver_session import SENDER, drain, frame, heartbeat, run_timers

ATTACKER = ("198.18.0.66", 40000)
RESTARTED = ("198.18.0.1", 40001)
FPS = 30


class Cam:
    """A scripted sender: a heartbeat a second, a 300-byte frame every 1/30 s."""

    def __init__(self, sid: int, name: str, addr: tuple[str, int] = SENDER) -> None:
        self.sid, self.name, self.addr = sid, name, addr
        self.seq, self.fid, self.next_hb = 0, 0, 0.0

    def datagrams(self, now: float) -> list[bytes]:
        out = []
        if now >= self.next_hb:
            out.append(heartbeat(self.sid, self.name, seq=self.seq))
            self.seq += 1
            self.next_hb = now + 1.0
        out += frame(self.sid, self.fid, self.seq, data=bytes([self.fid & 0xFF]) * 300)
        self.seq += 3
        self.fid += 1
        return out


def play(
    s: ReceiverSession, cams: list[Cam], start: float, end: float, served: list[tuple[int, float]]
) -> None:
    """Every ``cam`` sends from ``start`` to ``end`` at 30 fps; served frames go to ``served``."""
    t = start
    while t < end:
        for cam in cams:
            for d in cam.datagrams(t):
                s.receive_datagram(d, cam.addr, t)
        for ev in run_timers(s, t):
            if isinstance(ev, FrameReady):
                served.append((ev.frame.stream_id, t))
        served += [(e.frame.stream_id, t) for e in drain(s) if isinstance(e, FrameReady)]
        t = round(t + 1 / FPS, 6)


def collect(s: ReceiverSession, t: float, served: list[tuple[int, float]]) -> None:
    served += [(e.frame.stream_id, t) for e in drain(s) if isinstance(e, FrameReady)]


def test_codec_refuses_an_absurd_heartbeat_interval() -> None:
    good = decode(heartbeat(9, "cam", interval_ms=60_000))
    assert isinstance(good, Heartbeat)
    raw = dataclasses.replace(good, interval_ms=0xFFFFFFFF)
    for bad in (raw, dataclasses.replace(good, interval_ms=99)):
        with pytest.raises(DecodeError) as err:
            decode(encode(bad))
        assert err.value.reason == "heartbeat_out_of_range"


def test_liveness_clamps_intervals_whoever_passes_them() -> None:
    live = Liveness()
    live.heard(1, 0.0, interval=4e6)  # 49.7 days: clamped to 60 s
    assert live.next_deadline() == pytest.approx(60 * (1 + GRACE))
    live.heard(2, 0.0, interval=1e-6)
    assert live.next_deadline() == pytest.approx(0.1 * (1 + GRACE))


def test_forged_heartbeat_with_the_live_name_does_not_take_over() -> None:
    s = ReceiverSession()
    real, served = Cam(1, "cam"), list[tuple[int, float]]()
    play(s, [real], 0.0, 2.0, served)
    assert s.followed == 1
    forged = heartbeat(0xBAD, "cam", interval_ms=60_000)  # the largest interval allowed
    s.receive_datagram(forged, ATTACKER, 2.0)
    assert s.status(2.0)["streams"][1]["heartbeat_interval"] == 60.0
    play(s, [real], 2.0, 6.0, served)
    assert s.followed == 1
    assert {sid for sid, _ in served} == {1}
    assert len([t for _, t in served if t >= 2.0]) >= 4 * FPS - 2


def test_forged_restart_with_frames_does_not_take_over_a_live_stream() -> None:
    s = ReceiverSession()
    real, fake = Cam(1, "cam"), Cam(0xBAD, "cam", ATTACKER)
    served: list[tuple[int, float]] = []
    play(s, [real], 0.0, 1.0, served)
    play(s, [real, fake], 1.0, 5.0, served)  # frames complete for both
    assert s.followed == 1
    assert {sid for sid, _ in served} == {1}
    assert not [e for e in drain(s) if isinstance(e, Followed)]


def test_heartbeat_only_stream_never_evicts_one_that_delivers_frames() -> None:
    s = ReceiverSession()
    s.receive_datagram(heartbeat(0xBAD, "cam"), ATTACKER, 0.0)  # first heard: followed
    assert s.followed == 0xBAD
    served: list[tuple[int, float]] = []
    real = Cam(1, "cam")
    play(s, [real], 0.1, 0.2, served)  # its first frame completes: it replaces the forgery
    assert s.followed == 1
    for t in (0.5, 1.0, 1.5, 2.0, 2.5):  # the forgery keeps beating
        s.receive_datagram(heartbeat(0xBAD, "cam", seq=int(t * 10)), ATTACKER, t)
    play(s, [real], 0.2, 3.0, served)
    assert s.followed == 1


def test_stream_id_pins() -> None:
    s = ReceiverSession(stream="0x1")
    served: list[tuple[int, float]] = []
    play(s, [Cam(1, "cam")], 0.0, 1.0, served)
    play(s, [Cam(2, "cam", RESTARTED)], 1.0, 8.0, served)  # 1 is lost; 2 delivers frames
    assert s.followed == 1 and {sid for sid, _ in served} == {1}


def restart_recovery(fakes: int, rate: float, flood_from: float = 0.5) -> float:
    """Seconds from the restarted sender's first datagram to its first served frame.

    The old run stops at 3.0 s; the new run (new id, same name) starts at 3.3 s; ``fakes``
    invented stream ids send heartbeats at ``rate`` datagrams/s in all, from ``flood_from``
    until 5 s.
    """
    s = ReceiverSession()
    old, new = Cam(1, "cam"), Cam(2, "cam", RESTARTED)
    served: list[tuple[int, float]] = []
    rng = random.Random(7)
    ids = [rng.getrandbits(32) | 0x100 for _ in range(fakes)]
    n = 0
    t = 0.0
    while t < 8.0:
        while fakes and n / rate + flood_from <= min(t, 5.0):
            sid = ids[n % fakes]
            s.receive_datagram(heartbeat(sid, "cam", seq=n), ATTACKER, n / rate + flood_from)
            n += 1
        cams = [old] if t < 3.0 else [new] if t >= 3.3 else []
        for cam in cams:
            for d in cam.datagrams(t):
                s.receive_datagram(d, cam.addr, t)
        collect(s, t, served)
        for ev in run_timers(s, t):
            if isinstance(ev, FrameReady):
                served.append((ev.frame.stream_id, t))
        t = round(t + 1 / FPS, 6)
    first_new = min(t for sid, t in served if sid == 2)
    assert s.followed == 2
    assert len(s.info) <= 16 and len(s.liveness) <= 16
    return first_new - 3.3


def test_real_restart_is_followed_once_the_old_run_is_stale() -> None:
    # stale 1.25 s after the old run's last datagram (2.97 s): 4.22 s, 0.92 s after the restart
    assert restart_recovery(0, 1.0) < 1.0


def test_real_restart_is_followed_as_fast_under_16_fake_ids_at_32_per_second() -> None:
    assert restart_recovery(16, 32.0) == pytest.approx(restart_recovery(0, 1.0), abs=1 / FPS)
    # 10k/s from 64 ids: its first heartbeat is refused, its name comes with the next (1 s)
    assert restart_recovery(64, 10_000.0, flood_from=3.0) < 1.1


def test_random_id_flood_leaves_every_table_bounded_and_the_timer_cheap() -> None:
    s = ReceiverSession()
    served: list[tuple[int, float]] = []
    real = Cam(1, "cam")
    play(s, [real], 0.0, 0.5, served)
    rng = random.Random(1)
    for i in range(20_000):
        t = 0.5 + i / 10_000
        s.receive_datagram(heartbeat(rng.getrandbits(32), f"x{i}", seq=i), ATTACKER, t)
        if i % 100 == 0:
            run_timers(s, t)
    drain(s)
    assert len(s.info) <= 16 and len(s.liveness) <= 16
    assert len(s.reassembler.streams()) <= 16
    assert len(s.liveness._heap) <= 4 * 16 + 64
    assert s.reassembler.decode_errors["too_many_streams"] >= 19_000
    play(s, [real], 2.5, 4.0, served)
    assert s.followed == 1 and [t for _, t in served if t >= 2.5]


# ----------------------------------------------------------------- liveness vs a reference


class _Reference:
    """The former Liveness: scans every entry at each check (the model)."""

    def __init__(self) -> None:
        self.e: dict[int, list[float | LiveState]] = {}

    def heard(self, sid: int, now: float, interval: float | None) -> None:
        if interval:
            interval = min(max(interval, 0.1), 60.0)
        if sid not in self.e:
            self.e[sid] = [now, interval or 1.0, LiveState.ALIVE]
            return
        if interval:
            self.e[sid][1] = interval
        if now > self.e[sid][0]:  # type: ignore[operator]
            self.e[sid][0] = now
            self.e[sid][2] = LiveState.ALIVE

    def check(self, now: float) -> set[tuple[int, LiveState]]:
        out = set()
        for sid, (last, iv, state) in self.e.items():
            assert isinstance(last, float) and isinstance(iv, float)
            stale, lost = last + iv * 1.25, last + iv * 3
            assert isinstance(state, LiveState)
            new = LiveState.LOST if now >= lost else LiveState.STALE if now >= stale else state
            if new is not state and state is not LiveState.LOST:
                self.e[sid][2] = new
                out.add((sid, new))
        return out


ops = st.lists(
    st.tuples(
        st.sampled_from(["heard", "check", "forget"]),
        st.integers(0, 5),
        st.floats(0, 0.5),
        st.sampled_from([None, 0.05, 0.1, 0.3, 1.0, 2.0, 100.0]),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_liveness_heap_matches_the_scanning_model(
    script: list[tuple[str, int, float, float | None]],
) -> None:
    live, ref, now = Liveness(), _Reference(), 0.0
    for op, sid, dt, interval in script:
        now += dt
        if op == "heard":
            live.heard(sid, now, interval)
            ref.heard(sid, now, interval)
        elif op == "forget":
            live.forget(sid)
            ref.e.pop(sid, None)
        else:
            # a driver wakes at every deadline up to now, as the shells do
            changes: set[tuple[int, LiveState]] = set()
            while (due := live.next_deadline()) is not None and due <= now:
                changes |= set(live.check(due))
            changes |= set(live.check(now))
            ref_changes = ref.check(now)
            final = {sid: st for sid, st in changes}
            assert {(s, live.state(s)) for s in final} == {(s, ref.e[s][2]) for s in final}
            assert {s for s, _ in ref_changes} <= set(final)
        for s in ref.e:
            assert live.state(s) is ref.e[s][2] or op != "check"
    assert len(live._heap) <= 4 * len(live) + 64
