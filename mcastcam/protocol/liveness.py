"""Sender liveness from what we hear (pure; ``now`` is passed in).

A stream is **alive** while datagrams keep coming, **stale** once one heartbeat interval
went by in silence, and **lost** after ``lost_after`` intervals (3 by default). The
interval is the one the sender announces in its heartbeats (1 s until we hear one).

:class:`Liveness` is the one place that knows when each stream was last heard: the
reassembler tells it (heartbeats, each frame's first fragment), the receiver session tells
it (completed and dropped frames, heartbeat intervals), and both read it back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_INTERVAL = 1.0
"""Seconds assumed between heartbeats until a heartbeat says otherwise."""
GRACE = 0.25
"""Fraction of an interval allowed for jitter before a heartbeat counts as missed."""


class LiveState(enum.StrEnum):
    """Liveness of one stream."""

    ALIVE = "alive"
    STALE = "stale"
    LOST = "lost"


@dataclass(slots=True)
class _Entry:
    last_heard: float
    interval: float
    state: LiveState


class Liveness:
    """Tracks every stream's liveness.

    Args:
        lost_after: intervals of silence before a stream is lost (>= 1).
        timeout: if given, seconds of silence before a stream is lost (overrides
            ``lost_after``; stale still comes after one interval; never less than one
            interval plus the grace, so a stream is not lost between two heartbeats).
    """

    def __init__(self, lost_after: float = 3.0, timeout: float | None = None) -> None:
        self.lost_after = lost_after
        self.timeout = timeout
        self._entries: dict[int, _Entry] = {}
        self._revived: dict[int, None] = {}  # streams that became alive, not yet taken

    def heard(self, stream_id: int, now: float, interval: float | None = None) -> LiveState | None:
        """A datagram of ``stream_id`` arrived at ``now``; returns the new state if it changed.

        ``interval`` is the heartbeat interval in seconds when the datagram was a heartbeat.
        A stream that becomes alive is also kept for :meth:`take_revived`.
        """
        entry = self._entries.get(stream_id)
        if entry is None:
            self._entries[stream_id] = _Entry(now, interval or DEFAULT_INTERVAL, LiveState.ALIVE)
            self._revived[stream_id] = None
            return LiveState.ALIVE
        if interval:
            entry.interval = interval
        if now <= entry.last_heard:
            return None  # nothing newer than what we knew
        entry.last_heard = now
        if entry.state is not LiveState.ALIVE:
            entry.state = LiveState.ALIVE
            self._revived[stream_id] = None
            return LiveState.ALIVE
        return None

    def take_revived(self) -> list[int]:
        """Streams that became alive (first heard, or heard again) since the last call.

        For a caller that announces changes while others call :meth:`heard` too; at most
        one entry per stream, oldest first.
        """
        if not self._revived:
            return []
        out = list(self._revived)
        self._revived.clear()
        return out

    def last_heard(self, stream_id: int) -> float | None:
        """When ``stream_id`` was last heard (monotonic seconds), or ``None`` if never."""
        entry = self._entries.get(stream_id)
        return entry.last_heard if entry else None

    def state(self, stream_id: int) -> LiveState | None:
        """Current state, or ``None`` for a stream never heard."""
        entry = self._entries.get(stream_id)
        return entry.state if entry else None

    def silence(self, stream_id: int, now: float) -> float:
        """Seconds since ``stream_id`` was last heard."""
        return now - self._entries[stream_id].last_heard

    def forget(self, stream_id: int) -> None:
        """Stop tracking a stream."""
        self._entries.pop(stream_id, None)
        self._revived.pop(stream_id, None)

    def _limits(self, entry: _Entry) -> tuple[float, float]:
        stale = entry.last_heard + entry.interval * (1 + GRACE)
        lost_in = self.timeout if self.timeout is not None else entry.interval * self.lost_after
        lost = entry.last_heard + max(lost_in, entry.interval * (1 + GRACE))
        return stale, lost

    def check(self, now: float) -> list[tuple[int, LiveState]]:
        """Advance every stream to ``now``; returns ``(stream_id, new_state)`` for changes."""
        changes = []
        for sid, entry in self._entries.items():
            stale, lost = self._limits(entry)
            new = (
                LiveState.LOST if now >= lost else LiveState.STALE if now >= stale else entry.state
            )
            if new is not entry.state and entry.state is not LiveState.LOST:
                entry.state = new
                changes.append((sid, new))
        return changes

    def next_deadline(self) -> float | None:
        """When :meth:`check` next has something to change (monotonic seconds), or ``None``."""
        deadlines = []
        for entry in self._entries.values():
            stale, lost = self._limits(entry)
            if entry.state is LiveState.ALIVE:
                deadlines.append(stale)
            elif entry.state is LiveState.STALE:
                deadlines.append(lost)
        return min(deadlines) if deadlines else None
