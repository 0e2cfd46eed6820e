"""Reassemble frames from fragment datagrams (pure; docs/architecture.md §3).

The :class:`Reassembler` takes datagrams and ``now`` and queues events; it never reads a
clock or touches a socket. Its promises:

* A :class:`FrameCompleted` is byte-identical to the frame that was sent: fragments must
  tile the frame exactly (:func:`~mcastcam.protocol.codec.fragment_geometry`), and a
  fragment that contradicts its frame drops the whole frame as a ``conflict``.
* Every frame id after the first one the receiver resolves ends in exactly one event:
  completed, or dropped with a reason (:class:`DropReason`). Frames come out in frame-id
  order: once frame *n* completes, a fragment of any older frame is ``late``.
* Memory is bounded: streams, frames in flight per stream, bytes in flight overall, and
  the declared frame length (refused before anything is allocated).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from mcastcam.errors import DecodeError
from mcastcam.protocol import codec
from mcastcam.protocol.codec import FRAGMENT_HEADER, Heartbeat, fragment_geometry
from mcastcam.protocol.events import (
    ControlReceived,
    DropReason,
    Event,
    FrameCompleted,
    FrameDropped,
    StreamStarted,
)
from mcastcam.protocol.frame import Frame
from mcastcam.protocol.liveness import Liveness
from mcastcam.protocol.serial import SERIAL_MOD, serial_add, serial_diff
from mcastcam.protocol.wire import FRAGMENT_HEADER_SIZE, MAGIC, VERSION, Kind

_MASK = SERIAL_MOD - 1
_HALF = SERIAL_MOD >> 1
_UNPACK = FRAGMENT_HEADER.unpack_from
_FRAGMENT = int(Kind.FRAGMENT)

MAX_FRAME_JUMP = 3000
"""Frame ids further ahead than this need a second frame to confirm the jump (probation)."""
MAX_MISORDER = 16
"""New frame ids further behind the newest than this need confirming too (RFC 3550 A.1)."""
MAX_SEQ_JUMP = 1 << 20
"""Sequence numbers further from the highest than this need the next one to confirm them."""

Address = tuple[str, int]







@dataclass(frozen=True, slots=True)
class ReassemblyLimits:
    """Bounds of a :class:`Reassembler`.

    Attributes:
        max_frame_len: largest declared frame length accepted, bytes.
        max_bytes_in_flight: sum of the buffers of incomplete frames, all streams, bytes.
        max_frames_in_flight: incomplete frames per stream.
        max_streams: streams tracked at once; a new stream is refused while all are active.
        frame_timeout: seconds from a frame's first fragment until it is dropped.
        stream_idle_timeout: seconds of silence after which a stream may be forgotten.
    """

    max_frame_len: int = 16 << 20
    max_bytes_in_flight: int = 32 << 20
    max_frames_in_flight: int = 8
    max_streams: int = 16
    frame_timeout: float = 1.0
    stream_idle_timeout: float = 10.0


@dataclass(slots=True)
class StreamStats:
    """Counters of one stream (all totals since the stream started).

    ``datagrams``/``bytes`` count valid datagrams and their UDP payload bytes;
    ``lost`` is datagrams expected from the sequence numbers but not received
    (RFC 3550 A.3 style: ``expected - (received - duplicates)``, never negative);
    ``duplicates`` are fragments received twice; ``late`` are fragments of frames
    already resolved; ``resyncs`` counts confirmed frame-id jumps (see ``MAX_FRAME_JUMP``).
    When the stream was last heard is kept by the reassembler's
    :class:`~mcastcam.protocol.liveness.Liveness`, not here.
    """

    stream_id: int
    addr: Address
    first_heard: float
    datagrams: int = 0
    bytes: int = 0
    lost: int = 0
    duplicates: int = 0
    late: int = 0
    frames_completed: int = 0
    resyncs: int = 0
    frames_dropped: dict[str, int] = field(default_factory=dict)
    decode_errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "stream_id": self.stream_id,
            "address": f"{self.addr[0]}:{self.addr[1]}",
            "datagrams": self.datagrams,
            "bytes": self.bytes,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "late": self.late,
            "frames_completed": self.frames_completed,
            "resyncs": self.resyncs,
            "frames_dropped": dict(self.frames_dropped),
            "decode_errors": dict(self.decode_errors),
        }


class _Slot:
    """One frame being reassembled (or a dead frame absorbing its leftover fragments)."""

    __slots__ = (
        "base",
        "buf",
        "capture_ts_ns",
        "deadline",
        "extra",
        "first",
        "frag_count",
        "frame_len",
        "got",
        "live",
        "missing",
    )

    def __init__(
        self, frame_len: int, frag_count: int, capture_ts_ns: int, deadline: float, live: bool
    ) -> None:
        self.frame_len = frame_len
        self.frag_count = frag_count
        self.capture_ts_ns = capture_ts_ns
        self.deadline = deadline
        self.live = live  # False: dead (already reported), absorbing leftover fragments
        # The frame's buffer is allocated when its second fragment arrives, so a flood of
        # lone first fragments declaring huge frames costs no allocation (or zeroing).
        self.buf: bytearray | None = None
        self.first: tuple[int, bytes] | None = None  # (offset, payload) until then
        self.got = bytearray(frag_count if live else 0)
        self.missing = frag_count
        self.base, self.extra = divmod(frame_len, frag_count)  # fragment_geometry's terms


class _Stream:
    __slots__ = (
        "highest_seq",
        "jump_candidate",
        "newest",
        "resolved",
        "seq_candidate",
        "seq_span",
        "slots",
        "stats",
    )

    def __init__(self, stream_id: int, addr: Address, seq: int, now: float) -> None:
        self.stats = StreamStats(stream_id, addr, now)
        self.slots: dict[int, _Slot] = {}
        self.resolved: int | None = None  # newest frame id completed or dropped
        self.newest: int | None = None  # newest frame id a slot was opened for
        self.jump_candidate: int | None = None  # a far-ahead frame id awaiting confirmation
        self.seq_candidate: int | None = None  # a far-ahead seq awaiting confirmation
        self.highest_seq = seq
        self.seq_span = 0  # sequence numbers from the lowest to the highest seen


class Reassembler:
    """Sans-IO reassembly of every stream arriving on one socket.

    Drive it with :meth:`receive_datagram` for each datagram and :meth:`handle_timer` at
    :meth:`get_timer`; drain :meth:`next_event` after each call.

    Args:
        limits: the bounds (defaults: :class:`ReassemblyLimits`).
        liveness: where "last heard" lives: the reassembler reports every heartbeat and
            every fragment the hot path does not take (a frame's first two, which open it and
            allocate its buffer; not every datagram) and reads it back to find idle streams.
            Default: its own, forgotten with the streams.
    """

    def __init__(
        self, limits: ReassemblyLimits | None = None, liveness: Liveness | None = None
    ) -> None:
        self.limits = limits or ReassemblyLimits()
        self._owns_liveness = liveness is None
        self.liveness = liveness if liveness is not None else Liveness()
        self._streams: dict[int, _Stream] = {}
        self._events: collections.deque[Event] = collections.deque()
        self._bytes_in_flight = 0
        self._timer: float | None = None
        self._timer_dirty = False
        self.decode_errors: collections.Counter[str] = collections.Counter()
        """Datagrams refused before a stream could be named, by reason."""

    # ------------------------------------------------------------------ public API

    @property
    def bytes_in_flight(self) -> int:
        """Bytes allocated to incomplete frames, all streams."""
        return self._bytes_in_flight

    def streams(self) -> list[StreamStats]:
        """Counters of every tracked stream (live objects; copy before keeping)."""
        for stream in self._streams.values():
            self._update_lost(stream)
        return [s.stats for s in self._streams.values()]

    def stream_stats(self, stream_id: int) -> StreamStats | None:
        """Counters of one stream, or ``None`` if it is not tracked."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return None
        self._update_lost(stream)
        return stream.stats

    def forget_stream(self, stream_id: int) -> None:
        """Stop tracking a stream; its incomplete frames are released without events."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            for slot in stream.slots.values():
                self._release(slot)
            if self._owns_liveness:  # a shared one belongs to its owner (the session)
                self.liveness.forget(stream_id)

    def next_event(self) -> Event | None:
        """The oldest queued event, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest frame deadline (monotonic seconds), or ``None`` with nothing in flight."""
        if self._timer_dirty:
            deadlines = [s.deadline for st in self._streams.values() for s in st.slots.values()]
            self._timer = min(deadlines) if deadlines else None
            self._timer_dirty = False
        return self._timer

    def handle_timer(self, now: float) -> None:
        """Drop every frame whose deadline is at or before ``now`` (reason ``timeout``)."""
        for stream in list(self._streams.values()):
            expired = [fid for fid, s in stream.slots.items() if s.deadline <= now]
            if expired:
                ref = expired[0]
                expired.sort(key=lambda fid: serial_diff(fid, ref))
                for fid in expired:
                    if fid in stream.slots:
                        self._resolve(stream, fid, DropReason.TIMEOUT)
        self._timer_dirty = True

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, addr: Address, now: float
    ) -> None:
        """Take one UDP payload from ``addr`` received at ``now`` (monotonic seconds).

        Invalid datagrams are counted by reason (:attr:`decode_errors`, or the stream's
        ``decode_errors`` when its prefix named a tracked stream) and dropped; this never
        raises for anything the network sends.
        """
        size = len(data)
        if size >= FRAGMENT_HEADER_SIZE:
            h = _UNPACK(data)
            if h[0] == MAGIC and h[1] == VERSION and h[2] == _FRAGMENT:
                # The hot path: a fragment of a frame in flight whose header matches it.
                (_, _, _, _, sid, seq, fid, index, count, frame_len, offset, plen, ts) = h
                stream = self._streams.get(sid)
                slot = None if stream is None else stream.slots.get(fid)
                if (
                    slot is None
                    or slot.buf is None
                    or slot.frame_len != frame_len
                    or slot.frag_count != count
                    or slot.capture_ts_ns != ts
                ):
                    self._receive_fragment(h, data, size, addr, now)
                    return
                assert stream is not None
                base, extra = slot.base, slot.extra
                if index < extra:
                    ok = offset == index * (base + 1) and plen == base + 1
                else:
                    ok = index < count and offset == index * base + extra and plen == base
                if not ok or plen != size - FRAGMENT_HEADER_SIZE:
                    self._fragment_error(stream, index, count, frame_len, offset, plen, size)
                    return
                if (seq - stream.highest_seq) & _MASK == 1:  # the usual case: the next one
                    stream.highest_seq = seq
                    stream.seq_span += 1
                    stats = stream.stats
                    stats.datagrams += 1
                    stats.bytes += size
                else:
                    self._count_seq(stream, seq, size, now)
                got = slot.got
                if got[index]:
                    stream.stats.duplicates += 1
                    return
                got[index] = 1
                slot.buf[offset : offset + plen] = data[FRAGMENT_HEADER_SIZE:]
                slot.missing -= 1
                if slot.missing == 0:
                    self._complete(stream, fid, slot, now)
                return
        try:
            msg = codec.decode(data)
        except DecodeError as exc:
            self._count_decode_error(data, exc.reason)
            return
        if isinstance(msg, Heartbeat):
            stream = self._stream(msg.stream_id, msg.seq, addr, now)
            if stream is not None:
                self._count_seq(stream, msg.seq, size, now)
                self.liveness.heard(msg.stream_id, now)
        self._events.append(ControlReceived(msg, addr, now))

    # ------------------------------------------------------------------ internals

    def _fill(
        self,
        stream: _Stream,
        frame_id: int,
        slot: _Slot,
        index: int,
        offset: int,
        plen: int,
        data: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
        got = slot.got
        if got[index]:
            stream.stats.duplicates += 1
            return
        got[index] = 1
        slot.missing -= 1
        payload = data[FRAGMENT_HEADER_SIZE:]
        buf = slot.buf
        if buf is None:
            if slot.missing > 0 and slot.first is None:
                slot.first = (offset, bytes(payload))
                return
            buf = slot.buf = bytearray(slot.frame_len)
            if slot.first is not None:
                first_offset, first = slot.first
                buf[first_offset : first_offset + len(first)] = first
                slot.first = None
        buf[offset : offset + plen] = payload
        if slot.missing == 0:
            self._complete(stream, frame_id, slot, now)

    def _receive_fragment(
        self,
        h: tuple[int, ...],
        data: bytes | bytearray | memoryview,
        size: int,
        addr: Address,
        now: float,
    ) -> None:
        """Every fragment the hot path did not take: new frames, new streams, errors."""
        (_, _, _, _, stream_id, seq, frame_id, index, count, frame_len, offset, plen, ts) = h
        stream = self._streams.get(stream_id)
        if plen != size - FRAGMENT_HEADER_SIZE or index >= count or frame_len < count:
            self._fragment_error(stream, index, count, frame_len, offset, plen, size)
            return
        if (offset, plen) != fragment_geometry(index, count, frame_len):
            self._fragment_error(stream, index, count, frame_len, offset, plen, size)
            return
        if stream is None:
            stream = self._stream(stream_id, seq, addr, now)
            if stream is None:
                return
        self._count_seq(stream, seq, size, now)
        self.liveness.heard(stream_id, now)
        slot = stream.slots.get(frame_id)
        if slot is None:
            if not self._in_window(stream, frame_id):
                return
            resolved = stream.resolved
            if resolved is not None and not 0 < ((frame_id - resolved) & _MASK) < _HALF:
                stream.stats.late += 1
                return
            slot = self._open(stream, frame_id, frame_len, count, ts, now)
            if not slot.live:
                return
        elif not slot.live:  # dead frame: already reported
            return
        elif slot.frame_len != frame_len or slot.frag_count != count or slot.capture_ts_ns != ts:
            self._kill(stream, frame_id, slot, DropReason.CONFLICT)
            return
        self._fill(stream, frame_id, slot, index, offset, plen, data, now)

    def _in_window(self, stream: _Stream, frame_id: int) -> bool:
        """Whether a new frame id is close enough to what we know to open a slot.

        A frame id more than :data:`MAX_FRAME_JUMP` ahead of the newest frame seen, or more
        than :data:`MAX_MISORDER` behind it, is taken only when a later frame confirms the
        jump (RFC 3550 A.1's probation): otherwise one corrupted header could move the
        stream's cursor far ahead and make every real frame late. A confirmed jump
        re-synchronises the stream: frames in flight are dropped (``evicted``) and the frames
        skipped over are not counted (unknowable).
        """
        newest = stream.newest
        if newest is None:
            stream.newest = frame_id
            return True
        ahead = serial_diff(frame_id, newest)
        if -MAX_MISORDER <= ahead <= MAX_FRAME_JUMP:
            if ahead > 0:
                stream.newest = frame_id
            return True
        candidate = stream.jump_candidate
        if candidate is not None and 0 < serial_diff(frame_id, candidate) <= MAX_FRAME_JUMP:
            for fid in list(stream.slots):
                slot = stream.slots.pop(fid)
                if slot.live:
                    self._drop_event(stream, fid, DropReason.EVICTED)
                self._release(slot)
            stream.resolved = None
            stream.newest = frame_id
            stream.jump_candidate = None
            stream.stats.resyncs += 1
            return True
        stream.jump_candidate = frame_id
        errors = stream.stats.decode_errors
        errors["frame_id_jump"] = errors.get("frame_id_jump", 0) + 1
        return False

    def _fragment_error(
        self,
        stream: _Stream | None,
        index: int,
        count: int,
        frame_len: int,
        offset: int,
        plen: int,
        size: int,
    ) -> None:
        try:
            codec.check_fragment(index, count, frame_len, offset, plen, size - FRAGMENT_HEADER_SIZE)
            reason = "bad_geometry"  # unreachable in practice: the checks agree
        except DecodeError as exc:
            reason = exc.reason
        if stream is not None:
            errors = stream.stats.decode_errors
            errors[reason] = errors.get(reason, 0) + 1
        else:
            self.decode_errors[reason] += 1

    def _count_decode_error(self, data: bytes | bytearray | memoryview, reason: str) -> None:
        stream = None
        if len(data) >= 14 and reason not in ("bad_magic", "bad_version", "truncated"):
            stream = self._streams.get(int.from_bytes(data[6:10], "big"))
        if stream is not None:
            errors = stream.stats.decode_errors
            errors[reason] = errors.get(reason, 0) + 1
        else:
            self.decode_errors[reason] += 1

    def _stream(self, stream_id: int, seq: int, addr: Address, now: float) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        if len(self._streams) >= self.limits.max_streams:
            heard = {sid: self._last_heard(st) for sid, st in self._streams.items()}
            idle = [
                sid for sid, t in heard.items() if now - t >= self.limits.stream_idle_timeout
            ]
            if not idle:
                self.decode_errors["too_many_streams"] += 1
                return None
            self.forget_stream(min(idle, key=heard.__getitem__))
        stream = _Stream(stream_id, addr, serial_add(seq, -1), now)
        self._streams[stream_id] = stream
        self._events.append(StreamStarted(stream_id, addr))
        return stream

    def _last_heard(self, stream: _Stream) -> float:
        last = self.liveness.last_heard(stream.stats.stream_id)
        return stream.stats.first_heard if last is None else last

    @staticmethod
    def _count_seq(stream: _Stream, seq: int, size: int, now: float) -> None:
        """Count a datagram in the stream's sequence space (RFC 3550 A.1/A.3 style).

        A jump of more than :data:`MAX_SEQ_JUMP` sequence numbers (either way) is believed
        only when the next datagram follows it; then the window restarts there without
        counting the jump as loss.
        """
        stats = stream.stats
        stats.datagrams += 1
        stats.bytes += size
        d = (seq - stream.highest_seq) & _MASK
        if 0 < d <= MAX_SEQ_JUMP:
            stream.highest_seq = seq
            stream.seq_span += d
        elif d >= SERIAL_MOD - MAX_SEQ_JUMP:
            back = SERIAL_MOD - d  # how far behind the highest
            if back >= stream.seq_span:  # older than anything seen: widen the window
                stream.seq_span = back + 1
        elif d:
            candidate, stream.seq_candidate = stream.seq_candidate, seq
            if candidate is not None and (seq - candidate) & _MASK == 1:
                received = stats.datagrams - stats.duplicates
                lost = max(0, stream.seq_span - (received - 1))
                stream.highest_seq = seq
                stream.seq_span = received + lost
                stream.seq_candidate = None

    @staticmethod
    def _update_lost(stream: _Stream) -> None:
        stats = stream.stats
        stats.lost = max(0, stream.seq_span - (stats.datagrams - stats.duplicates))

    def _open(
        self, stream: _Stream, frame_id: int, frame_len: int, count: int, ts: int, now: float
    ) -> _Slot:
        limits = self.limits
        deadline = now + limits.frame_timeout
        if frame_len > limits.max_frame_len:
            slot = _Slot(frame_len, count, ts, deadline, live=False)
            self._add_slot(stream, frame_id, slot)
            self._drop_event(stream, frame_id, DropReason.TOO_LARGE)
            return slot
        while len(stream.slots) >= limits.max_frames_in_flight:
            oldest = min(stream.slots, key=lambda fid: serial_diff(fid, frame_id))
            self._resolve(stream, oldest, DropReason.EVICTED)
        while self._bytes_in_flight + frame_len > limits.max_bytes_in_flight:
            victim = self._oldest_live_slot()
            if victim is None:
                break
            self._resolve(victim[0], victim[1], DropReason.EVICTED)
        slot = _Slot(frame_len, count, ts, deadline, live=True)
        self._bytes_in_flight += frame_len
        self._add_slot(stream, frame_id, slot)
        return slot

    def _add_slot(self, stream: _Stream, frame_id: int, slot: _Slot) -> None:
        stream.slots[frame_id] = slot
        if self._timer is None and not self._timer_dirty:
            self._timer = slot.deadline

    def _oldest_live_slot(self) -> tuple[_Stream, int] | None:
        best: tuple[_Stream, int] | None = None
        best_deadline = 0.0
        for stream in self._streams.values():
            for fid, slot in stream.slots.items():
                if slot.live and (best is None or slot.deadline < best_deadline):
                    best, best_deadline = (stream, fid), slot.deadline
        return best

    def _release(self, slot: _Slot) -> None:
        if slot.live:
            self._bytes_in_flight -= slot.frame_len
            slot.live = False
            slot.buf = slot.first = None
        if slot.deadline == self._timer:
            self._timer_dirty = True

    def _kill(self, stream: _Stream, frame_id: int, slot: _Slot, reason: DropReason) -> None:
        """Report the frame dropped now; keep a dead slot to absorb its other fragments."""
        self._release(slot)
        self._drop_event(stream, frame_id, reason)

    def _drop_event(
        self, stream: _Stream, frame_id: int, reason: DropReason, count: int = 1
    ) -> None:
        dropped = stream.stats.frames_dropped
        dropped[reason] = dropped.get(reason, 0) + count
        self._events.append(FrameDropped(stream.stats.stream_id, frame_id, reason, count))

    def _resolve(self, stream: _Stream, frame_id: int, reason: DropReason | None) -> None:
        """Settle every frame up to ``frame_id``: older ones late or lost, then this one.

        ``reason`` is ``None`` when ``frame_id`` completed (the caller emits that event).
        """
        resolved = stream.resolved
        older = sorted(
            (fid for fid in stream.slots if serial_diff(fid, frame_id) < 0),
            key=lambda fid: serial_diff(fid, frame_id),
        )
        cursor = serial_add(resolved, 1) if resolved is not None else None
        for fid in older:
            if cursor is not None and fid != cursor:
                self._drop_event(stream, cursor, DropReason.LOST, serial_diff(fid, cursor))
            slot = stream.slots.pop(fid)
            if slot.live:
                self._drop_event(stream, fid, DropReason.LATE)
            self._release(slot)
            cursor = serial_add(fid, 1)
        if cursor is not None and cursor != frame_id:
            self._drop_event(stream, cursor, DropReason.LOST, serial_diff(frame_id, cursor))
        slot = stream.slots.pop(frame_id)
        if reason is not None and slot.live:
            self._drop_event(stream, frame_id, reason)
        self._release(slot)
        stream.resolved = frame_id

    def _complete(self, stream: _Stream, frame_id: int, slot: _Slot, now: float) -> None:
        buf = slot.buf
        assert buf is not None
        slot.buf = None  # ownership passes to the event: the buffer is never written again
        slot.live = False
        self._bytes_in_flight -= slot.frame_len
        self._resolve(stream, frame_id, None)
        stream.stats.frames_completed += 1
        self._events.append(
            FrameCompleted(
                Frame(
                    memoryview(buf).toreadonly(),
                    frame_id,
                    slot.capture_ts_ns,
                    stream.stats.stream_id,
                    now,
                )
            )
        )
