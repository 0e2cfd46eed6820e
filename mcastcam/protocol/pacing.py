"""A token-bucket pacer (pure; ``now`` is passed in). Modelled on aioquic's ``QuicPacketPacer``.

The bucket fills at ``rate`` bytes per second up to ``burst`` bytes; sending a datagram
takes its size in tokens. The bucket may go into debt by one datagram, so a datagram larger
than the bucket is never stuck. With ``rate`` of ``None`` nothing is paced.
"""

from __future__ import annotations


class Pacer:
    """Token bucket over datagram bytes.

    Args:
        burst_interval: seconds of traffic the bucket holds at the current rate
            (default 4 ms: one event-loop wake-up sends a few datagrams, not one).
        min_burst: the bucket holds at least this many bytes (one full datagram).
        refill: the fraction of the bucket that must be back before the next send time
            (0 < refill ≤ 1; default a half): larger means fewer, larger bursts, never more
            than the bucket.

    Raises:
        ValueError: ``refill`` is outside (0, 1].
    """

    def __init__(
        self, *, burst_interval: float = 0.004, min_burst: int = 1500, refill: float = 0.5
    ) -> None:
        if not 0 < refill <= 1:
            raise ValueError(f"refill {refill} is not in (0, 1]")
        self.burst_interval = burst_interval
        self.min_burst = min_burst
        self.refill = refill
        self._rate: float | None = None
        self._burst = float(min_burst)
        self._tokens = float("inf")  # starts full: the first set_rate caps it to the bucket
        self._updated: float | None = None

    @property
    def rate(self) -> float | None:
        """Current rate in bytes per second, or ``None`` (unpaced)."""
        return self._rate

    def set_rate(self, rate: float | None, now: float) -> None:
        """Change the rate (bytes/s, > 0, or ``None``) from ``now`` on."""
        self._refill(now)
        self._rate = rate
        if rate is not None:
            self._burst = max(float(self.min_burst), rate * self.burst_interval)
            self._tokens = min(self._tokens, self._burst)

    def _refill(self, now: float) -> None:
        if self._updated is not None and self._rate is not None and now > self._updated:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now if self._updated is None else max(self._updated, now)

    def can_send(self, now: float) -> bool:
        """True if a datagram may leave at ``now``."""
        if self._rate is None:
            return True
        self._refill(now)
        return self._tokens > 0

    def tokens(self, now: float) -> float:
        """Bytes that may leave at ``now`` (``inf`` unpaced).

        Datagrams may be sent while the bytes sent since stay below it (:meth:`can_send` for
        a run of datagrams at one ``now``), then all taken with one :meth:`on_sent`.
        """
        if self._rate is None:
            return float("inf")
        self._refill(now)
        return self._tokens

    def on_sent(self, size: int, now: float) -> None:
        """Take ``size`` bytes of tokens for a datagram sent at ``now``."""
        if self._rate is not None:
            self._refill(now)
            self._tokens -= size

    def next_send_time(self) -> float | None:
        """When to send next (monotonic seconds); ``None`` before any call with a ``now``.

        Now if tokens remain, else when ``refill`` of the bucket is back (half by default).
        """
        if self._rate is None or self._tokens > 0:
            return self._updated
        assert self._updated is not None
        # Sleep until part of the bucket is back, not until one byte is: each wake-up then
        # sends a burst of datagrams rather than one (a wake-up costs far more than a send).
        return self._updated + (self._burst * self.refill - self._tokens) / self._rate
