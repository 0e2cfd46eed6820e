"""The sender's shell: source -> :class:`SenderSession` -> socket, on one asyncio loop.

Drives the pure session the aioquic way: after every input (a captured frame, a timer) it
calls :meth:`transmit`, which sends what pacing allows and re-arms one timer at
``session.get_timer()``. A socket that is full (EAGAIN/ENOBUFS) keeps the rest of the
datagrams and resumes when the socket is writable again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

from mcastcam import net
from mcastcam.looptimer import LoopTimer
from mcastcam.protocol.fragmenter import Datagram
from mcastcam.protocol.sender import ReceiverJoined, ReceiverLeft, SenderSession
from mcastcam.protocol.wire import SourceState
from mcastcam.sender.sources.base import FrameSource

log = logging.getLogger(__name__)

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
    """

    def __init__(
        self,
        session: SenderSession,
        source: FrameSource,
        sock: socket.socket,
        destinations: list[tuple[str, int]],
        *,
        max_frames: int | None = None,
    ) -> None:
        self.session = session
        self.source = source
        self.sock = sock
        self.destinations = destinations
        self.max_frames = max_frames
        self.send_stats = net.SendStats()
        self.rates = Rates()
        self._loop = asyncio.get_running_loop()
        self._timer = LoopTimer(self._loop, self._on_timer)
        self._backlog: dict[tuple[str, int], list[Datagram]] = {}
        self._writer_armed = False
        self._idle = asyncio.Event()
        """Set when no frame is being sent or waiting and the socket has no backlog."""
        self._last_rates = (self._loop.time(), 0, 0, 0)

    # ------------------------------------------------------------------ driving

    async def run(self) -> None:
        """Send until the source ends (and its last frame is out) or ``max_frames`` is reached."""
        log.info("source: %s", self.source.describe())
        self.sync_source()
        self.transmit()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
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
                self.session.set_source_state(SourceState.ENDED)
                self._send_now([self.session.final_heartbeat(self._loop.time())])
        finally:
            self.close()

    def close(self) -> None:
        """Cancel the timer, reader and writer; the caller closes the socket and the source."""
        self._loop.remove_reader(self.sock.fileno())
        self._timer.cancel()
        if self._writer_armed:
            self._loop.remove_writer(self.sock.fileno())
            self._writer_armed = False

    def _on_readable(self) -> None:
        """Receiver reports (and anything else) arriving on the sending socket."""
        for _ in range(64):  # bounded per wake-up: sending must not starve
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable from a unicast peer
                log.debug("sending socket: %s", exc)
                break
            self.session.receive_datagram(data, addr, self._loop.time())
        while (ev := self.session.next_event()) is not None:
            who = ev.listener
            if isinstance(ev, ReceiverJoined):
                log.info(
                    "receiver %r at %s reports (%d now)",
                    who.name,
                    who.host,
                    len(self.session.audience),
                )
            elif isinstance(ev, ReceiverLeft):
                log.info(
                    "receiver %r at %s left (%d now)",
                    who.name,
                    who.host,
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
        if not self._backlog:
            self._send_now(self.session.datagrams_to_send(self._loop.time()))
        self._timer.arm(self.session.get_timer())
        if self.session.busy or self._backlog:
            self._idle.clear()
        else:
            self._idle.set()

    def _send_now(self, datagrams: list[Datagram]) -> None:
        for dest in self.destinations:
            self._send_to(dest, datagrams)

    def _send_to(self, dest: tuple[str, int], datagrams: list[Datagram]) -> None:
        sent = net.send_fragments(self.sock, dest, datagrams, self.send_stats)
        if sent < len(datagrams):  # the socket is full: keep the rest for when it drains
            self._backlog[dest] = datagrams[sent:]
            self._arm_writer()

    def _arm_writer(self) -> None:
        if not self._writer_armed:
            self._loop.add_writer(self.sock.fileno(), self._on_writable)
            self._writer_armed = True

    def _on_writable(self) -> None:
        self._loop.remove_writer(self.sock.fileno())
        self._writer_armed = False
        backlog, self._backlog = self._backlog, {}
        for dest, datagrams in backlog.items():
            self._send_to(dest, datagrams)
        self.transmit()

    def _on_timer(self) -> None:
        self.session.handle_timer(self._loop.time())
        self.transmit()

    # ------------------------------------------------------------------ status

    def update_rates(self) -> Rates:
        """Recompute :attr:`rates` over the time since the last call."""
        now = self._loop.time()
        t0, fin0, fout0, b0 = self._last_rates
        st = self.session.stats
        dt = max(now - t0, 1e-9)
        self.rates = Rates(
            (st.frames_queued - fin0) / dt,
            (st.frames_sent - fout0) / dt,
            (st.bytes_sent - b0) * 8 / dt / 1e6,
        )
        self._last_rates = (now, st.frames_queued, st.frames_sent, st.bytes_sent)
        return self.rates

    def status_text(self) -> str:
        """The one-line status: source state, fps in/out, Mbit/s, frames skipped."""
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
        )

    def status(self) -> dict[str, Any]:
        """Everything the status line says, and the audience table, JSON-ready."""
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
            "send_errors": {str(k): v for k, v in self.send_stats.errors.items()},
            "audience": self.session.audience.summary(),
        }


def wall_offset_ns(loop: asyncio.AbstractEventLoop) -> int:
    """Wall clock minus the loop's monotonic clock, ns (to put wall times on the wire)."""
    return time.time_ns() - round(loop.time() * 1e9)
