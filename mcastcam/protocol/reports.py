"""Receiver reports: when to send them and what they say (pure; RFC 3550 §6.2-6.4 style).

Each receiver sends the sender of the stream it follows a unicast
:class:`~mcastcam.protocol.codec.ReceiverReport` about once per heartbeat interval, and
:class:`~mcastcam.protocol.codec.Nack` datagrams when frames need repair (protocol v2 §7:
same destination, one control counter ``seq`` for both). Like
RTCP, the interval grows with the audience the sender announces in its heartbeats, so that
all receivers' reports together stay under 5 % of the stream's bandwidth
(:mod:`mcastcam.protocol.reporting`), and every interval is randomised to 0.5-1.5 times
its value so receivers do not synchronise (RFC 3550 §6.3.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mcastcam.protocol.codec import Heartbeat, Nack, NackEntry, ReceiverReport, encode
from mcastcam.protocol.reporting import report_interval, report_wire_bytes


@dataclass(slots=True)
class _Heard:
    heartbeat: Heartbeat
    addr: tuple[str, int]
    at: float


class Reporter:
    """Schedules and builds this receiver's reports about the followed stream.

    Args:
        receiver_id: random u32 for this receiver run (from the shell).
        name: this receiver's name (host name), at most 64 UTF-8 bytes.
        host: this receiver's IPv4 address.
        rng: returns a uniform float in [0, 1) (the shell passes ``random.random``);
            ``None`` sends exactly every interval (tests).
    """

    def __init__(
        self, receiver_id: int, name: str, host: str, rng: Callable[[], float] | None = None
    ) -> None:
        self.receiver_id = receiver_id
        self.name = name
        self.host = host
        self.rng = rng
        self.report_bytes = report_wire_bytes(name)
        self.reports_sent = 0
        self._heard: _Heard | None = None
        self._next: float | None = None
        self._seq = 0
        self.nacks_sent = 0
        # now, datagrams, lost, bytes, loss bursts at the previous report
        self._last: tuple[float, int, int, int, int] | None = None
        self.interval = 0.0
        """The mean interval used for the latest report, seconds."""

    def forget(self) -> None:
        """Stop reporting (the followed stream changed or was lost)."""
        self._heard = None
        self._next = None
        self._last = None

    def on_heartbeat(self, hb: Heartbeat, addr: tuple[str, int], now: float) -> None:
        """The followed stream's heartbeat arrived from ``addr`` at ``now``."""
        if self._heard is not None and self._heard.heartbeat.stream_id != hb.stream_id:
            self.forget()
        self._heard = _Heard(hb, addr, now)
        if self._next is None:  # first report soon, randomised like every other one
            self._next = now + self._jitter(hb.interval_ms / 1000 or 1.0) * 0.5

    def get_timer(self) -> float | None:
        """When the next report is due (monotonic seconds), or ``None``."""
        return self._next if self._heard is not None else None

    def _jitter(self, interval: float) -> float:
        return interval * (0.5 + self.rng()) if self.rng is not None else interval

    def destination(self) -> tuple[str, int] | None:
        """Where reports and NACKs go (``(host, port)``), or ``None`` before a heartbeat.

        The source address and port of the heartbeat datagram (docs/protocol.md §7): the
        sender itself, or the relay that re-multicast its heartbeats on this LAN (the
        heartbeat's ``host`` names the sender; it is not rewritten, so tags still verify).
        """
        heard = self._heard
        if heard is None:
            return None
        return heard.addr

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFFFFFF
        return seq

    def nack(self, entries: tuple[NackEntry, ...]) -> tuple[bytes, tuple[str, int]] | None:
        """A NACK datagram (kind 17) asking for ``entries`` (1 … 16) and where to send it.

        ``None`` before the followed stream's heartbeat (no run, no destination).

        Raises:
            LocalProtocolError: an entry does not fit its wire type, or 0 / > 16 entries.
        """
        heard = self._heard
        dest = self.destination()
        if heard is None or dest is None:
            return None
        hb = heard.heartbeat
        msg = Nack(
            stream_id=hb.stream_id,
            seq=self._next_seq(),
            receiver_id=self.receiver_id,
            entries=entries,
            run_nonce=hb.run_nonce,
        )
        data = encode(msg)
        self.nacks_sent += 1
        return data, dest

    def _message(self, hb: Heartbeat, **fields: int) -> ReceiverReport:
        """A report about ``hb``'s run from this receiver with the next ``seq``."""
        return ReceiverReport(
            stream_id=hb.stream_id,
            seq=self._next_seq(),
            receiver_id=self.receiver_id,
            name=self.name,
            host=self.host,
            echo_ts_ns=hb.send_ts_ns,
            run_nonce=hb.run_nonce,
            **fields,  # type: ignore[arg-type]
        )

    def challenge(
        self, hb: Heartbeat, addr: tuple[str, int], challenge: int
    ) -> tuple[bytes, tuple[str, int]]:
        """A report about ``hb``'s run asking for a freshness reply (§8.6), and where to send it.

        Sent where reports go (``addr``, the heartbeat datagram's source); counters 0 (this
        report only asks; the sender does not feed its redundancy policy with it).
        """
        msg = self._message(
            hb, frames_completed=0, frames_dropped=0, loss_ppm=0, held_ns=0, challenge=challenge
        )
        return encode(msg), addr

    def report(
        self,
        now: float,
        *,
        frames_completed: int,
        frames_dropped: int,
        datagrams: int,
        lost: int,
        stream_bytes: int,
        loss_bursts: int = 0,
        repaired_fec: int = 0,
        repaired_nack: int = 0,
        unrepairable: int = 0,
    ) -> tuple[bytes, tuple[str, int]] | None:
        """The report due at ``now`` and where to send it, or ``None`` if none is due.

        The counters are the followed stream's totals (frames, datagrams, bytes; loss bursts
        = gaps in the sequence numbers); loss is computed over the time since the previous
        report (the first report: since the stream began), in parts per million of the
        datagrams expected in it, and so is the mean burst length (``burst_milli`` = 1000 ×
        datagrams lost per gap, 0 without loss).
        """
        heard = self._heard
        if heard is None or self._next is None or now < self._next:
            return None
        hb = heard.heartbeat
        # The first report measures loss over the stream so far (a first report of 0 %
        # would make the sender's redundancy policy drop its repair for a while).
        t0, d0, l0, b0, g0 = self._last if self._last is not None else (now, 0, 0, 0, 0)
        got, missed = datagrams - d0, max(0, lost - l0)
        expected = got + missed
        loss_ppm = round(1_000_000 * missed / expected) if expected > 0 else 0
        rate = (stream_bytes - b0) / (now - t0) if now > t0 else 0.0
        gaps = loss_bursts - g0
        burst_milli = 0
        if missed > 0:
            burst_milli = round(1000 * max(1.0, missed / gaps)) if gaps > 0 else 1000
        self._last = (now, datagrams, lost, stream_bytes, loss_bursts)
        min_interval = hb.interval_ms / 1000 or 1.0
        self.interval = report_interval(hb.audience, rate, min_interval, self.report_bytes)
        self._next = now + self._jitter(self.interval)
        msg = self._message(
            hb,
            frames_completed=frames_completed,
            frames_dropped=frames_dropped,
            loss_ppm=min(loss_ppm, 1_000_000),
            held_ns=min(60 * 10**9, max(0, round((now - heard.at) * 1e9))),
            burst_milli=min(burst_milli, 1_000_000),
            repaired_fec=repaired_fec,
            repaired_nack=repaired_nack,
            unrepairable=unrepairable,
            challenge=0,  # no key: no freshness challenge (§8.6)
        )
        self.reports_sent += 1
        dest = self.destination()
        assert dest is not None
        return encode(msg), dest
