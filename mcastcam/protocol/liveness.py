"""Sender liveness from what we hear (pure; ``now`` is passed in).

A stream is **alive** while datagrams keep coming, **stale** once one heartbeat interval
went by in silence, and **lost** after ``lost_after`` intervals (3 by default). The
interval is the one the sender announces in its heartbeats (1 s until we hear one), clamped
to :data:`MIN_INTERVAL` … :data:`MAX_INTERVAL` (the codec already refuses heartbeats outside
that range, protocol §6; the clamp keeps any other caller from making deadlines absurd).

:class:`Liveness` is the one place that knows when each stream was last heard: the
reassembler tells it (heartbeats, each frame's first fragment), the receiver session tells
it (completed and dropped frames, heartbeat intervals), and both read it back.

Bounded (issue #12 §4): at most ``max_entries`` streams (least recently heard evicted first),
and deadlines live in a heap with at most one live item per stream, so :meth:`check` and
:meth:`next_deadline` cost O(log n) per change, not a scan of every stream ever heard.
"""

from __future__ import annotations

import collections
import enum
import heapq
from dataclasses import dataclass

DEFAULT_INTERVAL = 1.0
"""Seconds assumed between heartbeats until a heartbeat says otherwise."""
GRACE = 0.25
"""Fraction of an interval allowed for jitter before a heartbeat counts as missed."""
MIN_INTERVAL = 0.1
"""Shortest heartbeat interval believed, seconds (protocol §6: ``interval_ms`` ≥ 100)."""
MAX_INTERVAL = 60.0
"""Longest heartbeat interval believed, seconds (protocol §6: ``interval_ms`` ≤ 60,000)."""
MAX_ENTRIES = 64
"""Streams tracked at once by default; a new one evicts the least recently heard."""


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
    due: float | None = None  # time of this entry's one live heap item, if any


class Liveness:
    """Tracks every stream's liveness.

    Args:
        lost_after: intervals of silence before a stream is lost (>= 1).
        timeout: if given, seconds of silence before a stream is lost (overrides
            ``lost_after``; stale still comes after one interval; never less than one
            interval plus the grace, so a stream is not lost between two heartbeats).
        max_entries: streams tracked at once (>= 1); a new stream evicts the one heard
            least recently (forgotten without a state change).

    Raises:
        ValueError: ``max_entries`` < 1.
    """

    def __init__(
        self, lost_after: float = 3.0, timeout: float | None = None, max_entries: int = MAX_ENTRIES
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"bad max_entries {max_entries}: must be at least 1")
        self.lost_after = lost_after
        self.timeout = timeout
        self.max_entries = max_entries
        # ordered by last heard (least recent first): eviction takes the first
        self._entries: collections.OrderedDict[int, _Entry] = collections.OrderedDict()
        self._revived: dict[int, None] = {}  # streams that became alive, not yet taken
        self._heap: list[tuple[float, int]] = []  # (due, stream id); stale items skipped
        self.evicted = 0
        """Streams forgotten to make room for a new one."""

    def __len__(self) -> int:
        return len(self._entries)

    def heard(self, stream_id: int, now: float, interval: float | None = None) -> LiveState | None:
        """A datagram of ``stream_id`` arrived at ``now``; returns the new state if it changed.

        ``interval`` is the heartbeat interval in seconds when the datagram was a heartbeat
        (clamped to :data:`MIN_INTERVAL` … :data:`MAX_INTERVAL`). A stream that becomes
        alive is also kept for :meth:`take_revived`.
        """
        if interval:
            interval = min(max(interval, MIN_INTERVAL), MAX_INTERVAL)
        entries = self._entries
        entry = entries.get(stream_id)
        if entry is None:
            while len(entries) >= self.max_entries:
                old, _ = entries.popitem(last=False)
                self._revived.pop(old, None)
                self.evicted += 1
            entry = entries[stream_id] = _Entry(now, interval or DEFAULT_INTERVAL, LiveState.ALIVE)
            self._revived[stream_id] = None
            self._schedule(stream_id, entry)
            return LiveState.ALIVE
        if interval and interval != entry.interval:
            entry.interval = interval
            self._schedule(stream_id, entry)  # a shorter interval brings the deadline closer
        if now <= entry.last_heard:
            return None  # nothing newer than what we knew
        entry.last_heard = now
        entries.move_to_end(stream_id)
        if entry.state is not LiveState.ALIVE:
            entry.state = LiveState.ALIVE
            self._revived[stream_id] = None
            self._schedule(stream_id, entry)
            return LiveState.ALIVE
        return None  # its heap item fires early and is pushed back (no heap work per datagram)

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

    def state_at(self, stream_id: int, now: float) -> LiveState | None:
        """The state :meth:`check` would give ``stream_id`` at ``now`` (changes nothing)."""
        entry = self._entries.get(stream_id)
        if entry is None:
            return None
        return self._state_at(entry, now)

    def silence(self, stream_id: int, now: float) -> float:
        """Seconds since ``stream_id`` was last heard.

        Raises:
            KeyError: ``stream_id`` is not tracked.
        """
        return now - self._entries[stream_id].last_heard

    def forget(self, stream_id: int) -> None:
        """Stop tracking a stream (its heap item, if any, is skipped when it comes up)."""
        self._entries.pop(stream_id, None)
        self._revived.pop(stream_id, None)

    def _limits(self, entry: _Entry) -> tuple[float, float]:
        stale = entry.last_heard + entry.interval * (1 + GRACE)
        lost_in = self.timeout if self.timeout is not None else entry.interval * self.lost_after
        lost = entry.last_heard + max(lost_in, entry.interval * (1 + GRACE))
        return stale, lost

    def _state_at(self, entry: _Entry, now: float) -> LiveState:
        if entry.state is LiveState.LOST:
            return LiveState.LOST
        stale, lost = self._limits(entry)
        return LiveState.LOST if now >= lost else LiveState.STALE if now >= stale else entry.state

    def _deadline(self, entry: _Entry) -> float | None:
        stale, lost = self._limits(entry)
        if entry.state is LiveState.ALIVE:
            return stale
        if entry.state is LiveState.STALE:
            return lost
        return None

    def _schedule(self, stream_id: int, entry: _Entry) -> None:
        """Keep one heap item at or before the entry's next deadline."""
        due = self._deadline(entry)
        if due is None or (entry.due is not None and entry.due <= due):
            return
        entry.due = due
        heapq.heappush(self._heap, (due, stream_id))
        if len(self._heap) > 4 * len(self._entries) + 64:  # superseded items pile up: rebuild
            self._heap = [(e.due, sid) for sid, e in self._entries.items() if e.due is not None]
            heapq.heapify(self._heap)

    def _pop_stale_items(self) -> None:
        heap, entries = self._heap, self._entries
        while heap:
            due, sid = heap[0]
            entry = entries.get(sid)
            if entry is not None and entry.due == due:
                return
            heapq.heappop(heap)

    def check(self, now: float) -> list[tuple[int, LiveState]]:
        """Advance every stream to ``now``; returns ``(stream_id, new_state)`` for changes.

        Only streams whose deadline has come are looked at (oldest deadline first).
        """
        changes = []
        heap, entries = self._heap, self._entries
        while heap and heap[0][0] <= now:
            due, sid = heapq.heappop(heap)
            entry = entries.get(sid)
            if entry is None or entry.due != due:
                continue  # forgotten, or superseded by an earlier item
            entry.due = None
            new = self._state_at(entry, now)
            if new is not entry.state:
                entry.state = new
                changes.append((sid, new))
            self._schedule(sid, entry)  # heard since: its real deadline is later
        return changes

    def next_deadline(self) -> float | None:
        """When :meth:`check` next has something to change (monotonic seconds), or ``None``.

        May be earlier than the next change (a stream heard since its item was pushed):
        :meth:`check` then changes nothing and pushes the item back.
        """
        self._pop_stale_items()
        return self._heap[0][0] if self._heap else None
