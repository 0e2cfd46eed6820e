"""The TCP re-serve's framing (docs/protocol.md, "TCP re-serve"), defined once.

Each frame is a 20-byte header followed by the JPEG, all integers big-endian::

    offset size field
    0      4    magic          b"MCTF"
    4      4    jpeg_len       u32, bytes of JPEG that follow the header
    8      8    capture_ts_ns  u64, capture time at the sender, wall clock ns since the epoch
    16     4    frame_id       u32, the sender's frame id (wraps; RFC 1982 order)
    20     N    JPEG           SOI ... EOI

The receiver's shell (:mod:`mcastcam.receiver.tcp`) encodes with :func:`encode_tcp_header`;
clients decode with :class:`TcpFrameParser`, which takes bytes as they arrive, in any
chunking, and gives back whole frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mcastcam.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_FRAME_BYTES",
    "TCP_HEADER",
    "TCP_MAGIC",
    "TcpFrame",
    "TcpFrameError",
    "TcpFrameParser",
    "encode_tcp_header",
]

TCP_MAGIC = b"MCTF"
#: magic, jpeg_len (u32), capture_ts_ns (u64), frame_id (u32); big-endian, 20 bytes.
TCP_HEADER = struct.Struct(">4sIQI")
#: Largest frame a parser accepts by default, bytes (a 4K JPEG is well under this).
MAX_FRAME_BYTES = 64 * 1024 * 1024


class TcpFrameError(RemoteProtocolError):
    """The byte stream is not the TCP re-serve: bad magic, or a frame over the size limit."""


@dataclass(frozen=True, slots=True)
class TcpFrame:
    """One frame decoded from the TCP re-serve.

    Attributes:
        jpeg: the JPEG (bytes, ``jpeg_len`` of them).
        capture_ts_ns: capture time at the sender, wall clock ns.
        frame_id: the sender's frame id (u32).
    """

    jpeg: bytes
    capture_ts_ns: int
    frame_id: int


def encode_tcp_header(jpeg_len: int, capture_ts_ns: int, frame_id: int) -> bytes:
    """The 20-byte header that goes before a JPEG of ``jpeg_len`` bytes.

    Args:
        jpeg_len: bytes of JPEG that follow (0 .. 2**32 - 1).
        capture_ts_ns: capture time, wall clock ns (0 .. 2**64 - 1).
        frame_id: the sender's frame id (0 .. 2**32 - 1).

    Raises:
        LocalProtocolError: a value does not fit its field.
    """
    try:
        return TCP_HEADER.pack(TCP_MAGIC, jpeg_len, capture_ts_ns, frame_id)
    except struct.error:
        raise LocalProtocolError(
            f"TCP frame header out of range: jpeg_len={jpeg_len} (u32), "
            f"capture_ts_ns={capture_ts_ns} (u64), frame_id={frame_id} (u32)"
        ) from None


class TcpFrameParser:
    """Incremental decoder of the TCP re-serve byte stream.

    Feed it bytes as they arrive (any chunking); it gives back the frames completed by
    them. It buffers at most one header plus one frame (``max_frame_bytes``).

    Args:
        max_frame_bytes: largest ``jpeg_len`` accepted, bytes.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 0:
            raise LocalProtocolError(f"max_frame_bytes must be >= 0, not {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._header: tuple[int, int, int] | None = None  # jpeg_len, capture_ts_ns, frame_id
        self._failed: str | None = None  # the error that broke the stream

    @property
    def at_frame_boundary(self) -> bool:
        """True when no partial frame is buffered (the stream may end cleanly here)."""
        return self._header is None and not self._buf

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[TcpFrame]:
        """Take the next bytes of the stream; return the frames they complete, in order.

        Frames completed before a bad header in the same ``data`` are returned first; the
        error is raised by the next call.

        Raises:
            TcpFrameError: bad magic or a frame longer than ``max_frame_bytes``. The
                parser is then broken: every later call raises the same error.
        """
        if self._failed is not None:
            raise TcpFrameError(self._failed)
        buf = self._buf
        buf += data
        frames: list[TcpFrame] = []
        while True:
            if self._header is None:
                if len(buf) < TCP_HEADER.size:
                    return frames
                try:
                    self._header = self._decode_header(buf)
                except TcpFrameError:
                    if frames:
                        return frames  # delivered now; the next call raises
                    raise
                del buf[: TCP_HEADER.size]
            length, ts_ns, frame_id = self._header
            if len(buf) < length:
                return frames
            frames.append(TcpFrame(bytes(buf[:length]), ts_ns, frame_id))
            del buf[:length]
            self._header = None

    def _decode_header(self, buf: bytearray) -> tuple[int, int, int]:
        magic, length, ts_ns, frame_id = TCP_HEADER.unpack_from(buf)
        if magic != TCP_MAGIC:
            self._failed = f"bad TCP frame magic {bytes(magic)!r}, expected {TCP_MAGIC!r}"
        elif length > self.max_frame_bytes:
            self._failed = (
                f"TCP frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
            )
        if self._failed is not None:
            buf.clear()
            raise TcpFrameError(self._failed)
        return length, ts_ns, frame_id
