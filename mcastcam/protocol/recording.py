"""Recording policy (pure): when to open, rotate and stop segments, and which ones to delete.

The recorder shell (:mod:`mcastcam.receiver.recorder`) asks :meth:`RecordingPolicy.decide`
before writing each frame, passing ``now`` (monotonic seconds), the frame's size and the
file system's free and total bytes, and does what it answers: open a segment, rotate (close
the current one, open the next), write, skip, or stop. The free-space floor is checked
against the space left *after* the frame, so a recording never takes the file system below
it; once stopped, free space is looked at again every :data:`RECHECK_INTERVAL` seconds and
recording resumes (in a new segment) when the frame fits above the floor again.
:meth:`RecordingPolicy.expired` applies the retention bound (segment count or total bytes).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from mcastcam.errors import ConfigError

__all__ = [
    "DEFAULT_MIN_FREE_BYTES",
    "DEFAULT_MIN_FREE_PERCENT",
    "DEFAULT_SEGMENT_BYTES",
    "DEFAULT_SEGMENT_SECONDS",
    "RECHECK_INTERVAL",
    "Action",
    "RecordLimits",
    "RecordingPolicy",
    "format_bytes",
    "parse_bytes",
    "parse_seconds",
]

DEFAULT_SEGMENT_SECONDS = 60.0
"""Seconds of frames per segment before the next one is opened."""
DEFAULT_SEGMENT_BYTES = 256 << 20
"""Bytes per segment (JPEGs) before the next one is opened."""
DEFAULT_MIN_FREE_PERCENT = 5.0
DEFAULT_MIN_FREE_BYTES = 1 << 30
"""Without ``--record-min-free`` the floor is the smaller of 5 % of the file system and 1 GiB."""
RECHECK_INTERVAL = 5.0
"""Seconds between two free-space checks while recording is stopped."""

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"512M"`` -> bytes: a number with an optional ``K``/``M``/``G``/``T`` (×1024) suffix.

    ``"KiB"``, ``"MB"`` etc. are read the same way (binary units). Raises ``ValueError``.
    """
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    number = float(raw[: len(raw) - len(unit)])
    if not 0 <= number < math.inf:
        raise ValueError(f"bad size {text!r}")
    return int(number * _UNITS[unit])


def parse_seconds(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1h"`` -> seconds (> 0). Raises ``ValueError``."""
    raw = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(raw[-1:], 0.0)
    seconds = float(raw[:-1]) * scale if scale else float(raw)
    if not 0 < seconds < math.inf:
        raise ValueError(f"bad duration {text!r}: expected seconds above 0")
    return seconds


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units, one decimal)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class RecordLimits:
    """The bounds of one recording.

    Attributes:
        segment_seconds: a segment is closed after this many seconds (> 0).
        segment_bytes: ... or before it would grow past this many bytes (> 0); a frame larger
            than that gets a segment of its own.
        keep_segments: keep at most this many segments (the oldest are deleted), or ``None``.
        keep_bytes: keep at most this many bytes of segments (and their indexes), or ``None``.
        min_free_bytes: the free-space floor in bytes, or ``None``.
        min_free_percent: the floor in percent of the file system's size, or ``None``.
            With neither, the floor is ``min(5 %, 1 GiB)``; with both, the larger.

    Raises:
        ConfigError: a value out of range (named as its ``--record-*`` option).
    """

    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    keep_segments: int | None = None
    keep_bytes: int | None = None
    min_free_bytes: int | None = None
    min_free_percent: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.segment_seconds < math.inf:
            raise ConfigError(f"--record-segment {self.segment_seconds}: must be above 0 s")
        if self.segment_bytes <= 0:
            raise ConfigError(f"--record-max-bytes {self.segment_bytes}: must be above 0")
        if self.keep_segments is not None and self.keep_segments < 1:
            raise ConfigError(f"--record-keep {self.keep_segments}: keep at least 1 segment")
        if self.keep_bytes is not None and self.keep_bytes <= 0:
            raise ConfigError(f"--record-keep {self.keep_bytes}: must be above 0 bytes")
        if self.min_free_bytes is not None and self.min_free_bytes < 0:
            raise ConfigError(f"--record-min-free {self.min_free_bytes}: must be >= 0")
        if self.min_free_percent is not None and not 0 <= self.min_free_percent < 100:
            raise ConfigError(f"--record-min-free {self.min_free_percent}%: must be 0..99 %")

    def floor(self, total: int) -> int:
        """The free-space floor in bytes on a file system of ``total`` bytes."""
        by_percent = (
            int(total * self.min_free_percent / 100) if self.min_free_percent is not None else None
        )
        if self.min_free_bytes is None and by_percent is None:
            return min(int(total * DEFAULT_MIN_FREE_PERCENT / 100), DEFAULT_MIN_FREE_BYTES)
        return max(self.min_free_bytes or 0, by_percent or 0)


class Action(enum.Enum):
    """What the shell does with the frame it asked about."""

    OPEN = "open"
    """No segment is open: open one, then write the frame."""
    ROTATE = "rotate"
    """Close the current segment, open the next, then write the frame."""
    WRITE = "write"
    """Append the frame to the current segment."""
    STOP = "stop"
    """Close the current segment and skip the frame: free space is below the floor."""
    SKIP = "skip"
    """Skip the frame: recording is stopped (the floor)."""


class RecordingPolicy:
    """The recording state machine: ``idle`` -> ``recording`` <-> ``stopped``.

    Attributes:
        state: ``"idle"`` (no frame yet), ``"recording"`` or ``"stopped"``.
        stopped_reason: one line while stopped, else ``""``.
        segment_bytes: bytes written to the open segment.
        stops: times recording was stopped by the floor.
    """

    def __init__(self, limits: RecordLimits) -> None:
        self.limits = limits
        self.state = "idle"
        self.stopped_reason = ""
        self.segment_bytes = 0
        self.stops = 0
        self._segment_started: float | None = None
        self._next_check = -math.inf

    def decide(self, now: float, nbytes: int, free: int, total: int) -> Action:
        """What to do with a frame of ``nbytes`` bytes at ``now``, ``free``/``total`` bytes.

        ``free`` is what an unprivileged writer may still use (``f_bavail``); the frame is
        refused when it would leave less than :meth:`RecordLimits.floor`. The shell must
        report :meth:`opened` and :meth:`wrote` after doing what it was told.
        """
        floor = self.limits.floor(total)
        fits = free - nbytes >= floor
        if self.state == "stopped":
            if now < self._next_check:
                return Action.SKIP
            if not fits:
                self._next_check = now + RECHECK_INTERVAL
                return Action.SKIP
            self.stopped_reason = ""
            return Action.OPEN
        if not fits:
            self.stopped_reason = (
                f"free space {format_bytes(free)} minus a {format_bytes(nbytes)} frame is below "
                f"the floor of {format_bytes(floor)}"
            )
            self.state = "stopped"
            self.stops += 1
            self._segment_started = None
            self._next_check = now + RECHECK_INTERVAL
            return Action.STOP
        if self._segment_started is None:
            return Action.OPEN
        too_long = now - self._segment_started >= self.limits.segment_seconds
        too_big = self.segment_bytes > 0 and self.segment_bytes + nbytes > self.limits.segment_bytes
        return Action.ROTATE if too_long or too_big else Action.WRITE

    def opened(self, now: float) -> None:
        """A new segment was opened at ``now``."""
        self.state = "recording"
        self._segment_started = now
        self.segment_bytes = 0

    def wrote(self, nbytes: int) -> None:
        """``nbytes`` were appended to the open segment."""
        self.segment_bytes += nbytes

    def failed(self, reason: str, now: float) -> None:
        """Writing failed (``ENOSPC``, ``EIO``...): stop like the floor does, retry later."""
        self.state = "stopped"
        self.stopped_reason = reason
        self.stops += 1
        self._segment_started = None
        self._next_check = now + RECHECK_INTERVAL

    def expired(self, segments: Sequence[tuple[str, int]]) -> list[str]:
        """Which segments to delete: ``segments`` are ``(name, bytes)``, oldest first.

        The last one (the segment being written) is never returned. Returns the oldest ones
        while more than ``keep_segments`` remain or they take more than ``keep_bytes``.
        """
        keep_n, keep_b = self.limits.keep_segments, self.limits.keep_bytes
        count, total = len(segments), sum(size for _, size in segments)
        out = []
        for name, size in segments[:-1]:
            over_n = keep_n is not None and count > keep_n
            over_b = keep_b is not None and total > keep_b
            if not (over_n or over_b):
                break
            out.append(name)
            count -= 1
            total -= size
        return out
