"""The sender's audience: receivers heard from through their reports (pure).

Entries are keyed by (address, receiver id), bounded in number, and expire after
``expiry_intervals`` report intervals of silence. Round-trip time follows RFC 3550
§6.4.1 (LSR/DLSR): ``now - echo_ts_ns - held_ns`` on the sender's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcastcam.protocol.codec import ReceiverReport

MAX_RTT_NS = 60_000_000_000
"""Round-trip times outside 0..60 s are not believed (a forged or stale echo)."""


@dataclass(slots=True)
class Listener:
    """One receiver as its latest report describes it.

    ``loss_pct`` is datagram loss over its last report interval, percent; ``rtt`` seconds
    or ``None`` when not measurable; ``last_report`` monotonic seconds.
    """

    receiver_id: int
    name: str
    host: str
    addr: tuple[str, int]
    frames_completed: int
    frames_dropped: int
    loss_pct: float
    rtt: float | None
    last_report: float
    reports: int = 1

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "receiver_id": f"{self.receiver_id:08x}",
            "name": self.name,
            "host": self.host,
            "address": f"{self.addr[0]}:{self.addr[1]}",
            "frames_completed": self.frames_completed,
            "frames_dropped": self.frames_dropped,
            "loss_pct": round(self.loss_pct, 3),
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "reports": self.reports,
        }


class Audience:
    """Receivers of one stream.

    Args:
        stream_id: only reports about this stream are taken.
        max_entries: the table holds at most this many receivers (the stalest is evicted).
        expiry_intervals: report intervals of silence before a receiver is forgotten.
    """

    def __init__(self, stream_id: int, max_entries: int = 1024, expiry_intervals: float = 3.0):
        self.stream_id = stream_id
        self.max_entries = max_entries
        self.expiry_intervals = expiry_intervals
        self._table: dict[tuple[str, int], Listener] = {}
        self.reports_ignored = 0
        """Reports about another stream id."""

    def __len__(self) -> int:
        return len(self._table)

    def receive_report(
        self, report: ReceiverReport, addr: tuple[str, int], now: float, now_ns: int
    ) -> Listener | None:
        """Take a report from ``addr`` at ``now``; returns the entry, or ``None`` if ignored.

        ``now`` is monotonic seconds; ``now_ns`` is the same instant on the clock of the
        heartbeats' ``send_ts_ns`` (wall clock ns), for the round-trip time.
        """
        if report.stream_id != self.stream_id:
            self.reports_ignored += 1
            return None
        rtt_ns = now_ns - report.echo_ts_ns - report.held_ns
        rtt = rtt_ns / 1e9 if report.echo_ts_ns and 0 <= rtt_ns <= MAX_RTT_NS else None
        key = (addr[0], report.receiver_id)
        entry = self._table.pop(key, None)  # re-insert: the dict stays ordered by last report
        if entry is None:
            if len(self._table) >= self.max_entries:
                del self._table[next(iter(self._table))]
            entry = Listener(
                report.receiver_id,
                report.name,
                report.host,
                addr,
                report.frames_completed,
                report.frames_dropped,
                report.loss_ppm / 1e4,
                rtt,
                now,
                reports=0,
            )
        entry.name, entry.host, entry.addr = report.name, report.host, addr
        entry.frames_completed, entry.frames_dropped = (
            report.frames_completed,
            report.frames_dropped,
        )
        entry.loss_pct = report.loss_ppm / 1e4
        if rtt is not None:
            entry.rtt = rtt
        entry.last_report = now
        entry.reports += 1
        self._table[key] = entry
        return entry

    def expire(self, now: float, report_interval: float) -> list[Listener]:
        """Forget receivers silent for ``expiry_intervals`` × ``report_interval`` seconds.

        Pass the largest interval a receiver may draw (1.5 × the mean). Returns those gone.
        """
        limit = now - self.expiry_intervals * report_interval
        gone = [e for e in self._table.values() if e.last_report < limit]
        for e in gone:
            del self._table[(e.addr[0], e.receiver_id)]
        return gone

    def listeners(self) -> list[Listener]:
        """Every receiver, most recently heard last."""
        return list(self._table.values())

    def summary(self) -> dict[str, Any]:
        """Receivers, worst loss %, RTT (median and max, ms) and the table, JSON-ready."""
        entries = self.listeners()
        rtts = sorted(e.rtt for e in entries if e.rtt is not None)
        return {
            "receivers": len(entries),
            "worst_loss_pct": round(max((e.loss_pct for e in entries), default=0.0), 3),
            "rtt_ms_median": round(rtts[len(rtts) // 2] * 1000, 3) if rtts else None,
            "rtt_ms_max": round(rtts[-1] * 1000, 3) if rtts else None,
            "listeners": [e.as_dict() for e in entries],
        }
