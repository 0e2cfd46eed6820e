"""Datagram codec, protocol version 2: bytes <-> frozen dataclasses, with one error type.

This is the only module that catches construct's and struct's low-level errors
(``ConstructError``, ``struct.error``, ``ValueError``, ``UnicodeDecodeError``,
``IndexError``); every one becomes a :class:`~mcastcam.errors.DecodeError` with a stable
``reason`` (the counter key of ``docs/protocol.md`` §11) and an exact message. Validation
that construct does not do (version, kind, flags, symbol geometry, range checks of every
field, lengths against the datagram size) is done here too: every rule a receiver or sender
can decide from one datagram alone. Rules that need state (``unknown_key``, ``bad_tag``,
replays, ``conflict``, ``announce_spoofed``, a NACK's ``needed`` ≤ k, …) belong to the
sessions.

Positions with flag ``AUTH``: the last 16 bytes of every kind are the tag (``tag`` field of
each message, ``bytes``); everything before it is parsed as without ``AUTH``. The codec
never computes nor checks a tag (:mod:`mcastcam.protocol.auth` does): :func:`encode`
appends the message's ``tag`` (16 bytes iff ``AUTH``), so an authenticating sender encodes
with a placeholder and overwrites the last 16 bytes.

Symbols (kinds 1 and 16) have a ``struct.Struct`` fast path (:data:`SYMBOL_HEADER`); a
Hypothesis test proves it byte-identical to the construct schema in
:mod:`mcastcam.protocol.wire`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from construct import ConstructError

from mcastcam.errors import DecodeError, LocalProtocolError
from mcastcam.protocol import wire
from mcastcam.protocol.fec import MAX_RS_SOURCE_SYMBOLS, repair_capacity
from mcastcam.protocol.wire import (
    BODIES,
    CONTROL_PREAMBLE_SIZE,
    KNOWN_FLAGS,
    MAGIC,
    MAX_NACK_ENTRIES,
    MAX_NAME_BYTES,
    MIN_QUERY_SIZE,
    NACK_ENTRY_SIZE,
    NACK_FIXED_SIZE,
    OLD_VERSION,
    PREFIX_SIZE,
    RESERVED_KINDS,
    SYMBOL_HEADER_SIZE,
    SYMBOL_KINDS,
    TAG_SIZE,
    VERSION,
    Aead,
    FecScheme,
    Flag,
    Kind,
    Transport,
)

__all__ = [
    "ESI_LIMIT",
    "MAX_FEC_FRAME_LEN",
    "MAX_FRAME_LEN",
    "MAX_SOURCE_SYMBOLS",
    "MAX_SYMBOL_SIZE",
    "MIN_SYMBOL_SIZE",
    "SYMBOL_ALIGNMENT",
    "SYMBOL_HEADER",
    "DiscoveryAnnounce",
    "DiscoveryQuery",
    "Heartbeat",
    "Message",
    "Nack",
    "NackEntry",
    "ReceiverReport",
    "Symbol",
    "check_heartbeat",
    "check_prefix",
    "check_symbol",
    "decode",
    "decode_symbol_header",
    "encode",
    "encode_symbol_header",
    "source_symbol_count",
    "symbol_payload_len",
]

SYMBOL_HEADER = struct.Struct("!HBBHIIIIHIIQBBHI")
"""Symbol header fast path, 48 bytes: ``(magic, version, kind, flags, stream_id, seq,
frame_id, esi, symbol_size, frame_len, frame_crc32c, capture_ts_ns, fec_scheme, key_id,
repair_planned, run_nonce)`` (see ``wire.SymbolBody``)."""
assert SYMBOL_HEADER.size == SYMBOL_HEADER_SIZE
_PREFIX = struct.Struct("!HBBHII")
assert _PREFIX.size == PREFIX_SIZE
_PREAMBLE = struct.Struct("!BBI")
assert _PREAMBLE.size == CONTROL_PREAMBLE_SIZE
_NACK_HEAD = struct.Struct("!IB")
_NACK_ENTRY = struct.Struct("!IH")
assert _NACK_ENTRY.size == NACK_ENTRY_SIZE

MIN_SYMBOL_SIZE = 64
"""Smallest symbol size T, bytes (§4)."""
MAX_SYMBOL_SIZE = 65_000
"""Largest symbol size T, bytes (§4)."""
SYMBOL_ALIGNMENT = 8
"""T is a multiple of this (RaptorQ's alignment Al)."""
MAX_FEC_FRAME_LEN = 8 * 1024 * 1024
"""Largest frame, bytes, with ``fec_scheme`` 1 (§5)."""
MAX_SOURCE_SYMBOLS = 56_403
"""RFC 6330 K'max: most source symbols of a frame with ``fec_scheme`` 1."""
ESI_LIMIT = 1 << 24
"""ESIs are 24 bits: valid ESIs are 0 … 2^24 − 1; with ``fec_scheme`` 0, k < 2^24."""
MAX_FRAME_LEN = 0xFFFFFFFF
"""``frame_len`` is a u32."""

# range checks of control bodies (§6, §7, §9)
MAX_PIXELS = 16_384
MAX_FPS_MILLI = 1_000_000
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 60_000
MAX_AUDIENCE = 1_000_000
MAX_PPM = 1_000_000
MIN_NACK_DELAY_MS = 1
MAX_NACK_DELAY_MS = 1_000
MAX_NACK_RATE_MILLI = 10_000
MAX_REPAIR_WINDOW_MS = 5_000
MAX_HELD_NS = 60 * 10**9
MAX_BURST_MILLI = 1_000_000

_AUTH = int(Flag.AUTH)
_SYMBOL_ONLY_FLAGS = int(Flag.ENCRYPTED | Flag.CHACHA)
_SOURCE = int(Kind.SOURCE)
_REPAIR = int(Kind.REPAIR)


def source_symbol_count(frame_len: int, symbol_size: int) -> int:
    """Source symbols of a frame, k = ⌈frame_len / symbol_size⌉ (bytes; no checks)."""
    return -(-frame_len // symbol_size)


def symbol_payload_len(esi: int, k: int, symbol_size: int, frame_len: int) -> int:
    """Payload bytes symbol ``esi`` carries: T, except source symbol k − 1: F − (k − 1)·T."""
    if esi == k - 1:
        return frame_len - (k - 1) * symbol_size
    return symbol_size


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Symbol:
    """A source (kind 1) or repair (kind 16) symbol of a frame (§4).

    ``payload`` is a zero-copy view of the datagram when decoded (the ciphertext with
    ``ENCRYPTED``); ``tag`` the 16-byte trailer with ``AUTH``, else empty. Sizes in bytes,
    ``capture_ts_ns`` wall clock ns.
    """

    stream_id: int
    seq: int
    kind: int
    frame_id: int
    esi: int
    symbol_size: int
    frame_len: int
    frame_crc32c: int
    capture_ts_ns: int
    fec_scheme: int
    repair_planned: int
    run_nonce: int
    payload: bytes | memoryview
    flags: int = 0
    key_id: int = 0
    tag: bytes = b""

    @property
    def is_repair(self) -> bool:
        """True for a repair symbol (kind 16)."""
        return self.kind == _REPAIR

    @property
    def k(self) -> int:
        """Source symbols of the frame, ⌈F / T⌉."""
        return source_symbol_count(self.frame_len, self.symbol_size)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sender liveness, stream description and repair parameters (kind 2, §6)."""

    stream_id: int
    seq: int
    name: str
    host: str
    source_state: int
    width: int
    height: int
    fps_milli: int
    interval_ms: int
    frames_sent: int
    datagrams_sent: int
    uptime_ns: int
    send_ts_ns: int
    audience: int
    run_nonce: int = 0
    seq_hi: int = 0
    aead: int = 0
    fec_scheme: int = 0
    repair_ppm: int = 0
    nack_delay_ms: int = 5
    nack_rate_milli: int = 0
    repair_window_ms: int = 0
    echo_receiver_id: int = 0
    echo_challenge: int = 0
    flags: int = 0
    key_id: int = 0
    tag: bytes = b""


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """A receiver's unicast report to the sender (kind 3, §7); ``stream_id`` is the sender's.

    ``run_nonce`` is the reported run; ``loss_ppm`` datagram loss in parts per million,
    ``burst_milli`` mean loss burst × 1000, ``held_ns`` how long the echoed heartbeat was
    held, ns; ``challenge`` ≠ 0 asks for a freshness reply (§8.6).
    """

    stream_id: int
    seq: int
    receiver_id: int
    name: str
    host: str
    frames_completed: int
    frames_dropped: int
    loss_ppm: int
    echo_ts_ns: int
    held_ns: int
    run_nonce: int = 0
    burst_milli: int = 0
    repaired_fec: int = 0
    repaired_nack: int = 0
    unrepairable: int = 0
    challenge: int = 0
    flags: int = 0
    key_id: int = 0
    tag: bytes = b""


@dataclass(frozen=True, slots=True)
class NackEntry:
    """One frame in a NACK: ``needed`` (1 … k) more symbols of ``frame_id``."""

    frame_id: int
    needed: int


@dataclass(frozen=True, slots=True)
class Nack:
    """A receiver asking for more symbols (kind 17, §7); ``stream_id`` is the sender's.

    ``entries``: 1 … 16 frames, oldest first; ``run_nonce`` the run asked about.
    """

    stream_id: int
    seq: int
    receiver_id: int
    entries: tuple[NackEntry, ...]
    run_nonce: int = 0
    flags: int = 0
    key_id: int = 0
    tag: bytes = b""


@dataclass(frozen=True, slots=True)
class DiscoveryQuery:
    """A "who sends here?" query (kind 4, §9); ``stream_id`` is the querier's id.

    ``name`` filters (empty: every sender); ``query_nonce`` (random per query) is echoed
    by answers. The wire form is zero-padded to 100 bytes (before the tag).
    """

    stream_id: int
    seq: int
    name: str
    query_nonce: int = 0
    flags: int = 0
    key_id: int = 0
    tag: bytes = b""


@dataclass(frozen=True, slots=True)
class DiscoveryAnnounce:
    """A sender describing its stream (kind 5, §9); ``group`` is the destination address.

    ``echo_query_nonce``: the query answered, 0 when unsolicited; ``aead`` as the
    heartbeat's.
    """

    stream_id: int
    seq: int
    name: str
    host: str
    transport: int
    group: str
    port: int
    width: int
    height: int
    fps_milli: int
    run_nonce: int = 0
    echo_query_nonce: int = 0
    aead: int = 0
    flags: int = 0
    key_id: int = 0
    tag: bytes = b""


Message = Symbol | Heartbeat | ReceiverReport | Nack | DiscoveryQuery | DiscoveryAnnounce

_CLASS_OF: dict[int, type[Any]] = {
    Kind.HEARTBEAT: Heartbeat,
    Kind.RECEIVER_REPORT: ReceiverReport,
    Kind.DISCOVERY_QUERY: DiscoveryQuery,
    Kind.DISCOVERY_ANNOUNCE: DiscoveryAnnounce,
    Kind.NACK: Nack,
}
_KIND_OF: dict[type[Any], int] = {cls: kind for kind, cls in _CLASS_OF.items()}
_ADDRESS_FIELDS = ("host", "group")
_ENVELOPE = ("stream_id", "seq", "flags", "key_id", "tag", "run_nonce")


# --------------------------------------------------------------------------- checks


def check_prefix(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """Validate the common prefix and its flags; return ``(kind, flags, stream_id, seq)``.

    Raises:
        DecodeError: ``truncated``, ``bad_magic``, ``bad_version`` (0), ``old_version``
            (1), ``unsupported_version`` (> 2: ignore and count), ``reserved_kind`` (32),
            ``unknown_kind``, ``bad_flags`` (a reserved bit, or ``ENCRYPTED``/``CHACHA``
            on a control kind or without ``AUTH``).
    """
    if len(data) < PREFIX_SIZE:
        raise DecodeError(
            "truncated",
            f"datagram of {len(data)} bytes is shorter than the {PREFIX_SIZE}-byte prefix",
        )
    magic, version, kind, flags, stream_id, seq = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError("bad_magic", f"magic 0x{magic:04X} is not 0x{MAGIC:04X}")
    if version != VERSION:
        if version > VERSION:
            raise DecodeError(
                "unsupported_version", f"version {version} is newer than {VERSION}; ignored"
            )
        if version == OLD_VERSION:
            raise DecodeError(
                "old_version", f"version {version} is older than {VERSION}; upgrade the sender"
            )
        raise DecodeError("bad_version", f"version {version} does not exist")
    if kind not in BODIES and kind not in SYMBOL_KINDS:
        if kind in RESERVED_KINDS:
            raise DecodeError("reserved_kind", f"kind {kind} is reserved; ignored")
        raise DecodeError("unknown_kind", f"kind {kind} is unknown; ignored")
    _check_flags(kind, flags)
    return kind, flags, stream_id, seq


def _check_flags(kind: int, flags: int) -> None:
    if flags & ~KNOWN_FLAGS:
        raise DecodeError("bad_flags", f"flags 0x{flags:04X} set reserved bits")
    if flags & _SYMBOL_ONLY_FLAGS:
        if kind not in SYMBOL_KINDS:
            raise DecodeError("bad_flags", f"flags 0x{flags:04X}: ENCRYPTED/CHACHA on kind {kind}")
        if not flags & _AUTH:
            raise DecodeError("bad_flags", f"flags 0x{flags:04X}: ENCRYPTED/CHACHA without AUTH")


def _check_key_id(flags: int, key_id: int) -> None:
    if bool(flags & _AUTH) != (key_id != 0):
        raise DecodeError(
            "bad_flags",
            f"key_id {key_id} with AUTH {'set' if flags & _AUTH else 'clear'} "
            "(key_id is 0 iff AUTH is clear)",
        )


def check_symbol(
    kind: int,
    esi: int,
    symbol_size: int,
    frame_len: int,
    fec_scheme: int,
    repair_planned: int,
    carried: int,
    max_frame_len: int | None = None,
) -> int:
    """Check a symbol's geometry (§4, §4.1, §5) against itself and ``carried`` payload bytes.

    Args:
        kind: 1 (source) or 16 (repair).
        esi: the encoding symbol id.
        symbol_size: T, bytes.
        frame_len: F, bytes.
        fec_scheme: 0 (none), 1 (RaptorQ) or 2 (Reed–Solomon).
        repair_planned: R, proactive repair symbols of the frame.
        carried: payload bytes the datagram carries (tag excluded).
        max_frame_len: the receiver's largest frame, bytes (``None``: no limit).

    Returns:
        k, the frame's source symbol count.

    Raises:
        DecodeError: ``bad_geometry`` (T not a multiple of 8 in 64 … 65,000; F < 1;
            R > k; R ≠ 0 without FEC; k ≥ 2^24), ``too_large`` (F > ``max_frame_len``),
            ``bad_fec`` (scheme 1 with F > 8 MiB or k > 56,403; scheme 2 with F > 8 MiB or
            k > 32,768; a repair symbol without FEC), ``unknown_fec``, ``bad_esi`` (ESI ≥
            2^24; source ESI ≥ k; repair ESI < k; scheme 2: ESI ≥ k + m(k)), plus
            ``bad_geometry`` for scheme 2's R > m(k) (``fec.repair_capacity``),
            ``length_mismatch`` (payload size is not the one the ESI implies).
    """
    if not MIN_SYMBOL_SIZE <= symbol_size <= MAX_SYMBOL_SIZE or symbol_size % SYMBOL_ALIGNMENT:
        raise DecodeError(
            "bad_geometry",
            f"symbol_size {symbol_size} is not a multiple of {SYMBOL_ALIGNMENT} in "
            f"{MIN_SYMBOL_SIZE}..{MAX_SYMBOL_SIZE} bytes",
        )
    if frame_len < 1:
        raise DecodeError("bad_geometry", "frame_len 0 is below 1 byte")
    if max_frame_len is not None and frame_len > max_frame_len:
        raise DecodeError(
            "too_large", f"frame_len {frame_len} is above the limit of {max_frame_len} bytes"
        )
    k = -(-frame_len // symbol_size)
    if fec_scheme == FecScheme.RAPTORQ or fec_scheme == FecScheme.REED_SOLOMON:
        if frame_len > MAX_FEC_FRAME_LEN:
            raise DecodeError(
                "bad_fec",
                f"frame_len {frame_len} is above {MAX_FEC_FRAME_LEN} with fec_scheme {fec_scheme}",
            )
        most = MAX_SOURCE_SYMBOLS if fec_scheme == FecScheme.RAPTORQ else MAX_RS_SOURCE_SYMBOLS
        if k > most:
            raise DecodeError(
                "bad_fec", f"{k} source symbols is above {most} with fec_scheme {fec_scheme}"
            )
        capacity = repair_capacity(fec_scheme, k)  # RaptorQ: every ESI below 2^24
        if repair_planned > capacity:
            raise DecodeError(
                "bad_geometry",
                f"repair_planned {repair_planned} is above m(k) = {capacity} with fec_scheme 2",
            )
        if k <= esi < ESI_LIMIT and esi >= k + capacity:
            raise DecodeError(
                "bad_esi", f"esi {esi} is not below k + m(k) = {k + capacity} with fec_scheme 2"
            )
    elif fec_scheme == FecScheme.NONE:
        if k >= ESI_LIMIT:
            raise DecodeError("bad_geometry", f"{k} source symbols is not below 2^24")
        if kind == _REPAIR:
            raise DecodeError("bad_fec", "a repair symbol of a frame with fec_scheme 0")
        if repair_planned:
            raise DecodeError(
                "bad_geometry", f"repair_planned {repair_planned} with fec_scheme 0 (must be 0)"
            )
    else:
        raise DecodeError("unknown_fec", f"fec_scheme {fec_scheme} is unknown")
    if repair_planned > k:
        raise DecodeError("bad_geometry", f"repair_planned {repair_planned} is above k = {k}")
    if esi >= ESI_LIMIT:
        raise DecodeError("bad_esi", f"esi {esi} is not below 2^24")
    if kind == _SOURCE:
        if esi >= k:
            raise DecodeError("bad_esi", f"source esi {esi} is not below k = {k}")
        expected = frame_len - (k - 1) * symbol_size if esi == k - 1 else symbol_size
    else:
        if esi < k:
            raise DecodeError("bad_esi", f"repair esi {esi} is below k = {k}")
        expected = symbol_size
    if carried != expected:
        raise DecodeError(
            "length_mismatch",
            f"symbol {esi} of a {frame_len}-byte frame (T {symbol_size}) must carry "
            f"{expected} payload bytes, not {carried}",
        )
    return k


def decode_symbol_header(
    data: bytes | bytearray | memoryview, max_frame_len: int | None = None
) -> tuple[int, ...]:
    """Fast path: validate a symbol datagram (kind 1 or 16); return its 16 header fields.

    Returns the :data:`SYMBOL_HEADER` tuple; the payload is ``data[48:len(data) - tag]``
    with tag = 16 if ``flags & AUTH`` else 0, and the tag is the last 16 bytes then.

    Raises:
        DecodeError: as :func:`check_prefix`, or ``not_symbol`` (another valid kind),
            ``truncated``, ``bad_flags`` (``key_id`` vs ``AUTH``), ``bad_run``
            (``run_nonce`` 0), or as :func:`check_symbol`.
    """
    n = len(data)
    if n < SYMBOL_HEADER_SIZE:
        kind = check_prefix(data)[0]
        if kind not in SYMBOL_KINDS:
            raise DecodeError("not_symbol", f"kind {kind} is not a symbol")
        raise DecodeError(
            "truncated",
            f"datagram of {n} bytes is shorter than the {SYMBOL_HEADER_SIZE}-byte symbol header",
        )
    h = SYMBOL_HEADER.unpack_from(data)
    flags = h[3]
    kind = h[2]
    if h[0] != MAGIC or h[1] != VERSION or (kind != _SOURCE and kind != _REPAIR) or flags & ~_AUTH:
        kind = check_prefix(data)[0]  # raises for a bad prefix or bad flags
        if kind not in SYMBOL_KINDS:
            raise DecodeError("not_symbol", f"kind {kind} is not a symbol")
    tag = TAG_SIZE if flags & _AUTH else 0
    if (h[13] != 0) != bool(tag):
        _check_key_id(flags, h[13])
    if n < SYMBOL_HEADER_SIZE + tag:
        raise DecodeError(
            "truncated",
            f"datagram of {n} bytes is shorter than the symbol header and its tag",
        )
    if h[15] == 0:
        raise DecodeError("bad_run", "run_nonce 0")
    check_symbol(kind, h[7], h[8], h[9], h[12], h[14], n - SYMBOL_HEADER_SIZE - tag, max_frame_len)
    return h


def _usable_host(addr: ipaddress.IPv4Address) -> bool:
    return not (addr.is_unspecified or addr.is_multicast or int(addr) == 0xFFFFFFFF)


def check_heartbeat(hb: Heartbeat) -> None:
    """The range checks of §6 on a decoded heartbeat.

    Raises:
        DecodeError: ``heartbeat_out_of_range`` (which field, which range), or ``bad_body``
            (``aead`` unknown), ``bad_run`` (``run_nonce`` 0).
    """
    if hb.run_nonce == 0:
        raise DecodeError("bad_run", "heartbeat with run_nonce 0")
    if hb.aead not in _AEADS:
        raise DecodeError("bad_body", f"heartbeat aead {hb.aead} is unknown")
    problem = _heartbeat_problem(hb)
    if problem:
        raise DecodeError("heartbeat_out_of_range", f"heartbeat {problem}")


_AEADS = frozenset(int(a) for a in Aead)


def _heartbeat_problem(hb: Heartbeat) -> str | None:
    if not _usable_host(ipaddress.IPv4Address(hb.host)):
        return f"host {hb.host} is not a unicast address"
    if hb.width > MAX_PIXELS or hb.height > MAX_PIXELS:
        return f"size {hb.width}x{hb.height} is above {MAX_PIXELS} pixels"
    if hb.fps_milli > MAX_FPS_MILLI:
        return f"fps_milli {hb.fps_milli} is above {MAX_FPS_MILLI}"
    if not MIN_INTERVAL_MS <= hb.interval_ms <= MAX_INTERVAL_MS:
        return f"interval_ms {hb.interval_ms} is outside {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS}"
    if hb.frames_sent > hb.datagrams_sent:
        return f"frames_sent {hb.frames_sent} is above datagrams_sent {hb.datagrams_sent}"
    if hb.audience > MAX_AUDIENCE:
        return f"audience {hb.audience} is above {MAX_AUDIENCE}"
    if hb.repair_ppm > MAX_PPM:
        return f"repair_ppm {hb.repair_ppm} is above {MAX_PPM}"
    if not MIN_NACK_DELAY_MS <= hb.nack_delay_ms <= MAX_NACK_DELAY_MS:
        return (
            f"nack_delay_ms {hb.nack_delay_ms} is outside {MIN_NACK_DELAY_MS}..{MAX_NACK_DELAY_MS}"
        )
    if hb.nack_rate_milli > MAX_NACK_RATE_MILLI:
        return f"nack_rate_milli {hb.nack_rate_milli} is above {MAX_NACK_RATE_MILLI}"
    if hb.repair_window_ms > MAX_REPAIR_WINDOW_MS:
        return f"repair_window_ms {hb.repair_window_ms} is above {MAX_REPAIR_WINDOW_MS}"
    return None


def _check_report(rep: ReceiverReport) -> None:
    problem = None
    if rep.run_nonce == 0:
        raise DecodeError("bad_run", "report with run_nonce 0")
    if rep.receiver_id == 0:
        problem = "receiver_id 0"
    elif rep.loss_ppm > MAX_PPM:
        problem = f"loss_ppm {rep.loss_ppm} is above {MAX_PPM}"
    elif rep.held_ns > MAX_HELD_NS:
        problem = f"held_ns {rep.held_ns} is above 60 s"
    elif rep.burst_milli > MAX_BURST_MILLI:
        problem = f"burst_milli {rep.burst_milli} is above {MAX_BURST_MILLI}"
    if problem:
        raise DecodeError("bad_report", f"report {problem}")


def _check_announce(ann: DiscoveryAnnounce) -> None:
    if ann.aead not in _AEADS:
        raise DecodeError("bad_body", f"announce aead {ann.aead} is unknown")
    problem = None
    group = ipaddress.IPv4Address(ann.group)
    if ann.port == 0:
        problem = "port 0"
    elif ann.transport == Transport.MULTICAST and not group.is_multicast:
        problem = f"transport multicast with group {ann.group} outside 224.0.0.0/4"
    elif ann.transport in (Transport.BROADCAST, Transport.UNICAST) and not (
        _usable_host(group) or (ann.transport == Transport.BROADCAST and int(group) == 0xFFFFFFFF)
    ):
        problem = f"transport {ann.transport} with address {ann.group}"
    elif ann.transport > Transport.UNICAST:
        problem = f"transport {ann.transport} is unknown"
    elif ann.width > MAX_PIXELS or ann.height > MAX_PIXELS:
        problem = f"size {ann.width}x{ann.height} is above {MAX_PIXELS} pixels"
    elif ann.fps_milli > MAX_FPS_MILLI:
        problem = f"fps_milli {ann.fps_milli} is above {MAX_FPS_MILLI}"
    if problem:
        raise DecodeError("announce_out_of_range", f"announce {problem}")


# --------------------------------------------------------------------------- decoding


def decode(data: bytes | bytearray | memoryview, *, max_frame_len: int | None = None) -> Message:
    """Decode any datagram into its dataclass.

    Args:
        data: one whole UDP payload.
        max_frame_len: the receiver's largest frame, bytes (symbols only; ``None``: no limit).

    Returns:
        A :data:`Message`; a symbol's ``payload`` is a zero-copy view of ``data``.

    Raises:
        DecodeError: for anything that is not a valid datagram of a kind we know; its
            ``reason`` says why (see :func:`check_prefix`, :func:`decode_symbol_header`,
            :func:`check_heartbeat`, plus ``truncated``, ``bad_body``, ``trailing_bytes``,
            ``bad_report``, ``bad_nack``, ``length_mismatch`` (NACK), ``short_query``,
            ``announce_out_of_range``, ``bad_run``).
    """
    kind, flags, stream_id, seq = check_prefix(data)
    if kind in SYMBOL_KINDS:
        h = decode_symbol_header(data, max_frame_len)
        end = len(data) - (TAG_SIZE if flags & _AUTH else 0)
        return Symbol(
            stream_id,
            seq,
            kind,
            h[6],
            h[7],
            h[8],
            h[9],
            h[10],
            h[11],
            h[12],
            h[14],
            h[15],
            memoryview(data)[SYMBOL_HEADER_SIZE:end],
            flags,
            h[13],
            bytes(data[end:]),
        )
    tag = TAG_SIZE if flags & _AUTH else 0
    end = len(data) - tag
    fixed = NACK_FIXED_SIZE if kind == Kind.NACK else PREFIX_SIZE + CONTROL_PREAMBLE_SIZE
    if end < fixed:
        raise DecodeError(
            "truncated",
            f"{Kind(kind).name.lower()} of {len(data)} bytes is shorter than its "
            f"{fixed}-byte fixed part{' and its tag' if tag else ''}",
        )
    key_id, reserved, run_nonce = _PREAMBLE.unpack_from(data, PREFIX_SIZE)
    _check_key_id(flags, key_id)
    if reserved:
        raise DecodeError("bad_body", f"control preamble reserved byte is {reserved}, not 0")
    trailer = bytes(data[end:])
    if kind == Kind.NACK:
        return _decode_nack(data, end, stream_id, seq, run_nonce, flags, key_id, trailer)
    start = PREFIX_SIZE + CONTROL_PREAMBLE_SIZE
    body = bytes(data[start:end])
    schema = BODIES[kind]
    try:
        parsed = schema.parse(body)
        used = len(schema.build(parsed))
    except (ConstructError, struct.error, ValueError, UnicodeDecodeError, IndexError) as exc:
        raise DecodeError("bad_body", f"{Kind(kind).name.lower()} body: {exc}") from None
    fields = {k: v for k, v in parsed.items() if not k.startswith("_")}
    if "name" in fields and len(fields["name"].encode()) > MAX_NAME_BYTES:
        raise DecodeError("bad_body", f"name longer than {MAX_NAME_BYTES} bytes")
    if kind == Kind.DISCOVERY_QUERY:
        if end < MIN_QUERY_SIZE:
            raise DecodeError(
                "short_query", f"query of {end} bytes is shorter than {MIN_QUERY_SIZE}"
            )
        if any(fields.pop("padding")):
            raise DecodeError("bad_body", "query padding is not zero")
        if run_nonce:
            raise DecodeError("bad_body", f"query run_nonce {run_nonce} is not 0")
    elif used != len(body):
        raise DecodeError(
            "trailing_bytes",
            f"{Kind(kind).name.lower()} body has {len(body) - used} bytes after its last field",
        )
    else:
        fields["run_nonce"] = run_nonce
    for key in _ADDRESS_FIELDS:
        if key in fields:
            fields[key] = str(ipaddress.IPv4Address(fields[key]))
    msg = _CLASS_OF[kind](
        stream_id=stream_id, seq=seq, flags=flags, key_id=key_id, tag=trailer, **fields
    )
    if kind == Kind.HEARTBEAT:
        check_heartbeat(msg)
    elif kind == Kind.RECEIVER_REPORT:
        _check_report(msg)
    elif kind == Kind.DISCOVERY_ANNOUNCE:
        _check_announce(msg)
    return msg  # type: ignore[no-any-return]


def _decode_nack(
    data: bytes | bytearray | memoryview,
    end: int,
    stream_id: int,
    seq: int,
    run_nonce: int,
    flags: int,
    key_id: int,
    tag: bytes,
) -> Nack:
    receiver_id, count = _NACK_HEAD.unpack_from(data, PREFIX_SIZE + CONTROL_PREAMBLE_SIZE)
    if receiver_id == 0:
        raise DecodeError("bad_nack", "NACK receiver_id 0")
    if not 1 <= count <= MAX_NACK_ENTRIES:
        raise DecodeError("bad_nack", f"NACK count {count} is outside 1..{MAX_NACK_ENTRIES}")
    want = NACK_FIXED_SIZE + NACK_ENTRY_SIZE * count
    if end != want:
        raise DecodeError(
            "length_mismatch",
            f"NACK of {count} entries must be {want} bytes before any tag, not {end}",
        )
    if run_nonce == 0:
        raise DecodeError("bad_run", "NACK with run_nonce 0")
    entries = tuple(
        NackEntry(frame_id, needed)
        for frame_id, needed in _NACK_ENTRY.iter_unpack(bytes(data[NACK_FIXED_SIZE:end]))
    )
    for entry in entries:
        if entry.needed == 0:
            raise DecodeError("bad_nack", f"NACK entry for frame {entry.frame_id} needs 0")
    return Nack(stream_id, seq, receiver_id, entries, run_nonce, flags, key_id, tag)


# --------------------------------------------------------------------------- encoding


def encode_symbol_header(
    kind: int,
    stream_id: int,
    seq: int,
    frame_id: int,
    esi: int,
    symbol_size: int,
    frame_len: int,
    frame_crc32c: int,
    capture_ts_ns: int,
    fec_scheme: int,
    repair_planned: int,
    run_nonce: int,
    flags: int = 0,
    key_id: int = 0,
) -> bytes:
    """The 48-byte header of a symbol; the payload (and tag) travel separately (``sendmsg``).

    No geometry check (tests build bad datagrams with it; :func:`encode` and the fragmenter
    check first).

    Raises:
        struct.error: a field does not fit its wire type.
    """
    return SYMBOL_HEADER.pack(
        MAGIC,
        VERSION,
        kind,
        flags,
        stream_id,
        seq,
        frame_id,
        esi,
        symbol_size,
        frame_len,
        frame_crc32c,
        capture_ts_ns,
        fec_scheme,
        key_id,
        repair_planned,
        run_nonce,
    )


def _check_tag(msg: Message) -> None:
    want = TAG_SIZE if msg.flags & _AUTH else 0
    if len(msg.tag) != want:
        raise LocalProtocolError(
            f"{type(msg).__name__} with flags 0x{msg.flags:04X} needs a {want}-byte tag, "
            f"not {len(msg.tag)} bytes"
        )


def encode(msg: Message) -> bytes:
    """Encode any message to one datagram (prefix, body, then ``msg.tag``).

    Fields are checked against their wire types only (a symbol also against its geometry,
    :func:`check_symbol`), so tests can build out-of-range datagrams; decoding applies the
    receivers' rules.

    Raises:
        LocalProtocolError: a field does not fit its wire type, a symbol's geometry is
            wrong, or ``tag`` is not 16 bytes with ``AUTH`` / empty without (the message
            says which).
    """
    _check_tag(msg)
    if isinstance(msg, Symbol):
        payload = bytes(msg.payload)
        try:
            check_symbol(
                msg.kind,
                msg.esi,
                msg.symbol_size,
                msg.frame_len,
                msg.fec_scheme,
                msg.repair_planned,
                len(payload),
            )
            header = encode_symbol_header(
                msg.kind,
                msg.stream_id,
                msg.seq,
                msg.frame_id,
                msg.esi,
                msg.symbol_size,
                msg.frame_len,
                msg.frame_crc32c,
                msg.capture_ts_ns,
                msg.fec_scheme,
                msg.repair_planned,
                msg.run_nonce,
                msg.flags,
                msg.key_id,
            )
        except DecodeError as exc:
            raise LocalProtocolError(f"cannot encode Symbol: {exc}") from None
        except struct.error as exc:
            raise LocalProtocolError(f"cannot encode Symbol: {exc}") from None
        return header + payload + msg.tag
    kind = _KIND_OF[type(msg)]
    fields = {f: getattr(msg, f) for f in msg.__slots__ if f not in _ENVELOPE}
    if "name" in fields and len(fields["name"].encode()) > MAX_NAME_BYTES:
        raise LocalProtocolError(f"name {fields['name']!r} is longer than {MAX_NAME_BYTES} bytes")
    try:
        for key in _ADDRESS_FIELDS:
            if key in fields:
                fields[key] = ipaddress.IPv4Address(fields[key]).packed
        if isinstance(msg, Nack):
            fields["count"] = len(msg.entries)
            fields["entries"] = [{"frame_id": e.frame_id, "needed": e.needed} for e in msg.entries]
        head = wire.Prefix.build(
            {
                "version": VERSION,
                "kind": kind,
                "flags": msg.flags,
                "stream_id": msg.stream_id,
                "seq": msg.seq,
            }
        ) + wire.ControlPreamble.build(
            {"key_id": msg.key_id, "reserved": 0, "run_nonce": getattr(msg, "run_nonce", 0)}
        )
        if isinstance(msg, DiscoveryQuery):
            fields["padding"] = b""
            unpadded = len(head) + len(BODIES[kind].build(fields))
            fields["padding"] = bytes(max(0, MIN_QUERY_SIZE - unpadded))
        body = BODIES[kind].build(fields)
    except (ConstructError, struct.error, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from None
    return bytes(head) + bytes(body) + msg.tag
