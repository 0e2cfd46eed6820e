"""The sender's protocol core (pure; docs/architecture.md).

Takes captured frames and ``now``; gives back the datagrams pacing allows, heartbeats
included, and its next deadline. The shell owns the socket and the clock.

Latest frame wins: while a frame is being sent, one newer frame waits; a still newer frame
replaces it and the replaced one is counted as skipped. A frame that has started is always
finished, so receivers never see a frame cut short by the sender.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass

from mcastcam.errors import DecodeError, LocalProtocolError
from mcastcam.protocol.audience import Audience
from mcastcam.protocol.codec import Heartbeat, ReceiverReport, decode, encode
from mcastcam.protocol.config import SenderConfig
from mcastcam.protocol.events import ReceiverJoined, ReceiverLeft, SenderEvent
from mcastcam.protocol.fragmenter import IPV4_HEADER, UDP_HEADER, Datagram, fragment_frame
from mcastcam.protocol.frame import CapturedFrame
from mcastcam.protocol.pacing import Pacer
from mcastcam.protocol.reporting import TYPICAL_REPORT_BYTES, report_interval
from mcastcam.protocol.serial import serial_add
from mcastcam.protocol.wire import SourceState

_EMPTY = memoryview(b"")

__all__ = [
    "ReceiverJoined",
    "ReceiverLeft",
    "SenderConfig",
    "SenderEvent",
    "SenderSession",
    "SenderStats",
]


@dataclass(slots=True)
class SenderStats:
    """Counters since the session started."""

    frames_queued: int = 0
    frames_sent: int = 0
    frames_skipped: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    heartbeats_sent: int = 0
    frames_too_large: int = 0
    reports_received: int = 0
    rx_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    """Datagrams received that were not reports about this stream, by reason."""




class SenderSession:
    """Sans-IO sender: ``queue_frame``, ``datagrams_to_send``, ``get_timer``/``handle_timer``."""

    def __init__(self, config: SenderConfig, now: float, seq: int = 0, frame_id: int = 0) -> None:
        self.config = config
        self.stats = SenderStats()
        self.source_state = SourceState.LIVE
        self.audience = Audience(config.stream_id)
        """Receivers known to be listening (from their reports); its size is in heartbeats."""
        self._events: collections.deque[SenderEvent] = collections.deque()
        self._rate_mark = (now, 0)  # for the stream's bandwidth: time, bytes_sent
        self.stream_bytes_per_s = 0.0
        self._started = now
        self._seq = seq
        self._frame_id = frame_id
        self._current: collections.deque[Datagram] = collections.deque()
        self._waiting: CapturedFrame | None = None
        self._pacer = Pacer()
        self._next_heartbeat = now if config.heartbeat_interval > 0 else None

    # ------------------------------------------------------------------ inputs

    def queue_frame(self, frame: CapturedFrame, now: float) -> None:
        """Offer a captured frame; it is sent when the previous one is done (latest wins)."""
        self.stats.frames_queued += 1
        if self._waiting is not None:
            self.stats.frames_skipped += 1
        self._waiting = frame
        if not self._current:
            self._start_next(now)

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, addr: tuple[str, int], now: float
    ) -> None:
        """A datagram arrived on the sending socket: a receiver report, or garbage (counted)."""
        errors = self.stats.rx_errors
        try:
            msg = decode(data)
        except DecodeError as exc:
            errors[exc.reason] = errors.get(exc.reason, 0) + 1
            return
        if not isinstance(msg, ReceiverReport):
            errors["not_a_report"] = errors.get("not_a_report", 0) + 1
            return
        now_ns = round(now * 1e9) + self.config.wall_offset_ns
        known = len(self.audience)
        entry = self.audience.receive_report(msg, addr, now, now_ns)
        if entry is None:
            errors["other_stream"] = errors.get("other_stream", 0) + 1
            return
        self.stats.reports_received += 1
        if entry.reports == 1 or len(self.audience) > known:
            self._events.append(ReceiverJoined(entry))

    def next_event(self) -> SenderEvent | None:
        """The oldest queued event (receivers joining or leaving), or ``None``."""
        return self._events.popleft() if self._events else None

    def report_interval(self) -> float:
        """The longest interval a receiver may now wait between reports, seconds.

        The receivers' own rule (:func:`mcastcam.protocol.reporting.report_interval`) with
        this audience and bandwidth, times 1.5 for their randomisation.
        """
        base = self.config.heartbeat_interval or 1.0
        mean = report_interval(
            len(self.audience), self.stream_bytes_per_s, base, TYPICAL_REPORT_BYTES
        )
        return 1.5 * mean

    def set_source_state(self, state: SourceState) -> None:
        """Tell receivers (through heartbeats) what the source is doing."""
        self.source_state = state

    def update_stream(self, *, width: int, height: int, fps: float) -> None:
        """Frame size (pixels) and nominal rate (frames/s) once the source knows them."""
        self.config = dataclasses.replace(self.config, width=width, height=height, fps=fps)

    # ------------------------------------------------------------------ outputs

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Every datagram that may leave at ``now``: due heartbeats, then paced fragments."""
        out: list[Datagram] = []
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._measure(now)
            for gone in self.audience.expire(now, self.report_interval()):
                self._events.append(ReceiverLeft(gone))
            out.append((self._heartbeat(now), _EMPTY))
            self._next_heartbeat = max(self._next_heartbeat + self.config.heartbeat_interval, now)
        pacer = self._pacer
        overhead = IPV4_HEADER + UDP_HEADER
        while True:
            if not self._current and (self._waiting is None or not self._start_next(now)):
                break
            if not pacer.can_send(now):
                break
            header, payload = self._current.popleft()
            out.append((header, payload))
            size = len(header) + len(payload)
            pacer.on_sent(size + overhead, now)
            self.stats.datagrams_sent += 1
            self.stats.bytes_sent += size
            if not self._current:
                self.stats.frames_sent += 1
        return out

    def final_heartbeat(self, now: float) -> Datagram:
        """A heartbeat right now, outside the schedule (e.g. to say the source ended)."""
        return (self._heartbeat(now), _EMPTY)

    def get_timer(self) -> float | None:
        """The next time (monotonic seconds) :meth:`datagrams_to_send` has something."""
        deadlines = []
        if self._next_heartbeat is not None:
            deadlines.append(self._next_heartbeat)
        if self._current or self._waiting is not None:
            deadlines.append(self._pacer.next_send_time() or self._started)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Nothing to do but let :meth:`datagrams_to_send` run: kept for the driver's shape."""

    @property
    def busy(self) -> bool:
        """True while a frame is being sent or waiting."""
        return bool(self._current) or self._waiting is not None

    # ------------------------------------------------------------------ internals

    def _measure(self, now: float) -> None:
        t0, b0 = self._rate_mark
        if now - t0 >= 0.5:
            self.stream_bytes_per_s = (self.stats.bytes_sent - b0) / (now - t0)
            self._rate_mark = (now, self.stats.bytes_sent)

    def _start_next(self, now: float) -> bool:
        frame, self._waiting = self._waiting, None
        if frame is None:
            return False
        cfg = self.config
        try:
            datagrams = fragment_frame(
                frame.jpeg,
                stream_id=cfg.stream_id,
                first_seq=self._seq,
                frame_id=self._frame_id,
                capture_ts_ns=frame.capture_ts_ns,
                max_payload=cfg.max_payload,
            )
        except LocalProtocolError:
            self.stats.frames_too_large += 1
            return False
        self._seq = serial_add(self._seq, len(datagrams))
        self._frame_id = serial_add(self._frame_id, 1)
        self._current.extend(datagrams)
        self._pacer.set_rate(self._frame_rate(frame, len(datagrams)), now)
        return True

    def _frame_rate(self, frame: CapturedFrame, count: int) -> float | None:
        """Bytes/s for this frame: spread over part of the frame interval, capped by max_rate."""
        cfg = self.config
        wire_bytes = len(frame.jpeg) + count * (40 + IPV4_HEADER + UDP_HEADER)
        rates = []
        if cfg.spread > 0 and cfg.fps > 0:
            rates.append(wire_bytes * cfg.fps / cfg.spread)
        if cfg.max_rate is not None:
            rates.append(cfg.max_rate / 8)
        return min(rates) if rates else None

    def _heartbeat(self, now: float) -> bytes:
        cfg = self.config
        msg = Heartbeat(
            stream_id=cfg.stream_id,
            seq=self._seq,
            name=cfg.name,
            host=cfg.host,
            source_state=int(self.source_state),
            width=cfg.width,
            height=cfg.height,
            fps_milli=round(cfg.fps * 1000),
            interval_ms=round(cfg.heartbeat_interval * 1000),
            frames_sent=self.stats.frames_sent,
            datagrams_sent=self.stats.datagrams_sent,
            uptime_ns=round((now - self._started) * 1e9),
            send_ts_ns=round(now * 1e9) + cfg.wall_offset_ns,
            audience=len(self.audience),
        )
        self._seq = serial_add(self._seq, 1)
        self.stats.heartbeats_sent += 1
        return encode(msg)
