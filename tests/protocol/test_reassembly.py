"""The pure reassembler: scripted time, scripted loss, and a seeded terrible network."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable

import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.protocol.codec import Heartbeat, encode, encode_fragment_header, fragment_geometry
from mcastcam.protocol.events import (
    ControlReceived,
    DropReason,
    Event,
    FrameCompleted,
    FrameDropped,
    StreamStarted,
)
from mcastcam.protocol.fragmenter import fragment_frame
from mcastcam.protocol.frame import Frame
from mcastcam.protocol.reassembly import Reassembler, ReassemblyLimits

ADDR = ("127.0.0.1", 5000)


def datagrams_of(
    frame: bytes,
    frame_id: int,
    *,
    stream_id: int = 1,
    seq: int = 0,
    max_payload: int = 100,
    ts: int = 1000,
) -> list[bytes]:
    return [
        h + bytes(p)
        for h, p in fragment_frame(
            frame,
            stream_id=stream_id,
            first_seq=seq,
            frame_id=frame_id,
            capture_ts_ns=ts,
            max_payload=max_payload,
        )
    ]


def drain(r: Reassembler) -> list[Event]:
    out = []
    while (ev := r.next_event()) is not None:
        out.append(ev)
    return out


def frames_and_drops(events: Iterable[Event]) -> tuple[list[Frame], list[FrameDropped]]:
    evs = list(events)
    return (
        [e.frame for e in evs if isinstance(e, FrameCompleted)],
        [e for e in evs if isinstance(e, FrameDropped)],
    )


def feed(r: Reassembler, datagrams: Iterable[bytes], now: float = 0.0) -> list[Event]:
    for d in datagrams:
        r.receive_datagram(d, ADDR, now)
    return drain(r)


def test_in_order_frame_completes_byte_identical() -> None:
    r = Reassembler()
    frame = bytes(range(256)) * 3
    events = feed(r, datagrams_of(frame, 0))
    assert isinstance(events[0], StreamStarted)
    done, dropped = frames_and_drops(events)
    assert [bytes(f.jpeg) for f in done] == [frame]
    assert done[0].jpeg.readonly
    assert done[0].capture_ts_ns == 1000
    assert dropped == []
    assert r.bytes_in_flight == 0
    assert r.get_timer() is None


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=3000), st.randoms(use_true_random=False))
def test_any_permutation_reassembles(frame: bytes, rnd: random.Random) -> None:
    dgrams = datagrams_of(frame, 7, max_payload=97)
    rnd.shuffle(dgrams)
    done, dropped = frames_and_drops(feed(Reassembler(), dgrams))
    assert [bytes(f.jpeg) for f in done] == [frame]
    assert dropped == []


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=2000), st.data())
def test_any_loss_subset_gives_exact_frame_or_a_drop(frame: bytes, data: st.DataObject) -> None:
    dgrams = datagrams_of(frame, 1, max_payload=50)
    keep = data.draw(st.lists(st.booleans(), min_size=len(dgrams), max_size=len(dgrams)))
    r = Reassembler()
    events = feed(r, [d for d, k in zip(dgrams, keep, strict=True) if k], now=0.0)
    r.handle_timer(10.0)
    done, dropped = frames_and_drops(events + drain(r))
    if all(keep):
        assert [bytes(f.jpeg) for f in done] == [frame] and dropped == []
    elif any(keep):
        assert done == [] and [(d.frame_id, d.reason) for d in dropped] == [(1, "timeout")]
    else:
        assert done == [] and dropped == []  # nothing arrived: the receiver never knew
    assert r.bytes_in_flight == 0


def test_duplicates_are_counted_not_delivered_twice() -> None:
    r = Reassembler()
    frame = bytes(500)
    dgrams = datagrams_of(frame, 0)
    done, _ = frames_and_drops(feed(r, dgrams[:2] + dgrams[:2] + dgrams[2:] + dgrams))
    assert len(done) == 1
    stats = r.stream_stats(1)
    assert stats is not None
    assert stats.duplicates == 2
    assert stats.late == len(dgrams)  # the whole frame again, after it completed
    assert stats.lost == 0


def test_interleaved_consecutive_frames_and_streams() -> None:
    r = Reassembler()
    a0, a1 = datagrams_of(b"A" * 450, 0, stream_id=1), datagrams_of(b"B" * 450, 1, seq=5)
    b0 = datagrams_of(b"C" * 333, 0, stream_id=2)
    mixed = [d for trio in itertools.zip_longest(a0, a1, b0) for d in trio if d is not None]
    done, dropped = frames_and_drops(feed(r, mixed))
    assert sorted((f.stream_id, f.frame_id, bytes(f.jpeg)) for f in done) == [
        (1, 0, b"A" * 450),
        (1, 1, b"B" * 450),
        (2, 0, b"C" * 333),
    ]
    assert dropped == []


def test_frame_id_and_seq_wrap() -> None:
    r = Reassembler()
    events = []
    seq = 2**32 - 3
    for i in range(4):
        fid = (2**32 - 2 + i) % 2**32
        dg = datagrams_of(bytes([i]) * 250, fid, seq=seq)
        seq = (seq + len(dg)) % 2**32
        events += feed(r, dg)
    done, dropped = frames_and_drops(events)
    assert [f.frame_id for f in done] == [2**32 - 2, 2**32 - 1, 0, 1]
    assert dropped == []
    stats = r.stream_stats(1)
    assert stats is not None and stats.lost == 0


def test_older_frame_after_newer_completed_is_late_and_gaps_are_lost() -> None:
    r = Reassembler()
    f0, f1, f2, f5 = (datagrams_of(bytes([i]) * 300, i) for i in (0, 1, 2, 5))
    events = feed(r, f0 + f1[:1] + f2[:1] + f5 + f1[1:] + f2[1:])
    done, dropped = frames_and_drops(events)
    assert [f.frame_id for f in done] == [0, 5]
    assert [(d.frame_id, d.reason, d.count) for d in dropped] == [
        (1, "late", 1),
        (2, "late", 1),
        (3, "lost", 2),
    ]
    stats = r.stream_stats(1)
    assert stats is not None and stats.late == len(f1) - 1 + len(f2) - 1


def test_timeout_is_driven_by_now_and_the_timer() -> None:
    r = Reassembler(ReassemblyLimits(frame_timeout=0.5))
    feed(r, datagrams_of(bytes(300), 0)[:1], now=10.0)
    assert r.get_timer() == 10.5
    r.handle_timer(10.4)
    assert frames_and_drops(drain(r)) == ([], [])
    r.handle_timer(10.5)
    _, dropped = frames_and_drops(drain(r))
    assert [(d.frame_id, d.reason) for d in dropped] == [(0, DropReason.TIMEOUT)]
    assert r.get_timer() is None and r.bytes_in_flight == 0


def test_conflicting_fragment_drops_the_frame_once() -> None:
    r = Reassembler()
    good = datagrams_of(bytes(300), 4)
    other = datagrams_of(bytes(400), 4)  # same frame id, other length
    events = feed(r, good[:1] + other[:1] + good[1:] + other[1:])
    done, dropped = frames_and_drops(events)
    assert done == []
    assert [(d.frame_id, d.reason) for d in dropped] == [(4, "conflict")]
    assert r.bytes_in_flight == 0
    # the next frame still completes, and the dead one is not reported twice
    done, dropped = frames_and_drops(feed(r, datagrams_of(b"x" * 10, 5)))
    assert [bytes(f.jpeg) for f in done] == [b"x" * 10] and dropped == []


def test_declared_length_above_the_maximum_is_refused_before_allocation() -> None:
    r = Reassembler(ReassemblyLimits(max_frame_len=1000))
    # a valid 2 GiB frame declaration: refused without allocating its buffer
    off, size = fragment_geometry(0, 65535, 2**31)
    header = encode_fragment_header(1, 0, 0, 0, 65535, 2**31, off, size, 0)
    r.receive_datagram(header + bytes(size), ADDR, 0.0)
    assert r.bytes_in_flight == 0
    r.receive_datagram(datagrams_of(bytes(5000), 1, max_payload=1000)[0], ADDR, 0.0)
    assert r.bytes_in_flight == 0
    _, dropped = frames_and_drops(drain(r))
    assert [(d.frame_id, d.reason) for d in dropped] == [(0, "too_large"), (1, "too_large")]


def test_bounded_frames_in_flight_per_stream() -> None:
    r = Reassembler(ReassemblyLimits(max_frames_in_flight=3))
    for fid in range(10):
        r.receive_datagram(datagrams_of(bytes(300), fid)[0], ADDR, 0.0)
        assert r.bytes_in_flight <= 3 * 300
    _, dropped = frames_and_drops(drain(r))
    assert [(d.frame_id, d.reason) for d in dropped] == [(i, "evicted") for i in range(7)]


def test_bounded_bytes_in_flight_across_streams() -> None:
    r = Reassembler(ReassemblyLimits(max_bytes_in_flight=1000))
    for sid in range(1, 6):
        r.receive_datagram(datagrams_of(bytes(400), 0, stream_id=sid)[0], ADDR, float(sid))
        assert r.bytes_in_flight <= 1000
    _, dropped = frames_and_drops(drain(r))
    assert [(d.stream_id, d.reason) for d in dropped] == [
        (1, "evicted"),
        (2, "evicted"),
        (3, "evicted"),
    ]


def test_bounded_streams_new_ones_wait_for_an_idle_one() -> None:
    r = Reassembler(ReassemblyLimits(max_streams=2, stream_idle_timeout=5.0))
    for sid in (1, 2, 3):
        feed(r, datagrams_of(bytes(10), 0, stream_id=sid), now=1.0)
    assert [s.stream_id for s in r.streams()] == [1, 2]
    assert r.decode_errors["too_many_streams"] == 1
    feed(r, datagrams_of(bytes(10), 1, stream_id=2), now=5.5)
    feed(r, datagrams_of(bytes(10), 0, stream_id=3), now=6.5)  # stream 1 idle since 1.0
    assert [s.stream_id for s in r.streams()] == [2, 3]


def test_garbage_is_counted_never_raised() -> None:
    r = Reassembler()
    rnd = random.Random(1)
    good = datagrams_of(bytes(range(200)), 0)
    for _ in range(3000):
        d = bytearray(rnd.choice(good))
        for _ in range(rnd.randint(1, 3)):
            d[rnd.randrange(len(d))] = rnd.randrange(256)
        r.receive_datagram(bytes(d[: rnd.randint(0, len(d))]), ADDR, 0.0)
        r.receive_datagram(rnd.randbytes(rnd.randint(0, 60)), ADDR, 0.0)
    events = drain(r)
    for ev in events:
        if isinstance(ev, FrameCompleted):
            assert ev.frame.jpeg.nbytes <= r.limits.max_frame_len
    total_errors = sum(r.decode_errors.values()) + sum(
        sum(s.decode_errors.values()) for s in r.streams()
    )
    assert total_errors > 3000


def test_heartbeat_is_passed_up_and_counted_in_the_stream() -> None:
    r = Reassembler()
    hb = Heartbeat(1, 0, "cam", "127.0.0.1", 0, 640, 480, 30000, 1000, 0, 0, 0, 0, 0)
    r.receive_datagram(encode(hb), ADDR, 2.0)
    events = drain(r)
    assert isinstance(events[0], StreamStarted)
    assert events[1] == ControlReceived(hb, ADDR, 2.0)
    stats = r.stream_stats(1)
    assert stats is not None and stats.datagrams == 1


# ---------------------------------------------------------------- the terrible network


def generated_jpegs(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = [(48, 64), (120, 160), (240, 320), (480, 640)][i % 4]
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        out.append(simplejpeg.encode_jpeg(img, quality=int(rng.integers(30, 95))))
    return out


def terrible_network(
    frames: list[bytes],
    *,
    seed: int,
    drop: float,
    dup: float,
    max_delay: float,
    max_payload: int = 1432,
) -> tuple[list[bytes], list[tuple[float, bytes]]]:
    """Send ``frames`` at 30 fps through a seeded network that drops, duplicates,
    reorders and delays datagrams. The first and last frames arrive whole and on
    time, so the receiver knows where the stream begins and ends."""
    rnd = random.Random(seed)
    arrivals: list[tuple[float, bytes]] = []
    seq = rnd.randrange(2**32)
    first_id = rnd.randrange(2**32)
    for k, frame in enumerate(frames):
        sent_at = k / 30
        dgrams = datagrams_of(frame, (first_id + k) % 2**32, seq=seq, max_payload=max_payload, ts=k)
        seq = (seq + len(dgrams)) % 2**32
        edge = k in (0, len(frames) - 1)
        for j, d in enumerate(dgrams):
            t = sent_at + j * 1e-5
            if edge:
                arrivals.append((t, d))
                continue
            if rnd.random() < drop:
                continue
            arrivals.append((t + rnd.uniform(0, max_delay), d))
            if rnd.random() < dup:
                arrivals.append((t + rnd.uniform(0, max_delay), d))
    arrivals.sort(key=lambda a: a[0])
    return frames, arrivals


def run_network(frames: list[bytes], arrivals: list[tuple[float, bytes]]) -> None:
    r = Reassembler(ReassemblyLimits(frame_timeout=0.3))
    events: list[Event] = []
    peak = 0
    for now, d in arrivals:
        timer = r.get_timer()
        if timer is not None and timer <= now:
            r.handle_timer(now)
        r.receive_datagram(d, ADDR, now)
        peak = max(peak, r.bytes_in_flight)
        events += drain(r)
    r.handle_timer(arrivals[-1][0] + 10)
    events += drain(r)
    done, dropped = frames_and_drops(events)
    first_id = done[0].frame_id
    ids = [(f.frame_id - first_id) % 2**32 for f in done]
    assert ids == sorted(set(ids)), "frames must come out once each, in order"
    for f, k in zip(done, ids, strict=True):
        assert bytes(f.jpeg) == frames[k], f"frame {k} corrupt"
        assert f.capture_ts_ns == k
    dropped_count = sum(d.count for d in dropped)
    assert len(done) + dropped_count == len(frames)
    accounted = set(ids)
    for d in dropped:
        start = (d.frame_id - first_id) % 2**32
        span = set(range(start, start + d.count))
        assert not span & accounted
        accounted |= span
    assert accounted == set(range(len(frames)))
    assert peak <= r.limits.max_bytes_in_flight
    assert r.bytes_in_flight == 0
    stats = r.stream_stats(1)
    assert stats is not None and stats.frames_completed == len(done)
    assert 0 < len(done) < len(frames)


@pytest.mark.parametrize("seed", [1, 2])
def test_terrible_network_generated_jpegs(seed: int) -> None:
    frames = generated_jpegs(400, seed)
    run_network(*terrible_network(frames, seed=seed, drop=0.02, dup=0.05, max_delay=0.08))


def test_terrible_network_real_recordings(recordings: dict[str, list[bytes]]) -> None:
    frames = [f for name, fs in recordings.items() for f in (fs[:10] if "1080x" in name else fs)]
    assert len(frames) >= 1000
    run_network(*terrible_network(frames, seed=3, drop=0.01, dup=0.03, max_delay=0.1))


def test_one_corrupt_frame_id_cannot_black_out_the_stream() -> None:
    # A bit flip sends one fragment 2**30 frames ahead: it must not move the cursor.
    r = Reassembler(ReassemblyLimits(frame_timeout=0.5))
    feed(r, datagrams_of(bytes(300), 0), now=0.0)
    bogus = bytearray(datagrams_of(bytes(300), 0, seq=2**30)[0])  # its seq is off too
    bogus[14] ^= 0x40
    r.receive_datagram(bytes(bogus), ADDR, 0.1)
    r.handle_timer(5.0)
    seq = 3
    done = []
    for fid in (1, 2, 3):
        dg = datagrams_of(bytes([fid]) * 300, fid, seq=seq)
        seq += len(dg)
        done += frames_and_drops(feed(r, dg, now=5.0 + fid))[0]
    assert [f.frame_id for f in done] == [1, 2, 3]
    stats = r.stream_stats(1)
    assert stats is not None
    assert stats.decode_errors == {"frame_id_jump": 1}
    assert stats.lost == 0  # nor did its sequence number count as loss


def test_a_confirmed_frame_id_jump_resynchronises() -> None:
    r = Reassembler()
    feed(r, datagrams_of(b"a" * 300, 0), now=0.0)
    far = 10_000_000
    first, second = datagrams_of(b"b" * 300, far, seq=3), datagrams_of(b"c" * 300, far + 1, seq=6)
    events = feed(r, first + second + first, now=1.0)
    done, _ = frames_and_drops(events)
    # frame `far` only opened with the confirming frame, so it arrives after it: late
    assert [(f.frame_id, bytes(f.jpeg)) for f in done] == [(far + 1, b"c" * 300)]
    stats = r.stream_stats(1)
    assert stats is not None and stats.resyncs == 1


def test_sequence_jumps_need_confirmation_before_counting_as_loss() -> None:
    r = Reassembler()
    feed(r, datagrams_of(bytes(300), 0, seq=0), now=0.0)  # seq 0..2
    feed(r, datagrams_of(bytes(300), 1, seq=2**31 - 5)[:1], now=0.1)  # one corrupted seq
    feed(r, datagrams_of(bytes(300), 2, seq=3), now=0.2)  # seq 3..5: the real stream goes on
    stats = r.stream_stats(1)
    assert stats is not None and stats.lost == 0


def test_lone_first_fragments_of_huge_frames_allocate_nothing() -> None:
    r = Reassembler(ReassemblyLimits(max_bytes_in_flight=64 << 20))
    for fid in range(4):
        off, size = fragment_geometry(0, 12_000, 16 << 20)  # a 16 MiB frame, 1398-byte pieces
        header = encode_fragment_header(1, fid, fid, 0, 12_000, 16 << 20, off, size, 0)
        r.receive_datagram(header + bytes(size), ADDR, 0.0)
    slots = [slot for stream in r._streams.values() for slot in stream.slots.values()]
    assert len(slots) == 4 and all(slot.buf is None for slot in slots)
    # the second fragment of a frame is what allocates its buffer
    frame = bytes(range(256)) * 4
    dg = datagrams_of(frame, 9, seq=10)
    events = feed(r, dg[:1])
    assert not frames_and_drops(events)[0]
    done, _ = frames_and_drops(feed(r, dg[1:]))
    assert [bytes(f.jpeg) for f in done] == [frame]
