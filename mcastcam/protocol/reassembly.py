"""Reassemble frames from symbol datagrams, protocol version 2 (pure; docs/protocol.md §4).

The :class:`Reassembler` takes datagrams and ``now`` and queues events; it never reads a
clock or touches a socket. Its promises:

* A :class:`FrameCompleted` is byte-identical to the frame that was sent: source symbol
  ``esi`` is frame bytes ``[esi·T, min((esi+1)·T, F))`` by construction (no offset field),
  every symbol of a frame must repeat its first one's (F, T, CRC-32C, capture time, FEC
  scheme, R, key id, run nonce) or the frame is dropped as a ``conflict``, and every
  complete frame's CRC-32C is checked before it is published (``corrupt`` otherwise).
* A frame is complete when its k source symbols are in (no decoding), or when the RaptorQ
  decoder (:class:`~mcastcam.protocol.fec.FrameDecoder`) rebuilds it from source and repair
  symbols. The decoder is created only once a repair symbol is held and k distinct symbols
  are in: a receiver that loses nothing decodes nothing.
* Every frame id after the first one the receiver resolves ends in exactly one event:
  completed, or dropped with a reason (:class:`DropReason`). Frames come out in frame-id
  order: once frame *n* completes, a symbol of any older frame is ``late``.
* Memory is bounded: streams, frames in flight per stream, bytes in flight overall (frame
  buffers plus held repair symbols), repair symbols held per frame, and the declared frame
  length (refused before anything is allocated).
* With a key, nothing from a datagram whose tag was not checked reaches a client: a frame is
  published only after its frame AEAD verified (§8.3a), and unverified symbols touch only
  their own frame entry (not the stream table, liveness, replay window or loss counters).

For loss repair it also says, as early as it is certain, when a frame with FEC cannot
decode from its planned symbols (the symbols still planned cannot make k + 2, or a newer frame
begins), or that its tail was lost (its symbols stopped: nothing for ``stall_gap`` seconds and
at least the stream's usual frame span, learnt from its complete frames, since its first
symbol): :class:`FrameIncomplete`, which the receiver session turns into NACKs
(:class:`~mcastcam.protocol.repair.NackScheduler`). Without the stall rule a frame whose last
datagrams were lost waited for the next frame (33 ms at 30 fps) to be said incomplete, and when
that next frame completed first — one burst at 720p — it was dropped ``late`` before its NACK
was due.
"""

from __future__ import annotations

import collections
import struct
from dataclasses import dataclass, field
from typing import Any

from mcastcam.errors import DecodeError
from mcastcam.protocol import codec
from mcastcam.protocol.auth import FRAME_AAD_BYTES, FRAME_TAG, TAG_BYTES, Aead, RunState, open_frame
from mcastcam.protocol.codec import SYMBOL_HEADER, Heartbeat
from mcastcam.protocol.events import (
    ControlReceived,
    DropReason,
    Event,
    FrameCompleted,
    FrameDropped,
    FrameIncomplete,
    StreamForgotten,
    StreamStarted,
)
from mcastcam.protocol.fec import FrameDecoder, decode_overhead, repair_capacity
from mcastcam.protocol.frame import Frame
from mcastcam.protocol.integrity import crc32c
from mcastcam.protocol.liveness import Liveness
from mcastcam.protocol.serial import SERIAL_MOD, serial_add, serial_diff
from mcastcam.protocol.trust import Verifier
from mcastcam.protocol.wire import MAGIC, SYMBOL_HEADER_SIZE, VERSION, FecScheme, Flag, Kind

_MASK = SERIAL_MOD - 1
_HALF = SERIAL_MOD >> 1
_UNPACK = SYMBOL_HEADER.unpack_from
_SOURCE = int(Kind.SOURCE)
_REPAIR = int(Kind.REPAIR)
_NO_FEC = int(FecScheme.NONE)
_AUTH = int(Flag.AUTH)
_ENCRYPTED = int(Flag.ENCRYPTED)
_CHACHA = int(Flag.CHACHA)
_KEYED_MIN = SYMBOL_HEADER_SIZE + TAG_BYTES + 1
_KEYED_OVERHEAD = SYMBOL_HEADER_SIZE + TAG_BYTES
_PACK = SYMBOL_HEADER.pack
_TAG_AT = struct.Struct(f"{TAG_BYTES}s").unpack_from  # a symbol's tag, copied out
_NEVER = float("inf")

INITIAL_FRAME_SPAN = 0.02
"""Seconds a stream's frames are assumed to take from first to last symbol until one of its
frames completes (then it is learnt: see :attr:`ReassemblyLimits.stall_gap`)."""

MAX_FRAME_JUMP = 3000
"""Frame ids further ahead than this need a second frame to confirm the jump (probation)."""
MAX_MISORDER = 16
"""New frame ids further behind the newest than this need confirming too (RFC 3550 A.1)."""
MAX_SEQ_JUMP = 1 << 20
"""Sequence numbers further from the highest than this need the next one to confirm them."""

Address = tuple[str, int]


def symbol_error(data: bytes | bytearray | memoryview) -> str | None:
    """Why a symbol datagram (kind 1 or 16) is refused by a receiver without a key, or None.

    The reason tokens are :func:`~mcastcam.protocol.codec.decode_symbol_header`'s (§4:
    ``bad_flags``, ``bad_geometry``, ``unknown_fec``, ``bad_fec``, ``bad_run``, ``bad_esi``,
    ``length_mismatch``, ``truncated`` …), plus ``needs_key`` for a valid symbol with the
    ``AUTH`` flag. The declared frame length against the receiver's maximum (``too_large``)
    is the reassembler's to check: it is a frame's fate, not a datagram's.
    """
    try:
        h = codec.decode_symbol_header(data)
    except DecodeError as exc:
        return exc.reason
    if h[3] & _AUTH:
        return "needs_key"
    return None


@dataclass(frozen=True, slots=True)
class ReassemblyLimits:
    """Bounds of a :class:`Reassembler`.

    Attributes:
        max_frame_len: largest declared frame length accepted, bytes.
        max_bytes_in_flight: sum of the buffers of incomplete frames and of the repair
            symbols they hold, all streams, bytes.
        max_frames_in_flight: incomplete frames per stream.
        max_streams: streams tracked at once. When the table is full, a newcomer evicts
            (least recently heard first, never :attr:`Reassembler.keep`) a stream idle past
            ``stream_idle_timeout``; a newcomer that sends a symbol may also evict a stream
            known only from heartbeats, then one that never completed a frame, and a
            heartbeat newcomer one known only from heartbeats for ``stream_probation``
            seconds; a stream that completed a frame is evicted only when idle. Else the
            newcomer is refused (``too_many_streams``).
        frame_timeout: seconds from a frame's first symbol until it is dropped (its
            deadline: still incomplete then, it is ``unrepairable``).
        stream_idle_timeout: seconds of silence after which a stream may be forgotten.
        stream_probation: seconds a stream known only from heartbeats is safe from being
            evicted by another heartbeat (so a flood of invented ids churns at most
            ``max_streams`` entries per probation).
        stall_gap: seconds without a symbol of an incomplete frame with FEC after which,
            once the stream's frame span (first to last symbol of its recent complete
            frames: a rising maximum that decays by 1/8 per frame) has passed since the
            frame's first symbol, its tail counts as lost: :class:`FrameIncomplete`.
    """

    max_frame_len: int = 16 << 20
    max_bytes_in_flight: int = 32 << 20
    max_frames_in_flight: int = 8
    max_streams: int = 16
    frame_timeout: float = 1.0
    stream_idle_timeout: float = 10.0
    stream_probation: float = 1.0
    stall_gap: float = 0.003


@dataclass(slots=True)
class StreamStats:
    """Counters of one stream (all totals since the stream started).

    ``datagrams``/``bytes`` count valid datagrams and their UDP payload bytes;
    ``lost`` is datagrams expected from the sequence numbers but not received
    (RFC 3550 A.3 style: ``expected - (received - duplicates)``, never negative);
    ``loss_bursts`` counts gaps in the sequence numbers (one per run of missing ones, so
    ``lost / loss_bursts`` is the mean burst length); ``duplicates`` are symbols received
    twice; ``late`` are source symbols of frames already resolved; ``resyncs`` counts
    confirmed frame-id jumps (see ``MAX_FRAME_JUMP``).

    Frames: ``frames_completed`` = ``complete`` (every source symbol arrived, nothing
    decoded) + ``repaired_fec`` (decoded from the planned repair symbols) +
    ``repaired_nack`` (needed a repair symbol with ESI ≥ k + R, sent after a NACK);
    ``unrepairable`` frames had symbols but were still incomplete at their deadline
    (dropped ``timeout``, or ``late`` when a newer frame was resolved); ``corrupt`` frames
    completed with a CRC-32C that does not match (dropped, never published).
    ``repair_datagrams`` counts repair symbols received (``repair_bytes`` their bytes),
    ``repair_unused`` those that arrived for a frame already resolved or complete;
    ``decodes`` is how many frames the FEC decoder was started for.
    When the stream was last heard is kept by the reassembler's
    :class:`~mcastcam.protocol.liveness.Liveness`, not here.

    With a key (§8.5) a symbol held without its own tag checked is counted (``datagrams``,
    ``bytes``, sequence numbers, ``repair_datagrams``) only once its frame's frame AEAD
    verified, or when the slow path verified it; the symbols of a frame that never verifies
    count as lost.
    """

    stream_id: int
    addr: Address
    first_heard: float
    datagrams: int = 0
    bytes: int = 0
    lost: int = 0
    loss_bursts: int = 0
    duplicates: int = 0
    late: int = 0
    frames_completed: int = 0
    complete: int = 0
    repaired_fec: int = 0
    repaired_nack: int = 0
    unrepairable: int = 0
    corrupt: int = 0
    repair_datagrams: int = 0
    repair_bytes: int = 0
    repair_unused: int = 0
    decodes: int = 0
    resyncs: int = 0
    frames_dropped: dict[str, int] = field(default_factory=dict)
    decode_errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (``repair_overhead``: repair datagrams per source datagram)."""
        source = self.datagrams - self.repair_datagrams
        return {
            "stream_id": self.stream_id,
            "address": f"{self.addr[0]}:{self.addr[1]}",
            "datagrams": self.datagrams,
            "bytes": self.bytes,
            "lost": self.lost,
            "loss_bursts": self.loss_bursts,
            "duplicates": self.duplicates,
            "late": self.late,
            "frames_completed": self.frames_completed,
            "complete": self.complete,
            "repaired_fec": self.repaired_fec,
            "repaired_nack": self.repaired_nack,
            "unrepairable": self.unrepairable,
            "corrupt": self.corrupt,
            "repair_datagrams": self.repair_datagrams,
            "repair_bytes": self.repair_bytes,
            "repair_unused": self.repair_unused,
            "repair_overhead": round(self.repair_datagrams / source, 4) if source > 0 else 0.0,
            "decodes": self.decodes,
            "resyncs": self.resyncs,
            "frames_dropped": dict(self.frames_dropped),
            "decode_errors": dict(self.decode_errors),
        }


def _count(stats: StreamStats, reason: str) -> None:
    """One more refused datagram of a stream, by reason."""
    errors = stats.decode_errors
    errors[reason] = errors.get(reason, 0) + 1


class _Slot:
    """One frame being reassembled (or a dead frame absorbing its leftover symbols)."""

    __slots__ = (
        "aflags",
        "asig",
        "base",
        "buf",
        "capture_ts_ns",
        "cost",
        "crc",
        "deadline",
        "decoder",
        "eager",
        "esi_end",
        "fec",
        "first",
        "flagged",
        "frame_len",
        "got",
        "k",
        "last",
        "last_at",
        "last_len",
        "live",
        "missing",
        "nack_esi",
        "opened_at",
        "overhead",
        "repair_planned",
        "repairs",
        "scheme",
        "sig",
        "stall_at",
        "state",
        "symbol_size",
        "unverified",
        "used_nack",
        "watch_esi",
    )

    def __init__(self, h: tuple[int, ...], deadline: float, live: bool, now: float = 0.0) -> None:
        t, f = h[8], h[9]
        self.sig = h[8:16]  # (T, F, crc, ts, scheme, key_id, R, run_nonce): must all repeat
        self.symbol_size = t
        self.frame_len = f
        self.crc = h[10]
        self.capture_ts_ns = h[11]
        self.scheme = h[12]
        self.repair_planned = h[14]
        k = self.k = -(-f // t)
        self.last = k - 1  # the last source ESI, the short one
        self.last_len = f - (k - 1) * t
        self.nack_esi = k + self.repair_planned  # ESIs from here on came after a NACK
        fec = self.fec = self.scheme != _NO_FEC  # symbol_error checked it is 0, 1 or 2
        self.overhead = decode_overhead(self.scheme)  # decodable from k + this
        self.esi_end = k + repair_capacity(self.scheme, k)  # repair ESIs stay below this
        # With FEC, the frame's last source symbol arriving while others are missing is when
        # to check whether the planned repair can still be enough (else: FrameIncomplete).
        self.watch_esi = k - 1 if fec else -1
        self.deadline = deadline
        self.live = live  # False: dead (already reported), absorbing leftover symbols
        self.cost = f if live else 0  # bytes counted in flight
        # The frame's buffer is allocated when its second source symbol arrives, so a flood
        # of lone symbols declaring huge frames costs no allocation (or zeroing).
        self.buf: bytearray | None = None
        self.first: tuple[int, bytes] | None = None  # (esi, payload) until then
        self.got = bytearray(k if live else 0)
        self.missing = k  # source symbols still missing
        self.repairs: dict[int, bytes] | None = None  # held repair symbols, before decoding
        self.decoder: FrameDecoder | None = None
        self.used_nack = False  # a symbol with ESI ≥ k + R was fed to the decoder
        self.flagged = False  # FrameIncomplete said once
        # With a key (§8.5): the run of the verified symbol that opened the frame, that
        # symbol's flags and header fields as sent (key id included), room for the frame
        # AEAD's associated data before the object in ``buf``, the symbols held without
        # their own tag checked (esi -> (seq, tag)), and whether every further symbol is
        # checked on arrival (after the frame AEAD failed once).
        self.state: RunState | None = None
        self.aflags = 0
        self.asig: tuple[int, ...] = ()
        self.base = 0
        self.unverified: dict[int, tuple[int, bytes]] = {}
        self.eager = False
        self.opened_at = now  # its first symbol
        self.last_at = now  # its latest symbol
        self.stall_at = _NEVER  # when to check for a lost tail (FEC frames in flight only)

    def held(self) -> int:
        """Distinct symbols in hand (source and repair)."""
        if self.decoder is not None:
            return self.decoder.distinct
        return self.k - self.missing + (len(self.repairs) if self.repairs else 0)


class _Stream:
    __slots__ = (
        "had_symbols",
        "highest_seq",
        "jump_candidate",
        "newest",
        "resolved",
        "seq_candidate",
        "seq_span",
        "slots",
        "span",
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
        self.had_symbols = False  # a symbol datagram arrived (not known from heartbeats only)
        self.span = INITIAL_FRAME_SPAN  # seconds from a frame's first to its last symbol


class Reassembler:
    """Sans-IO reassembly of every stream arriving on one socket.

    Drive it with :meth:`receive_datagram` for each datagram and :meth:`handle_timer` at
    :meth:`get_timer`; drain :meth:`next_event` after each call.

    Args:
        limits: the bounds (defaults: :class:`ReassemblyLimits`).
        liveness: where "last heard" lives: the reassembler reports every heartbeat and
            every symbol the hot path does not take (a frame's first two source symbols,
            which open it and allocate its buffer, and repair symbols; not every datagram)
            and reads it back to find idle streams. Default: its own, forgotten with the
            streams.
        verifier: with a key (:class:`~mcastcam.protocol.trust.Verifier`): control datagrams
            and every symbol that would create state (a new stream, run or frame) have their
            tag checked first, before anything else reads them; the other symbols of a frame
            opened by a verified one are checked lazily (§8.5): matched against it, held with
            their ``seq`` and tag, and checked all at once by the frame AEAD (§8.3a) when the
            frame is complete; a failed frame AEAD checks each held symbol's own tag (the slow
            path). Refusals are counted like decode errors (``unauthenticated``, ``bad_tag``,
            ``bad_frame_tag``, ``replayed``, ``late``, ``conflict``, ``duplicate`` …).
    """

    def __init__(
        self,
        limits: ReassemblyLimits | None = None,
        liveness: Liveness | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.limits = limits or ReassemblyLimits()
        self.verifier = verifier
        self._owns_liveness = liveness is None
        self.liveness = liveness if liveness is not None else Liveness()
        self._streams: dict[int, _Stream] = {}
        self._events: collections.deque[Event] = collections.deque()
        self._bytes_in_flight = 0
        self._timer: float | None = None
        self._timer_dirty = False
        self.decode_errors: collections.Counter[str] = collections.Counter()
        """Datagrams refused before a stream could be named, by reason."""
        self.keep: int | None = None
        """A stream id never evicted to make room (the receiver session's followed stream)."""
        self.evicted: collections.Counter[str] = collections.Counter()
        """Streams evicted to make room for a new one, by :class:`StreamForgotten` reason."""
        self._opening: tuple[int, tuple[int, ...], RunState | None] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def bytes_in_flight(self) -> int:
        """Bytes allocated to incomplete frames (buffers and held repair symbols)."""
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

    def held(self, stream_id: int, frame_id: int) -> int | None:
        """Distinct symbols held of an incomplete frame, or ``None`` if it is not in flight."""
        stream = self._streams.get(stream_id)
        slot = None if stream is None else stream.slots.get(frame_id)
        if slot is None or not slot.live:
            return None
        return slot.held()

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
        """The earliest frame deadline or lost-tail check (monotonic seconds), or ``None``."""
        if self._timer_dirty:
            deadlines = [
                min(s.deadline, s.stall_at)
                for st in self._streams.values()
                for s in st.slots.values()
            ]
            self._timer = min(deadlines) if deadlines else None
            self._timer_dirty = False
        return self._timer

    def handle_timer(self, now: float) -> None:
        """Drop frames past their deadline; say which frames lost their tail by ``now``.

        A frame whose deadline is at or before ``now`` is dropped (``timeout``,
        unrepairable); a frame with FEC whose symbols stopped (see ``stall_gap``) gets its
        :class:`FrameIncomplete`.
        """
        gap = self.limits.stall_gap
        for stream in list(self._streams.values()):
            expired = [fid for fid, s in stream.slots.items() if s.deadline <= now]
            if expired:
                ref = expired[0]
                expired.sort(key=lambda fid: serial_diff(fid, ref))
                for fid in expired:
                    if fid in stream.slots:
                        self._resolve(stream, fid, DropReason.TIMEOUT)
            for fid, slot in stream.slots.items():
                if slot.stall_at <= now:  # live, unflagged, with FEC (else _NEVER)
                    due = max(slot.last_at, slot.opened_at + stream.span) + gap
                    if due > now:  # symbols still came, or the frame is young: later
                        slot.stall_at = due
                    else:
                        self._flag(stream, fid, slot, now)
        self._timer_dirty = True

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, addr: Address, now: float
    ) -> None:
        """Take one UDP payload from ``addr`` received at ``now`` (monotonic seconds).

        Invalid datagrams are counted by reason (:attr:`decode_errors`, or the stream's
        ``decode_errors`` when its prefix named a tracked stream) and dropped; this never
        raises for anything the network sends.
        """
        verifier = self.verifier
        if verifier is not None:
            if self._keyed_symbol(data, now):
                return
            try:  # it would create state: verified first (§8.5)
                plain = verifier.open(data, now)
            except DecodeError as exc:
                self._count_decode_error(data, exc.reason)
                return
            if plain[3] in (_SOURCE, _REPAIR):
                h = _UNPACK(data)
                self._opening = (h[3], h[8:16], verifier.runs.cached((h[13], h[4], h[15])))
                try:
                    self._receive_symbol(_UNPACK(plain), plain, len(data), addr, now)
                finally:
                    self._opening = None
                return
            data = plain
        size = len(data)
        if size >= SYMBOL_HEADER_SIZE:
            h = _UNPACK(data)
            if h[0] == MAGIC and h[1] == VERSION:
                kind = h[2]
                if kind == _SOURCE and not h[3]:
                    # The hot path: a source symbol of a frame in flight whose header matches.
                    stream = self._streams.get(h[4])
                    slot = None if stream is None else stream.slots.get(h[6])
                    if slot is None or slot.buf is None or h[8:16] != slot.sig:
                        self._receive_symbol(h, data, size, addr, now)
                        return
                    assert stream is not None
                    slot.last_at = now
                    esi = h[7]
                    plen = size - SYMBOL_HEADER_SIZE
                    if esi < slot.last:
                        if plen != slot.symbol_size:
                            self._receive_symbol(h, data, size, addr, now)
                            return
                    elif esi != slot.last or plen != slot.last_len:
                        self._receive_symbol(h, data, size, addr, now)
                        return
                    seq = h[5]
                    if (seq - stream.highest_seq) & _MASK == 1:  # the usual case: the next one
                        stream.highest_seq = seq
                        stream.seq_span += 1
                        stats = stream.stats
                        stats.datagrams += 1
                        stats.bytes += size
                    else:
                        self._count_seq(stream, seq, size, now)
                    got = slot.got
                    if got[esi]:
                        stream.stats.duplicates += 1
                        return
                    got[esi] = 1
                    offset = esi * slot.symbol_size
                    slot.buf[offset : offset + plen] = data[SYMBOL_HEADER_SIZE:]
                    slot.missing -= 1
                    if slot.missing == 0:
                        self._complete(stream, h[6], slot, slot.buf, False, now)
                    elif slot.repairs is not None or esi == slot.watch_esi:
                        self._after_source(stream, h[6], slot, esi, now)
                    return
                if kind in (_SOURCE, _REPAIR):
                    self._receive_symbol(h, data, size, addr, now)
                    return
        try:
            msg = codec.decode(data)
        except DecodeError as exc:
            self._count_decode_error(data, exc.reason)
            return
        if msg.flags & _AUTH:  # tagged: only a receiver with the key can check it (§2)
            self._count_decode_error(data, "needs_key")
            return
        if isinstance(msg, Heartbeat):
            stream = self._stream(msg.stream_id, msg.seq, addr, now, symbol=False)
            if stream is not None:
                self._count_seq(stream, msg.seq, size, now)
                self.liveness.heard(msg.stream_id, now)
        self._events.append(ControlReceived(msg, addr, now))

    # ------------------------------------------------------------------ with a key (§8.5)

    def _keyed_symbol(self, data: bytes | bytearray | memoryview, now: float) -> bool:
        """Take a tagged symbol of a frame already opened by a verified one, lazily.

        Returns ``False`` when the datagram must be verified on its own first (it would
        create state: a new stream or frame; or it is a repair symbol of a recently finished
        frame, which feeds the loss counters), ``True`` when it was handled here: stored
        without its tag checked (the frame AEAD checks it with all the others), dropped
        without crypto (a symbol of a finished or dead frame: ``late``; a header that does
        not match the frame's verified one: ``conflict``; the same bytes as the symbol held
        for its ESI: ``duplicate``), or verified now (different bytes than the one held for
        its ESI, or its frame failed the frame AEAD once). Nothing here touches the stream's
        loss counters, liveness, the stream table or the replay window before a check passed.
        """
        size = len(data)
        if size < _KEYED_MIN:
            return False
        h = _UNPACK(data)
        kind = h[2]
        if h[0] != MAGIC or h[1] != VERSION or (kind != _SOURCE and kind != _REPAIR):
            return False
        if not h[3] & _AUTH:
            return False
        stream = self._streams.get(h[4])
        if stream is None:
            return False
        frame_id = h[6]
        slot = stream.slots.get(frame_id)
        if slot is None:
            resolved = stream.resolved
            if resolved is None:
                return False
            behind = (resolved - frame_id) & _MASK
            if behind >= _HALF:
                return False  # a newer frame: verified, it opens a slot
            if kind == _REPAIR and behind < MAX_MISORDER:
                return self._late_repair(stream, h, data, now)
            _count(stream.stats, "late")
            return True
        buf = slot.buf
        if (
            kind == _SOURCE
            and buf is not None  # None also when the frame is dead (released)
            and not slot.eager
            and h[3] == slot.aflags
            and h[8:16] == slot.asig
        ):
            # The hot path: a source symbol of a frame in flight, its ESI not held yet.
            esi = h[7]
            last = slot.last
            got = slot.got
            t = slot.symbol_size
            n = size - _KEYED_OVERHEAD
            if esi <= last and not got[esi] and n == (t if esi < last else slot.last_len):
                slot.last_at = now
                slot.unverified[esi] = (h[5], _TAG_AT(data, size - TAG_BYTES)[0])
                got[esi] = 1
                offset = slot.base + esi * t
                buf[offset : offset + n] = data[SYMBOL_HEADER_SIZE:-TAG_BYTES]
                slot.missing -= 1
                if slot.missing == 0:
                    self._complete(stream, frame_id, slot, buf, False, now)
                elif slot.repairs is not None or esi == slot.watch_esi:
                    self._after_source(stream, frame_id, slot, esi, now)
                return True
        if not slot.live or slot.state is None:
            _count(stream.stats, "late")
            return True
        if h[3] != slot.aflags or h[8:16] != slot.asig:
            _count(stream.stats, "conflict")
            return True
        return self._keyed_slow(stream, frame_id, slot, h, data, now)

    def _keyed_slow(
        self,
        stream: _Stream,
        frame_id: int,
        slot: _Slot,
        h: tuple[int, ...],
        data: bytes | bytearray | memoryview,
        now: float,
    ) -> bool:
        """:meth:`_keyed_symbol` for every case but a new source ESI of a frame with a buffer."""
        errors = stream.stats.decode_errors
        kind = h[2]
        esi = h[7]
        plen = len(data) - _KEYED_OVERHEAD
        if kind == _SOURCE:
            if esi > slot.last:
                ok = False
            else:
                ok = plen == (slot.symbol_size if esi < slot.last else slot.last_len)
        else:
            ok = slot.fec and slot.k <= esi < slot.esi_end and plen == slot.symbol_size
        if not ok:
            errors["conflict"] = errors.get("conflict", 0) + 1
            return True
        slot.last_at = now
        state = slot.state
        verifier = self.verifier
        assert verifier is not None and state is not None
        verified = False
        payload = memoryview(data)[SYMBOL_HEADER_SIZE:-TAG_BYTES]
        if kind == _SOURCE:
            held: bytes | bytearray | memoryview | None = None
            if slot.got[esi]:
                held = self._held_source(slot, esi)
        else:
            held = slot.repairs.get(esi) if slot.repairs is not None else None
        if held is not None and bytes(held) == bytes(payload):  # (memoryview == is slow)
            errors["duplicate"] = errors.get("duplicate", 0) + 1
            return True
        if held is not None or slot.eager:
            try:
                verifier.check_symbol(state, data)
            except DecodeError as exc:
                errors[exc.reason] = errors.get(exc.reason, 0) + 1
                return True
            verified = True
            self._count_seq(stream, h[5], len(data), now)
            if kind == _REPAIR:
                stream.stats.repair_datagrams += 1
                stream.stats.repair_bytes += len(data)
        if held is not None:  # a verified symbol displaces a forged one (counted conflict)
            errors["conflict"] = errors.get("conflict", 0) + 1
            slot.unverified.pop(esi, None)
            self._replace(stream, frame_id, slot, esi, payload, now)
            return True
        if not verified:
            slot.unverified[esi] = (h[5], _TAG_AT(data, len(data) - TAG_BYTES)[0])
        if kind == _SOURCE:
            self._fill(stream, frame_id, slot, esi, payload, now)
        else:
            self._add_repair(stream, frame_id, slot, esi, payload, now)
            if slot.live and slot.repairs is not None and esi not in slot.repairs:
                slot.unverified.pop(esi, None)  # refused (no room, more than can help)
        return True

    def _late_repair(
        self,
        stream: _Stream,
        h: tuple[int, ...],
        data: bytes | bytearray | memoryview,
        now: float,
    ) -> bool:
        """A repair symbol of a frame just finished: verified on its own, then counted.

        Its frame needs it no more, but it feeds the loss counters (the planned repair
        usually arrives after the source symbols completed the frame). ``False`` when its
        run is not cached: the full path (:meth:`Verifier.open`) decides.
        """
        verifier = self.verifier
        assert verifier is not None
        state = verifier.runs.cached((h[13], h[4], h[15]))
        if state is None:
            return False
        stats = stream.stats
        try:
            verifier.check_symbol(state, data)
        except DecodeError as exc:
            _count(stats, exc.reason)
            return True
        size = len(data)
        self._count_seq(stream, h[5], size, now)
        self.liveness.heard(stats.stream_id, now)
        stats.repair_datagrams += 1
        stats.repair_bytes += size
        stats.repair_unused += 1
        return True

    def _held_source(self, slot: _Slot, esi: int) -> memoryview:
        first = slot.first
        if first is not None and first[0] == esi:
            return memoryview(first[1])
        assert slot.buf is not None
        start = slot.base + esi * slot.symbol_size
        end = start + (slot.last_len if esi == slot.last else slot.symbol_size)
        return memoryview(slot.buf)[start:end]

    def _replace(
        self,
        stream: _Stream,
        frame_id: int,
        slot: _Slot,
        esi: int,
        payload: memoryview,
        now: float,
    ) -> None:
        """Put a verified symbol where a forged one of the same ESI was held."""
        if esi < slot.k:
            first = slot.first
            if first is not None and first[0] == esi:
                slot.first = (esi, bytes(payload))
            else:
                assert slot.buf is not None
                start = slot.base + esi * slot.symbol_size
                slot.buf[start : start + len(payload)] = payload
        else:
            assert slot.repairs is not None
            slot.repairs[esi] = bytes(payload)
        if slot.decoder is not None:  # it was fed the forged one: start again
            slot.decoder = None
            self._try_decode(stream, frame_id, slot, now)

    def _symbol_size(self, slot: _Slot, esi: int) -> int:
        """The datagram size of a symbol of a keyed frame, bytes."""
        plen = slot.last_len if esi == slot.last else slot.symbol_size
        return _KEYED_OVERHEAD + plen

    def _frame_verified(self, stream: _Stream, frame_id: int, slot: _Slot, now: float) -> None:
        """The frame AEAD passed: every held symbol is genuine; count them now.

        Their sequence numbers enter the loss counters (in arrival order), the stream is
        heard, and the held repair symbols' seq64s are marked in the run's replay window
        (a repair symbol of a finished frame is verified and counted, so a replay of one
        must not count twice).
        """
        stats = stream.stats
        state = slot.state
        assert state is not None
        window = state.window
        full = _KEYED_OVERHEAD + slot.symbol_size
        last = slot.last
        k = slot.k
        pending = slot.unverified
        n = len(pending)
        if n and not slot.repairs:  # source symbols only: count them at once if in order
            seqs = [v[0] for v in pending.values()]
            first = seqs[0]
            if (first - stream.highest_seq) & _MASK == 1 and (seqs[-1] - first) & _MASK == n - 1:
                stream.highest_seq = seqs[-1]
                stream.seq_span += n
                stats.datagrams += n
                short = slot.symbol_size - slot.last_len if last in pending else 0
                stats.bytes += n * full - short
                slot.unverified = {}
                self.liveness.heard(stats.stream_id, now)
                return
        for esi, (seq, _tag) in pending.items():
            size = full if esi != last else _KEYED_OVERHEAD + slot.last_len
            if (seq - stream.highest_seq) & _MASK == 1:  # the usual case: the next one
                stream.highest_seq = seq
                stream.seq_span += 1
                stats.datagrams += 1
                stats.bytes += size
            else:
                self._count_seq(stream, seq, size, now)
            if esi >= k:
                stats.repair_datagrams += 1
                stats.repair_bytes += size
                if window.highest is not None:
                    window.update(window.estimate(seq))
        slot.unverified = {}
        self.liveness.heard(stats.stream_id, now)

    def _slow_path(self, stream: _Stream, frame_id: int, slot: _Slot, now: float) -> None:
        """The frame AEAD failed: check every held symbol's own tag, drop the forged ones.

        Forged symbols are counted ``bad_tag`` and removed (their ESIs are missing again);
        the frame keeps collecting (every further symbol of it is verified on arrival) and
        decoding, and NACKs as usual. If every held symbol is genuine, the sender sealed a
        frame that does not verify: dropped ``corrupt``. Counted: ``bad_frame_tag``.
        """
        stats = stream.stats
        errors = stats.decode_errors
        errors[FRAME_TAG] = errors.get(FRAME_TAG, 0) + 1
        slot.eager = True
        slot.decoder = None
        slot.used_nack = False  # decided again by the symbols the next decoder uses
        state = slot.state
        verifier = self.verifier
        assert state is not None and verifier is not None
        pending, slot.unverified = slot.unverified, {}
        sid = stats.stream_id
        t, k = slot.symbol_size, slot.k
        forged = 0
        for esi, (seq, tag) in pending.items():
            source = esi < k
            header = _PACK(
                MAGIC, VERSION, _SOURCE if source else _REPAIR, slot.aflags, sid, seq,
                frame_id, esi, *slot.asig,
            )
            if source:
                payload: bytes | memoryview = self._held_source(slot, esi)
            else:
                held = slot.repairs.get(esi) if slot.repairs is not None else None
                if held is None:
                    continue  # refused when it came: not held, nothing to check
                payload = held
            if verifier.verify_held(state, header, payload, tag):
                size = self._symbol_size(slot, esi)
                self._count_seq(stream, seq, size, now)
                if not source:
                    stats.repair_datagrams += 1
                    stats.repair_bytes += size
                continue
            forged += 1
            if source:
                first = slot.first
                if first is not None and first[0] == esi:
                    slot.first = None
                slot.got[esi] = 0
                slot.missing += 1
            else:
                assert slot.repairs is not None
                del slot.repairs[esi]
                freed = min(t, slot.cost)
                slot.cost -= freed
                self._bytes_in_flight -= freed
        if not forged:
            stats.corrupt += 1
            self._resolve(stream, frame_id, DropReason.CORRUPT)
            return
        errors["bad_tag"] = errors.get("bad_tag", 0) + forged
        if slot.missing == 0:
            assert slot.buf is not None
            self._complete(stream, frame_id, slot, slot.buf, False, now)
        elif slot.repairs:
            self._try_decode(stream, frame_id, slot, now)
        if slot.live and not slot.flagged and slot.fec:
            self._maybe_flag(stream, frame_id, slot, 0, now)

    # ------------------------------------------------------------------ internals

    def _receive_symbol(
        self,
        h: tuple[int, ...],
        data: bytes | bytearray | memoryview,
        size: int,
        addr: Address,
        now: float,
    ) -> None:
        """Every symbol the hot path did not take: new frames and streams, repair, errors."""
        kind, stream_id, seq, frame_id, esi = h[2], h[4], h[5], h[6], h[7]
        stream = self._streams.get(stream_id)
        error = symbol_error(data)
        if error is not None:
            if stream is not None:
                _count(stream.stats, error)
            else:
                self.decode_errors[error] += 1
            return
        if stream is None:
            stream = self._stream(stream_id, seq, addr, now, symbol=True)
            if stream is None:
                return
        stream.had_symbols = True
        self._count_seq(stream, seq, size, now)
        self.liveness.heard(stream_id, now)
        stats = stream.stats
        repair = kind == _REPAIR
        if repair:
            stats.repair_datagrams += 1
            stats.repair_bytes += size
        slot = stream.slots.get(frame_id)
        if slot is None:
            if not self._in_window(stream, frame_id):
                return
            resolved = stream.resolved
            if resolved is not None and not 0 < ((frame_id - resolved) & _MASK) < _HALF:
                if repair:
                    stats.repair_unused += 1
                else:
                    stats.late += 1
                return
            slot = self._open(stream, frame_id, h, now)
            if not slot.live:
                return
        elif not slot.live:  # dead frame: already reported
            if repair:
                stats.repair_unused += 1
            return
        elif h[8:16] != slot.sig:
            self._kill(stream, frame_id, slot, DropReason.CONFLICT)
            return
        slot.last_at = now
        if repair:
            self._add_repair(stream, frame_id, slot, esi, data[SYMBOL_HEADER_SIZE:], now)
        else:
            self._fill(stream, frame_id, slot, esi, data[SYMBOL_HEADER_SIZE:], now)

    def _fill(
        self,
        stream: _Stream,
        frame_id: int,
        slot: _Slot,
        esi: int,
        payload: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
        got = slot.got
        if got[esi]:
            stream.stats.duplicates += 1
            return
        got[esi] = 1
        slot.missing -= 1
        buf = slot.buf
        if buf is None:
            if slot.missing > 0 and slot.first is None:
                slot.first = (esi, bytes(payload))
                if slot.repairs is not None or esi == slot.watch_esi:
                    self._after_source(stream, frame_id, slot, esi, now)
                return
            buf = slot.buf = bytearray(slot.base + slot.frame_len)
            if slot.first is not None:
                first_esi, first = slot.first
                first_offset = slot.base + first_esi * slot.symbol_size
                buf[first_offset : first_offset + len(first)] = first
                slot.first = None
        offset = slot.base + esi * slot.symbol_size
        buf[offset : offset + len(payload)] = payload
        if slot.missing == 0:
            self._complete(stream, frame_id, slot, buf, False, now)
        elif slot.repairs is not None or esi == slot.watch_esi:
            self._after_source(stream, frame_id, slot, esi, now)

    def _source_payload(self, slot: _Slot, esi: int) -> bytes | bytearray:
        if slot.first is not None and slot.first[0] == esi:
            return slot.first[1]
        assert slot.buf is not None
        start = slot.base + esi * slot.symbol_size
        return slot.buf[start : start + (slot.last_len if esi == slot.last else slot.symbol_size)]

    def _after_source(
        self, stream: _Stream, frame_id: int, slot: _Slot, esi: int, now: float
    ) -> None:
        """A source symbol of an incomplete frame that holds repair symbols, or its last one."""
        if slot.repairs is not None:
            decoder = slot.decoder
            if decoder is None:
                self._try_decode(stream, frame_id, slot, now)
            else:
                self._feed(
                    stream, frame_id, slot, decoder, esi, self._source_payload(slot, esi), now
                )
        if slot.live and not slot.flagged and esi == slot.watch_esi:
            self._maybe_flag(stream, frame_id, slot, slot.repair_planned, now)

    def _maybe_flag(
        self, stream: _Stream, frame_id: int, slot: _Slot, still_planned: int, now: float
    ) -> None:
        """Flag the frame if even ``still_planned`` more symbols cannot make it decodable.

        Decodable means k + 2 distinct symbols with RaptorQ (§5), k with Reed–Solomon
        (§5a). With nothing more planned this is the frame's last planned symbol: incomplete
        now, it needs a NACK.
        """
        if slot.held() + still_planned < slot.k + slot.overhead:
            self._flag(stream, frame_id, slot, now)

    def _add_repair(
        self,
        stream: _Stream,
        frame_id: int,
        slot: _Slot,
        esi: int,
        payload: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
        stats = stream.stats
        t = slot.symbol_size
        if slot.repairs is None:
            slot.repairs = {}
        decoder = slot.decoder
        if decoder is None:
            repairs = slot.repairs
            if esi in repairs:
                stats.duplicates += 1
                return
            if len(repairs) >= slot.k + slot.overhead:
                stats.repair_unused += 1  # more than can ever help before the decoder starts
                return
            if self._bytes_in_flight + t > self.limits.max_bytes_in_flight:
                _count(stats, "repair_no_room")
                return
            repairs[esi] = bytes(payload)
            slot.cost += t
            self._bytes_in_flight += t
            self._try_decode(stream, frame_id, slot, now)
        else:
            if self._bytes_in_flight + t > self.limits.max_bytes_in_flight:
                _count(stats, "repair_no_room")
                return
            held = decoder.distinct
            if slot.state is not None:  # kept for a decoder rebuilt after the slow path
                assert slot.repairs is not None
                slot.repairs[esi] = bytes(payload)
            self._feed(stream, frame_id, slot, decoder, esi, payload, now)
            if slot.live and decoder.distinct > held:
                slot.cost += t
                self._bytes_in_flight += t
        if slot.live and not slot.flagged:
            self._maybe_flag(stream, frame_id, slot, max(0, slot.nack_esi - 1 - esi), now)

    def _feed(
        self,
        stream: _Stream,
        frame_id: int,
        slot: _Slot,
        decoder: FrameDecoder,
        esi: int,
        payload: bytes | bytearray | memoryview,
        now: float,
    ) -> None:
        """One symbol to a started decoder; completes the frame if it decodes."""
        dups = decoder.duplicates
        try:
            out = decoder.add(esi, payload)
        except DecodeError as exc:  # symbol_overflow: a flood of repair symbols
            _count(stream.stats, exc.reason)
            return
        if decoder.duplicates > dups:
            stream.stats.duplicates += 1
            return
        if esi >= slot.nack_esi:
            slot.used_nack = True
        if out is not None:
            self._complete(stream, frame_id, slot, out, True, now)

    def _try_decode(self, stream: _Stream, frame_id: int, slot: _Slot, now: float) -> None:
        """Start the decoder once k distinct symbols (one of them repair) are in hand."""
        if slot.held() < slot.k:
            return
        try:
            decoder = FrameDecoder(slot.frame_len, slot.symbol_size, scheme=slot.scheme)
        except DecodeError as exc:  # unreachable: symbol_error checked the geometry
            _count(stream.stats, exc.reason)
            return
        slot.decoder = decoder
        stream.stats.decodes += 1
        got = slot.got
        out: bytes | None = None
        try:
            for esi in range(slot.k):
                if got[esi]:
                    out = decoder.add(esi, self._source_payload(slot, esi))
                    if out is not None:
                        break
            repairs = slot.repairs or {}
            if slot.state is None:  # with a key they stay for the slow path (§8.5)
                slot.repairs = {}
            if out is None:
                for esi in sorted(repairs):
                    if esi >= slot.nack_esi:
                        slot.used_nack = True
                    out = decoder.add(esi, repairs[esi])
                    if out is not None:
                        break
        except DecodeError as exc:  # unreachable: lengths were checked on arrival
            _count(stream.stats, exc.reason)
        if out is not None:
            self._complete(stream, frame_id, slot, out, True, now)

    def _flag(self, stream: _Stream, frame_id: int, slot: _Slot, now: float) -> None:
        """Say once that a frame with FEC is incomplete after its planned symbols."""
        slot.flagged = True
        if slot.stall_at == self._timer:
            self._timer_dirty = True
        slot.stall_at = _NEVER
        self._events.append(
            FrameIncomplete(
                stream.stats.stream_id, frame_id, slot.k, slot.held(), now, slot.overhead
            )
        )

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

    def _count_decode_error(self, data: bytes | bytearray | memoryview, reason: str) -> None:
        stream = None
        if len(data) >= 14 and reason not in ("bad_magic", "bad_version", "truncated"):
            stream = self._streams.get(int.from_bytes(data[6:10], "big"))
        if stream is not None:
            errors = stream.stats.decode_errors
            errors[reason] = errors.get(reason, 0) + 1
        else:
            self.decode_errors[reason] += 1

    def _stream(
        self, stream_id: int, seq: int, addr: Address, now: float, *, symbol: bool
    ) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        if len(self._streams) >= self.limits.max_streams:
            victim = self._victim(now, symbol)
            if victim is None:
                self.decode_errors["too_many_streams"] += 1
                return None
            sid, reason = victim
            self.forget_stream(sid)
            self.evicted[reason] += 1
            self._events.append(StreamForgotten(sid, reason))
        stream = _Stream(stream_id, addr, serial_add(seq, -1), now)
        self._streams[stream_id] = stream
        self._events.append(StreamStarted(stream_id, addr))
        return stream

    def _victim(self, now: float, symbol: bool) -> tuple[int, str] | None:
        """The stream a newcomer may evict, with the reason, or ``None`` (see the limits).

        O(``max_streams``): the table is small and bounded, whatever ids a flood invents.
        """
        idle_after = self.limits.stream_idle_timeout
        best: tuple[int, int, float] | None = None  # (rank, stream id, last heard)
        for sid, st in self._streams.items():
            if sid == self.keep:
                continue
            heard = self._last_heard(st)
            if now - heard >= idle_after:
                rank = 0
            elif st.stats.frames_completed or (
                not symbol
                and (st.had_symbols or now - st.stats.first_heard < self.limits.stream_probation)
            ):
                continue
            else:
                rank = 2 if st.had_symbols else 1
            if best is None or (rank, heard) < (best[0], best[2]):
                best = (rank, sid, heard)
        if best is None:
            return None
        return best[1], ("idle", "heartbeats_only", "no_frame")[best[0]]

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
            if d > 1:
                stats.loss_bursts += 1
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

    def _open(self, stream: _Stream, frame_id: int, h: tuple[int, ...], now: float) -> _Slot:
        limits = self.limits
        deadline = now + limits.frame_timeout
        frame_len = h[9]
        if frame_len > limits.max_frame_len:
            slot = _Slot(h, deadline, live=False, now=now)
            self._add_slot(stream, frame_id, slot)
            self._drop_event(stream, frame_id, DropReason.TOO_LARGE)
            return slot
        # A newer frame began: older incomplete frames with FEC have had their planned
        # symbols (the sender sends frames in order), so they may NACK now.
        for fid, other in stream.slots.items():
            fec = other.live and not other.flagged and other.fec
            if fec and serial_diff(fid, frame_id) < 0:
                self._flag(stream, fid, other, now)
        while len(stream.slots) >= limits.max_frames_in_flight:
            oldest = min(stream.slots, key=lambda fid: serial_diff(fid, frame_id))
            self._resolve(stream, oldest, DropReason.EVICTED)
        while self._bytes_in_flight + frame_len > limits.max_bytes_in_flight:
            victim = self._oldest_live_slot()
            if victim is None:
                break
            self._resolve(victim[0], victim[1], DropReason.EVICTED)
        slot = _Slot(h, deadline, live=True, now=now)
        if slot.fec:
            slot.stall_at = now + stream.span + limits.stall_gap
        opening = self._opening
        if opening is not None:  # with a key: opened by a verified symbol (§8.5)
            slot.aflags, slot.asig, slot.state = opening
            slot.base = FRAME_AAD_BYTES
        self._bytes_in_flight += frame_len
        self._add_slot(stream, frame_id, slot)
        return slot

    def _add_slot(self, stream: _Stream, frame_id: int, slot: _Slot) -> None:
        stream.slots[frame_id] = slot
        if not self._timer_dirty:
            due = min(slot.deadline, slot.stall_at)
            self._timer = due if self._timer is None else min(self._timer, due)

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
            self._bytes_in_flight -= slot.cost
            slot.cost = 0
            slot.live = False
            slot.buf = slot.first = None
            slot.repairs = None
            slot.decoder = None
        if slot.deadline == self._timer or slot.stall_at == self._timer:
            self._timer_dirty = True
        slot.stall_at = _NEVER

    def _kill(self, stream: _Stream, frame_id: int, slot: _Slot, reason: DropReason) -> None:
        """Report the frame dropped now; keep a dead slot to absorb its other symbols."""
        self._release(slot)
        self._drop_event(stream, frame_id, reason)

    def _drop_event(
        self, stream: _Stream, frame_id: int, reason: DropReason, count: int = 1
    ) -> None:
        stats = stream.stats
        dropped = stats.frames_dropped
        dropped[reason] = dropped.get(reason, 0) + count
        if reason is DropReason.TIMEOUT or reason is DropReason.LATE:
            stats.unrepairable += count  # had symbols, still incomplete at its deadline
        self._events.append(FrameDropped(stats.stream_id, frame_id, reason, count))

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

    def _complete(
        self,
        stream: _Stream,
        frame_id: int,
        slot: _Slot,
        jpeg: bytes | bytearray | memoryview,
        decoded: bool,
        now: float,
    ) -> None:
        """The frame's F bytes are in ``jpeg``: publish them if the CRC-32C matches.

        With a key, ``jpeg`` is the frame object (in the slot's buffer after the room for
        the associated data, or the decoder's output) and the frame AEAD is checked first;
        if it fails, the slow path (:meth:`_slow_path`) finds the forged symbols.
        """
        stats = stream.stats
        state = slot.state
        if state is not None:
            room = jpeg if not decoded else bytearray(FRAME_AAD_BYTES) + jpeg
            assert isinstance(room, bytearray)
            try:
                jpeg = open_frame(
                    state.keys,
                    room,
                    frame_id=frame_id,
                    capture_ts_ns=slot.capture_ts_ns,
                    frame_crc32c=slot.crc,
                    flags=slot.aflags,
                    aead=Aead.CHACHA20_POLY1305 if slot.aflags & _CHACHA else Aead.AES_128_GCM,
                    encrypted=bool(slot.aflags & _ENCRYPTED),
                )
            except DecodeError:
                self._slow_path(stream, frame_id, slot, now)
                return
            self._frame_verified(stream, frame_id, slot, now)
        if crc32c(jpeg) != slot.crc:
            stats.corrupt += 1
            self._resolve(stream, frame_id, DropReason.CORRUPT)
            return
        if not slot.flagged and not slot.used_nack:  # learn the span of an unrepaired frame
            span = now - slot.opened_at
            stream.span = span if span > stream.span else stream.span + (span - stream.span) / 8
        slot.buf = None  # ownership passes to the event: the buffer is never written again
        slot.live = False
        slot.repairs = None
        slot.decoder = None
        self._bytes_in_flight -= slot.cost
        slot.cost = 0
        self._resolve(stream, frame_id, None)
        stats.frames_completed += 1
        if not decoded:
            stats.complete += 1
        elif slot.used_nack:
            stats.repaired_nack += 1
        else:
            stats.repaired_fec += 1
        self._events.append(
            FrameCompleted(
                Frame(
                    memoryview(jpeg).toreadonly(),  # with a key: a view after the room
                    frame_id,
                    slot.capture_ts_ns,
                    stats.stream_id,
                    now,
                )
            )
        )
