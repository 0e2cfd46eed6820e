"""Frame types shared by the sender's sources and the receiver's re-serve."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """One frame as a source delivers it to the sender.

    Attributes:
        jpeg: one whole JPEG, SOI to EOI (bytes; a copy that owns its memory).
        seq: source sequence number, 0 for the first frame a source delivers.
        capture_ts_ns: capture time, wall clock (``CLOCK_REALTIME``) nanoseconds.
    """

    jpeg: bytes
    seq: int
    capture_ts_ns: int


@dataclass(frozen=True, slots=True)
class ServedFrame:
    """One complete frame as the receiver re-serves it to every HTTP/TCP client.

    The same object goes to every client: nothing may write into ``jpeg``.

    Attributes:
        jpeg: the complete JPEG, with a Huffman table (DHT) present; read-only.
        frame_id: the sender's frame id (u32, wraps; RFC 1982 order).
        capture_ts_ns: capture time at the sender, wall clock nanoseconds.
        stream_id: the sender's stream id (u32).
        completed_at: when the last fragment arrived, monotonic seconds (``loop.time()``).
    """

    jpeg: bytes | memoryview
    frame_id: int
    capture_ts_ns: int
    stream_id: int
    completed_at: float
