"""The sender's shell: source -> :class:`SenderSession` -> socket, on one asyncio loop.

The session runs on :class:`mcastcam.driver.Driver`: after every input (a captured frame, a
receiver report, the timer) it sends what pacing allows and re-arms one timer at
``session.get_timer()``. A socket that is full (EAGAIN/ENOBUFS) keeps the rest of the
datagrams (the driver is paused) and resumes when the socket is writable again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcastcam import net
from mcastcam.driver import Driver
from mcastcam.protocol.config import DEFAULT_LOG_INTERVAL
from mcastcam.protocol.events import ReceiverJoined, ReceiverLeft
from mcastcam.protocol.ratelimit import RateLimitedLog
from mcastcam.protocol.rates import RateMeter
from mcastcam.protocol.repair import TokenBucket
from mcastcam.protocol.sender import OutDatagram, SenderSession
from mcastcam.protocol.wire import SourceState
from mcastcam.sender.sources.base import FrameSource

log = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0
"""Seconds between two status updates: the window of :attr:`SenderApp.rates`."""
LAST_FRAME_LINGER = 0.2
"""Seconds a sender whose source ended keeps answering NACKs for its last frames before the
final heartbeat (a few NACK rounds: stall 3 ms + delay 2–4 ms + aggregation 2 ms + repair,
repeated after 8 ms), when receivers report and FEC is on; never longer than the repair
window."""
AUDIENCE_LINES_BURST = 20
"""Receivers joining/leaving logged one by one at once, before the rate below applies."""
AUDIENCE_LINES_RATE = 0.2
"""Receivers joining/leaving logged one by one per second after the burst."""

_STATES = {"live": SourceState.LIVE, "offline": SourceState.OFFLINE, "ended": SourceState.ENDED}


@dataclass(slots=True)
class Rates:
    """Rates over the last status interval: frames/s in and out, Mbit/s out."""

    fps_in: float = 0.0
    fps_out: float = 0.0
    mbit_out: float = 0.0


class SenderApp:
    """One running sender.

    Args:
        session: the pure core.
        source: where frames come from.
        sock: a non-blocking UDP socket from :mod:`mcastcam.net`.
        destinations: ``(address, port)`` each datagram goes to (a group, a broadcast
            address, or unicast peers).
        max_frames: stop after this many frames have been sent (``None``: run on).
        gso: UDP GSO state of ``sock`` (:func:`mcastcam.net.probe_gso`); ``None``: one
            ``sendmsg`` per datagram.
    """

    def __init__(
        self,
        session: SenderSession,
        source: FrameSource,
        sock: socket.socket,
        destinations: list[tuple[str, int]],
        *,
        max_frames: int | None = None,
        gso: net.Offload | None = None,
    ) -> None:
        self.session = session
        self.gso = gso if gso is not None else net.Offload("gso", False, "not probed")
        self.source = source
        self.sock = sock
        self.destinations = destinations
        self.max_frames = max_frames
        self.send_stats = net.SendStats()
        self.rates = Rates()
        self._loop = asyncio.get_running_loop()
        self.driver = Driver(
            session,
            self._send_now,
            sock=sock,
            on_event=self._on_event,
            after_transmit=self._after_transmit,
            max_datagram=2048,
        )
        self._backlog: dict[tuple[str, int], list[OutDatagram]] = {}
        self._writer_armed = False
        self._idle = asyncio.Event()
        """Set when no frame is being sent or waiting and the socket has no backlog."""
        now, st = self._loop.time(), session.stats
        # Receivers joining/leaving: one INFO line each, at most AUDIENCE_LINES_BURST at once
        # and AUDIENCE_LINES_RATE a second after that; beyond, one counted line a minute (a
        # flood of forged reports without a key must not write a line per invented id).
        self._audience_lines = TokenBucket(AUDIENCE_LINES_RATE, AUDIENCE_LINES_BURST, now)
        self._audience_log = RateLimitedLog(
            log,
            DEFAULT_LOG_INTERVAL,
            template="%(since)d more receiver(s) %(reason)s, not logged one by one "
            "(%(total)d in all)",
            level=logging.INFO,
        )
        self._meters = (
            RateMeter(STATUS_INTERVAL, now, st.frames_queued),
            RateMeter(STATUS_INTERVAL, now, st.frames_sent),
            RateMeter(STATUS_INTERVAL, now, st.bytes_sent),
        )

    # ------------------------------------------------------------------ driving

    async def run(self) -> None:
        """Send until the source ends (and its last frame is out) or ``max_frames`` is reached."""
        log.info("source: %s", self.source.describe())
        self.sync_source()
        self.driver.start()
        try:
            async for frame in self.source.frames():
                self.session.queue_frame(frame, self._loop.time())
                self.sync_source()
                self.transmit()
                if (
                    self.max_frames is not None
                    and self.session.stats.frames_queued >= self.max_frames
                ):
                    break
            self.sync_source()
            await self._idle.wait()
            if self.source.state == "ended" or self.max_frames is not None:
                await self._linger()
                self.session.set_source_state(SourceState.ENDED)
                self._send_now([self.session.final_heartbeat(self._loop.time())])
        finally:
            self.close()

    async def _linger(self) -> None:
        """Answer NACKs for the last frames a little longer (:data:`LAST_FRAME_LINGER`).

        Only with FEC on (NACK repair is RaptorQ repair) and an audience (someone reports, so
        someone may NACK); the reader and timer keep running meanwhile; then wait until any
        repair queued has left.
        """
        cfg = self.session.config
        if cfg.fec.kind == "off" or not len(self.session.audience):
            return
        await asyncio.sleep(min(LAST_FRAME_LINGER, cfg.repair_window))
        await self._idle.wait()

    def close(self) -> None:
        """Cancel the timer, reader and writer; the caller closes the socket and the source."""
        self.driver.close()
        if self._writer_armed:
            self._loop.remove_writer(self.sock.fileno())
            self._writer_armed = False

    def _on_event(self, ev: object) -> None:
        """Receivers joining and leaving (from their reports), for the log."""
        if isinstance(ev, ReceiverJoined | ReceiverLeft):
            who, now = ev.listener, self._loop.time()
            if not self._audience_lines.take(now):
                self._audience_log.count(
                    "reported" if isinstance(ev, ReceiverJoined) else "left", now
                )
                return
            log.info(
                "receiver %r at %s %s (%d now)",
                who.name,
                who.host,
                "reports" if isinstance(ev, ReceiverJoined) else "left",
                len(self.session.audience),
            )

    def sync_source(self) -> None:
        """Copy the source's state (live/offline/ended), size and rate into the session."""
        src = self.source
        self.session.set_source_state(_STATES.get(src.state, SourceState.LIVE))
        cfg = self.session.config
        if (cfg.width, cfg.height, cfg.fps) != (src.width, src.height, src.fps):
            self.session.update_stream(width=src.width, height=src.height, fps=src.fps)

    def transmit(self) -> None:
        """Send what the session allows now and re-arm the one timer."""
        self.driver.transmit()

    def _after_transmit(self) -> None:
        """Freshness replies (unicast heartbeats, with a key), then the idle flag."""
        for data, dest in self.session.unicast_to_send():
            try:
                self.sock.sendto(data, dest)
            except OSError as exc:  # a full socket or an unreachable receiver: it asks again
                log.debug("freshness reply to %s:%d not sent: %s", dest[0], dest[1], exc)
        self._update_idle()

    def _update_idle(self) -> None:
        if self.session.busy or self._backlog:
            self._idle.clear()
        else:
            self._idle.set()

    def _send_now(self, datagrams: Sequence[OutDatagram]) -> None:
        for dest in self.destinations:
            self._send_to(dest, list(datagrams))

    def _send_to(self, dest: tuple[str, int], datagrams: list[OutDatagram]) -> None:
        sent = net.send_datagrams(self.sock, dest, datagrams, self.send_stats, self.gso)
        if sent < len(datagrams):  # the socket is full: keep the rest for when it drains
            self._backlog[dest] = datagrams[sent:]
            self.driver.paused = True
            self._arm_writer()

    def _arm_writer(self) -> None:
        if not self._writer_armed:
            self._loop.add_writer(self.sock.fileno(), self._on_writable)
            self._writer_armed = True

    def _on_writable(self) -> None:
        self._loop.remove_writer(self.sock.fileno())
        self._writer_armed = False
        backlog, self._backlog = self._backlog, {}
        self.driver.paused = False
        for dest, datagrams in backlog.items():
            self._send_to(dest, datagrams)
        self.transmit()

    # ------------------------------------------------------------------ status

    def update_rates(self) -> Rates:
        """Recompute :attr:`rates` over the last :data:`STATUS_INTERVAL` seconds."""
        now, st = self._loop.time(), self.session.stats
        fin, fout, out = self._meters
        fin.observe(now, st.frames_queued)
        fout.observe(now, st.frames_sent)
        out.observe(now, st.bytes_sent)
        self.rates = Rates(fin.rate(now), fout.rate(now), out.rate(now) * 8 / 1e6)
        return self.rates

    def fec_text(self) -> str:
        """The FEC part of the status line, e.g. ``fec auto 4.2 %``.

        The percent is the latest frame's R / k; then ``NACK repair N`` once NACKs brought
        repair symbols, and ``no receiver reports: default redundancy`` while ``auto``
        follows the safe default.
        """
        session = self.session
        mode = session.config.fec
        if mode.kind == "off":
            return "fec off"
        text = f"fec {mode} {100 * session.last_redundancy:.1f} %"
        if session.stats.repair_nack_sent:
            text += f", NACK repair {session.stats.repair_nack_sent}"
        if mode.kind == "auto" and session.policy.no_reports(self._loop.time()):
            text += ", no receiver reports: default redundancy"
        return text

    def status_text(self) -> str:
        """The one-line status: source state, fps in/out, Mbit/s, frames skipped, FEC.

        Reports and NACKs refused (bad tag, replayed, garbage, ...) add ``refused N
        (reason n, ...)``, the three commonest reasons.
        """
        r, st = self.rates, self.session.stats
        errors = sum(self.send_stats.errors.values())
        aud = self.session.audience.summary()
        rtt = aud["rtt_ms_median"]
        return (
            f"{self.source.state} {self.source.width}x{self.source.height} | "
            f"in {r.fps_in:4.1f} fps, out {r.fps_out:4.1f} fps, {r.mbit_out:6.2f} Mbit/s | "
            f"sent {st.frames_sent}, skipped {st.frames_skipped}"
            + (f", send errors {errors}" if errors else "")
            + f" | receivers {aud['receivers']}"
            + (f", worst loss {aud['worst_loss_pct']:.2f} %" if aud["receivers"] else "")
            + (f", RTT {rtt:.2f} ms" if rtt is not None else "")
            + f" | {self.fec_text()}"
            + _refused_text(st.rx_errors)
        )

    def _auth_status(self) -> dict[str, Any] | None:
        """With a key: key id, AEAD, encryption, reports/NACKs refused by reason."""
        sealer = self.session.sealer
        if sealer is None:
            return None
        return {
            "key_id": sealer.key_id,
            "aead": sealer.aead.name.lower(),
            "encrypt": sealer.encrypt,
            "peers": sealer.peers,
            "refused": dict(self.session.stats.rx_errors),
        }

    def status(self) -> dict[str, Any]:
        """Everything the status line says, the audience table and the FEC state, JSON-ready.

        ``rx_errors``: reports and NACKs refused by reason; ``auth`` (``None`` without a
        key): ``key_id``, ``aead``, ``encrypt``, ``peers`` (replay windows kept) and
        ``refused`` (the same reasons: ``bad_tag``, ``replayed``, ``unauthenticated``, ...).

        ``fec``: :meth:`~mcastcam.protocol.sender.SenderSession.status` (mode, redundancy,
        ``no_reports``, repair symbols sent proactively and after NACKs, extra datagrams %,
        NACKs received and refused by reason).
        """
        st = self.session.stats
        cfg = self.session.config
        return {
            "stream_id": f"{cfg.stream_id:08x}",
            "name": cfg.name,
            "source": {
                "state": self.source.state,
                "description": self.source.describe(),
                "width": self.source.width,
                "height": self.source.height,
                "fps": self.source.fps,
            },
            "fps_in": round(self.rates.fps_in, 2),
            "fps_out": round(self.rates.fps_out, 2),
            "mbit_per_s": round(self.rates.mbit_out, 3),
            "frames_sent": st.frames_sent,
            "frames_skipped": st.frames_skipped,
            "datagrams_sent": st.datagrams_sent,
            "heartbeats_sent": st.heartbeats_sent,
            "reports_received": st.reports_received,
            "rx_errors": dict(st.rx_errors),
            "auth": self._auth_status(),
            "send_errors": {str(k): v for k, v in self.send_stats.errors.items()},
            "gso": self.gso.describe(),
            "gso_datagrams": self.send_stats.gso_sent,
            "gso_calls": self.send_stats.gso_calls,
            "audience": self.session.audience.summary(),
            "fec": self.session.status(self._loop.time()),
        }


def _refused_text(errors: dict[str, int]) -> str:
    """`` | refused N (reason n, ...)`` for the status line, or ``""`` when nothing was."""
    total = sum(errors.values())
    if not total:
        return ""
    top = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return f" | refused {total} ({', '.join(f'{k} {v}' for k, v in top)})"


def wall_offset_ns(loop: asyncio.AbstractEventLoop) -> int:
    """Wall clock minus the loop's monotonic clock, ns (to put wall times on the wire)."""
    return time.time_ns() - round(loop.time() * 1e9)
