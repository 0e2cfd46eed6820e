"""One asyncio timer kept at a sans-IO core's next deadline (aioquic's driver pattern).

The shell calls :meth:`LoopTimer.arm` with ``core.get_timer()`` after every input; the timer
is moved only when that deadline changes, and ``callback`` runs when it is reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LoopTimer:
    """A re-armable ``loop.call_at`` handle.

    Args:
        loop: the running event loop (deadlines are on its ``loop.time()`` clock, seconds).
        callback: called with no arguments when the armed deadline is reached.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def arm(self, at: float | None) -> None:
        """Fire at ``at`` (monotonic seconds); ``None`` disarms."""
        if at == self._at and (at is None or self._handle is not None):
            return
        self.cancel()
        self._at = at
        if at is not None:
            self._handle = self._loop.call_at(at, self._fire)

    def cancel(self) -> None:
        """Disarm."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = None

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        self._callback()
