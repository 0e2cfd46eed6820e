"""Datagram codec: bytes <-> frozen dataclasses, with one error type.

This is the only module that catches construct's and struct's low-level errors
(``ConstructError``, ``struct.error``, ``ValueError``, ``UnicodeDecodeError``,
``IndexError``); every one becomes a :class:`~mcastcam.errors.DecodeError` with a stable
``reason`` and an exact message. Validation that construct does not do (version, kind,
fragment geometry, lengths against the datagram size) is done here too.

Fragments have a ``struct.Struct`` fast path (:data:`FRAGMENT_HEADER`); a Hypothesis test
proves it byte-identical to the construct schema in :mod:`mcastcam.protocol.wire`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from construct import ConstructError

from mcastcam.errors import DecodeError, LocalProtocolError
from mcastcam.protocol import wire
from mcastcam.protocol.wire import (
    BODIES,
    FRAGMENT_HEADER_SIZE,
    MAGIC,
    MAX_NAME_BYTES,
    PREFIX_SIZE,
    RESERVED_KINDS,
    VERSION,
    Kind,
)

FRAGMENT_HEADER = struct.Struct("!HBBHIIIHHIIHQ")
"""Fragment header fast path: prefix + fragment fields, 40 bytes (see ``wire.FragmentBody``)."""
assert FRAGMENT_HEADER.size == FRAGMENT_HEADER_SIZE
_PREFIX = struct.Struct("!HBBHII")
assert _PREFIX.size == PREFIX_SIZE

MAX_FRAGMENTS = 0xFFFF
"""frag_count is a u16."""
MAX_PAYLOAD = 0xFFFF
"""payload_len is a u16 (a UDP/IPv4 datagram cannot carry more anyway)."""
MAX_FRAME_LEN = 0xFFFFFFFF
"""frame_len is a u32."""


def fragment_geometry(frag_index: int, frag_count: int, frame_len: int) -> tuple[int, int]:
    """The canonical ``(payload_offset, payload_len)`` of fragment ``frag_index``.

    A frame of ``frame_len`` bytes cut into ``frag_count`` fragments is split evenly: the
    first ``frame_len % frag_count`` fragments carry one byte more than the rest, so no
    fragment is a runt. Sender and receiver both use this; a fragment whose declared offset
    or length differs is rejected (``bad_geometry``), so fragments always tile the frame.
    """
    base, extra = divmod(frame_len, frag_count)
    if frag_index < extra:
        return frag_index * (base + 1), base + 1
    return frag_index * base + extra, base


@dataclass(frozen=True, slots=True)
class Fragment:
    """One piece of a JPEG frame (kind 1). ``payload`` is a view into the datagram."""

    stream_id: int
    seq: int
    frame_id: int
    frag_index: int
    frag_count: int
    frame_len: int
    payload_offset: int
    capture_ts_ns: int
    payload: bytes | memoryview
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sender liveness and stream description (kind 2), sent every ``interval_ms``."""

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
    flags: int = 0


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """A receiver's unicast report to the sender (kind 3); ``stream_id`` is the sender's."""

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
    flags: int = 0


@dataclass(frozen=True, slots=True)
class DiscoveryQuery:
    """A "who sends here?" query (kind 4); ``stream_id`` is the querier's id, ``name`` a filter."""

    stream_id: int
    seq: int
    name: str
    flags: int = 0


@dataclass(frozen=True, slots=True)
class DiscoveryAnnounce:
    """A sender describing its stream (kind 5); ``group`` is the destination address."""

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
    flags: int = 0


Message = Fragment | Heartbeat | ReceiverReport | DiscoveryQuery | DiscoveryAnnounce

_KIND_OF: dict[type[Any], Kind] = {
    Fragment: Kind.FRAGMENT,
    Heartbeat: Kind.HEARTBEAT,
    ReceiverReport: Kind.RECEIVER_REPORT,
    DiscoveryQuery: Kind.DISCOVERY_QUERY,
    DiscoveryAnnounce: Kind.DISCOVERY_ANNOUNCE,
}
_ADDRESS_FIELDS = ("host", "group")


# --------------------------------------------------------------------------- decoding


def check_prefix(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """Validate the common prefix; return ``(kind, flags, stream_id, seq)``.

    Raises:
        DecodeError: ``truncated``, ``bad_magic``, ``bad_version``, ``unsupported_version``
            (a newer version: ignore and count), ``reserved_kind``, ``unknown_kind``.
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
        raise DecodeError("bad_version", f"version {version} does not exist")
    if kind not in BODIES:
        if kind in RESERVED_KINDS:
            raise DecodeError("reserved_kind", f"kind {kind} is reserved; ignored")
        raise DecodeError("unknown_kind", f"kind {kind} is unknown; ignored")
    return kind, flags, stream_id, seq


def decode_fragment_header(data: bytes | bytearray | memoryview) -> tuple[int, ...]:
    """Fast path: validate a fragment datagram and return its 13 header fields.

    Returns the :data:`FRAGMENT_HEADER` tuple ``(magic, version, kind, flags, stream_id,
    seq, frame_id, frag_index, frag_count, frame_len, payload_offset, payload_len,
    capture_ts_ns)``; the payload is ``data[40:]``.

    Raises:
        DecodeError: as :func:`check_prefix`, or ``not_fragment``, ``truncated``,
            ``length_mismatch``, ``bad_fragment_index``, ``bad_geometry``.
    """
    if len(data) < FRAGMENT_HEADER_SIZE:
        check_prefix(data)  # a better reason if the prefix itself is bad
        raise DecodeError(
            "truncated",
            f"datagram of {len(data)} bytes is shorter than the "
            f"{FRAGMENT_HEADER_SIZE}-byte fragment header",
        )
    h = FRAGMENT_HEADER.unpack_from(data)
    if h[0] != MAGIC or h[1] != VERSION or h[2] != Kind.FRAGMENT:
        check_prefix(data)
        raise DecodeError("not_fragment", f"kind {h[2]} is not a fragment")
    check_fragment(h[7], h[8], h[9], h[10], h[11], len(data) - FRAGMENT_HEADER_SIZE)
    return h


def check_fragment(
    frag_index: int, frag_count: int, frame_len: int, offset: int, plen: int, carried: int
) -> None:
    """Check a fragment's fields against each other and the ``carried`` payload bytes.

    Raises:
        DecodeError: ``length_mismatch``, ``bad_fragment_index`` or ``bad_geometry``.
    """
    if plen != carried:
        raise DecodeError(
            "length_mismatch",
            f"payload_len {plen} but the datagram carries {carried} payload bytes",
        )
    if frag_count == 0 or frag_index >= frag_count:
        raise DecodeError(
            "bad_fragment_index", f"frag_index {frag_index} is not below frag_count {frag_count}"
        )
    if frame_len < frag_count:
        raise DecodeError(
            "bad_geometry", f"frame_len {frame_len} is smaller than frag_count {frag_count}"
        )
    want_offset, want_len = fragment_geometry(frag_index, frag_count, frame_len)
    if offset != want_offset or plen != want_len:
        raise DecodeError(
            "bad_geometry",
            f"fragment {frag_index}/{frag_count} of a {frame_len}-byte frame must be "
            f"{want_len} bytes at offset {want_offset}, not {plen} at {offset}",
        )


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode any datagram into its dataclass.

    Args:
        data: one whole UDP payload.

    Returns:
        A :data:`Message`; a fragment's ``payload`` is a zero-copy view of ``data``.

    Raises:
        DecodeError: for anything that is not a valid datagram of a kind we know; its
            ``reason`` says why (see :func:`check_prefix` and :func:`decode_fragment_header`,
            plus ``bad_body`` and ``trailing_bytes`` for control kinds).
    """
    kind, flags, stream_id, seq = check_prefix(data)
    if kind == Kind.FRAGMENT:
        h = decode_fragment_header(data)
        return Fragment(
            stream_id,
            seq,
            h[6],
            h[7],
            h[8],
            h[9],
            h[10],
            h[12],
            memoryview(data)[FRAGMENT_HEADER_SIZE:],
            flags,
        )
    body = bytes(data[PREFIX_SIZE:])
    schema = BODIES[kind]
    try:
        parsed = schema.parse(body)
        used = len(schema.build(parsed))
    except (ConstructError, struct.error, ValueError, UnicodeDecodeError, IndexError) as exc:
        raise DecodeError("bad_body", f"{Kind(kind).name.lower()} body: {exc}") from None
    if used != len(body):
        raise DecodeError(
            "trailing_bytes",
            f"{Kind(kind).name.lower()} body has {len(body) - used} bytes after its last field",
        )
    fields = {k: v for k, v in parsed.items() if not k.startswith("_")}
    for key in _ADDRESS_FIELDS:
        if key in fields:
            fields[key] = str(ipaddress.IPv4Address(fields[key]))
    if "name" in fields and len(fields["name"].encode()) > MAX_NAME_BYTES:
        raise DecodeError("bad_body", f"name longer than {MAX_NAME_BYTES} bytes")
    cls = {
        Kind.HEARTBEAT: Heartbeat,
        Kind.RECEIVER_REPORT: ReceiverReport,
        Kind.DISCOVERY_QUERY: DiscoveryQuery,
        Kind.DISCOVERY_ANNOUNCE: DiscoveryAnnounce,
    }[Kind(kind)]
    return cls(stream_id=stream_id, seq=seq, flags=flags, **fields)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- encoding


def encode_fragment_header(
    stream_id: int,
    seq: int,
    frame_id: int,
    frag_index: int,
    frag_count: int,
    frame_len: int,
    payload_offset: int,
    payload_len: int,
    capture_ts_ns: int,
    flags: int = 0,
) -> bytes:
    """The 40-byte header of a fragment; the payload travels separately (``sendmsg``).

    Raises:
        struct.error: a field is out of its range; callers validate first
            (the fragmenter raises :class:`LocalProtocolError` with the numbers).
    """
    return FRAGMENT_HEADER.pack(
        MAGIC,
        VERSION,
        Kind.FRAGMENT,
        flags,
        stream_id,
        seq,
        frame_id,
        frag_index,
        frag_count,
        frame_len,
        payload_offset,
        payload_len,
        capture_ts_ns,
    )


def encode(msg: Message) -> bytes:
    """Encode any message to one datagram.

    Raises:
        LocalProtocolError: a field does not fit its wire type (the message says which).
    """
    if isinstance(msg, Fragment):
        payload = bytes(msg.payload)
        _check_local(msg.frag_index, msg.frag_count, msg.frame_len, msg.payload_offset, payload)
        return (
            encode_fragment_header(
                msg.stream_id,
                msg.seq,
                msg.frame_id,
                msg.frag_index,
                msg.frag_count,
                msg.frame_len,
                msg.payload_offset,
                len(payload),
                msg.capture_ts_ns,
                msg.flags,
            )
            + payload
        )
    kind = _KIND_OF[type(msg)]
    fields = {f: getattr(msg, f) for f in msg.__slots__ if f not in ("stream_id", "seq", "flags")}
    if "name" in fields and len(fields["name"].encode()) > MAX_NAME_BYTES:
        raise LocalProtocolError(f"name {fields['name']!r} is longer than {MAX_NAME_BYTES} bytes")
    try:
        for key in _ADDRESS_FIELDS:
            if key in fields:
                fields[key] = ipaddress.IPv4Address(fields[key]).packed
        prefix = wire.Prefix.build(
            {
                "version": VERSION,
                "kind": kind,
                "flags": msg.flags,
                "stream_id": msg.stream_id,
                "seq": msg.seq,
            }
        )
        body = BODIES[kind].build(fields)
    except (ConstructError, struct.error, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from None
    return bytes(prefix) + bytes(body)


def _check_local(
    frag_index: int, frag_count: int, frame_len: int, offset: int, payload: bytes
) -> None:
    try:
        check_fragment(frag_index, frag_count, frame_len, offset, len(payload), len(payload))
    except DecodeError as exc:
        raise LocalProtocolError(str(exc)) from None
