"""One rate-limited log for counted events (pure: ``now`` is passed in).

Garbage, refused or rate-limited datagrams are counted by reason; a line per reason is logged
at most once per ``interval`` seconds, saying how many there were since the previous line and
in all. The table of reasons is bounded: reasons past ``max_reasons`` are folded into
``"other"``, so a flood of made-up reasons cannot grow memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mcastcam.protocol.config import DEFAULT_LOG_INTERVAL

__all__ = ["DEFAULT_TEMPLATE", "OTHER", "RateLimitedLog"]

DEFAULT_TEMPLATE = "dropped %(since)d datagram(s): %(reason)s (%(total)d in all)"
"""``%``-style template; its keys are ``since``, ``reason`` and ``total``."""
OTHER = "other"
"""The reason that collects reasons beyond the table's bound."""


@dataclass(slots=True)
class _Entry:
    total: int = 0
    logged: int = 0  # total at the last line
    logged_at: float | None = None  # now of the last line


class RateLimitedLog:
    """Counts events by reason and logs each reason at most once per ``interval``.

    Args:
        logger: where lines go.
        interval: seconds between two lines about the same reason (>= 0).
        template: ``%``-style message with ``since``, ``reason`` and ``total`` keys, e.g.
            the default ``"dropped %(since)d datagram(s): %(reason)s (%(total)d in all)"``.
        level: logging level of the lines.
        max_reasons: reasons kept apart (>= 1); more are counted as :data:`OTHER`.

    The first event of a reason is logged at once; later ones wait for the interval, and
    :meth:`flush` logs what waited once the interval has passed.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = DEFAULT_LOG_INTERVAL,
        *,
        template: str = DEFAULT_TEMPLATE,
        level: int = logging.WARNING,
        max_reasons: int = 32,
    ) -> None:
        if not interval >= 0:
            raise ValueError(f"bad log interval {interval}: must be >= 0 seconds")
        if max_reasons < 1:
            raise ValueError(f"bad max_reasons {max_reasons}: must be at least 1")
        self.logger = logger
        self.interval = interval
        self.template = template
        self.level = level
        self.max_reasons = max_reasons
        self._entries: dict[str, _Entry] = {}

    def count(self, reason: str, now: float, n: int = 1) -> None:
        """``n`` more events of ``reason`` at ``now`` (monotonic seconds); log if due."""
        if n <= 0:
            return
        entry = self._entry(reason)
        entry.total += n
        self._maybe_log(self._key(reason), entry, now)

    def observe(self, reason: str, total: int, now: float) -> None:
        """The running ``total`` of ``reason`` kept elsewhere (a counter); log if due.

        A total below the one last seen is taken as a counter reset. Meant for counters whose
        reasons are a fixed set (decode-error reasons): a reason folded into :data:`OTHER` has
        no running total of its own, so its ``total`` is added (an upper bound).
        """
        entry = self._entry(reason)
        if self._key(reason) == OTHER and reason != OTHER:
            entry.total += max(0, total)  # folded reasons have no running total of their own
        else:
            if total < entry.logged:
                entry.logged = 0
            entry.total = total
        self._maybe_log(self._key(reason), entry, now)

    def flush(self, now: float) -> None:
        """Log every reason with events not yet logged whose interval has passed."""
        for reason, entry in self._entries.items():
            self._maybe_log(reason, entry, now)

    def totals(self) -> dict[str, int]:
        """Events counted so far, by reason (folded ones under :data:`OTHER`)."""
        return {reason: e.total for reason, e in self._entries.items()}

    # ------------------------------------------------------------------ internals

    def _key(self, reason: str) -> str:
        if reason in self._entries or len(self._entries) < self.max_reasons - 1:
            return reason
        return OTHER

    def _entry(self, reason: str) -> _Entry:
        key = self._key(reason)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        return entry

    def _maybe_log(self, reason: str, entry: _Entry, now: float) -> None:
        if entry.total <= entry.logged:
            return
        if entry.logged_at is not None and now - entry.logged_at < self.interval:
            return
        self.logger.log(
            self.level,
            self.template,
            {"since": entry.total - entry.logged, "reason": reason, "total": entry.total},
        )
        entry.logged = entry.total
        entry.logged_at = now
