"""The construct schemas: the wire format of record, protocol version 2 (``docs/protocol.md``).

Every datagram starts with the same 14-byte prefix, network byte order::

    magic u16 = 0x4D43 ("MC") | version u8 = 2 | kind u8 | flags u16 | stream_id u32 | seq u32

followed by a body that depends on ``kind``. Symbol kinds (1 source, 16 repair) share one
48-byte header (:data:`SymbolHeader`); control kinds (2, 3, 4, 5, 17) begin their body with
the 6-byte :data:`ControlPreamble`. With flag ``AUTH`` every kind ends with a 16-byte tag
(:data:`TAG_SIZE`), which is not part of these schemas: the codec cuts it off first.
All integers are big-endian, all strings UTF-8 with a u8 length prefix, all IPv4 addresses
four raw bytes.
"""

from __future__ import annotations

import enum
from typing import Any

from construct import (
    Array,
    Bytes,
    Const,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    PascalString,
    Struct,
    this,
)

MAGIC = 0x4D43
VERSION = 2
OLD_VERSION = 1
"""Version 1: refused as ``old_version`` (sender and receivers upgrade together)."""
PREFIX_SIZE = 14
MAX_NAME_BYTES = 64
"""Names (stream, receiver, discovery filter) are at most this many UTF-8 bytes."""
TAG_SIZE = 16
"""Bytes of the authentication tag trailer present when flag ``AUTH`` is set (§8.3)."""
SYMBOL_HEADER_SIZE = 48
"""Bytes before a symbol's payload (kinds 1 and 16): 14 (prefix) + 34 (symbol fields)."""
CONTROL_PREAMBLE_SIZE = 6
"""Bytes of the control preamble (``key_id``, ``reserved``, ``run_nonce``) after the prefix."""
MIN_QUERY_SIZE = 100
"""A discovery query is at least this many bytes before its tag (zero padding, §9)."""


class Kind(enum.IntEnum):
    """Datagram kinds. A receiver counts and ignores kinds it does not know."""

    SOURCE = 1
    """A source symbol: frame bytes ``[esi·T, (esi+1)·T)`` (v1's "fragment")."""
    HEARTBEAT = 2
    RECEIVER_REPORT = 3
    DISCOVERY_QUERY = 4
    DISCOVERY_ANNOUNCE = 5
    REPAIR = 16
    """A RaptorQ repair symbol (ESI ≥ k)."""
    NACK = 17
    """A receiver asking for more symbols of some frames."""
    RESERVED = 32
    """Reserved, never sent (counted as ``reserved_kind``)."""

    FRAGMENT = 1  # alias of SOURCE: the name tools and logs know


SYMBOL_KINDS = frozenset({Kind.SOURCE, Kind.REPAIR})
CONTROL_KINDS = frozenset(
    {
        Kind.HEARTBEAT,
        Kind.RECEIVER_REPORT,
        Kind.DISCOVERY_QUERY,
        Kind.DISCOVERY_ANNOUNCE,
        Kind.NACK,
    }
)
RESERVED_KINDS = frozenset({Kind.RESERVED})


class Flag(enum.IntFlag):
    """Prefix ``flags`` bits (§2). Any other bit set: ``bad_flags``."""

    AUTH = 0x0001
    """The last 16 bytes are a tag (§8)."""
    ENCRYPTED = 0x0002
    """The symbol payload is AEAD ciphertext (kinds 1 and 16, with ``AUTH`` only)."""
    CHACHA = 0x0004
    """The symbol AEAD is ChaCha20-Poly1305, not AES-128-GCM (kinds 1 and 16, with ``AUTH``)."""


KNOWN_FLAGS = int(Flag.AUTH | Flag.ENCRYPTED | Flag.CHACHA)


class FecScheme(enum.IntEnum):
    """``fec_scheme`` of a symbol header (§5)."""

    NONE = 0
    RAPTORQ = 1
    REED_SOLOMON = 2


class Aead(enum.IntEnum):
    """``aead`` of heartbeats and announces: the run's symbol AEAD."""

    NONE = 0
    AES_128_GCM = 1
    CHACHA20_POLY1305 = 2


class SourceState(enum.IntEnum):
    """What the sender's frame source is doing (heartbeat ``source_state``)."""

    LIVE = 0
    OFFLINE = 1
    ENDED = 2


class Transport(enum.IntEnum):
    """How a stream is sent (discovery announce ``transport``)."""

    MULTICAST = 0
    BROADCAST = 1
    UNICAST = 2


Name = PascalString(Int8ub, "utf8")

Prefix = Struct(
    "magic" / Const(MAGIC, Int16ub),
    "version" / Int8ub,
    "kind" / Int8ub,
    "flags" / Int16ub,
    "stream_id" / Int32ub,
    "seq" / Int32ub,
)

SymbolBody = Struct(
    "frame_id" / Int32ub,
    "esi" / Int32ub,
    "symbol_size" / Int16ub,
    "frame_len" / Int32ub,
    "frame_crc32c" / Int32ub,
    "capture_ts_ns" / Int64ub,
    "fec_scheme" / Int8ub,
    "key_id" / Int8ub,
    "repair_planned" / Int16ub,
    "run_nonce" / Int32ub,
    "payload" / GreedyBytes,
)
"""Kinds 1 and 16 after the prefix (tag cut off): 34 bytes of fields, then the payload."""

ControlPreamble = Struct(
    "key_id" / Int8ub,
    "reserved" / Int8ub,
    "run_nonce" / Int32ub,
)

HeartbeatBody = Struct(
    "name" / Name,
    "host" / Bytes(4),
    "source_state" / Int8ub,
    "width" / Int16ub,
    "height" / Int16ub,
    "fps_milli" / Int32ub,
    "interval_ms" / Int32ub,
    "frames_sent" / Int64ub,
    "datagrams_sent" / Int64ub,
    "uptime_ns" / Int64ub,
    "send_ts_ns" / Int64ub,
    "audience" / Int32ub,
    "seq_hi" / Int32ub,
    "aead" / Int8ub,
    "fec_scheme" / Int8ub,
    "repair_ppm" / Int32ub,
    "nack_delay_ms" / Int16ub,
    "nack_rate_milli" / Int32ub,
    "repair_window_ms" / Int16ub,
    "echo_receiver_id" / Int32ub,
    "echo_challenge" / Int64ub,
)

ReceiverReportBody = Struct(
    "receiver_id" / Int32ub,
    "name" / Name,
    "host" / Bytes(4),
    "frames_completed" / Int64ub,
    "frames_dropped" / Int64ub,
    "loss_ppm" / Int32ub,
    "echo_ts_ns" / Int64ub,
    "held_ns" / Int64ub,
    "burst_milli" / Int32ub,
    "repaired_fec" / Int64ub,
    "repaired_nack" / Int64ub,
    "unrepairable" / Int64ub,
    "challenge" / Int64ub,
)

NackEntry = Struct(
    "frame_id" / Int32ub,
    "needed" / Int16ub,
)

NackBody = Struct(
    "receiver_id" / Int32ub,
    "count" / Int8ub,
    "entries" / Array(this.count, NackEntry),
)

DiscoveryQueryBody = Struct(
    "name" / Name,
    "query_nonce" / Int64ub,
    "padding" / GreedyBytes,
)
"""``padding``: zero bytes making the datagram (tag excluded) at least 100 bytes."""

DiscoveryAnnounceBody = Struct(
    "name" / Name,
    "host" / Bytes(4),
    "transport" / Int8ub,
    "group" / Bytes(4),
    "port" / Int16ub,
    "width" / Int16ub,
    "height" / Int16ub,
    "fps_milli" / Int32ub,
    "echo_query_nonce" / Int64ub,
    "aead" / Int8ub,
)

BODIES: dict[int, Any] = {
    Kind.HEARTBEAT: HeartbeatBody,
    Kind.RECEIVER_REPORT: ReceiverReportBody,
    Kind.DISCOVERY_QUERY: DiscoveryQueryBody,
    Kind.DISCOVERY_ANNOUNCE: DiscoveryAnnounceBody,
    Kind.NACK: NackBody,
}
"""Control bodies after the prefix and the control preamble (tag cut off)."""

Datagram = Struct(
    "prefix" / Prefix,
    "body" / GreedyBytes,
)
"""The outer frame: prefix plus the rest (body, and the tag with ``AUTH``)."""

NACK_FIXED_SIZE = PREFIX_SIZE + CONTROL_PREAMBLE_SIZE + 5
"""Bytes of a NACK before its entries: 25 (§7); an entry adds 6."""
NACK_ENTRY_SIZE = 6
MAX_NACK_ENTRIES = 16
"""Most entries in one NACK datagram (§7)."""
