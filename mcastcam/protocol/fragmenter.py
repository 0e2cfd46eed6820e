"""Cut one JPEG frame into fragment datagrams (pure; docs/protocol.md).

Each datagram is ``(header, payload)``: a 40-byte header built with the struct fast path
and a ``memoryview`` slice of the frame, so the payload is never copied; the shell sends
both pieces with one ``sendmsg`` call.
"""

from __future__ import annotations

from mcastcam.errors import LocalProtocolError
from mcastcam.protocol.codec import (
    FRAGMENT_HEADER,
    MAX_FRAGMENTS,
    MAX_FRAME_LEN,
    MAX_PAYLOAD,
    fragment_geometry,
)
from mcastcam.protocol.serial import serial_add
from mcastcam.protocol.wire import FRAGMENT_HEADER_SIZE, MAGIC, VERSION, Kind

IPV4_HEADER = 20
"""Bytes of an IPv4 header without options."""
UDP_HEADER = 8
"""Bytes of a UDP header."""
MIN_MTU = 576
"""The smallest MTU every IPv4 host must accept (RFC 791)."""

Datagram = tuple[bytes, memoryview]
"""One datagram as the shell sends it: header bytes and a payload view."""


def max_payload_for_mtu(mtu: int) -> int:
    """Largest fragment payload, in bytes, that fits one datagram on a link of ``mtu`` bytes.

    ``mtu - 20 (IPv4) - 8 (UDP) - 40 (fragment header)``; 1432 for Ethernet's 1500.

    Raises:
        LocalProtocolError: ``mtu`` is below 576 (RFC 791) or above 65535.
    """
    if not MIN_MTU <= mtu <= 0xFFFF:
        raise LocalProtocolError(f"MTU {mtu} is outside {MIN_MTU}..65535 bytes")
    return min(MAX_PAYLOAD, mtu - IPV4_HEADER - UDP_HEADER - FRAGMENT_HEADER_SIZE)


def fragment_count(frame_len: int, max_payload: int) -> int:
    """How many fragments a ``frame_len``-byte frame needs at ``max_payload`` bytes each.

    Raises:
        LocalProtocolError: the frame is empty, or larger than the format can carry
            (65535 fragments of ``max_payload`` bytes, or 2**32 - 1 bytes).
    """
    if frame_len <= 0:
        raise LocalProtocolError("cannot send an empty frame")
    if max_payload <= 0:
        raise LocalProtocolError(f"max payload {max_payload} must be positive")
    count = -(-frame_len // max_payload)
    if count > MAX_FRAGMENTS or frame_len > MAX_FRAME_LEN:
        limit = min(MAX_FRAGMENTS * max_payload, MAX_FRAME_LEN)
        raise LocalProtocolError(
            f"frame of {frame_len} bytes needs {count} fragments of {max_payload} bytes; "
            f"the format carries at most {MAX_FRAGMENTS} fragments ({limit} bytes)"
        )
    return count


def fragment_frame(
    jpeg: bytes | memoryview,
    *,
    stream_id: int,
    first_seq: int,
    frame_id: int,
    capture_ts_ns: int,
    max_payload: int,
    flags: int = 0,
) -> list[Datagram]:
    """Cut ``jpeg`` into balanced fragments.

    Args:
        jpeg: the whole frame (any bytes; the sender sends JPEGs byte for byte).
        stream_id: u32 stream id of this sender run.
        first_seq: datagram sequence number of the first fragment; the others follow
            (u32, wrapping). The caller advances its counter by ``len(result)``.
        frame_id: u32 frame id.
        capture_ts_ns: capture time, wall clock ns (u64).
        max_payload: largest payload per datagram in bytes (see :func:`max_payload_for_mtu`).
        flags: u16 prefix flags.

    Returns:
        ``[(header, payload), ...]`` in fragment order; payloads are views of ``jpeg``.
        Every fragment carries ``len(jpeg) // n`` or one byte more (no runt).

    Raises:
        LocalProtocolError: the frame is empty or too large for the format.
    """
    view = memoryview(jpeg).cast("B")
    frame_len = len(view)
    count = fragment_count(frame_len, max_payload)
    pack = FRAGMENT_HEADER.pack
    out: list[Datagram] = []
    for index in range(count):
        offset, length = fragment_geometry(index, count, frame_len)
        header = pack(
            MAGIC,
            VERSION,
            Kind.FRAGMENT,
            flags,
            stream_id,
            serial_add(first_seq, index),
            frame_id,
            index,
            count,
            frame_len,
            offset,
            length,
            capture_ts_ns,
        )
        out.append((header, view[offset : offset + length]))
    return out
