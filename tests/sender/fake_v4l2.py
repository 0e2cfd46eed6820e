"""A fake V4L2 capture device at the ioctl/mmap boundary (the way linuxpy's tests fake one).

linuxpy's ``io.open`` returns the read end of a real pipe: the device fd is a real fd, so
``select``/``loop.add_reader`` work unpatched. ``fcntl.ioctl`` (as linuxpy sees it) is a small
V4L2 driver model: formats, sizes, intervals, controls, REQBUFS/QUERYBUF/QBUF/DQBUF/STREAMON.
``mmap.mmap`` (as linuxpy sees it) returns anonymous mmaps that ``push()`` fills like a driver
filling a queued buffer; a byte written to the pipe makes the fd readable, DQBUF consumes it.
"""

from __future__ import annotations

import builtins
import collections
import errno
import fcntl
import mmap
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from linuxpy.video import raw

MJPG = raw.v4l2_fourcc(*"MJPG")
YUYV = raw.v4l2_fourcc(*"YUYV")
NEXT_FLAGS = int(raw.ControlFlag.NEXT_CTRL | raw.ControlFlag.NEXT_COMPOUND)
_OFFSET_STRIDE = 1 << 24


@dataclass
class FakeControl:
    id: int
    name: bytes
    type: int
    minimum: int
    maximum: int
    default: int
    flags: int = 0
    value: int = field(init=False)

    def __post_init__(self) -> None:
        self.value = self.default


def default_controls() -> list[FakeControl]:
    return [
        FakeControl(0x00980900, b"Brightness", raw.CtrlType.INTEGER, 0, 255, 128),
        FakeControl(0x00980901, b"Contrast", raw.CtrlType.INTEGER, 0, 100, 50),
        FakeControl(0x0098090C, b"White Balance, Automatic", raw.CtrlType.BOOLEAN, 0, 1, 1),
        FakeControl(
            0x00980913,
            b"Gain",
            raw.CtrlType.INTEGER,
            0,
            10,
            0,
            flags=int(raw.ControlFlag.READ_ONLY),
        ),
    ]


class FakeCamera:
    """One fake ``/dev/videoN``; use as a context manager (patches linuxpy while active).

    Args:
        path: device path to answer for (any other path goes to the real ``open``).
        frames: payloads to deliver in turn (JPEGs for MJPG, packed YUYV images for YUYV).
        formats: FourCCs offered, e.g. ``["MJPG", "YUYV"]``.
        width, height: the only frame size offered (and a second one, half size).
        padding: zero bytes added after each payload (UVC buffers often have ``bytesused``
            larger than the JPEG).
    """

    def __init__(
        self,
        path: Path,
        frames: list[bytes],
        *,
        formats: tuple[str, ...] = ("MJPG",),
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        padding: int = 0,
    ) -> None:
        self.path = Path(path)
        self.frames = frames
        self.formats = [raw.v4l2_fourcc(*f) for f in formats]
        self.sizes = [(width, height), (width // 2, height // 2)]
        self.width, self.height = width, height
        self.pixelformat = self.formats[0]
        self.fps = fps
        self.padding = padding
        self.controls = default_controls()
        self.gone = False
        self.streaming = False
        self.opens = 0
        self.frames_pushed = 0
        self.frames_dropped_no_buffer = 0
        self._next = 0
        self._fds: dict[int, int] = {}  # read fd -> write fd of the pipe
        self._buffers: dict[int, mmap.mmap] = {}
        self._nbuf = 0
        self._queued: collections.deque[int] = collections.deque()
        self._done: collections.deque[tuple[int, int, int, int]] = collections.deque()
        self._stack = ExitStack()
        self._real_ioctl = fcntl.ioctl

    # -- context --------------------------------------------------------------------------

    def __enter__(self) -> FakeCamera:
        self._stack.enter_context(mock.patch("linuxpy.io.open", self._open))
        self._stack.enter_context(
            mock.patch("linuxpy.ioctl.fcntl", SimpleNamespace(ioctl=self._ioctl))
        )
        self._stack.enter_context(
            mock.patch("linuxpy.video.device.mmap", SimpleNamespace(mmap=self._mmap))
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        for w in self._fds.values():
            os.close(w)
        self._fds.clear()
        for m in self._buffers.values():
            m.close()
        self._buffers.clear()

    # -- what a test drives ---------------------------------------------------------------

    @property
    def frame_size(self) -> int:
        return max(len(f) for f in self.frames) + self.padding + 4096

    def push(self) -> bool:
        """The sensor delivers the next frame into the oldest queued buffer (False: dropped)."""
        if self.gone or not self.streaming:
            return False
        if not self._queued:
            self.frames_dropped_no_buffer += 1
            return False
        idx = self._queued.popleft()
        payload = self.frames[self._next % len(self.frames)] + b"\x00" * self.padding
        self._buffers[idx][: len(payload)] = payload
        ts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self._done.append((idx, len(payload), self._next, ts))
        self._next += 1
        self.frames_pushed += 1
        self._wake()
        return True

    def unplug(self) -> None:
        """The device disappears: DQBUF/STREAMOFF fail with ENODEV, open fails with ENOENT."""
        self.gone = True
        self._wake()

    def replug(self) -> None:
        """The device is back, as new: no buffers, not streaming."""
        self.gone = False
        self.streaming = False
        self._nbuf = 0
        self._queued.clear()
        self._done.clear()

    def _wake(self) -> None:
        for w in self._fds.values():
            os.write(w, b"\x01")

    # -- patched linuxpy entry points -----------------------------------------------------

    def _open(self, path: Any, mode: str, buffering: int = -1, opener: Any = None) -> Any:
        if Path(path) != self.path:
            return builtins.open(path, mode, buffering=buffering, opener=opener)
        if self.gone:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        r, w = os.pipe()
        os.set_blocking(r, False)
        self._fds[r] = w
        self.opens += 1
        return os.fdopen(r, "rb", buffering=0)

    def _mmap(self, fd: int, length: int, offset: int = 0) -> mmap.mmap:
        if fd not in self._fds:
            return mmap.mmap(fd, length, offset=offset)
        idx = offset // _OFFSET_STRIDE
        old = self._buffers.pop(idx, None)
        if old is not None:
            old.close()
        self._buffers[idx] = m = mmap.mmap(-1, length)
        return m

    def _ioctl(self, fd: Any, ioc: int, arg: Any = 0, *rest: Any) -> Any:
        fileno = fd if isinstance(fd, int) else fd.fileno()
        if fileno not in self._fds:
            return self._real_ioctl(fd, ioc, arg, *rest)
        IOC = raw.IOC
        if self.gone and ioc != IOC.QUERYCAP:
            raise OSError(errno.ENODEV, "No such device")
        if ioc == IOC.QUERYCAP:
            if self.gone:
                raise OSError(errno.ENODEV, "No such device")
            arg.driver, arg.card, arg.bus_info = b"fakecam", b"Fake Camera", b"usb-fake-1"
            arg.version = 6 << 16
            caps = raw.Capability.VIDEO_CAPTURE | raw.Capability.STREAMING
            arg.capabilities = caps | raw.Capability.DEVICE_CAPS
            arg.device_caps = caps
        elif ioc == IOC.ENUM_FMT:
            if arg.type != raw.BufType.VIDEO_CAPTURE or arg.index >= len(self.formats):
                raise OSError(errno.EINVAL, "Invalid argument")
            pf = self.formats[arg.index]
            arg.pixelformat = pf
            arg.description = b"Motion-JPEG" if pf == MJPG else b"YUYV 4:2:2"
            arg.flags = 1 if pf == MJPG else 0
        elif ioc == IOC.ENUM_FRAMESIZES:
            if arg.pixel_format not in self.formats or arg.index >= len(self.sizes):
                raise OSError(errno.EINVAL, "Invalid argument")
            arg.type = raw.Frmsizetypes.DISCRETE
            arg.m1.discrete.width, arg.m1.discrete.height = self.sizes[arg.index]
        elif ioc == IOC.ENUM_FRAMEINTERVALS:
            if arg.index >= 2 or (arg.width, arg.height) not in self.sizes:
                raise OSError(errno.EINVAL, "Invalid argument")
            arg.type = raw.Frmivaltypes.DISCRETE
            arg.discrete.numerator = 1
            arg.discrete.denominator = self.fps if arg.index == 0 else 15
        elif ioc in (IOC.G_FMT, IOC.S_FMT, IOC.TRY_FMT):
            if ioc != IOC.G_FMT:
                pix = arg.fmt.pix
                pf = pix.pixelformat if pix.pixelformat in self.formats else self.formats[0]
                size = (pix.width, pix.height)
                size = size if size in self.sizes else self.sizes[0]
                if ioc == IOC.S_FMT:
                    if self._nbuf:
                        raise OSError(errno.EBUSY, "Device or resource busy")
                    self.pixelformat, (self.width, self.height) = pf, size
            else:
                pf, size = self.pixelformat, (self.width, self.height)
            arg.fmt.pix.pixelformat = pf
            arg.fmt.pix.width, arg.fmt.pix.height = size
            arg.fmt.pix.bytesperline = 2 * size[0] if pf == YUYV else 0
            arg.fmt.pix.sizeimage = self.frame_size
        elif ioc == IOC.G_PARM or ioc == IOC.S_PARM:
            tpf = arg.parm.capture.timeperframe
            if ioc == IOC.S_PARM and tpf.numerator:
                self.fps = max(1, round(tpf.denominator / tpf.numerator))
            tpf.numerator, tpf.denominator = 1, self.fps
        elif ioc == IOC.QUERY_EXT_CTRL:
            base = arg.id & ~NEXT_FLAGS
            nxt = arg.id & NEXT_FLAGS
            cands = [c for c in self.controls if (c.id > base if nxt else c.id == base)]
            if not cands:
                raise OSError(errno.EINVAL, "Invalid argument")
            c = min(cands, key=lambda c: c.id)
            arg.id, arg.name, arg.type = c.id, c.name, c.type
            arg.minimum, arg.maximum, arg.step = c.minimum, c.maximum, 1
            arg.default_value, arg.flags = c.default, c.flags
            arg.elem_size, arg.elems = 4, 1
        elif ioc in (IOC.G_EXT_CTRLS, IOC.S_EXT_CTRLS):
            by_id = {c.id: c for c in self.controls}
            for i in range(arg.count):
                rc = arg.controls[i]
                c = by_id.get(rc.id)
                if c is None:
                    raise OSError(errno.EINVAL, "Invalid argument")
                if ioc == IOC.G_EXT_CTRLS:
                    rc.value = c.value
                elif not c.minimum <= rc.value <= c.maximum:
                    raise OSError(errno.ERANGE, "Numerical result out of range")
                else:
                    c.value = rc.value
        elif ioc == IOC.REQBUFS:
            if self.streaming and arg.count:
                raise OSError(errno.EBUSY, "Device or resource busy")
            self._nbuf = min(int(arg.count), 8)
            arg.count = self._nbuf
            self._queued.clear()
            self._done.clear()
        elif ioc == IOC.QUERYBUF:
            if arg.index >= self._nbuf:
                raise OSError(errno.EINVAL, "Invalid argument")
            arg.length = self.frame_size
            arg.m.offset = arg.index * _OFFSET_STRIDE
        elif ioc == IOC.QBUF:
            if arg.index >= self._nbuf or arg.index in self._queued:
                raise OSError(errno.EINVAL, "Invalid argument")
            self._queued.append(int(arg.index))
        elif ioc == IOC.DQBUF:
            if not self._done:
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
            idx, used, seq, ts = self._done.popleft()
            os.read(fileno, 1)
            arg.index, arg.bytesused, arg.sequence = idx, used, seq
            arg.flags = int(raw.BufferFlag.MAPPED | raw.BufferFlag.DONE)
            arg.timestamp.secs, rem = divmod(ts, 1_000_000_000)
            arg.timestamp.usecs = rem // 1000
        elif ioc == IOC.STREAMON:
            self.streaming = True
        elif ioc == IOC.STREAMOFF:
            self.streaming = False
            self._queued.clear()
            self._done.clear()
        else:
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")
        return 0
