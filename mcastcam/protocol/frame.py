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
class Frame:
    """One complete received frame: the one type from reassembly to the HTTP/TCP write.

    The reassembler makes it (:class:`~mcastcam.protocol.events.FrameCompleted`), the receiver
    session hands it on (:class:`~mcastcam.protocol.events.FrameReady`), and the hub gives the
    same object to every HTTP/TCP client: nothing may write into ``jpeg``.

    Attributes:
        jpeg: the complete JPEG, read-only (a view of the reassembly buffer, never written
            again); the hub replaces it with a copy only to insert a missing Huffman table.
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
