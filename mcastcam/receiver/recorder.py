"""``mcastcam-recv --record DIR``: the received frames written to ``.mjpeg`` segments.

The :class:`Recorder` is one more subscriber of the :class:`~mcastcam.receiver.fanout.FrameHub`
(kind ``"record"``), with the same latest-frame slot as every client: its "transport"
(:class:`_DiskTransport`) hands each frame to one writer thread and stays busy until the
thread is done, so a slow disk makes the recorder skip frames (counted) and never holds up
the event loop or the other clients. The event loop only unpacks a 20-byte header and queues
the frame; opening, writing, rotating and deleting files all happen on the writer thread.

A segment ``mcastcam-YYYYmmdd-HHMMSSZ-NNNN.mjpeg`` is the JPEGs concatenated as received
(``mcastcam-send --source SEGMENT`` and ``ffmpeg -f mjpeg -i SEGMENT`` play it), next to its
index ``….jsonl``: one JSON object per frame, ``{"offset": bytes, "length": bytes,
"capture_ts_ns": sender wall clock ns, "frame_id": n}``. When to rotate, when to stop (the
free-space floor) and what to delete (retention) is decided by the pure
:class:`~mcastcam.protocol.recording.RecordingPolicy`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mcastcam.protocol.frame import Frame
from mcastcam.protocol.recording import Action, RecordingPolicy, RecordLimits, format_bytes
from mcastcam.protocol.tcpframe import TCP_HEADER, encode_tcp_header
from mcastcam.receiver.fanout import FrameHub, HubFullError, Piece, Subscriber

__all__ = ["PREFIX", "Recorder", "disk_space", "segment_name"]

log = logging.getLogger(__name__)

PREFIX = "mcastcam"
"""Segment names start with this; retention only ever deletes files named so."""
_SEGMENT_RE = re.compile(rf"^{PREFIX}-\d{{8}}-\d{{6}}Z-\d{{4,}}\.mjpeg$")

FreeSpaceFn = Callable[[str], tuple[int, int]]


def disk_space(path: str) -> tuple[int, int]:
    """``(free, total)`` bytes of the file system holding ``path`` (``statvfs``).

    ``free`` is what an unprivileged process may still write (``f_bavail``). Raises
    ``OSError``.
    """
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def segment_name(wall: float, seq: int) -> str:
    """``mcastcam-20250102-030405Z-0007.mjpeg`` for Unix time ``wall`` and number ``seq``."""
    return f"{PREFIX}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(wall))}Z-{seq:04d}.mjpeg"


def _encode(frame: Frame) -> tuple[Piece, Piece]:
    # The frame's metadata travels to the disk transport as the TCP re-serve's header.
    jpeg = memoryview(frame.jpeg)
    return encode_tcp_header(jpeg.nbytes, frame.capture_ts_ns, frame.frame_id), jpeg


class _DiskTransport(asyncio.WriteTransport):
    """The recorder's end of its hub slot: header + JPEG in, one frame at a time to the thread."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder
        self._meta: tuple[int, int] | None = None
        self._inflight = 0
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._meta is None:
            _magic, _length, capture_ts_ns, frame_id = TCP_HEADER.unpack(data)
            self._meta = (capture_ts_ns, frame_id)
            return
        capture_ts_ns, frame_id = self._meta
        self._meta = None
        view = memoryview(data)
        self._inflight = view.nbytes
        self._recorder._submit(view, capture_ts_ns, frame_id)

    def written(self) -> None:
        """The thread is done with the frame (on the loop)."""
        self._inflight = 0

    def get_write_buffer_size(self) -> int:
        return self._inflight

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True


class Recorder:
    """Writes the hub's frames to rotated ``.mjpeg`` segments in ``directory``.

    Args:
        hub: where the frames come from (one subscriber slot, kind ``"record"``).
        directory: where segments go (created if missing).
        limits: segment length and size, retention, free-space floor.
        free_space: ``(free, total)`` bytes for a path (default :func:`disk_space`; tests
            inject a smaller disk).
        clock: monotonic seconds (segment age).
        wall: Unix seconds (segment names).

    Raises:
        OSError: ``directory`` cannot be created or is not writable (checked at once).
    """

    def __init__(
        self,
        hub: FrameHub,
        directory: str | Path,
        limits: RecordLimits,
        *,
        free_space: FreeSpaceFn = disk_space,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"--record {self.directory}: not writable")
        self.policy = RecordingPolicy(limits)
        self._free_space = free_space
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()  # the writer thread changes what status() reads
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "mcastcam-record")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: _DiskTransport | None = None
        self._sub: Subscriber | None = None
        self._pending: concurrent.futures.Future[None] | None = None
        self._segment: Path | None = None
        self._data: IO[bytes] | None = None
        self._index: IO[str] | None = None
        self._seq = 0
        self.frames = 0
        self.bytes = 0
        self.frames_stopped = 0
        self.segments_written = 0
        self.segments_deleted = 0
        self.write_errors = 0

    # -- on the event loop ------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the hub: from now on every frame the slot lets through is written.

        Raises:
            HubFullError: the hub has no room for one more subscriber.
        """
        self._loop = asyncio.get_running_loop()
        self._transport = _DiskTransport(self)
        try:
            self._sub = self.hub.subscribe(
                self._transport, kind="record", address=str(self.directory), encoder=_encode
            )
        except HubFullError:
            self._transport = None
            raise
        log.info("recording to %s (%s)", self.directory, self._describe_limits())

    async def close(self) -> None:
        """Stop taking frames, let the frame being written finish, close the segment."""
        if self._sub is not None:
            self.hub.unsubscribe(self._sub)
            self._sub = None
        if self._transport is not None:
            self._transport.close()
        pending = self._pending
        if pending is not None:
            await asyncio.wrap_future(pending)
        await asyncio.wrap_future(self._executor.submit(self._close_segment))
        self._executor.shutdown(wait=True)

    def status(self) -> dict[str, Any]:
        """``/status``'s ``recording`` (JSON-ready).

        ``state`` (``idle``, ``recording``, ``stopped``), ``dir``, ``segment`` (file name or
        ``None``), ``bytes`` and ``frames`` written by this run,
        ``segment_bytes``, ``stopped_reason``, ``frames_skipped`` (the disk was busy),
        ``frames_stopped`` (skipped while stopped), ``segments_written``, ``segments_deleted``,
        ``write_errors``.
        """
        sub = self._sub
        with self._lock:
            return {
                "state": self.policy.state,
                "dir": str(self.directory),
                "segment": self._segment.name if self._segment is not None else None,
                "bytes": self.bytes,
                "frames": self.frames,
                "segment_bytes": self.policy.segment_bytes,
                "stopped_reason": self.policy.stopped_reason,
                "frames_skipped": sub.frames_skipped if sub is not None else 0,
                "frames_stopped": self.frames_stopped,
                "segments_written": self.segments_written,
                "segments_deleted": self.segments_deleted,
                "write_errors": self.write_errors,
            }

    def _submit(self, jpeg: memoryview, capture_ts_ns: int, frame_id: int) -> None:
        future = self._executor.submit(self._write_frame, jpeg, capture_ts_ns, frame_id)
        self._pending = future
        loop = self._loop
        assert loop is not None
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._written, f))

    def _written(self, future: concurrent.futures.Future[None]) -> None:
        if self._pending is future:
            self._pending = None
        exc = future.exception()
        if exc is not None:  # a bug, not a disk error (those are handled in the thread)
            log.error("recorder: %r", exc)
        if self._transport is not None:
            self._transport.written()
        if self._sub is not None and not self._sub.closed:
            self._sub.drained()  # the frame that waited in the slot, if any, goes next

    # -- on the writer thread ------------------------------------------------------------

    def _write_frame(self, jpeg: memoryview, capture_ts_ns: int, frame_id: int) -> None:
        now = self._clock()
        try:
            free, total = self._free_space(str(self.directory))
        except OSError as exc:
            self._failed(f"cannot read free space of {self.directory}: {exc}", now)
            return
        with self._lock:
            action = self.policy.decide(now, jpeg.nbytes, free, total)
        if action is Action.SKIP:
            self.frames_stopped += 1
            return
        if action is Action.STOP:
            self.frames_stopped += 1
            self._close_segment()
            log.warning("recording stopped: %s", self.policy.stopped_reason)
            return
        try:
            if action is not Action.WRITE:
                self._close_segment()
                self._open_segment(now)
            data, index = self._data, self._index
            assert data is not None and index is not None
            offset = data.tell()
            data.write(jpeg)
            data.flush()
            record = {"offset": offset, "length": jpeg.nbytes, "capture_ts_ns": capture_ts_ns,
                      "frame_id": frame_id}  # fmt: skip
            index.write(json.dumps(record) + "\n")
            index.flush()
        except OSError as exc:
            self._failed(f"writing {self._segment}: {exc}", now)
            return
        with self._lock:
            self.policy.wrote(jpeg.nbytes)
            self.frames += 1
            self.bytes += jpeg.nbytes

    def _failed(self, reason: str, now: float) -> None:
        self.write_errors += 1
        self.frames_stopped += 1
        self._close_segment()
        with self._lock:
            self.policy.failed(reason, now)
        log.warning("recording stopped: %s (retrying in a few seconds)", reason)

    def _open_segment(self, now: float) -> None:
        resumed = self.policy.state == "stopped"
        self._seq += 1
        path = self.directory / segment_name(self._wall(), self._seq)
        data = path.open("xb")
        try:
            index = path.with_suffix(".jsonl").open("x", encoding="utf-8")
        except OSError:
            data.close()
            raise
        with self._lock:
            self._segment, self._data, self._index = path, data, index
            self.policy.opened(now)
            self.segments_written += 1
        if resumed:
            log.warning("recording resumed in %s", path.name)
        else:
            log.info("recording segment %s", path.name)
        self._apply_retention()

    def _close_segment(self) -> None:
        data, index = self._data, self._index
        with self._lock:
            self._data = self._index = None
            self._segment = None
        for f in (data, index):
            if f is not None:
                try:
                    f.close()
                except OSError as exc:
                    log.warning("recorder: closing %s: %s", f.name, exc)

    def _apply_retention(self) -> None:
        segments = []
        for path in sorted(self.directory.iterdir()):
            if _SEGMENT_RE.match(path.name):
                index = path.with_suffix(".jsonl")
                size = _size(path) + _size(index)
                segments.append((path.name, size))
        for name in self.policy.expired(segments):
            path = self.directory / name
            for victim in (path, path.with_suffix(".jsonl")):
                try:
                    victim.unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("recorder: cannot delete %s: %s", victim, exc)
            self.segments_deleted += 1
            log.info("recording: deleted the old segment %s (retention)", name)

    def _describe_limits(self) -> str:
        limits = self.policy.limits
        parts = [f"segments of {limits.segment_seconds:g} s or "
                 f"{format_bytes(limits.segment_bytes)}"]  # fmt: skip
        if limits.keep_segments is not None:
            parts.append(f"keep {limits.keep_segments} segments")
        if limits.keep_bytes is not None:
            parts.append(f"keep {format_bytes(limits.keep_bytes)}")
        try:
            _free, total = self._free_space(str(self.directory))
            parts.append(f"stop below {format_bytes(limits.floor(total))} free")
        except OSError:
            pass
        return ", ".join(parts)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
