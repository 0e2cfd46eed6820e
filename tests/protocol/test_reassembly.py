"""The pure reassembler: scripted time, scripted loss, and a seeded terrible network."""

from __future__ import annotations

import itertools
import math
import random
import struct
from collections.abc import Iterable

import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastcam.protocol.codec import Heartbeat, encode, encode_symbol_header
from mcastcam.protocol.events import (
    ControlReceived,
    DropReason,
    Event,
    FrameCompleted,
    FrameDropped,
    FrameIncomplete,
    StreamStarted,
)
from mcastcam.protocol.fec import source_symbol_count
from mcastcam.protocol.frame import Frame
from mcastcam.protocol.integrity import crc32c
from mcastcam.protocol.reassembly import Reassembler, ReassemblyLimits
from mcastcam.protocol.wire import FecScheme, Kind
from tests.protocol.symbols import RUN, symbols_of

ADDR = ("127.0.0.1", 5000)


def datagrams_of(
    frame: bytes,
    frame_id: int,
    *,
    stream_id: int = 1,
    seq: int = 0,
    max_payload: int = 96,
    ts: int = 1000,
    repair: int = 0,
) -> list[bytes]:
    """Source symbols of T = ``max_payload`` bytes, then ``repair`` planned repair symbols."""
    return symbols_of(
        frame,
        frame_id,
        stream_id=stream_id,
        seq=seq,
        symbol_size=max_payload,
        ts=ts,
        repair=repair,
    )


def huge_symbol(frame_id: int, frame_len: int, symbol_size: int = 1400, seq: int = 0) -> bytes:
    """Source symbol 0 of a ``frame_len``-byte frame (no FEC), its payload zeros."""
    header = encode_symbol_header(
        Kind.SOURCE, 1, seq, frame_id, 0, symbol_size, frame_len, 0, 0, 0, 0, RUN
    )
    return header + bytes(symbol_size)


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


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=1, max_size=3000),
    st.integers(0, 3),
    st.randoms(use_true_random=False),
)
def test_any_permutation_reassembles(frame: bytes, repair: int, rnd: random.Random) -> None:
    k = source_symbol_count(len(frame), 96)
    dgrams = datagrams_of(frame, 7, max_payload=96, repair=min(repair, k))
    rnd.shuffle(dgrams)
    done, dropped = frames_and_drops(feed(Reassembler(), dgrams))
    assert [bytes(f.jpeg) for f in done] == [frame]
    assert dropped == []


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=2000), st.data())
def test_any_loss_subset_gives_exact_frame_or_a_drop(frame: bytes, data: st.DataObject) -> None:
    dgrams = datagrams_of(frame, 1, max_payload=64)  # no FEC: any loss loses the frame
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
    r.receive_datagram(huge_symbol(0, 2**31), ADDR, 0.0)
    assert r.bytes_in_flight == 0
    r.receive_datagram(datagrams_of(bytes(5000), 1, max_payload=1000, seq=1)[0], ADDR, 0.0)
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
    hb = Heartbeat(1, 0, "cam", "127.0.0.1", 0, 640, 480, 30000, 1000, 0, 0, 0, 0, 0, RUN)
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
    max_payload: int = 1424,
    repair: float = 0.0,
) -> tuple[list[bytes], list[tuple[float, bytes]]]:
    """Send ``frames`` at 30 fps through a seeded network that drops, duplicates,
    reorders and delays datagrams. The first and last frames arrive whole and on
    time, so the receiver knows where the stream begins and ends. ``repair``: planned
    repair symbols per frame as a fraction of k (R = ⌈k·repair⌉ + 2 when > 0)."""
    rnd = random.Random(seed)
    arrivals: list[tuple[float, bytes]] = []
    seq = rnd.randrange(2**32)
    first_id = rnd.randrange(2**32)
    for k, frame in enumerate(frames):
        sent_at = k / 30
        n = source_symbol_count(len(frame), max_payload)
        r = min(n, math.ceil(n * repair) + 2) if repair else 0
        dgrams = datagrams_of(
            frame, (first_id + k) % 2**32, seq=seq, max_payload=max_payload, ts=k, repair=r
        )
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


def run_network(
    frames: list[bytes], arrivals: list[tuple[float, bytes]], *, all_done: bool = False
) -> Reassembler:
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
    assert stats.complete + stats.repaired_fec + stats.repaired_nack == len(done)
    assert stats.corrupt == 0
    if not all_done:
        assert 0 < len(done) < len(frames)
    return r


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
        r.receive_datagram(huge_symbol(fid, 16 << 20, seq=fid), ADDR, 0.0)  # 16 MiB frames
    slots = [slot for stream in r._streams.values() for slot in stream.slots.values()]
    assert len(slots) == 4 and all(slot.buf is None for slot in slots)
    # the second source symbol of a frame is what allocates its buffer
    frame = bytes(range(256)) * 4
    dg = datagrams_of(frame, 9, seq=10)
    events = feed(r, dg[:1])
    assert not frames_and_drops(events)[0]
    done, _ = frames_and_drops(feed(r, dg[1:]))
    assert [bytes(f.jpeg) for f in done] == [frame]


# ---------------------------------------------------------------- protocol v2: FEC, CRC


def test_terrible_network_with_fec_repairs_most_frames() -> None:
    frames = generated_jpegs(200, 4)
    r = run_network(
        *terrible_network(frames, seed=4, drop=0.05, dup=0.03, max_delay=0.02, repair=0.1),
        all_done=True,
    )
    stats = r.stream_stats(1)
    assert stats is not None
    assert stats.repaired_fec > 0 and stats.repair_datagrams > 0
    assert stats.frames_completed >= 0.95 * len(frames)


def _loss_case(frame: bytes, repair: int, data: st.DataObject) -> tuple[list[bytes], int, int]:
    """The frame's datagrams minus a drawn subset, in a drawn order; (kept, k, lost)."""
    k = source_symbol_count(len(frame), 64)
    r = min(repair, k)
    dgrams = symbols_of(frame, 3, symbol_size=64, repair=r, fec=True)
    lost = set(data.draw(st.sets(st.integers(0, len(dgrams) - 1), max_size=len(dgrams))))
    kept = [d for i, d in enumerate(dgrams) if i not in lost]
    kept = data.draw(st.permutations(kept)) if kept else kept
    return kept, k, len(lost)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=2500), st.integers(0, 12), st.data())
def test_loss_up_to_the_repair_count_is_exact_beyond_it_a_drop(
    frame: bytes, repair: int, data: st.DataObject
) -> None:
    kept, k, _ = _loss_case(frame, repair, data)
    r = Reassembler()
    events = feed(r, kept, now=0.0)
    r.handle_timer(10.0)
    done, dropped = frames_and_drops(events + drain(r))
    assert [bytes(f.jpeg) for f in done] in ([frame], [])  # never a wrong frame
    stats = r.stream_stats(1)
    if len(kept) >= k + 2:  # lost ≤ R − 2: decodable (RaptorQ from k + 2 symbols)
        assert [bytes(f.jpeg) for f in done] == [frame]
        assert dropped == []
    elif len(kept) < k:  # lost > R: never a frame, one unrepairable drop
        assert done == []
        if kept:
            assert [(d.frame_id, d.reason) for d in dropped] == [(3, "timeout")]
            assert stats is not None and stats.unrepairable == 1
    if stats is not None:
        assert stats.corrupt == 0
        assert stats.frames_completed + stats.unrepairable == (1 if kept else 0)
        assert stats.complete + stats.repaired_fec == len(done)  # no ESI ≥ k + R was sent
    assert r.bytes_in_flight == 0


def test_no_loss_decodes_nothing_and_late_repair_is_counted_unused() -> None:
    r = Reassembler()
    frame = bytes(range(256)) * 10
    dgrams = symbols_of(frame, 0, repair=5)
    done, dropped = frames_and_drops(feed(r, dgrams))
    assert [bytes(f.jpeg) for f in done] == [frame] and dropped == []
    stats = r.stream_stats(1)
    assert stats is not None
    assert (stats.complete, stats.repaired_fec, stats.decodes) == (1, 0, 0)
    assert stats.repair_datagrams == 5 and stats.repair_unused == 5
    assert stats.late == 0 and stats.decode_errors == {}


def test_repair_only_after_a_nack_counts_as_repaired_nack() -> None:
    frame = bytes(range(256)) * 4  # k = 11 at T = 96
    k = source_symbol_count(len(frame), 96)
    dgrams = symbols_of(frame, 0, repair=1, extra=4)  # ESI k is planned, k + 1 … from NACKs
    r = Reassembler()
    # lose three source symbols and the planned repair: only NACK repair can finish it
    events = feed(r, dgrams[3:k] + dgrams[k + 1 :])
    done, _ = frames_and_drops(events)
    assert [bytes(f.jpeg) for f in done] == [frame]
    stats = r.stream_stats(1)
    assert stats is not None and (stats.repaired_fec, stats.repaired_nack) == (0, 1)
    # lose one source symbol: the planned repair symbol is enough
    r = Reassembler()
    done, _ = frames_and_drops(feed(r, dgrams[1 : k + 1] + dgrams[k + 1 :]))
    stats = r.stream_stats(1)
    assert [bytes(f.jpeg) for f in done] == [frame]
    assert stats is not None and (stats.repaired_fec, stats.repaired_nack) == (1, 0)


@pytest.mark.parametrize("where", ["source", "repair"])
def test_a_bit_flip_is_corrupt_and_never_published(where: str) -> None:
    frame = bytes(range(256)) * 4
    k = source_symbol_count(len(frame), 96)
    dgrams = symbols_of(frame, 0, repair=3)
    if where == "source":
        bad = bytearray(dgrams[2])
        bad[60] ^= 0x10
        arriving = [*dgrams[:2], bytes(bad), *dgrams[3:k]]
    else:  # a source symbol lost and a flipped repair symbol used to decode
        bad = bytearray(dgrams[k])
        bad[70] ^= 0x01
        arriving = [*dgrams[1:k], bytes(bad)]
    r = Reassembler()
    done, dropped = frames_and_drops(feed(r, arriving))
    assert done == []
    assert [(d.frame_id, d.reason) for d in dropped] == [(0, DropReason.CORRUPT)]
    stats = r.stream_stats(1)
    assert stats is not None and stats.corrupt == 1 and stats.frames_completed == 0
    assert r.bytes_in_flight == 0
    # the next frame is fine
    done, _ = frames_and_drops(feed(r, symbols_of(b"next" * 50, 1, seq=40)))
    assert [bytes(f.jpeg) for f in done] == [b"next" * 50]


def test_a_wrong_crc_in_the_header_is_corrupt() -> None:
    frame = b"\xff\xd8" + bytes(500) + b"\xff\xd9"
    r = Reassembler()
    _, dropped = frames_and_drops(feed(r, symbols_of(frame, 0, crc=crc32c(frame) ^ 1)))
    assert [d.reason for d in dropped] == ["corrupt"]


def test_any_differing_header_field_is_a_conflict() -> None:
    frame = bytes(300)
    good = symbols_of(frame, 4, repair=2)
    for other in (
        symbols_of(frame, 4, repair=2, crc=123),  # CRC
        symbols_of(frame, 4, repair=2, ts=7),  # capture time
        symbols_of(frame, 4, repair=3),  # R
        symbols_of(frame, 4, repair=2, run_nonce=99),  # another run, same stream id
        symbols_of(frame, 4, repair=2, symbol_size=64),  # T
    ):
        r = Reassembler()
        done, dropped = frames_and_drops(feed(r, good[:1] + other[1:2] + good[1:]))
        assert done == [] and [(d.frame_id, d.reason) for d in dropped] == [(4, "conflict")]
        assert r.bytes_in_flight == 0


def test_incomplete_frame_is_said_once_as_soon_as_the_plan_cannot_suffice() -> None:
    frame = bytes(range(200)) * 5
    k = source_symbol_count(len(frame), 96)
    dgrams = symbols_of(frame, 0, repair=3)
    # one source symbol lost: k − 1 + 3 planned = k + 2, enough: nothing said at the last one
    r = Reassembler()
    events = feed(r, dgrams[1:k], now=1.0)
    assert not [e for e in events if isinstance(e, FrameIncomplete)]
    # the first planned repair symbol is lost too: at ESI k + 1, k − 1 + 1 + 1 more < k + 2
    events = feed(r, dgrams[k + 1 : k + 2], now=1.2)
    assert [e for e in events if isinstance(e, FrameIncomplete)] == [
        FrameIncomplete(1, 0, k, k, 1.2)
    ] or [bytes(e.frame.jpeg) for e in events if isinstance(e, FrameCompleted)] == [frame]
    events = feed(r, dgrams[k + 2 :], now=1.3)
    assert not [e for e in events if isinstance(e, FrameIncomplete)]  # said once
    # two source symbols lost: already at the last source symbol the plan falls short
    r = Reassembler()
    events = feed(r, dgrams[2:k], now=2.0)
    assert [e for e in events if isinstance(e, FrameIncomplete)] == [
        FrameIncomplete(1, 0, k, k - 2, 2.0)
    ]
    assert r.held(1, 0) == k - 2
    # a newer frame does not say it again; without FEC nothing is said at all
    events = feed(r, symbols_of(bytes(10), 1, seq=50, fec=False), now=2.1)
    assert not [e for e in events if isinstance(e, FrameIncomplete)]
    r = Reassembler()
    assert not [e for e in feed(r, symbols_of(frame, 0)[2:]) if isinstance(e, FrameIncomplete)]


def test_a_newer_frame_makes_an_older_incomplete_one_due() -> None:
    r = Reassembler()
    a = symbols_of(bytes(range(250)) * 2, 0, repair=2)
    events = feed(r, a[:2], now=1.0)  # then the rest is lost, its last planned symbol too
    events += feed(r, symbols_of(bytes(50), 1, seq=20, repair=1)[:1], now=1.03)
    said = [e for e in events if isinstance(e, FrameIncomplete)]
    assert said == [FrameIncomplete(1, 0, 6, 2, 1.03)]


def incomplete(events: Iterable[Event]) -> list[FrameIncomplete]:
    return [e for e in events if isinstance(e, FrameIncomplete)]


def run_timer(r: Reassembler, until: float) -> list[Event]:
    """Fire the reassembler's timer at each deadline up to ``until`` (scripted time)."""
    events: list[Event] = []
    while (t := r.get_timer()) is not None and t <= until:
        r.handle_timer(t)
        events += drain(r)
    return events


def test_a_lost_tail_is_said_once_the_frame_stalls_not_at_the_next_frame() -> None:
    """Issue #11: a frame whose last datagrams were lost (here the last two source symbols
    and its planned repair) is said incomplete ``stall_gap`` after the stream's usual frame
    span, without waiting for the next frame; a stream that sends symbols is never cut."""
    r = Reassembler(ReassemblyLimits(stall_gap=0.003))
    frame = bytes(range(200)) * 5
    k = source_symbol_count(len(frame), 96)
    # first frames: complete, spread over 8 ms -> the span falls from 20 ms towards 8 ms
    for f in range(40):
        dgrams = symbols_of(frame, f, seq=f * 100, repair=2)
        t0 = f / 30
        for i, d in enumerate(dgrams):
            r.receive_datagram(d, ADDR, t0 + 0.008 * i / (len(dgrams) - 1))
        assert not incomplete(drain(r) + run_timer(r, t0 + 0.03))
    stream = r._streams[1]  # (the learnt span, white box)
    # complete at its last source symbol, ESI k − 1 of the k + 2 spread over 8 ms
    assert stream.span == pytest.approx(0.008 * (k - 1) / (k + 1), rel=0.05)
    t0 = 40 / 30
    dgrams = symbols_of(frame, 40, seq=4000, repair=2)
    for i, d in enumerate(dgrams[: k - 2]):  # the tail (2 source + 2 repair) is lost
        r.receive_datagram(d, ADDR, t0 + 0.008 * i / (len(dgrams) - 1))
    last = t0 + 0.008 * (k - 3) / (len(dgrams) - 1)
    assert not incomplete(drain(r))
    due = t0 + stream.span + 0.003
    assert r.get_timer() == pytest.approx(due)
    assert not incomplete(run_timer(r, due - 1e-6))
    said = incomplete(run_timer(r, due))
    assert said == [FrameIncomplete(1, 40, k, k - 2, pytest.approx(due))]
    assert due - last < 0.005  # not 33 ms later, with the next frame
    assert not incomplete(run_timer(r, t0 + 0.5))  # said once
    assert r.get_timer() == pytest.approx(t0 + 1.0)  # then only the frame's deadline


def test_a_slow_frame_that_keeps_arriving_is_not_said_incomplete() -> None:
    r = Reassembler(ReassemblyLimits(stall_gap=0.003))
    frame = bytes(range(256)) * 40  # 107 source symbols of 96 bytes
    dgrams = symbols_of(frame, 0, repair=5)
    events: list[Event] = []
    for i, d in enumerate(dgrams):  # one every 2 ms: 224 ms, far past the initial 20 ms
        now = 0.002 * i
        events += run_timer(r, now)
        r.receive_datagram(d, ADDR, now)
        events += drain(r)
    assert not incomplete(events)
    assert [bytes(f.jpeg) for f in frames_and_drops(events)[0]] == [frame]
    # the same frame, its symbols stop at ESI 50: said 3 ms after the last one
    r = Reassembler(ReassemblyLimits(stall_gap=0.003))
    events = []
    for i, d in enumerate(dgrams[:50]):
        now = 0.002 * i
        events += run_timer(r, now)
        r.receive_datagram(d, ADDR, now)
        events += drain(r)
    events += run_timer(r, 1.0)
    assert incomplete(events) == [FrameIncomplete(1, 0, 107, 50, pytest.approx(0.098 + 0.003))]


def test_frames_without_fec_or_complete_ones_set_no_stall_timer() -> None:
    r = Reassembler()
    plain = symbols_of(bytes(range(200)) * 5, 0)  # no FEC: nothing to NACK
    feed(r, plain[1:], now=1.0)
    assert r.get_timer() == pytest.approx(2.0)  # its deadline only
    r = Reassembler()
    fec = symbols_of(bytes(range(200)) * 5, 0, fec=True)  # FEC with R = 0 (idle repair)
    feed(r, fec[:-1], now=1.0)
    assert r.get_timer() == pytest.approx(1.0 + 0.02 + 0.003)
    assert incomplete(run_timer(r, 1.03)) == [
        FrameIncomplete(1, 0, len(fec), len(fec) - 1, pytest.approx(1.023))
    ]
    r = Reassembler()
    feed(r, fec, now=1.0)
    assert r.get_timer() is None


def test_v1_datagrams_and_authenticated_symbols_are_refused_and_counted() -> None:
    r = Reassembler()
    good = symbols_of(bytes(300), 0)
    v1 = bytearray(good[0])
    v1[2] = 1
    r.receive_datagram(bytes(v1), ADDR, 0.0)
    auth = bytearray(good[0] + bytes(16))
    auth[5] |= 1  # AUTH flag (low byte of flags)
    auth[41] = 1  # key_id
    r.receive_datagram(bytes(auth), ADDR, 0.0)
    hb = Heartbeat(
        1, 0, "cam", "127.0.0.1", 0, 640, 480, 30000, 1000, 0, 0, 0, 0, 0, RUN,
        flags=1, key_id=1, tag=bytes(16),
    )  # fmt: skip
    r.receive_datagram(encode(hb), ADDR, 0.0)
    assert r.decode_errors == {"old_version": 1, "needs_key": 2}
    assert drain(r) == []
    assert r.bytes_in_flight == 0 and r.streams() == []


def test_repair_symbols_of_a_frame_without_fec_and_floods_are_bounded() -> None:
    r = Reassembler(ReassemblyLimits(max_bytes_in_flight=1 << 20))
    frame = bytes(range(256)) * 8
    k = source_symbol_count(len(frame), 96)
    dgrams = symbols_of(frame, 0, repair=2, extra=60)
    # lone source symbol 0 then a flood of distinct repair symbols of one frame: decoded at
    # k symbols, what follows is absorbed; memory stays bounded
    events = feed(r, dgrams[:1] + dgrams[k:])
    done, _ = frames_and_drops(events)
    assert [bytes(f.jpeg) for f in done] == [frame]
    stats = r.stream_stats(1)
    assert stats is not None and stats.repaired_nack == 1 and stats.decodes == 1
    assert r.bytes_in_flight == 0
    no_fec = bytearray(dgrams[k])
    no_fec[40] = 0  # fec_scheme 0: a repair symbol is impossible
    no_fec[42:44] = b"\x00\x00"  # and R = 0
    r.receive_datagram(bytes(no_fec), ADDR, 0.0)
    assert stats.decode_errors == {"bad_fec": 1}


def test_held_repair_symbols_count_in_flight_and_are_released() -> None:
    r = Reassembler()
    frame = bytes(range(256)) * 8
    k = source_symbol_count(len(frame), 96)
    dgrams = symbols_of(frame, 0, repair=6)
    feed(r, dgrams[:2] + dgrams[k : k + 3])  # not enough to decode
    assert r.bytes_in_flight == len(frame) + 3 * 96
    r.handle_timer(5.0)
    _, dropped = frames_and_drops(drain(r))
    assert [d.reason for d in dropped] == ["timeout"]
    assert r.bytes_in_flight == 0


# ------------------------------------------------- protocol v2: FEC scheme 2, Reed–Solomon


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=2500), st.integers(0, 32), st.data())
def test_reed_solomon_any_k_symbols_give_the_frame_fewer_a_drop(
    frame: bytes, repair: int, data: st.DataObject
) -> None:
    """§5a: MDS, so exactly k distinct symbols of k + R decode; fewer never give a frame."""
    k = source_symbol_count(len(frame), 64)
    r = min(repair, k)
    dgrams = symbols_of(frame, 3, symbol_size=64, repair=r, fec=True, scheme=FecScheme.REED_SOLOMON)
    lost = data.draw(st.sets(st.integers(0, len(dgrams) - 1), max_size=len(dgrams)))
    kept = [d for i, d in enumerate(dgrams) if i not in lost]
    kept = data.draw(st.permutations(kept)) if kept else kept
    r_ = Reassembler()
    events = feed(r_, kept, now=0.0)
    r_.handle_timer(10.0)
    done, dropped = frames_and_drops(events + drain(r_))
    stats = r_.stream_stats(1)
    if len(kept) >= k:
        assert [bytes(f.jpeg) for f in done] == [frame] and dropped == []
    else:
        assert done == []
    if stats is not None and done:  # decoded when a source symbol was lost (or came late)
        assert stats.complete + stats.repaired_fec == 1
        assert stats.repaired_fec == 1 or not any(i < k for i in lost)
    if stats is not None:
        assert stats.corrupt == 0
    assert r_.bytes_in_flight == 0


def test_reed_solomon_incomplete_frame_asks_for_k_not_k_plus_2() -> None:
    frame = bytes(range(200)) * 5  # k = 11 at T = 96
    k = source_symbol_count(len(frame), 96)
    dgrams = symbols_of(frame, 0, repair=2, scheme=FecScheme.REED_SOLOMON)
    # two source symbols lost, both planned repair symbols arrive: k symbols, decoded
    r = Reassembler()
    done, _ = frames_and_drops(feed(r, dgrams[2:]))
    assert [bytes(f.jpeg) for f in done] == [frame]
    # three lost: at the last source symbol k − 3 + 2 planned < k, said once, overhead 0
    r = Reassembler()
    events = feed(r, dgrams[3:k], now=2.0)
    assert [e for e in events if isinstance(e, FrameIncomplete)] == [
        FrameIncomplete(1, 0, k, k - 3, 2.0, 0)
    ]


def test_reed_solomon_repair_esi_beyond_m_k_is_refused_and_counted() -> None:
    frame = bytes(range(256)) * 4  # k = 11 at T = 96, m(k) = 32: repair ESIs 11 … 42
    k = source_symbol_count(len(frame), 96)
    dgrams = symbols_of(frame, 0, repair=1, extra=31, scheme=FecScheme.REED_SOLOMON)
    last = bytearray(dgrams[-1])
    struct.pack_into("!I", last, 18, k + 32)  # ESI k + m(k): outside the code
    r = Reassembler()
    events = feed(r, [*dgrams[1:k], bytes(last)])
    stats = r.stream_stats(1)
    assert stats is not None and stats.decode_errors.get("bad_esi") == 1
    assert not [e for e in events if isinstance(e, FrameCompleted)]
    done, _ = frames_and_drops(feed(r, dgrams[k : k + 1]))  # a valid repair symbol: decoded
    assert [bytes(f.jpeg) for f in done] == [frame]
