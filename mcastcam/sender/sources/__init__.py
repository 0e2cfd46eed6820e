"""Frame sources for the sender: V4L2 camera, ``.mjpeg`` file, JPEG folder, test pattern, sample.

:func:`open_source` maps a ``--source`` value to a :class:`FrameSource`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mcastcam.errors import ConfigError
from mcastcam.protocol import config
from mcastcam.sender.sources.base import FrameSource, SourceState
from mcastcam.sender.sources.file import (
    MJPEG_SUFFIXES,
    JpegSequenceSource,
    open_jpeg_folder,
    open_mjpeg_file,
)
from mcastcam.sender.sources.sample import open_sample
from mcastcam.sender.sources.testpattern import SUBSAMPLING, TestPatternSource

__all__ = [
    "FrameSource",
    "JpegSequenceSource",
    "SourceState",
    "TestPatternSource",
    "open_source",
]

log = logging.getLogger(__name__)

MAX_FPS = 10_000.0
"""Highest --fps accepted (files and the test pattern can be played this fast for benchmarks)."""

SOURCE_FORMS = (
    "'sample', 'testpattern', '/dev/videoN' or 'v4l2:/dev/videoN', "
    "a .mjpeg/.mjpg file, or a folder of .jpg/.jpeg files"
)


def _check_common(fps: float | None, quality: int, subsampling: str) -> None:
    if fps is not None and not (0 < fps <= MAX_FPS):
        raise ConfigError(f"--fps {fps}: must be more than 0 and at most {MAX_FPS:g} frames/s")
    if not 1 <= quality <= 100:
        raise ConfigError(f"--quality {quality}: must be an integer from 1 to 100")
    if subsampling not in ("420", "422"):
        raise ConfigError(f"--subsampling {subsampling!r}: use '420' (4:2:0) or '422' (4:2:2)")
    if fps is not None and fps != fps:  # NaN
        raise ConfigError("--fps nan: must be a number")


def _only_v4l2(spec: str, fmt: str | None, controls: dict[str, str]) -> None:
    if fmt is not None:
        raise ConfigError(f"--format {fmt!r} applies only to a V4L2 device, not to {spec!r}")
    if controls:
        names = ", ".join(sorted(controls))
        raise ConfigError(f"--control {names} applies only to a V4L2 device, not to {spec!r}")


def open_source(
    spec: str | None,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    loop: bool = False,
    fmt: str | None = None,
    quality: int = config.DEFAULT_QUALITY,
    subsampling: str = config.DEFAULT_SUBSAMPLING,
    controls: dict[str, str] | None = None,
) -> FrameSource:
    """Open the source named by a ``--source`` value.

    Args:
        spec: ``None`` (the first V4L2 capture device, else the bundled sample), ``"sample"``,
            ``"testpattern"``, ``"/dev/videoN"`` or ``"v4l2:/dev/videoN"``, a ``.mjpeg``/
            ``.mjpg`` file, or a folder of ``.jpg``/``.jpeg`` files (played in name order).
        size: ``(width, height)`` pixels for the test pattern (default 640x480) or the camera.
        fps: frames per second (default: 30, or the camera's current rate).
        loop: play a file or folder again and again (the sample always loops).
        fmt: V4L2 pixel format (``"MJPG"`` or ``"YUYV"``); default MJPEG when offered.
        quality: JPEG quality 1-100 for frames mcastcam encodes (test pattern, YUYV camera).
        subsampling: chroma subsampling of those frames: ``"422"`` or ``"420"``.
        controls: V4L2 controls by kernel name, e.g. ``{"brightness": "128"}``.

    Raises:
        ConfigError: a value that cannot work (names the value and what to use instead).
        SourceError: the source exists but cannot be read (device failure, no valid frame).
    """
    controls = dict(controls or {})
    _check_common(fps, quality, subsampling)
    if size is not None and (size[0] <= 0 or size[1] <= 0 or size[0] % 2 or size[1] % 2):
        raise ConfigError(f"--size {size[0]}x{size[1]}: width and height must be even and > 0")
    if spec is None:
        from mcastcam.sender.sources import v4l2

        device = v4l2.first_capture_device()
        if device is not None:
            log.info("no --source given: using the first V4L2 capture device %s", device)
            return v4l2.open_device(
                device,
                size=size,
                fps=fps,
                fmt=fmt,
                quality=quality,
                subsampling=subsampling,
                controls=controls,
            )
        log.info("no --source given and no V4L2 capture device found: playing the sample")
        spec = "sample"
    if spec.startswith("v4l2:") or spec.startswith("/dev/video"):
        from mcastcam.sender.sources import v4l2

        dev = spec.removeprefix("v4l2:")
        if not dev:
            raise ConfigError(f"--source {spec!r}: give a device path, e.g. v4l2:/dev/video0")
        return v4l2.open_device(
            Path(dev),
            size=size,
            fps=fps,
            fmt=fmt,
            quality=quality,
            subsampling=subsampling,
            controls=controls,
        )
    _only_v4l2(spec, fmt, controls)
    if spec == "testpattern":
        return TestPatternSource(
            size or (640, 480), fps=fps, quality=quality, subsampling=SUBSAMPLING[subsampling]
        )
    if size is not None:
        raise ConfigError(
            f"--size applies to 'testpattern' and V4L2 devices; {spec!r} plays at its own size"
        )
    if spec == "sample":
        return open_sample(fps=fps)
    path = Path(spec)
    if path.is_dir():
        return open_jpeg_folder(path, fps=fps, loop=loop)
    if path.suffix.lower() in MJPEG_SUFFIXES:
        if not path.is_file():
            raise ConfigError(f"--source {spec!r}: no such file")
        return open_mjpeg_file(path, fps=fps, loop=loop)
    if path.exists():
        raise ConfigError(
            f"--source {spec!r}: unknown file type; use a .mjpeg/.mjpg file or a folder of JPEGs"
        )
    raise ConfigError(f"--source {spec!r}: not found; use {SOURCE_FORMS}")
