"""The receiver's shell: socket -> :class:`ReceiverSession` -> :class:`FrameHub`.

A reader callback (``loop.add_reader``) drains the socket on every wake-up — up to
:data:`BATCH` datagrams with ``recvfrom_into`` into one reused buffer, instead of asyncio's
one datagram per wake-up — and feeds each to the pure session with ``loop.time()``. Events
are drained after every datagram, and one timer stays armed at ``session.get_timer()``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from mcastcam.looptimer import LoopTimer
from mcastcam.protocol.frame import ServedFrame
from mcastcam.protocol.liveness import LiveState
from mcastcam.protocol.receiver import (
    Followed,
    FrameReady,
    HeartbeatReceived,
    LivenessChanged,
    ReceiverSession,
)
from mcastcam.receiver.fanout import FrameHub

log = logging.getLogger(__name__)


BATCH = 64
"""Datagrams read per wake-up at most, so timers and HTTP clients get their turn."""
MAX_DATAGRAM = 65535


class ReceiverApp:
    """Connects a receiving socket, the session and the hub on the running loop."""

    def __init__(
        self, session: ReceiverSession, hub: FrameHub, report_sock: socket.socket | None = None
    ) -> None:
        self.session = session
        self.hub = hub
        hub.set_liveness_source(session.offline_reason)  # "online" lives in the session
        self.report_sock = report_sock
        """Unicast socket for receiver reports (``None``: reports are not sent)."""
        self.report_errors = 0
        self._loop = asyncio.get_running_loop()
        self._timer = LoopTimer(self._loop, self._on_timer)
        self.sock: socket.socket | None = None
        self.socket_errors = 0
        self._refusals_logged: dict[str, tuple[float, int]] = {}  # reason -> (when, count)
        self._buffer = bytearray(MAX_DATAGRAM)

    async def attach(self, sock: socket.socket) -> None:
        """Start receiving on ``sock`` (a bound, joined, non-blocking UDP socket)."""
        self.sock = sock
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        """Stop receiving and cancel the timer; the caller closes the socket."""
        self._timer.cancel()
        if self.sock is not None:
            self._loop.remove_reader(self.sock.fileno())
            self.sock = None

    def _on_readable(self) -> None:
        """Read what the socket holds (bounded), feeding each datagram to the session.

        The session gets a view of the reused buffer: the reassembler copies what it keeps.
        """
        sock, buf = self.sock, self._buffer
        if sock is None:
            return
        view = memoryview(buf)
        receive = self.session.receive_datagram
        for _ in range(BATCH):
            try:
                size, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ICMP errors surface here; never fatal
                self.socket_errors += 1
                log.debug("socket error: %s", exc)
                break
            receive(view[:size], addr, self._loop.time())
            self._drain()
        self._timer.arm(self.session.get_timer())

    # ------------------------------------------------------------ driving

    def _drain(self) -> None:
        session, hub = self.session, self.hub
        while (ev := session.next_event()) is not None:
            if isinstance(ev, FrameReady):
                f = ev.frame
                hub.publish(
                    ServedFrame(f.data, f.frame_id, f.capture_ts_ns, f.stream_id, f.completed_at)
                )
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
        level = logging.INFO if ev.state is LiveState.ALIVE else logging.WARNING
        log.log(
            level,
            "stream %r (id %08x) is %s%s",
            ev.name or "?",
            ev.stream_id,
            ev.state,
            " (followed)" if ev.followed else "",
        )

    def _on_timer(self) -> None:
        self.session.handle_timer(self._loop.time())
        self._drain()
        self._send_reports()
        self._timer.arm(self.session.get_timer())

    def _send_reports(self) -> None:
        for data, addr in self.session.datagrams_to_send(self._loop.time()):
            if self.report_sock is None:
                continue
            try:
                self.report_sock.sendto(data, addr)
            except OSError as exc:  # unreachable sender, full buffer: reports are best effort
                self.report_errors += 1
                log.debug("receiver report to %s:%d failed: %s", addr[0], addr[1], exc)

    def log_refusals(self, interval: float = 60.0) -> None:
        """Log refused datagrams at most once per reason per ``interval`` seconds.

        Malformed, truncated, foreign or hostile datagrams are counted by reason (see
        ``/status``); each line says how many there were since the previous one.
        """
        now = self._loop.time()
        totals: dict[str, int] = dict(self.session.reassembler.decode_errors)
        for stats in self.session.reassembler.streams():
            for reason, n in stats.decode_errors.items():
                totals[reason] = totals.get(reason, 0) + n
        for reason, total in totals.items():
            when, logged = self._refusals_logged.get(reason, (-interval, 0))
            if total > logged and now - when >= interval:
                log.warning("dropped %d datagram(s): %s (%d in all)", total - logged, reason, total)
                self._refusals_logged[reason] = (now, total)

    def status(self) -> dict[str, Any]:
        """The app's part of ``/status``: streams, liveness, counters."""
        out = self.session.status(self._loop.time())
        out["socket_errors"] = self.socket_errors
        reporter = self.session.reporter
        if reporter is not None:
            out["reports"] = {
                "sent": reporter.reports_sent,
                "errors": self.report_errors,
                "interval": round(reporter.interval, 3),
            }
        return out
