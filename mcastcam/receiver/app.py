"""The receiver's shell: socket -> :class:`ReceiverSession` -> :class:`FrameHub`.

The session runs on :class:`mcastcam.driver.Driver` (one driver for every sans-IO core): a
reader callback drains the socket on every wake-up — up to ``BATCH`` datagrams with
``recvfrom_into`` into one reused buffer — and feeds each to the pure session with
``loop.time()``; events are drained after every datagram, receiver reports and NACKs go out
through :meth:`ReceiverApp._send_reports`, and one timer stays armed at
``session.get_timer()``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any

from mcastcam import net
from mcastcam.driver import Driver
from mcastcam.protocol.config import DEFAULT_LOG_INTERVAL
from mcastcam.protocol.events import (
    Followed,
    FrameReady,
    HeartbeatReceived,
    LivenessChanged,
    SessionEvent,
)
from mcastcam.protocol.liveness import LiveState
from mcastcam.protocol.ratelimit import RateLimitedLog
from mcastcam.protocol.receiver import Address, ReceiverSession
from mcastcam.receiver.fanout import FrameHub

log = logging.getLogger(__name__)


class ReceiverApp:
    """Connects a receiving socket, the session and the hub on the running loop.

    Args:
        session: the receiver's sans-IO core.
        hub: where complete frames of the followed stream go; from now on it asks the
            session whether the sender is online.
        report_sock: unicast socket for receiver reports (``None``: reports are not sent).
        log_interval: seconds between two log lines about the same refused-datagram reason.
    """

    def __init__(
        self,
        session: ReceiverSession,
        hub: FrameHub,
        report_sock: socket.socket | None = None,
        *,
        log_interval: float = DEFAULT_LOG_INTERVAL,
    ) -> None:
        self.session = session
        self.hub = hub
        hub.set_liveness_source(session.offline_reason)  # "online" lives in the session
        self.report_sock = report_sock
        self.report_errors = 0
        self.gro = net.Offload("gro", False, "not asked")
        self._loop = asyncio.get_running_loop()
        self.driver = Driver(session, self._send_reports, on_event=self._on_event)
        self._refusals = RateLimitedLog(log, log_interval)
        self._others = RateLimitedLog(
            log,
            log_interval,
            template="%(since)d stream(s) not followed became %(reason)s (%(total)d in all)",
            level=logging.INFO,
            max_reasons=4,
        )
        """Liveness changes of streams not followed: remote ids anyone can invent (#12 §4)."""

    @property
    def sock(self) -> socket.socket | None:
        """The receiving socket, once attached."""
        return self.driver.sock

    @property
    def socket_errors(self) -> int:
        """``OSError`` s reading the socket (ICMP errors surface there); never fatal."""
        return self.driver.socket_errors

    async def attach(self, sock: socket.socket, gro: net.Offload | None = None) -> None:
        """Start receiving on ``sock`` (a bound, joined, non-blocking UDP socket).

        ``gro``: what :func:`mcastcam.net.enable_gro` said for ``sock``; when on, coalesced
        buffers are split into datagrams (``None``: GRO off).
        """
        if gro is not None:
            self.gro = gro
        self.driver.sock = sock
        self.driver.gro = self.gro.enabled
        self.driver.start()
        if self.report_sock is not None and self.session.verifier is not None:
            # Freshness replies (§8.6) come back unicast to the socket the reports leave from.
            self._loop.add_reader(self.report_sock.fileno(), self._on_report_sock)

    def _on_report_sock(self) -> None:
        sock = self.report_sock
        if sock is None:
            return
        for _ in range(16):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ICMP errors of earlier reports surface here
                self.report_errors += 1
                break
            self.session.receive_datagram(data, addr, self._loop.time())
            self.driver.drain()
        self.driver.transmit()

    def close(self) -> None:
        """Stop receiving and cancel the timer; the caller closes the socket."""
        if self.report_sock is not None and self.session.verifier is not None:
            self._loop.remove_reader(self.report_sock.fileno())
        self.driver.close()
        self.driver.sock = None

    # ------------------------------------------------------------ driving

    def _on_event(self, ev: SessionEvent) -> None:
        if isinstance(ev, FrameReady):
            self.hub.publish(ev.frame)
        elif isinstance(ev, LivenessChanged):
            self._on_liveness(ev)
        elif isinstance(ev, Followed):
            log.info(
                "following stream %r (id %08x) from %s%s",
                ev.name or "?",
                ev.stream_id,
                ev.addr[0],
                f", was {ev.previous:08x}" if ev.previous is not None else "",
            )
        elif isinstance(ev, HeartbeatReceived):
            pass  # kept in the session's stream info; receiver reports come later

    def _on_liveness(self, ev: LivenessChanged) -> None:
        if not ev.followed:  # one counted line per state and interval, not one per id
            log.debug("stream %r (id %08x) is %s", ev.name or "?", ev.stream_id, ev.state)
            self._others.count(str(ev.state), self._loop.time())
            return
        level = logging.INFO if ev.state is LiveState.ALIVE else logging.WARNING
        log.log(
            level,
            "stream %r (id %08x) is %s%s",
            ev.name or "?",
            ev.stream_id,
            ev.state,
            " (followed)" if ev.followed else "",
        )

    def _send_reports(self, reports: Sequence[tuple[bytes, Address]]) -> None:
        """Receiver reports and NACKs, unicast to the followed sender (best effort)."""
        if self.report_sock is None:
            return
        for data, addr in reports:
            try:
                self.report_sock.sendto(data, addr)
            except OSError as exc:  # unreachable sender, full buffer: reports are best effort
                self.report_errors += 1
                log.debug("report/NACK to %s:%d failed: %s", addr[0], addr[1], exc)

    def log_refusals(self) -> None:
        """Log refused datagrams at most once per reason per ``log_interval`` seconds.

        Malformed, truncated, foreign or hostile datagrams are counted by reason (see
        ``/status``); each line says how many there were since the previous one.
        """
        now = self._loop.time()
        totals: dict[str, int] = dict(self.session.reassembler.decode_errors)
        for stats in self.session.reassembler.streams():
            for reason, n in stats.decode_errors.items():
                totals[reason] = totals.get(reason, 0) + n
        for reason, total in totals.items():
            self._refusals.observe(reason, total, now)
        self._others.flush(now)

    def status(self) -> dict[str, Any]:
        """The app's part of ``/status``: streams, liveness, counters."""
        out = self.session.status(self._loop.time())
        out["socket_errors"] = self.socket_errors
        out["gro"] = self.gro.describe()
        out["gro_buffers"] = self.driver.gro_buffers
        reporter = self.session.reporter
        if reporter is not None:
            out["reports"] = {
                "sent": reporter.reports_sent,
                "nacks_sent": reporter.nacks_sent,
                "errors": self.report_errors,
                "interval": round(reporter.interval, 3),
            }
        return out
