"""Frame integrity for protocol version 2: CRC-32C of a frame (docs/protocol-v2.md §4.3).

Every symbol datagram carries ``frame_crc32c``, the CRC-32C (Castagnoli polynomial) of the
frame's F bytes; a receiver computes it over the complete frame and drops a mismatch as
``corrupt``. The checksum comes from ``google-crc32c`` (hardware CRC32 instruction in its C
extension; §12.2: ≈ 14 µs per 365 kB frame). It guards against accidental corruption only:
it is not a MAC (see :mod:`mcastcam.protocol.auth`).

``google-crc32c``'s C functions accept only ``bytes`` (a ``memoryview`` or ``bytearray`` is
refused, measured with 1.9.0), so other buffers are fed in :data:`CHUNK_BYTES` pieces copied
to ``bytes``: the extra copy is bounded in memory and costs ≈ 8 µs per 365 kB frame.
"""

from __future__ import annotations

from collections.abc import Iterable

import google_crc32c

__all__ = [
    "CHECK_VALUE",
    "CHUNK_BYTES",
    "CORRUPT",
    "IMPLEMENTATION",
    "Crc32c",
    "crc32c",
    "frame_matches",
]

Buffer = bytes | bytearray | memoryview
"""What the functions here read: any C-contiguous buffer of bytes."""

CHECK_VALUE = 0xE3069283
"""CRC-32C of ``b"123456789"`` (the catalogue's check value)."""

CHUNK_BYTES = 64 * 1024
"""Bytes copied at a time from a buffer that is not ``bytes`` (bounds the temporary copy)."""

CORRUPT = "corrupt"
"""Reason token (counter key) of a complete frame whose CRC-32C does not match."""

IMPLEMENTATION: str = google_crc32c.implementation
"""``"c"`` for the fast C extension, ``"python"`` for the slow fallback (a shell warns)."""


def _extend(crc: int, data: Buffer) -> int:
    if isinstance(data, bytes):
        return int(google_crc32c.extend(crc, data))
    view = memoryview(data).cast("B")
    for start in range(0, len(view), CHUNK_BYTES):
        crc = int(google_crc32c.extend(crc, bytes(view[start : start + CHUNK_BYTES])))
    return crc


def crc32c(data: Buffer | Iterable[Buffer]) -> int:
    """CRC-32C (u32) of ``data``: one buffer, or the concatenation of an iterable of pieces.

    ``crc32c(b"123456789") == 0xE3069283``. Pieces are read in order, never joined.

    Raises:
        TypeError: ``data`` (or a piece) is not a bytes-like buffer.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        return _extend(0, data)
    crc = 0
    for piece in data:
        crc = _extend(crc, piece)
    return crc


class Crc32c:
    """Incremental CRC-32C: ``update`` with the frame's pieces in order, then read ``value``.

    >>> c = Crc32c(); c.update(b"1234"); c.update(memoryview(b"56789")); hex(c.value)
    '0xe3069283'
    """

    __slots__ = ("_crc", "length")

    def __init__(self) -> None:
        self._crc = 0
        self.length = 0
        """Bytes seen so far."""

    def update(self, piece: Buffer) -> None:
        """Extend the checksum with ``piece`` (any bytes-like buffer, copied only if needed)."""
        self._crc = _extend(self._crc, piece)
        self.length += memoryview(piece).nbytes

    @property
    def value(self) -> int:
        """The CRC-32C (u32) of everything passed to :meth:`update`."""
        return self._crc


def frame_matches(frame: Buffer, frame_crc32c: int) -> bool:
    """True when the complete ``frame`` has the CRC-32C its datagrams carried.

    False means the frame is dropped with reason :data:`CORRUPT` (counted, never published);
    loss is an event of the receiver session, not an exception.
    """
    return crc32c(frame) == frame_crc32c
