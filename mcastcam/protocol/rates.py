"""One rate estimator over a sliding window (pure: ``now`` is passed in).

Frames per second in and out of a sender, a client's delivered fps, a stream's bit rate: all
are "how much a running count grew over the last ``window`` seconds". :class:`RateMeter`
keeps timestamped readings of a count (a bounded deque) and answers that.
"""

from __future__ import annotations

import collections
import math

__all__ = ["RateMeter"]


class RateMeter:
    """Rate of a running count (events, frames, bytes) over the last ``window`` seconds.

    Feed it either events (:meth:`add`) or readings of a counter kept elsewhere
    (:meth:`observe`). :meth:`rate` is ``(count now - count at the base) / (now - base
    time)``, where the base is the newest reading at least ``window`` seconds old (else the
    oldest one kept, or the start). A count read once a ``window`` thus gives exactly its
    growth since the previous reading per second; events give the rate over about the last
    ``window`` seconds, falling to 0 when they stop.

    Args:
        window: seconds to average over (> 0).
        start: ``now`` when counting began (monotonic seconds).
        total: the count at ``start``.
        max_samples: readings kept at most (>= 2); older ones are forgotten first.

    Raises:
        ValueError: ``window`` not above 0 or ``max_samples`` below 2.
    """

    def __init__(
        self, window: float, start: float, total: float = 0, max_samples: int = 1024
    ) -> None:
        if not 0 < window < math.inf:
            raise ValueError(f"bad rate window {window}: must be above 0 seconds")
        if max_samples < 2:
            raise ValueError(f"bad max_samples {max_samples}: must be at least 2")
        self.window = window
        self._samples: collections.deque[tuple[float, float]] = collections.deque(
            [(start, total)], maxlen=max_samples
        )

    @property
    def total(self) -> float:
        """The latest count."""
        return self._samples[-1][1]

    def add(self, now: float, n: float = 1) -> None:
        """``n`` more events happened at ``now``."""
        self.observe(now, self.total + n)

    def observe(self, now: float, total: float) -> None:
        """The count read ``total`` at ``now`` (a counter that only grows; a drop restarts)."""
        samples = self._samples
        if total < samples[-1][1]:  # the counter was reset: start over from here
            samples.clear()
        samples.append((now, total))
        self._prune(now)

    def rate(self, now: float) -> float:
        """Count per second over the last ``window`` seconds before ``now``; 0.0 if no time."""
        self._prune(now)
        samples = self._samples
        horizon = now - self.window
        base_t, base_n = samples[0]
        for t, n in samples:
            if t > horizon:
                break
            base_t, base_n = t, n
        span = now - base_t
        if span <= 0:
            return 0.0
        return (samples[-1][1] - base_n) / span

    def _prune(self, now: float) -> None:
        """Forget readings older than the newest one at least ``window`` old (the base)."""
        samples = self._samples
        horizon = now - self.window
        while len(samples) >= 2 and samples[1][0] <= horizon:
            samples.popleft()
