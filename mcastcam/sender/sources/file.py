"""File sources: a raw concatenated-JPEG (``.mjpeg``) file or a folder of JPEG files."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from mcastcam.errors import SourceError
from mcastcam.jpeg import SplitStats, ensure_dht, is_valid_jpeg, jpeg_size, split_jpegs
from mcastcam.protocol.frame import CapturedFrame
from mcastcam.sender.sources.base import DEFAULT_FPS, FrameClock, FrameSource, wall_clock_ns

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Largest ``.mjpeg`` file or folder total read into memory (bytes)."""

JPEG_SUFFIXES = (".jpg", ".jpeg")
MJPEG_SUFFIXES = (".mjpeg", ".mjpg")


class JpegSequenceSource(FrameSource):
    """Plays a list of JPEG frames paced at ``fps``, once or looping.

    Frame ``k`` is handed out at ``start + k / fps`` on the event loop clock; its
    ``capture_ts_ns`` is the wall-clock time (ns) when it is handed out. Frames get the standard
    DHT when they lack one (:func:`mcastcam.jpeg.ensure_dht`). When not looping, ``state``
    becomes ``"ended"`` after the last frame and ``frames()`` stops.
    """

    def __init__(
        self,
        jpegs: Sequence[bytes],
        *,
        name: str,
        fps: float | None = None,
        loop: bool = False,
        corrupt_skipped: int = 0,
    ) -> None:
        super().__init__()
        if not jpegs:
            raise SourceError(f"{name}: no valid JPEG frame found")
        self._jpegs = [ensure_dht(j) for j in jpegs]
        self._name = name
        self._fps = DEFAULT_FPS if fps is None else float(fps)
        self._loop = loop
        self.frames_corrupt_skipped = corrupt_skipped
        self._width, self._height = jpeg_size(self._jpegs[0])

    @property
    def frame_count(self) -> int:
        """Number of valid frames in one pass."""
        return len(self._jpegs)

    def describe(self) -> str:
        """E.g. ``file clip.mjpeg: 528 frames 640x480 at 30 fps, looping``."""
        skipped = (
            f", {self.frames_corrupt_skipped} corrupt frame(s) skipped"
            if self.frames_corrupt_skipped
            else ""
        )
        mode = "looping" if self._loop else "once"
        return (
            f"{self._name}: {len(self._jpegs)} frames {self._width}x{self._height} "
            f"at {self._fps:g} fps, {mode}{skipped}"
        )

    async def frames(self) -> AsyncIterator[CapturedFrame]:
        """Yield the frames paced at ``fps``; ends after one pass unless looping."""
        if self._state == "ended":
            return
        clock = FrameClock(self._fps)
        while True:
            for jpeg in self._jpegs:
                await clock.wait()
                frame = CapturedFrame(jpeg, self.frames_captured, wall_clock_ns())
                self.frames_captured += 1
                yield frame
            if not self._loop:
                self._state = "ended"
                return


def _read(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise SourceError(f"{path}: {size} bytes is more than the {limit}-byte limit")
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None


def split_mjpeg(data: bytes, name: str) -> tuple[list[bytes], int]:
    """Split MJPEG bytes into frames; return ``(frames, corrupt_skipped)`` and log garbage."""
    stats = SplitStats()
    jpegs = [data[s:e] for s, e in split_jpegs(data, stats)]
    if stats.corrupt_skipped or stats.garbage_bytes:
        log.warning(
            "%s: skipped %d corrupt frame(s) and %d byte(s) of garbage",
            name,
            stats.corrupt_skipped,
            stats.garbage_bytes,
        )
    return jpegs, stats.corrupt_skipped


def open_mjpeg_file(path: Path, *, fps: float | None, loop: bool) -> JpegSequenceSource:
    """A source playing a raw concatenated-JPEG file (``.mjpeg``/``.mjpg``, read whole).

    Raises:
        SourceError: unreadable, too large, or without any valid frame.
    """
    data = _read(path, MAX_FILE_BYTES)
    jpegs, corrupt = split_mjpeg(data, str(path))
    return JpegSequenceSource(
        jpegs, name=f"file {path}", fps=fps, loop=loop, corrupt_skipped=corrupt
    )


def open_jpeg_folder(path: Path, *, fps: float | None, loop: bool) -> JpegSequenceSource:
    """A source playing every ``.jpg``/``.jpeg`` file of a folder in name order.

    A file that is not exactly one well-formed JPEG is skipped and counted.

    Raises:
        SourceError: unreadable folder or files, total too large, or no valid frame.
    """
    try:
        files = sorted(
            p for p in path.iterdir() if p.suffix.lower() in JPEG_SUFFIXES and p.is_file()
        )
    except OSError as exc:
        raise SourceError(f"cannot list {path}: {exc.strerror or exc}") from None
    jpegs: list[bytes] = []
    corrupt = 0
    total = 0
    for f in files:
        data = _read(f, MAX_FILE_BYTES - total)
        total += len(data)
        if is_valid_jpeg(data):
            jpegs.append(data)
        else:
            corrupt += 1
            log.warning("%s: not a well-formed JPEG, skipped", f)
    if not files:
        raise SourceError(f"folder {path} holds no .jpg/.jpeg file")
    return JpegSequenceSource(
        jpegs, name=f"folder {path}", fps=fps, loop=loop, corrupt_skipped=corrupt
    )
