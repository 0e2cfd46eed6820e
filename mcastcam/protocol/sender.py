"""The sender's protocol core, protocol version 2 (pure; docs/architecture.md, docs/protocol.md).

Takes captured frames, receiver reports, NACKs and ``now``; gives back the datagrams pacing
allows, heartbeats included, and its next deadline. The shell owns the socket, the clock and
the randomness (stream id, run nonce and first sequence number come in through the config).

Latest frame wins: while a frame is being sent, one newer frame waits; a still newer frame
replaces it and the replaced one is counted as skipped. A frame that has started is always
finished, so receivers never see a frame cut short by the sender.

Loss repair (§5, §7): each frame's k source symbols are followed by R proactive repair
symbols, R from :class:`~mcastcam.protocol.repair.RedundancyPolicy` fed by receiver reports
(loss fraction and burst length; a safe default without reports, flagged in :meth:`status`).
NACKs (kind 17) go to a :class:`~mcastcam.protocol.repair.RepairAggregator`; when its
aggregation window closes the frame gets fresh repair symbols, multicast and paced ahead of
the frame being sent. Frames stay available for repair ``repair_window`` seconds after their
first datagram, at most ``repair_frames`` of them.

Sequence numbers are 64-bit (§8.4): the wire carries the low 32 bits, heartbeats ``seq_hi``;
every datagram gets the next one when it leaves, so they increase in sending order.

With a key (a :class:`~mcastcam.protocol.trust.Sealer`, §8): each frame is sealed once
(frame AEAD, §8.3a: the object fragmented and FEC-protected is ``JPEG ‖ tag``, or
``ciphertext ‖ tag`` with ``--encrypt``), every symbol carries its own AEAD tag
(``(header, payload, tag)`` datagrams), heartbeats an HMAC; reports and NACKs
are verified (tag, then a replay window per receiver) before they touch the audience, the
redundancy policy or the repair aggregator; a verified report with a ``challenge`` gets a
unicast heartbeat echoing it (freshness, §8.6) from :meth:`SenderSession.unicast_to_send`,
at most 2 per receiver and 200 overall per second.
"""

from __future__ import annotations

import collections
import dataclasses
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mcastcam.errors import DecodeError, LocalProtocolError
from mcastcam.protocol.audience import Audience
from mcastcam.protocol.auth import TAG_BYTES
from mcastcam.protocol.codec import Heartbeat, Nack, ReceiverReport, decode, encode
from mcastcam.protocol.config import SenderConfig
from mcastcam.protocol.events import ReceiverJoined, ReceiverLeft, SenderEvent
from mcastcam.protocol.fec import decode_overhead, repair_capacity
from mcastcam.protocol.fragmenter import IPV4_HEADER, UDP_HEADER, SymbolFrame, frame_symbol_size
from mcastcam.protocol.frame import CapturedFrame
from mcastcam.protocol.integrity import crc32c
from mcastcam.protocol.pacing import Pacer
from mcastcam.protocol.repair import NACK_REPAIR_MARGIN, RedundancyPolicy, RepairAggregator
from mcastcam.protocol.reporting import TYPICAL_REPORT_BYTES, report_interval
from mcastcam.protocol.serial import serial_add
from mcastcam.protocol.trust import Sealer
from mcastcam.protocol.wire import SYMBOL_HEADER_SIZE, Aead, FecScheme, SourceState

_EMPTY = memoryview(b"")
_SYMBOL_NONCE = struct.Struct("!IQ").pack  # stream_id ‖ seq64 (§8.3)
_U32 = 0xFFFFFFFF
_OVERHEAD = IPV4_HEADER + UDP_HEADER

__all__ = [
    "ReceiverJoined",
    "ReceiverLeft",
    "SenderConfig",
    "SenderEvent",
    "SenderSession",
    "SenderStats",
]

OutDatagram = tuple[bytes | memoryview, ...]
"""A datagram as buffers to gather: ``(header, payload)``, or with a key
``(header, payload or ciphertext, tag)`` (:func:`mcastcam.net.send_datagrams` takes both)."""

ECHO_PER_RECEIVER_S = 0.5
"""Freshness replies: at least this many seconds apart per receiver (2/s, §8.6)."""
ECHO_PER_S = 200
"""Freshness replies: at most this many in any one-second bucket overall (§8.6)."""
ECHO_PEERS = 1024
"""Receivers whose last freshness reply time is kept (LRU)."""
MIN_BURST = 44 * 1500
"""Bytes (datagrams with their IP/UDP headers) the pacer lets out in one burst at least:
one full UDP GSO batch (44 segments of 1,500 bytes). A frame this small leaves in one
event-loop wake-up (the receiver then wakes once too); larger ones in bursts of 4 ms of their
paced rate or this, whichever is more. A wake-up costs far more CPU than the datagrams it
sends (docs/benchmarks.md, issue #13). Not under a ``max_rate`` cap (one datagram there)."""
_MIN_BURST_CAPPED = 1500
PACER_REFILL = 1.0
"""The pacer wakes when its whole bucket is back (not half of it): each wake-up sends a full
burst, about half as many wake-ups per large frame on both ends (issue #13)."""

_Queued = tuple[SymbolFrame, int, bytes | memoryview]
"""A symbol waiting to leave: its frame, its ESI, its payload (the header is built when it
leaves, with the next sequence number)."""


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
    frames_without_fec: int = 0
    """Frames sent with ``fec_scheme`` 0 although FEC is on (above 8 MiB)."""
    source_symbols_sent: int = 0
    repair_proactive_sent: int = 0
    """Repair symbols planned with their frame (R per frame)."""
    repair_nack_sent: int = 0
    """Repair symbols sent because receivers NACKed."""
    reports_received: int = 0
    nacks_received: int = 0
    """NACK datagrams that decoded (taken or refused)."""
    nacks_refused: dict[str, int] = dataclasses.field(default_factory=dict)
    """NACK datagrams refused by the session before aggregation, by reason."""
    rx_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    """Datagrams received that were neither reports nor NACKs about this run, by reason."""

    @property
    def extra_pct(self) -> float:
        """Repair symbols (proactive and after NACKs) per source symbol sent, percent."""
        repair = self.repair_proactive_sent + self.repair_nack_sent
        return 100.0 * repair / self.source_symbols_sent if self.source_symbols_sent else 0.0


def _count(table: dict[str, int], reason: str) -> None:
    table[reason] = table.get(reason, 0) + 1


class SenderSession:
    """Sans-IO sender: ``queue_frame``, ``receive_datagram``, ``datagrams_to_send``, timers.

    Args:
        config: see :class:`~mcastcam.protocol.config.SenderConfig` (stream id, run nonce,
            symbol size, ``--fec``, NACK parameters).
        now: monotonic seconds.
        seq: the first 64-bit sequence number (the shell draws a random u32; ``seq_hi`` 0).
        frame_id: the first frame id (u32).
        sealer: the run's keys (``--key-file``), built for this config's stream id and run
            nonce; ``None``: nothing is tagged.
    """

    def __init__(
        self,
        config: SenderConfig,
        now: float,
        seq: int = 0,
        frame_id: int = 0,
        sealer: Sealer | None = None,
    ) -> None:
        if sealer is not None and (sealer.keys.stream_id, sealer.keys.run_nonce) != (
            config.stream_id,
            config.run_nonce,
        ):
            raise ValueError("the sealer's run is not this session's stream id and run nonce")
        self.config = config
        self.sealer = sealer
        self._unicast: list[tuple[bytes, tuple[str, int]]] = []
        self._echoed: OrderedDict[tuple[int, str], float] = OrderedDict()
        self._echo_bucket = (0, 0)  # (second, replies in it)
        self.stats = SenderStats()
        self.source_state = SourceState.LIVE
        self.audience = Audience(config.stream_id)
        """Receivers known to be listening (from their reports); its size is in heartbeats."""
        self.policy = RedundancyPolicy(
            config.fec, nack_repair=config.fec.kind != "off" and config.nack_rate > 0
        )
        """Proactive redundancy R per frame, from receiver reports."""
        self.aggregator = RepairAggregator(
            now,
            repair_window=config.repair_window,
            max_frames=config.repair_frames,
            receiver_rate=config.nack_rate if config.nack_rate > 0 else 1.0,
        )
        """NACKs -> repair orders, within budgets (its ``counters`` say what it refused)."""
        self._events: collections.deque[SenderEvent] = collections.deque()
        self._rate_mark = (now, 0)  # for the stream's bandwidth: time, bytes_sent
        self.stream_bytes_per_s = 0.0
        self._started = now
        self._seq64 = seq
        self._frame_id = frame_id
        self._current: collections.deque[_Queued] = collections.deque()
        # With a key: (header, tag) of every entry of _current, sealed in one run for
        # consecutive seq64 from _presealed_seq (see _preseal).
        self._presealed: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._presealed_seq = -1
        self._repairs: collections.deque[_Queued] = collections.deque()
        self._held: OrderedDict[int, tuple[float, SymbolFrame]] = OrderedDict()
        self._waiting: CapturedFrame | None = None
        self._pacer = Pacer(min_burst=_MIN_BURST_CAPPED, refill=PACER_REFILL)
        self._next_heartbeat = now if config.heartbeat_interval > 0 else None
        self.last_redundancy = 0.0
        """R / k of the latest frame (0 … 1)."""

    @property
    def nacks_accepted(self) -> bool:
        """True when NACKs are answered (FEC on and a NACK rate above 0)."""
        return self.config.fec.kind != "off" and self.config.nack_rate > 0

    @property
    def seq64(self) -> int:
        """The 64-bit sequence number the next datagram gets."""
        return self._seq64

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
        """A datagram arrived on the sending socket: a report, a NACK, or garbage (counted).

        Reports feed the audience and the redundancy policy; NACKs the repair aggregator.
        Anything else is counted in ``stats.rx_errors`` by reason (the codec's, or
        ``not_for_sender``, ``other_stream``, ``other_run``).
        """
        errors = self.stats.rx_errors
        try:
            if self.sealer is not None:  # tag and replay window first (§8.5)
                data = self.sealer.open_from_receiver(data, addr)
            msg = decode(data)
        except DecodeError as exc:
            _count(errors, exc.reason)
            return
        if isinstance(msg, Nack):
            self._receive_nack(msg, addr, now)
            return
        if not isinstance(msg, ReceiverReport):
            _count(errors, "not_for_sender")
            return
        if msg.stream_id == self.config.stream_id and msg.run_nonce != self.config.run_nonce:
            _count(errors, "other_run")
            return
        now_ns = round(now * 1e9) + self.config.wall_offset_ns
        known = len(self.audience)
        entry = self.audience.receive_report(msg, addr, now, now_ns)
        if entry is None:
            _count(errors, "other_stream")
            return
        self.stats.reports_received += 1
        if not msg.challenge:  # a freshness challenge carries no loss measurement
            burst = msg.burst_milli / 1000 if msg.burst_milli else 1.0
            self.policy.report((addr[0], msg.receiver_id), msg.loss_ppm / 1e6, burst, now)
        if entry.reports == 1 or len(self.audience) > known:
            self._events.append(ReceiverJoined(entry))
        if msg.challenge and self.sealer is not None:
            self._echo(msg.receiver_id, msg.challenge, addr, now)

    def _echo(self, receiver_id: int, challenge: int, addr: tuple[str, int], now: float) -> None:
        """Queue a unicast heartbeat echoing a verified report's challenge, within budgets."""
        peer = (receiver_id, addr[0])
        last = self._echoed.get(peer)
        if last is not None and now - last < ECHO_PER_RECEIVER_S:
            _count(self.stats.rx_errors, "echo_rate_limited")
            return
        second = int(now)
        bucket, used = self._echo_bucket
        used = used if bucket == second else 0
        if used >= ECHO_PER_S:
            _count(self.stats.rx_errors, "echo_rate_limited")
            return
        self._echo_bucket = (second, used + 1)
        self._echoed[peer] = now
        self._echoed.move_to_end(peer)
        while len(self._echoed) > ECHO_PEERS:
            self._echoed.popitem(last=False)
        self._unicast.append((self._heartbeat(now, receiver_id, challenge), addr))

    def unicast_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        """Freshness replies to send now, each with its ``(host, port)`` (then forgotten)."""
        out, self._unicast = self._unicast, []
        return out

    def _receive_nack(self, msg: Nack, addr: tuple[str, int], now: float) -> None:
        self.stats.nacks_received += 1
        refused = self.stats.nacks_refused
        if msg.stream_id != self.config.stream_id:
            _count(refused, "other_stream")
        elif msg.run_nonce != self.config.run_nonce:
            _count(refused, "other_run")
        elif not self.nacks_accepted:
            _count(refused, "nacks_off")
        else:
            self.aggregator.receive_nack(msg.receiver_id, addr, msg.entries, now)

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

    def datagrams_to_send(self, now: float) -> list[OutDatagram]:
        """Every datagram that may leave at ``now``: a due heartbeat, then paced symbols.

        Symbols: NACK repair first (it is late already), then the current frame's source
        symbols and its planned repair symbols, then the next frame's.
        """
        out: list[OutDatagram] = []
        sealer = self.sealer
        if sealer is not None:
            encrypt, stream_id = sealer.symbol_tagger
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._measure(now)
            for gone in self.audience.expire(now, self.report_interval()):
                self.policy.forget((gone.addr[0], gone.receiver_id))
                self._events.append(ReceiverLeft(gone))
            out.append((self._heartbeat(now), _EMPTY))
            self._next_heartbeat = max(self._next_heartbeat + self.config.heartbeat_interval, now)
        self.handle_timer(now)
        pacer, stats = self._pacer, self.stats
        # The pacer's tokens are read once and taken once per run of datagrams (the same as
        # can_send/on_sent per datagram at one ``now``); a new frame may change its rate.
        tokens: float | None = None
        spent = 0
        seq64 = first = self._seq64
        nbytes = nack_sent = source_sent = 0
        while True:
            if self._repairs:
                queue, nack = self._repairs, True
            else:
                if not self._current:
                    if self._waiting is None:
                        break
                    if spent:
                        pacer.on_sent(spent, now)
                    tokens, spent = None, 0
                    if not self._start_next(now):
                        break
                queue, nack = self._current, False
            if tokens is None:
                tokens = pacer.tokens(now)
            if tokens <= spent:
                break
            if sealer is None:
                frame, esi, payload = queue.popleft()
                header = frame.header(esi, seq64 & _U32)
                out.append((header, payload))
                size = len(header) + len(payload)
            else:
                if nack:  # Sealer.seal_symbol, inlined
                    frame, esi, payload = queue.popleft()
                    header = frame.header(esi, seq64 & _U32)
                    tag = encrypt(_SYMBOL_NONCE(stream_id, seq64), b"", header + payload)
                else:
                    presealed = self._presealed
                    if self._presealed_seq != seq64 or len(presealed) != len(queue):
                        self._preseal(seq64)
                    frame, esi, payload = queue.popleft()
                    header, tag = presealed.popleft()
                    self._presealed_seq = seq64 + 1
                out.append((header, payload, tag))
                size = len(header) + len(payload) + TAG_BYTES
            seq64 += 1
            spent += size + _OVERHEAD
            nbytes += size
            if nack:
                nack_sent += 1
            else:
                if esi < frame.k:
                    source_sent += 1
                if not self._current:
                    stats.frames_sent += 1
        if spent:
            pacer.on_sent(spent, now)
        self._seq64 = seq64
        stats.datagrams_sent += seq64 - first
        stats.bytes_sent += nbytes
        stats.repair_nack_sent += nack_sent
        stats.source_symbols_sent += source_sent
        stats.repair_proactive_sent += seq64 - first - nack_sent - source_sent
        return out

    def _preseal(self, seq64: int) -> None:
        """Seal every symbol queued for the current frame in one run, ``seq64`` onwards.

        Issue #12: the same AEAD calls as one per datagram (same headers, nonces and tags,
        :meth:`Sealer.seal_symbol`), but in one tight loop per frame instead of one per pacer
        burst: after each pacer sleep the first calls run cold (measured: 164 tags of 1.4 kB
        cost 0.19 ms in one run, 0.34 ms in four bursts 8 ms apart). A heartbeat or a NACK
        repair datagram sent in between takes a sequence number the plan assumed, so the
        caller calls this again for what is left (``_presealed_seq`` ≠ the next seq64).
        """
        sealer = self.sealer
        assert sealer is not None
        encrypt, stream_id = sealer.symbol_tagger
        presealed = self._presealed
        presealed.clear()
        seq = seq64
        for frame, esi, payload in self._current:
            header = frame.header(esi, seq & _U32)
            tag = encrypt(_SYMBOL_NONCE(stream_id, seq), b"", header + payload)
            presealed.append((header, tag))
            seq += 1
        self._presealed_seq = seq64

    def final_heartbeat(self, now: float) -> OutDatagram:
        """A heartbeat right now, outside the schedule (e.g. to say the source ended)."""
        return (self._heartbeat(now), _EMPTY)

    def get_timer(self) -> float | None:
        """The next time (monotonic seconds) :meth:`datagrams_to_send` has something."""
        deadlines = []
        if self._next_heartbeat is not None:
            deadlines.append(self._next_heartbeat)
        if self._current or self._repairs or self._waiting is not None:
            deadlines.append(self._pacer.next_send_time() or self._started)
        repair = self.aggregator.get_timer()
        if repair is not None:
            deadlines.append(repair)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Close the NACK aggregation windows due by ``now``: queue their fresh repair symbols.

        Orders for frames no longer held are counted in ``nacks_refused`` as ``expired``.
        """
        self.aggregator.handle_timer(now)
        orders = self.aggregator.repairs_to_send()
        if not orders:
            return
        self._expire_held(now)
        for order in orders:
            held = self._held.get(order.frame_id)
            if held is None:
                _count(self.stats.nacks_refused, "expired")
                continue
            frame = held[1]
            try:
                payloads = frame.repair_payloads(order.start_esi, order.count)
            except LocalProtocolError:
                _count(self.stats.nacks_refused, "repair_exhausted")
                continue
            self._repairs.extend((frame, order.start_esi + j, p) for j, p in enumerate(payloads))

    @property
    def busy(self) -> bool:
        """True while a frame is being sent or waiting, or repair symbols wait."""
        return bool(self._current) or bool(self._repairs) or self._waiting is not None

    def status(self, now: float) -> dict[str, Any]:
        """FEC and repair state, JSON-ready: mode, redundancy, estimate, counters.

        ``no_reports`` is true while no receiver reported recently: R then follows the
        policy's safe default (``default_loss``).
        """
        st = self.stats
        counters = self.aggregator.counters
        return {
            **self.policy.status(now),
            "redundancy_pct": round(100 * self.last_redundancy, 2),
            "extra_datagrams_pct": round(st.extra_pct, 2),
            "source_symbols_sent": st.source_symbols_sent,
            "repair_proactive_sent": st.repair_proactive_sent,
            "repair_nack_sent": st.repair_nack_sent,
            "frames_without_fec": st.frames_without_fec,
            "nacks_received": st.nacks_received,
            "nacks_refused": {
                **st.nacks_refused,
                "nack_rate_limited": counters["nack_rate_limited"],
                "bad_nack": counters["bad_nack"],
            },
            "nack_entries_unknown_frame": counters["nack_unknown_frame"],
            "repair_budget_exhausted": counters["repair_budget_exhausted"],
            "frames_held_for_repair": len(self._held),
        }

    # ------------------------------------------------------------------ internals

    def _measure(self, now: float) -> None:
        t0, b0 = self._rate_mark
        if now - t0 >= 0.5:
            self.stream_bytes_per_s = (self.stats.bytes_sent - b0) / (now - t0)
            self._rate_mark = (now, self.stats.bytes_sent)

    def _expire_held(self, now: float) -> None:
        held, horizon = self._held, now - self.config.repair_window
        while held and (
            len(held) > self.config.repair_frames or next(iter(held.values()))[0] <= horizon
        ):
            held.popitem(last=False)

    def _start_next(self, now: float) -> bool:
        frame, self._waiting = self._waiting, None
        if frame is None:
            return False
        cfg = self.config
        fec = cfg.fec.kind != "off"
        sealer = self.sealer
        obj: bytes | memoryview = frame.jpeg
        crc: int | None = None
        if sealer is not None:  # the frame AEAD, once per frame (§8.3a)
            crc = crc32c(frame.jpeg)
            obj = sealer.seal_frame(
                frame.jpeg,
                frame_id=self._frame_id,
                capture_ts_ns=frame.capture_ts_ns,
                frame_crc32c=crc,
            )
        t = frame_symbol_size(len(obj), cfg.symbol_size)
        k = -(-len(obj) // t)
        try:
            sym = SymbolFrame(
                obj,
                stream_id=cfg.stream_id,
                run_nonce=cfg.run_nonce,
                frame_id=self._frame_id,
                capture_ts_ns=frame.capture_ts_ns,
                symbol_size=t,
                repair=self.policy.repair_count(k, now) if fec and k else 0,
                fec=fec,
                scheme=cfg.fec.scheme,
                flags=sealer.flags if sealer is not None else 0,
                key_id=sealer.key_id if sealer is not None else 0,
                frame_crc32c=crc,
            )
        except LocalProtocolError:
            self.stats.frames_too_large += 1
            if sealer is not None:  # its frame id is spent: the nonce must never repeat
                self._frame_id = serial_add(self._frame_id, 1)
            return False
        self._frame_id = serial_add(self._frame_id, 1)
        queue = self._current
        queue.extend((sym, i, p) for i, p in enumerate(sym.source_payloads()))
        r = sym.repair_planned
        if r:
            payloads = sym.repair_payloads(sym.k, r)
            queue.extend((sym, sym.k + j, p) for j, p in enumerate(payloads))
        self.last_redundancy = r / sym.k
        if sym.fec_scheme != FecScheme.NONE:
            capacity = repair_capacity(sym.fec_scheme, sym.k)
            margin = NACK_REPAIR_MARGIN - decode_overhead(sym.fec_scheme)
            self.aggregator.frame_sent(sym.frame_id, sym.k, r, now, capacity, margin)
            self._held[sym.frame_id] = (now, sym)
            self._held.move_to_end(sym.frame_id)
            self._expire_held(now)
        elif fec:
            self.stats.frames_without_fec += 1
        per_datagram = SYMBOL_HEADER_SIZE + _OVERHEAD + (TAG_BYTES if self.sealer else 0)
        wire_bytes = sym.frame_len + r * t + (sym.k + r) * per_datagram
        rate = self._frame_rate(wire_bytes)
        cap = cfg.max_rate
        # The one-GSO-batch floor only when the spread sets the rate: a --max-rate cap keeps
        # bursts of 4 ms of its own rate (one datagram at least).
        uncapped = cap is None or rate is None or rate < cap / 8
        self._pacer.min_burst = MIN_BURST if uncapped else _MIN_BURST_CAPPED
        self._pacer.set_rate(rate, now)
        return True

    def _frame_rate(self, wire_bytes: int) -> float | None:
        """Bytes/s for this frame: spread over part of the frame interval, capped by max_rate."""
        cfg = self.config
        rates = []
        if cfg.spread > 0 and cfg.fps > 0:
            rates.append(wire_bytes * cfg.fps / cfg.spread)
        if cfg.max_rate is not None:
            rates.append(cfg.max_rate / 8)
        return min(rates) if rates else None

    def _heartbeat(self, now: float, echo_receiver_id: int = 0, echo_challenge: int = 0) -> bytes:
        cfg = self.config
        sealer = self.sealer
        fec_on = cfg.fec.kind != "off"
        seq64 = self._seq64
        msg = Heartbeat(
            stream_id=cfg.stream_id,
            seq=seq64 & _U32,
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
            run_nonce=cfg.run_nonce,
            seq_hi=(seq64 >> 32) & _U32,
            aead=int(sealer.aead if sealer is not None else Aead.NONE),
            fec_scheme=cfg.fec.scheme if fec_on else int(FecScheme.NONE),
            repair_ppm=round(self.last_redundancy * 1_000_000),
            nack_delay_ms=max(1, round(cfg.nack_delay * 1000)),
            nack_rate_milli=round(cfg.nack_rate * 1000) if self.nacks_accepted else 0,
            repair_window_ms=round(cfg.repair_window * 1000),
            echo_receiver_id=echo_receiver_id,
            echo_challenge=echo_challenge,
        )
        self._seq64 += 1
        self.stats.heartbeats_sent += 1
        data = encode(msg)
        return data if sealer is None else sealer.seal_control(data)
