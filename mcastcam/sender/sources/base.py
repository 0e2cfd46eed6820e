"""The frame-source interface the sender reads from, and the frame clock of paced sources."""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Literal

from mcastcam.protocol import config
from mcastcam.protocol.frame import CapturedFrame

SourceState = Literal["live", "offline", "ended"]

DEFAULT_FPS = config.DEFAULT_FPS
"""Nominal frame rate (frames per second) of file, folder, sample and test-pattern sources."""

MAX_LAG = 1.0
"""Seconds a paced source may fall behind its schedule before it re-bases instead of bursting."""


class FrameSource(abc.ABC):
    """A source of whole JPEG frames for the sender.

    ``frames()`` is an async iterator of
    :class:`~mcastcam.protocol.frame.CapturedFrame` (one JPEG each,
    SOI..EOI, with a Huffman table). It ends only when ``state`` becomes ``"ended"`` (a file
    played once); a live camera that goes away turns ``"offline"`` and comes back ``"live"``.

    Counters (monotonic, for the log and stats): ``frames_captured`` (frames handed out) and
    ``frames_corrupt_skipped`` (malformed frames dropped, never handed out).
    """

    def __init__(self) -> None:
        self.frames_captured = 0
        self.frames_corrupt_skipped = 0
        self._state: SourceState = "live"
        self._width = self._height = 0
        self._fps = 0.0

    @property
    def state(self) -> SourceState:
        """``"live"`` (delivering), ``"offline"`` (device gone, reopening) or ``"ended"``."""
        return self._state

    @property
    def width(self) -> int:
        """Frame width in pixels (0 until the source knows it)."""
        return self._width

    @property
    def height(self) -> int:
        """Frame height in pixels (0 until the source knows it)."""
        return self._height

    @property
    def fps(self) -> float:
        """Nominal frame rate, frames per second (0.0 if the source does not say)."""
        return self._fps

    @abc.abstractmethod
    def frames(self) -> AsyncIterator[CapturedFrame]:
        """Async iterator of captured frames (``async for frame in source.frames()``)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the log: kind, path or device, size, frame rate."""

    def close(self) -> None:  # noqa: B027 - sources without resources keep the default
        """Release the source's resources (device, buffers). Idempotent."""


class FrameClock:
    """The frame rate of a file or test pattern: frame ``k`` is due at ``start + k / fps``.

    Times are on the event loop clock (seconds); there is no drift.

    If the consumer falls more than :data:`MAX_LAG` seconds behind, the schedule is re-based
    at the current time instead of releasing a burst of overdue frames.
    """

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._k = 0

    async def wait(self) -> None:
        """Sleep until the next frame is due (seconds on ``loop.time()``), then advance."""
        due = self._start + self._k * self.interval
        now = self._loop.time()
        if now - due > MAX_LAG:
            self._start = now - self._k * self.interval
            due = now
        if due > now:
            await asyncio.sleep(due - now)
        self._k += 1


def wall_clock_ns() -> int:
    """Wall-clock (``CLOCK_REALTIME``) time in nanoseconds."""
    return time.time_ns()
