"""The construct schemas: the wire format of record (see ``docs/protocol.md``).

Every datagram starts with the same 14-byte prefix, network byte order::

    magic u16 = 0x4D43 ("MC") | version u8 | kind u8 | flags u16 | stream_id u32 | seq u32

followed by a body that depends on ``kind``. All integers are big-endian, all strings
UTF-8 with a u8 length prefix, all IPv4 addresses four raw bytes.
"""

from __future__ import annotations

import enum
from typing import Any

from construct import (
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
VERSION = 1
PREFIX_SIZE = 14
MAX_NAME_BYTES = 64
"""Names (stream, receiver, discovery filter) are at most this many UTF-8 bytes."""


class Kind(enum.IntEnum):
    """Datagram kinds. A receiver counts and ignores kinds it does not know."""

    FRAGMENT = 1
    HEARTBEAT = 2
    RECEIVER_REPORT = 3
    DISCOVERY_QUERY = 4
    DISCOVERY_ANNOUNCE = 5
    # Reserved, not yet sent by anyone; receivers ignore them (counted as "reserved_kind").
    REPAIR_PARITY = 16
    REPAIR_NACK = 17
    AUTH = 32


RESERVED_KINDS = frozenset({Kind.REPAIR_PARITY, Kind.REPAIR_NACK, Kind.AUTH})


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

FragmentBody = Struct(
    "frame_id" / Int32ub,
    "frag_index" / Int16ub,
    "frag_count" / Int16ub,
    "frame_len" / Int32ub,
    "payload_offset" / Int32ub,
    "payload_len" / Int16ub,
    "capture_ts_ns" / Int64ub,
    "payload" / Bytes(this.payload_len),
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
)

DiscoveryQueryBody = Struct(
    "name" / Name,
)

DiscoveryAnnounceBody = Struct(
    "name" / Name,
    "host" / Bytes(4),
    "transport" / Int8ub,
    "group" / Bytes(4),
    "port" / Int16ub,
    "width" / Int16ub,
    "height" / Int16ub,
    "fps_milli" / Int32ub,
)

BODIES: dict[int, Any] = {
    Kind.FRAGMENT: FragmentBody,
    Kind.HEARTBEAT: HeartbeatBody,
    Kind.RECEIVER_REPORT: ReceiverReportBody,
    Kind.DISCOVERY_QUERY: DiscoveryQueryBody,
    Kind.DISCOVERY_ANNOUNCE: DiscoveryAnnounceBody,
}

Datagram = Struct(
    "prefix" / Prefix,
    "body" / GreedyBytes,
)
"""The outer frame: prefix plus the body bytes, parsed by kind with :data:`BODIES`."""

FRAGMENT_HEADER_SIZE = PREFIX_SIZE + 26
"""Bytes before a fragment's payload: 14 (prefix) + 26 (fragment fields) = 40."""
