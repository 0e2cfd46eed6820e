"""The receiver's protocol core (pure): reassembly, stream choice, liveness.

Wraps :class:`~mcastcam.protocol.reassembly.Reassembler` and
:class:`~mcastcam.protocol.liveness.Liveness` (shared: the one place where each stream's
last-heard time and state live), and decides which stream is *followed*
(re-served): the one picked by ``--stream NAME|ID``, else the first one heard.

No hijack (protocol §6, issue #12 §3; with or without a key). The followed stream A is
replaced by another wanted stream B only when B is alive and has completed a frame, and
either A went stale (B then has A's name: a sender restart, new stream id) or lost, or A never
completed a frame itself; so a stream known only from heartbeats never evicts one that
delivers frames. A lost A with no such B is replaced by any live wanted stream. ``--stream
ID`` pins: nothing else is ever followed. The stream table (:attr:`ReceiverSession.info`) holds
only the streams the reassembler tracks (bounded by ``max_streams``), and forgets those it
evicts.

Loss repair (protocol v2 §7): frames of the followed stream that are still incomplete after
their last planned symbol (:class:`~mcastcam.protocol.events.FrameIncomplete`) are handed
to a :class:`~mcastcam.protocol.repair.NackScheduler`, configured from the stream's
heartbeats (``nack_delay_ms``, ``nack_rate_milli``, ``audience``); its NACKs go out with the
receiver reports, unicast to the sender (:meth:`ReceiverSession.datagrams_to_send`).
Random jitter comes from the shell (``rng``): this module draws no random numbers.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcastcam.protocol.codec import Heartbeat
from mcastcam.protocol.events import (
    ControlReceived,
    Event,
    Followed,
    FrameCompleted,
    FrameDropped,
    FrameIncomplete,
    FrameReady,
    HeartbeatReceived,
    LivenessChanged,
    SessionEvent,
    StreamForgotten,
    StreamStarted,
)
from mcastcam.protocol.liveness import Liveness, LiveState
from mcastcam.protocol.reassembly import Reassembler, ReassemblyLimits
from mcastcam.protocol.repair import NackScheduler
from mcastcam.protocol.reports import Reporter
from mcastcam.protocol.wire import SourceState

Address = tuple[str, int]

MAX_TRACKED = 64
"""Incomplete frames of the followed stream watched for NACKs at once (the oldest go first)."""


@dataclass(slots=True)
class StreamInfo:
    """What we know of one stream from its heartbeats (zeros until one arrives).

    When it was last heard, and whether it is alive, is the session's
    :class:`~mcastcam.protocol.liveness.Liveness`'s to say.
    """

    stream_id: int
    addr: Address
    name: str = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0
    source_state: str = "unknown"
    heartbeat_interval: float = 0.0
    frames_sent: int = 0
    last_heartbeat: Heartbeat | None = None
    frames_completed: int = 0
    """Frames of this stream completed here (a stream with none is known from heartbeats or
    incomplete frames only, and never evicts one that delivers frames)."""


def parse_selector(text: str | None) -> tuple[int | None, str | None]:
    """``--stream`` value -> ``(id, None)`` for ``0x1234abcd`` or decimal, else ``(None, name)``."""
    if text is None:
        return None, None
    raw = text.strip()
    try:
        if raw.lower().startswith("0x"):
            value = int(raw, 16)
        elif raw.isdigit():
            value = int(raw)
        else:
            return None, raw
    except ValueError:
        return None, raw
    if 0 <= value < 2**32:
        return value, None
    return None, raw


class ReceiverSession:
    """Sans-IO receiver: ``receive_datagram``, ``next_event``, ``get_timer``/``handle_timer``.

    Args:
        limits: reassembly bounds.
        stream: ``--stream`` selector (name or id), or ``None`` for the first heard.
        lost_after: heartbeat intervals of silence before a stream is lost.
        liveness_timeout: seconds of silence before a stream is lost (overrides ``lost_after``).
        reporter: sends receiver reports to the followed stream's sender (``None``: no
            reports and no NACKs); what to send comes out of :meth:`datagrams_to_send`.
        nack: send NACKs for frames FEC could not finish (when the sender accepts them:
            its heartbeat's ``nack_rate_milli`` > 0; needs a ``reporter``).
        rng: uniform floats in [0, 1) for the NACK jitter (the shell passes
            ``random.random``); default the reporter's, else none (jitter 0: tests).
        repair_round: seconds a NACK waits for its repair before it is repeated.
    """

    def __init__(
        self,
        limits: ReassemblyLimits | None = None,
        *,
        stream: str | None = None,
        lost_after: float = 3.0,
        liveness_timeout: float | None = None,
        reporter: Reporter | None = None,
        nack: bool = True,
        rng: Callable[[], float] | None = None,
        repair_round: float = 0.02,
    ) -> None:
        self.liveness = Liveness(lost_after, liveness_timeout)
        self.reassembler = Reassembler(limits, self.liveness)
        self.reporter = reporter
        self.nack_enabled = nack and reporter is not None
        self.rng = rng if rng is not None else (reporter.rng if reporter is not None else None)
        self.repair_round = repair_round
        self.nacker: NackScheduler | None = None
        """The followed stream's NACK scheduler, once its heartbeat says NACKs are welcome."""
        self._tracked: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.nack_totals = {"nacks": 0, "entries": 0, "rate_limited": 0, "exhausted": 0}
        """NACK counters of earlier followed streams' schedulers plus the current one's."""
        self._outgoing: list[tuple[bytes, Address]] = []
        self.want_id, self.want_name = parse_selector(stream)
        self.followed: int | None = None
        self.info: dict[int, StreamInfo] = {}
        self._events: collections.deque[SessionEvent] = collections.deque()

    # ------------------------------------------------------------------ inputs

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, addr: Address, now: float
    ) -> None:
        """One UDP payload from ``addr`` at ``now`` (monotonic seconds)."""
        r = self.reassembler
        r.receive_datagram(data, addr, now)
        started = None
        while (ev := r.next_event()) is not None:
            if isinstance(ev, StreamStarted):
                self.info[ev.stream_id] = StreamInfo(ev.stream_id, ev.addr)
                started = ev.stream_id
            elif isinstance(ev, StreamForgotten):  # evicted for a newcomer: never followed
                self._forget(ev.stream_id)
                if started == ev.stream_id:
                    started = None
            else:
                self._on_reassembly(ev, now)
        if started is not None:  # after its heartbeat, if that is what started it
            self._consider(started)
        self._announce_revived()  # heard by the reassembler only (a frame's first fragment)

    def handle_timer(self, now: float) -> None:
        """Frame timeouts and liveness changes due at ``now``."""
        r = self.reassembler
        r.handle_timer(now)
        while (ev := r.next_event()) is not None:
            if isinstance(ev, FrameDropped):  # counted in the stream stats already
                self._done(ev.stream_id, ev.frame_id, ev.count)
        self._announce_revived()
        for sid, state in self.liveness.check(now):
            info = self.info.get(sid)
            self._events.append(
                LivenessChanged(sid, info.name if info else "", state, sid == self.followed)
            )
            if state is LiveState.LOST and sid == self.followed and self.reporter is not None:
                self.reporter.forget()
            if sid == self.followed and self.want_id is None:
                self._follow_another(now)
        self._nack(now)
        self._report(now)

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> SessionEvent | None:
        """The oldest queued event, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """Earliest deadline: frame timeout, liveness change or report (monotonic seconds)."""
        times = [self.reassembler.get_timer(), self.liveness.next_deadline()]
        if self.reporter is not None:
            times.append(self.reporter.get_timer())
        if self.nacker is not None:
            times.append(self.nacker.get_timer())
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Receiver reports and NACKs to send at ``now``, each with its ``(host, port)``."""
        out, self._outgoing = self._outgoing, []
        return out

    def _report(self, now: float) -> None:
        if self.reporter is None or self.followed is None:
            return
        stats = self.reassembler.stream_stats(self.followed)
        if stats is None:
            return
        got = self.reporter.report(
            now,
            frames_completed=stats.frames_completed,
            frames_dropped=sum(stats.frames_dropped.values()),
            datagrams=stats.datagrams,
            lost=stats.lost,
            stream_bytes=stats.bytes,
            loss_bursts=stats.loss_bursts,
            repaired_fec=stats.repaired_fec,
            repaired_nack=stats.repaired_nack,
            unrepairable=stats.unrepairable,
        )
        if got is not None:
            self._outgoing.append(got)

    # ------------------------------------------------------------------ NACKs

    def _on_reassembly(self, ev: Event, now: float) -> None:
        if isinstance(ev, FrameCompleted):
            frame = ev.frame
            self._heard(frame.stream_id, now)
            self._frame_completed(frame.stream_id, now)
            if frame.stream_id == self.followed:
                self._done(frame.stream_id, frame.frame_id, 1)
                self._events.append(FrameReady(frame))
        elif isinstance(ev, ControlReceived):
            if isinstance(ev.message, Heartbeat):
                self._on_heartbeat(ev.message, ev.addr, now)
        elif isinstance(ev, FrameDropped):
            self._heard(ev.stream_id, now)
            self._done(ev.stream_id, ev.frame_id, ev.count)
        elif isinstance(ev, FrameIncomplete):
            nacker = self.nacker
            if nacker is not None and ev.stream_id == self.followed:
                jitter = self.rng() if self.rng is not None else 0.0
                nacker.track(ev.frame_id, ev.k, ev.held, ev.at, jitter)
                self._tracked[ev.frame_id] = None
                self._tracked.move_to_end(ev.frame_id)
                while len(self._tracked) > MAX_TRACKED:
                    self._tracked.popitem(last=False)

    def _done(self, stream_id: int, frame_id: int, count: int) -> None:
        """Frames ``frame_id`` … + count − 1 were resolved: no NACK for them any more."""
        if self.nacker is None or stream_id != self.followed or not self._tracked:
            return
        for i in range(min(count, MAX_TRACKED)):
            fid = (frame_id + i) & 0xFFFFFFFF
            if fid in self._tracked:
                del self._tracked[fid]
                self.nacker.done(fid)

    def _nack(self, now: float) -> None:
        nacker, reporter, sid = self.nacker, self.reporter, self.followed
        if nacker is None or reporter is None or sid is None or not self._tracked:
            return
        for fid in self._tracked:  # what arrived since: NACKs ask for what is still missing
            held = self.reassembler.held(sid, fid)
            if held is not None:
                nacker.update(fid, held)
        nacker.handle_timer(now)
        for nack in nacker.nacks_to_send():
            got = reporter.nack(nack.entries)
            if got is not None:
                self._outgoing.append(got)

    def _configure_nacks(self, hb: Heartbeat, now: float) -> None:
        """The followed stream's heartbeat: NACKs on or off, delay, rate and audience."""
        if not self.nack_enabled or hb.nack_rate_milli == 0:
            self._drop_nacker()
            return
        delay, rate = hb.nack_delay_ms / 1000, hb.nack_rate_milli / 1000
        nacker = self.nacker
        if nacker is None:
            nacker = self.nacker = NackScheduler(
                now, nack_delay=delay, repair_round=self.repair_round, rate=rate
            )
        nacker.nack_delay = delay
        nacker.rate = rate
        nacker.set_audience(hb.audience, now)

    def _drop_nacker(self) -> None:
        nacker, self.nacker = self.nacker, None
        self._tracked.clear()
        if nacker is not None:
            totals = self.nack_totals
            totals["nacks"] += nacker.nacks
            totals["entries"] += nacker.entries
            totals["rate_limited"] += nacker.rate_limited
            totals["exhausted"] += nacker.exhausted

    def nack_status(self) -> dict[str, int]:
        """NACK counters since start, JSON-ready.

        ``nacks`` datagrams, ``entries``, ``rate_limited`` (waits for a token),
        ``exhausted`` (frames that used every repeat), ``tracked`` (frames watched now).
        """
        out = dict(self.nack_totals)
        nacker = self.nacker
        if nacker is not None:
            out["nacks"] += nacker.nacks
            out["entries"] += nacker.entries
            out["rate_limited"] += nacker.rate_limited
            out["exhausted"] += nacker.exhausted
        out["tracked"] = len(self._tracked)
        return out

    @property
    def followed_state(self) -> LiveState | None:
        """Liveness of the followed stream, or ``None`` if none is followed yet."""
        return None if self.followed is None else self.liveness.state(self.followed)

    def offline_reason(self, stream_id: int) -> str:
        """``""`` while ``stream_id`` is alive or stale, else why not (one line).

        The re-serve asks this about the stream of the frame it holds (it keeps no online
        flag of its own: :meth:`mcastcam.receiver.fanout.FrameHub.set_liveness_source`).
        """
        state = self.liveness.state(stream_id)
        if state is LiveState.ALIVE or state is LiveState.STALE:
            return ""
        info = self.info.get(stream_id)
        name = info.name if info is not None else ""
        if state is None:
            return f"sender {name or stream_id} never heard"
        return f"sender {name or stream_id} lost: no datagram"

    def status(self, now: float) -> dict[str, Any]:
        """JSON-ready state: streams (info, liveness, counters) and refused datagrams."""
        streams = []
        for stats in self.reassembler.streams():
            sid = stats.stream_id
            info = self.info.get(sid) or StreamInfo(sid, stats.addr)
            state = self.liveness.state(sid)
            streams.append(
                {
                    **stats.as_dict(),
                    "name": info.name,
                    "stream_id": f"{sid:08x}",
                    "followed": sid == self.followed,
                    "liveness": str(state) if state else "unknown",
                    "online": state is LiveState.ALIVE or state is LiveState.STALE,
                    "silent_for": round(self.liveness.silence(sid, now), 3) if state else None,
                    "source_state": info.source_state,
                    "width": info.width,
                    "height": info.height,
                    "fps": info.fps,
                    "heartbeat_interval": info.heartbeat_interval,
                    "frames_sent_by_sender": info.frames_sent,
                    "stream_id_int": sid,
                }
            )
        return {
            "streams": streams,
            "online": self.followed_state in (LiveState.ALIVE, LiveState.STALE),
            "followed": None if self.followed is None else f"{self.followed:08x}",
            "decode_errors": dict(self.reassembler.decode_errors),
            "bytes_in_flight": self.reassembler.bytes_in_flight,
            "nack": self.nack_status(),
        }

    # ------------------------------------------------------------------ internals

    def _heard(self, sid: int, now: float, interval: float | None = None) -> None:
        self.liveness.heard(sid, now, interval)
        self._announce_revived()

    def _announce_revived(self) -> None:
        """A ``LivenessChanged(ALIVE)`` for each stream that became alive, whoever heard it."""
        for sid in self.liveness.take_revived():
            info = self.info.get(sid)
            self._events.append(
                LivenessChanged(
                    sid, info.name if info else "", LiveState.ALIVE, sid == self.followed
                )
            )

    def _on_heartbeat(self, hb: Heartbeat, addr: Address, now: float) -> None:
        info = self.info.get(hb.stream_id)
        if info is None:  # refused by the reassembler (table full): no state for it
            return
        first_name = not info.name
        info.name = hb.name
        info.width, info.height = hb.width, hb.height
        info.fps = hb.fps_milli / 1000
        try:
            info.source_state = SourceState(hb.source_state).name.lower()
        except ValueError:
            info.source_state = f"unknown({hb.source_state})"
        info.heartbeat_interval = hb.interval_ms / 1000
        info.frames_sent = hb.frames_sent
        info.last_heartbeat = hb
        self._heard(hb.stream_id, now, info.heartbeat_interval or None)
        self._events.append(HeartbeatReceived(hb, addr, now))
        if self.reporter is not None and hb.stream_id == self.followed:
            self.reporter.on_heartbeat(hb, addr, now)
            self._configure_nacks(hb, now)
        if first_name and hb.stream_id != self.followed:
            self._consider(hb.stream_id)

    def _wanted(self, sid: int) -> bool:
        if self.want_id is not None:
            return sid == self.want_id
        if self.want_name is not None:
            return self.info[sid].name == self.want_name
        return True

    def _consider(self, sid: int) -> None:
        """A stream appeared or got its name: follow it if nothing alive is followed.

        Replacing a followed stream that lives takes a completed frame (:meth:`_may_replace`).
        """
        if not self._wanted(sid) or sid == self.followed:
            return
        if self.followed is None or self.liveness.state(self.followed) is LiveState.LOST:
            self._follow(sid)

    def _frame_completed(self, sid: int, now: float) -> None:
        """Count a completed frame of ``sid``; follow it if it may replace the followed one."""
        info = self.info.get(sid)
        if info is None:
            return
        info.frames_completed += 1
        if sid != self.followed and self._may_replace(sid, now):
            self._follow(sid)

    def _may_replace(self, sid: int, now: float) -> bool:
        """Whether ``sid`` may replace the followed stream now (the hijack rules above)."""
        info = self.info.get(sid)
        if info is None or not info.frames_completed or not self._wanted(sid):
            return False
        if self.liveness.state_at(sid, now) is not LiveState.ALIVE:
            return False
        if self.followed is None:
            return True
        current = self.info.get(self.followed)
        if current is None or not current.frames_completed:
            return True  # known from heartbeats only: a stream delivering frames wins
        state = self.liveness.state_at(self.followed, now)
        if state is LiveState.LOST:
            return True
        return state is LiveState.STALE and info.name != "" and info.name == current.name

    def _forget(self, sid: int) -> None:
        """The reassembler evicted ``sid`` (never the followed one): drop what we kept."""
        self.info.pop(sid, None)
        self.liveness.forget(sid)

    def _follow(self, sid: int) -> None:
        previous, self.followed = self.followed, sid
        self.reassembler.keep = sid
        self._drop_nacker()
        if self.reporter is not None:
            self.reporter.forget()
        info = self.info[sid]
        self._events.append(Followed(sid, info.name, info.addr, previous))

    def _follow_another(self, now: float) -> None:
        """The followed stream went stale or lost: find what replaces it, if anything.

        A stream that delivers frames (the most recently heard); once the followed one is
        lost, any live wanted stream.
        """
        best: tuple[float, int] | None = None
        for sid in self.info:  # bounded: the streams the reassembler tracks
            if sid != self.followed and self._may_replace(sid, now):
                heard = self.liveness.last_heard(sid) or 0.0
                if best is None or heard > best[0]:
                    best = (heard, sid)
        if best is not None:
            self._follow(best[1])
            return
        if self.followed is not None and self.liveness.state(self.followed) is not LiveState.LOST:
            return
        for sid in self.info:
            alive = self.liveness.state(sid) is LiveState.ALIVE
            if sid != self.followed and alive and self._wanted(sid):
                self._follow(sid)
                return
