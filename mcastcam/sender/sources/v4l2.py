"""V4L2 camera source: a thin adapter over linuxpy 0.25 (the only module importing linuxpy).

Frames are read with ``loop.add_reader`` on the device fd into a latest-frame slot: each
readable event dequeues every ready buffer (``VIDIOC_DQBUF``), copies it to bytes and re-queues
it at once (``VIDIOC_QBUF``); the consumer takes the newest frame, stale ones are skipped.
(linuxpy's own ``async for`` raises ``QueueFull`` in the loop and keeps stale frames.)
MJPEG frames get the standard DHT; YUYV frames are encoded to JPEG with simplejpeg.
Kernel reference: https://docs.kernel.org/userspace-api/media/v4l/mmap.html (streaming I/O),
``vidioc-dqbuf.rst`` (ENODEV when the device is gone), ``buffer.rst`` (monotonic timestamps).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from linuxpy.video.device import (
    BufferType,
    Capability,
    Device,
    FrameSizeType,
    PixelFormat,
    VideoCapture,
    iter_video_capture_files,
)

from mcastcam.errors import ConfigError, SourceError
from mcastcam.jpeg import ensure_dht, jpeg_end
from mcastcam.protocol.frame import CapturedFrame
from mcastcam.sender.sources.base import FrameSource

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = {"MJPG": PixelFormat.MJPEG, "YUYV": PixelFormat.YUYV}
BUFFER_COUNT = 4
REOPEN_INITIAL_INTERVAL = 0.5
REOPEN_MAX_INTERVAL = 8.0
_GONE_ERRNOS = frozenset({errno.ENODEV, errno.EIO, errno.ENXIO, errno.EBADF, errno.EPIPE})


def _fourcc(pf: int) -> str:
    return "".join(chr((int(pf) >> (8 * i)) & 0xFF) for i in range(4))


def _open_error(path: Path, exc: OSError) -> SourceError:
    hint = {
        errno.ENOENT: "no such device",
        errno.EACCES: "permission denied (add the user to the 'video' group)",
        errno.EBUSY: "device busy (another program is using it)",
        errno.ENODEV: "device gone",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return SourceError(f"cannot open V4L2 device {path}: {hint}")


def first_capture_device() -> Path | None:
    """The first ``/dev/video*`` with the VIDEO_CAPTURE capability, or ``None``."""
    try:
        for path in iter_video_capture_files():
            return Path(path)
    except OSError as exc:
        log.debug("V4L2 device scan failed: %s", exc)
    return None


@dataclass(slots=True)
class _Raw:
    data: bytes
    monotonic_ns: int
    sequence: int


def monotonic_to_wall_ns(monotonic_ns: int) -> int:
    """Convert a ``CLOCK_MONOTONIC`` time (V4L2 buffer timestamp, ns) to wall clock ns.

    Uses the current offset ``CLOCK_REALTIME - CLOCK_MONOTONIC``; a zero or implausible
    timestamp (more than 10 s away) becomes the current wall-clock time.
    """
    real = time.clock_gettime_ns(time.CLOCK_REALTIME)
    mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    if monotonic_ns <= 0 or abs(mono - monotonic_ns) > 10_000_000_000:
        return real
    return monotonic_ns + (real - mono)


def _parse_control_value(ctrl: Any, name: str, text: str) -> int:
    kind = type(ctrl).__name__
    if kind == "BooleanControl":
        low = text.strip().lower()
        if low in ("1", "true", "on", "yes"):
            return 1
        if low in ("0", "false", "off", "no"):
            return 0
        raise ConfigError(f"--control {name}={text}: a boolean control takes 0/1 or true/false")
    try:
        value = int(text, 0)
    except ValueError:
        raise ConfigError(f"--control {name}={text}: not an integer") from None
    lo, hi = int(ctrl.minimum), int(ctrl.maximum)
    if not lo <= value <= hi:
        raise ConfigError(f"--control {name}={text}: out of range {lo}..{hi}")
    if kind == "MenuControl" and value not in ctrl:
        raise ConfigError(
            f"--control {name}={text}: menu choices are "
            + ", ".join(f"{k}={v}" for k, v in ctrl.items())
        )
    return value


def yuyv_to_jpeg(
    data: bytes, width: int, height: int, bytes_per_line: int, quality: int, subsampling: str
) -> bytes:
    """Encode one packed YUYV 4:2:2 image (V4L2 ``V4L2_PIX_FMT_YUYV``) as JPEG.

    Args:
        data: at least ``bytes_per_line * height`` bytes, Y0 U Y1 V per pixel pair.
        width: pixels.
        height: pixels.
        bytes_per_line: row stride in bytes (``>= 2 * width``; 0 means ``2 * width``).
        quality: JPEG quality 1-100.
        subsampling: ``"422"`` keeps every chroma row, ``"420"`` keeps every other one.

    Raises:
        SourceError: the buffer is shorter than the format says.
    """
    stride = bytes_per_line or 2 * width
    if len(data) < stride * height:
        raise SourceError(f"YUYV buffer of {len(data)} bytes < {stride}x{height} format")
    arr = np.frombuffer(data, dtype=np.uint8, count=stride * height).reshape(height, stride)
    arr = arr[:, : 2 * width]
    y = np.ascontiguousarray(arr[:, 0::2])
    u = arr[:, 1::4]
    v = arr[:, 3::4]
    if subsampling == "420":
        u, v = u[0::2], v[0::2]
    return bytes(
        simplejpeg.encode_jpeg_yuv_planes(
            y, np.ascontiguousarray(u), np.ascontiguousarray(v), quality=quality, fastdct=True
        )
    )


class V4L2Source(FrameSource):
    """A V4L2 capture device (webcam) delivering MJPEG, or YUYV encoded to JPEG here.

    The device is opened by :meth:`open` (``open_device`` does it). ``frames()`` never ends:
    when the device disappears (ENODEV/EIO on ``VIDIOC_DQBUF``) ``state`` turns
    ``"offline"`` and the device is reopened with exponential backoff
    (``reopen_initial_interval`` 0.5 s doubling to ``reopen_max_interval`` 8 s); ``state``
    is ``"live"`` again once it streams. ``capture_ts_ns`` is the V4L2 buffer timestamp
    (CLOCK_MONOTONIC) converted to wall clock.

    Extra counter: ``frames_skipped_stale`` (frames overwritten in the latest-frame slot
    before the consumer took them).
    """

    def __init__(
        self,
        path: Path,
        *,
        size: tuple[int, int] | None = None,
        fps: float | None = None,
        fmt: str | None = None,
        quality: int = 80,
        subsampling: str = "422",
        controls: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self._req_size = size
        self._req_fps = fps
        self._req_fmt = fmt.upper() if fmt else None
        if self._req_fmt is not None and self._req_fmt not in SUPPORTED_FORMATS:
            raise ConfigError(f"--format {fmt!r}: use one of {', '.join(SUPPORTED_FORMATS)}")
        self._quality = quality
        self._subsampling = subsampling
        self._controls = dict(controls or {})
        self._device: Device | None = None
        self._capture: VideoCapture | None = None
        self._pixel_format = "MJPG"
        self._width = self._height = 0
        self._bytes_per_line = 0
        self._fps = 0.0
        self._latest: _Raw | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader_fd: int | None = None
        self.frames_skipped_stale = 0
        self.reopen_initial_interval = REOPEN_INITIAL_INTERVAL
        self.reopen_max_interval = REOPEN_MAX_INTERVAL

    # -- properties ---------------------------------------------------------------------------

    @property
    def pixel_format(self) -> str:
        """The V4L2 FourCC in use: ``"MJPG"`` or ``"YUYV"``."""
        return self._pixel_format

    def describe(self) -> str:
        """E.g. ``V4L2 /dev/video0 (HD Webcam): MJPG 1280x720 at 30 fps``."""
        card = ""
        if self._device is not None and self._device.info is not None:
            with contextlib.suppress(OSError):
                card = f" ({self._device.info.card})"
        extra = "" if self._pixel_format == "MJPG" else f" -> JPEG q{self._quality}"
        return (
            f"V4L2 {self.path}{card}: {self._pixel_format} {self._width}x{self._height} "
            f"at {self._fps:g} fps{extra}"
        )

    # -- device setup -------------------------------------------------------------------------

    def open(self) -> None:
        """Open and configure the device and start streaming (``VIDIOC_STREAMON``).

        Raises:
            SourceError: the device cannot be opened or does not stream.
            ConfigError: unsupported format, or a bad control name/value.
        """
        device = Device(self.path)
        try:
            device.open()
        except OSError as exc:
            raise _open_error(self.path, exc) from None
        try:
            self._configure(device)
            capture = VideoCapture(device, size=BUFFER_COUNT)
            capture.open()
        except BaseException:
            with contextlib.suppress(OSError):
                device.close()
            raise
        self._device, self._capture = device, capture
        self._state = "live"

    def _configure(self, device: Device) -> None:
        try:
            caps = device.info.device_capabilities
            if Capability.VIDEO_CAPTURE not in caps or Capability.STREAMING not in caps:
                raise SourceError(f"{self.path} is not a streaming video capture device")
            offered = {
                _fourcc(f.pixel_format)
                for f in device.info.buffer_formats(BufferType.VIDEO_CAPTURE)
            }
            if self._req_fmt is not None:
                if self._req_fmt not in offered:
                    raise ConfigError(
                        f"--format {self._req_fmt}: {self.path} offers "
                        f"{', '.join(sorted(offered)) or 'no format'}"
                    )
                fourcc = self._req_fmt
            elif "MJPG" in offered:
                fourcc = "MJPG"
            elif "YUYV" in offered:
                fourcc = "YUYV"
            else:
                raise SourceError(
                    f"{self.path} offers neither MJPG nor YUYV (it offers "
                    f"{', '.join(sorted(offered)) or 'nothing'})"
                )
            if self._req_size is not None:
                w, h = self._req_size
            else:
                cur = device.get_format(BufferType.VIDEO_CAPTURE)
                w, h = cur.width, cur.height
            device.set_format(BufferType.VIDEO_CAPTURE, w, h, fourcc)
            got = device.get_format(BufferType.VIDEO_CAPTURE)
            if self._req_size is not None and (got.width, got.height) != (w, h):
                log.warning(
                    "%s: asked %dx%d, driver chose %dx%d", self.path, w, h, got.width, got.height
                )
            self._pixel_format = _fourcc(got.pixel_format)
            self._width, self._height = got.width, got.height
            self._bytes_per_line = got.bytes_per_line
            if self._req_fps is not None:
                device.set_fps(BufferType.VIDEO_CAPTURE, self._req_fps)
            with contextlib.suppress(OSError, ZeroDivisionError):
                self._fps = float(device.get_fps(BufferType.VIDEO_CAPTURE))
            self._apply_controls(device)
        except OSError as exc:
            raise SourceError(f"cannot configure {self.path}: {exc.strerror or exc}") from None

    def _apply_controls(self, device: Device) -> None:
        if not self._controls:
            return
        by_name = {c.config_name: c for c in device.controls.values() if hasattr(c, "config_name")}
        for name, text in self._controls.items():
            ctrl = by_name.get(name)
            if ctrl is None:
                raise ConfigError(
                    f"--control {name}: unknown V4L2 control on {self.path}; valid: "
                    + (", ".join(sorted(by_name)) or "none")
                )
            if not ctrl.is_writeable:
                raise ConfigError(f"--control {name}: read-only or inactive on {self.path}")
            value = _parse_control_value(ctrl, name, text)
            ctrl.clipping = False
            ctrl.value = value
            log.info("%s: control %s = %d", self.path, name, value)

    def _teardown(self) -> None:
        if self._loop is not None and self._reader_fd is not None:
            self._loop.remove_reader(self._reader_fd)
        self._reader_fd = None
        capture, device = self._capture, self._device
        self._capture = self._device = None
        if capture is not None:
            # Unmap the buffers even when the device is gone and STREAMOFF fails.
            with contextlib.suppress(OSError):
                capture.stream_off()
            buffer, capture.buffer = capture.buffer, None
            if buffer is not None:
                with contextlib.suppress(OSError, ValueError):
                    buffer.close()
        if device is not None:
            with contextlib.suppress(OSError):
                device.close()

    def close(self) -> None:
        """Stop streaming, unmap the buffers and close the device. Idempotent."""
        self._teardown()
        self._latest = None

    # -- reading ------------------------------------------------------------------------------

    def _arm(self) -> None:
        assert self._loop is not None and self._device is not None
        self._reader_fd = self._device.fileno()
        self._loop.add_reader(self._reader_fd, self._on_readable)

    def _on_readable(self) -> None:
        """Dequeue every ready buffer, keep the newest as bytes, re-queue them at once."""
        capture = self._capture
        if capture is None or capture.buffer is None:
            return
        for _ in range(BUFFER_COUNT * 2):
            try:
                data, buff = capture.buffer.raw_grab()
            except BlockingIOError:
                break
            except OSError as exc:
                self._go_offline(exc)
                return
            ts = buff.timestamp
            mono = int(ts.secs) * 1_000_000_000 + int(ts.usecs) * 1000
            if self._latest is not None:
                self.frames_skipped_stale += 1
            self._latest = _Raw(bytes(data), mono, int(buff.sequence))
        if self._wake is not None and self._latest is not None:
            self._wake.set()

    def _go_offline(self, exc: OSError) -> None:
        if exc.errno not in _GONE_ERRNOS:
            log.warning("%s: read failed (%s); treating the device as gone", self.path, exc)
        log.warning(
            "%s: device offline (%s); reopening with backoff", self.path, exc.strerror or exc
        )
        self._teardown()
        self._latest = None
        self._state = "offline"
        if self._wake is not None:
            self._wake.set()

    async def _reopen(self) -> None:
        interval = self.reopen_initial_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.open()
            except (SourceError, ConfigError) as exc:
                log.debug("%s: reopen failed: %s", self.path, exc)
                interval = min(interval * 2, self.reopen_max_interval)
                continue
            log.warning("%s: device back online: %s", self.path, self.describe())
            self._arm()
            return

    def _to_jpeg(self, raw: _Raw) -> bytes | None:
        try:
            if self._pixel_format == "MJPG":
                return ensure_dht(raw.data[: jpeg_end(raw.data)])
            return yuyv_to_jpeg(
                raw.data,
                self._width,
                self._height,
                self._bytes_per_line,
                self._quality,
                self._subsampling,
            )
        except SourceError as exc:
            self.frames_corrupt_skipped += 1
            log.debug("%s: frame %d skipped: %s", self.path, raw.sequence, exc)
            return None

    async def frames(self) -> AsyncIterator[CapturedFrame]:
        """Yield the newest frame each time one is ready; never ends (see class doc)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._device is None and self._state == "live":
            self.open()
        if self._device is not None:
            self._arm()
        try:
            while True:
                if self._state == "offline":
                    await self._reopen()
                    continue
                await self._wake.wait()
                self._wake.clear()
                raw, self._latest = self._latest, None
                if raw is None:
                    continue
                jpeg = self._to_jpeg(raw)
                if jpeg is None:
                    continue
                frame = CapturedFrame(
                    jpeg, self.frames_captured, monotonic_to_wall_ns(raw.monotonic_ns)
                )
                self.frames_captured += 1
                yield frame
        finally:
            if self._loop is not None and self._reader_fd is not None:
                self._loop.remove_reader(self._reader_fd)
                self._reader_fd = None


def open_device(
    path: Path,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    fmt: str | None = None,
    quality: int = 80,
    subsampling: str = "422",
    controls: dict[str, str] | None = None,
) -> V4L2Source:
    """Open, configure and start a V4L2 capture device (see :class:`V4L2Source`).

    Raises:
        SourceError: cannot open or stream. ConfigError: bad format/control.
    """
    source = V4L2Source(
        path,
        size=size,
        fps=fps,
        fmt=fmt,
        quality=quality,
        subsampling=subsampling,
        controls=controls,
    )
    source.open()
    return source


def _fps_text(frame_types: Iterable[Any]) -> str:
    rates = sorted({float(ft.max_fps) for ft in frame_types if ft.max_fps}, reverse=True)
    return ", ".join(f"{r:g}" for r in rates) + " fps" if rates else "fps unknown"


def describe_device(path: Path) -> str:
    """Several lines: card, driver, bus, and every capture format with sizes and frame rates.

    Raises:
        SourceError: the device cannot be opened or queried.
    """
    device = Device(path)
    try:
        device.open()
    except OSError as exc:
        raise _open_error(Path(path), exc) from None
    try:
        info = device.info
        lines = [f"{path}: {info.card} (driver {info.driver}, bus {info.bus_info})"]
        for fmt in info.buffer_formats(BufferType.VIDEO_CAPTURE):
            lines.append(f"  {_fourcc(fmt.pixel_format)} ({fmt.description})")
            for fs in info.format_frame_sizes(fmt.pixel_format):
                if fs.type == FrameSizeType.DISCRETE:
                    w, h = fs.info.width, fs.info.height
                    rates = _fps_text(info.fps_intervals(fmt.pixel_format, w, h))
                    lines.append(f"    {w}x{h}: {rates}")
                else:
                    i = fs.info
                    lines.append(
                        f"    {i.min_width}x{i.min_height} to {i.max_width}x{i.max_height} "
                        f"(step {i.step_width}x{i.step_height})"
                    )
        return "\n".join(lines)
    except OSError as exc:
        raise SourceError(f"cannot query {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            device.close()


def list_devices(paths: Iterable[Path] | None = None) -> str:
    """Text describing every V4L2 capture device (for ``mcastcam-send --list-devices``).

    Args:
        paths: devices to describe; default every ``/dev/video*`` with VIDEO_CAPTURE.
    """
    if paths is None:
        try:
            paths = [Path(p) for p in iter_video_capture_files()]
        except OSError as exc:
            return f"cannot scan /dev/video*: {exc.strerror or exc}"
    blocks = []
    for p in paths:
        try:
            blocks.append(describe_device(p))
        except SourceError as exc:
            blocks.append(str(exc))
    return "\n".join(blocks) if blocks else "no V4L2 capture device found (/dev/video*)"
