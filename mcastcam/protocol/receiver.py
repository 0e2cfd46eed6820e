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

With a key (``verifier``, §8): the reassembler verifies every datagram before anything else;
reports and NACKs leave tagged under the reported run's ``k_r2s``; and a run's frames are
served only once the run proved to be live now (freshness, §8.6): on its first heartbeat the
session sends a report with a random ``challenge`` (from the shell's ``token``; at most one
per run per second, at most :data:`MAX_PENDING` runs pending), and until a heartbeat of that
run echoes it (``echo_receiver_id``, ``echo_challenge``) its completed frames are held
(newest only; counted ``awaiting_freshness``) and the session does not switch to it. No
echo within 3 heartbeat intervals counts ``stale_run`` (challenges go on at 1/s).
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
from mcastcam.protocol.trust import Verifier
from mcastcam.protocol.wire import SourceState

Address = tuple[str, int]

MAX_PENDING = 4
"""Runs with a freshness challenge outstanding at once (§8.6)."""
MAX_FRESH = 16
"""Runs remembered as fresh (least recently proven forgotten first)."""
CHALLENGE_EVERY = 1.0
"""Seconds between two challenges to one run."""

MAX_TRACKED = 64
"""Incomplete frames of the followed stream watched for NACKs at once (the oldest go first)."""


@dataclass(slots=True)
class _Challenge:
    run_nonce: int
    value: int
    sent_at: float
    deadline: float
    stale_counted: bool = False


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
        verifier: the keys (``--key-file``): every datagram is verified first, reports and
            NACKs are tagged, and frames wait for the run's freshness proof (needs a
            ``reporter`` and ``token``).
        token: random non-zero u64 for freshness challenges (the shell passes
            ``secrets.randbits``-based values).
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
        repair_round: float = 0.008,
        verifier: Verifier | None = None,
        token: Callable[[], int] | None = None,
    ) -> None:
        if verifier is not None and (reporter is None or token is None):
            raise ValueError("a receiver with a key needs a reporter and a token source")
        self.liveness = Liveness(lost_after, liveness_timeout)
        self.verifier = verifier
        self.token = token
        self.reassembler = Reassembler(limits, self.liveness, verifier)
        self._fresh: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
        self._pending: dict[int, _Challenge] = {}
        self._held: dict[int, FrameCompleted] = {}
        self.trust_counters: collections.Counter[str] = collections.Counter()
        """Freshness: ``challenges``, ``echoes``, ``awaiting_freshness`` (frames held),
        ``stale_run``, ``challenge_budget`` (a run not challenged: 4 pending),
        ``untagged_out`` (a report whose run's keys were evicted: not sent)."""
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
        self.reassembler.receive_datagram(data, addr, now)
        self._reassembly_events(now)

    def _reassembly_events(self, now: float) -> None:
        r = self.reassembler
        started: list[int] = []
        while (ev := r.next_event()) is not None:
            if isinstance(ev, StreamStarted):
                self.info[ev.stream_id] = StreamInfo(ev.stream_id, ev.addr)
                started.append(ev.stream_id)
            elif isinstance(ev, StreamForgotten):  # evicted for a newcomer: never followed
                self._forget(ev.stream_id)
                if ev.stream_id in started:
                    started.remove(ev.stream_id)
            else:
                self._on_reassembly(ev, now)
        for sid in started:  # after its heartbeat, if that is what started it
            self._consider(sid)
        self._announce_revived()  # heard by the reassembler only (a frame's first fragment)

    def receive_segments(self, data: memoryview, seg: int, addr: Address, now: float) -> None:
        """The datagrams of a UDP GRO buffer: ``seg`` bytes each, the last one possibly shorter.

        The same as :meth:`receive_datagram` on each in turn (an empty ``data`` is one empty
        datagram), with the reassembler's events handled once for the whole buffer (≤ 64
        datagrams, one :mod:`mcastcam.driver` batch) instead of after each datagram.

        Raises:
            ValueError: ``seg`` < 1.
        """
        if seg < 1:
            raise ValueError(f"bad segment size {seg}")
        receive = self.reassembler.receive_datagram
        size = len(data)
        if size <= seg:
            receive(data, addr, now)
        else:
            for start in range(0, size, seg):
                receive(data[start : start + seg], addr, now)
        self._reassembly_events(now)

    def handle_timer(self, now: float) -> None:
        """Frame timeouts and liveness changes due at ``now``."""
        r = self.reassembler
        r.handle_timer(now)
        while (ev := r.next_event()) is not None:
            if isinstance(ev, FrameDropped):  # counted in the stream stats already
                self._done(ev.stream_id, ev.frame_id, ev.count)
            elif isinstance(ev, FrameIncomplete):  # its tail was lost: NACK it
                self._on_reassembly(ev, now)
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
        """Receiver reports and NACKs to send at ``now``, each with its ``(host, port)``.

        With a key each is tagged under its run's ``k_r2s`` (§8.3).
        """
        out, self._outgoing = self._outgoing, []
        verifier = self.verifier
        if verifier is None:
            return out
        tagged = []
        for data, dest in out:
            sealed = verifier.seal_to_sender(data)
            if sealed is None:
                self.trust_counters["untagged_out"] += 1
            else:
                tagged.append((sealed, dest))
        return tagged

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
            if self.verifier is not None and not self._is_fresh(frame.stream_id):
                self._held[frame.stream_id] = ev  # newest only (§8.6)
                self.trust_counters["awaiting_freshness"] += 1
                if frame.stream_id == self.followed:
                    self._done(frame.stream_id, frame.frame_id, 1)
                return
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
                nacker.track(ev.frame_id, ev.k, ev.held, ev.at, jitter, ev.overhead)
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
            **({"auth": self.trust_status()} if self.verifier is not None else {}),
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

    # ------------------------------------------------------------------ freshness (§8.6)

    def _is_fresh(self, sid: int) -> bool:
        info = self.info.get(sid)
        hb = info.last_heartbeat if info is not None else None
        return hb is not None and (sid, hb.run_nonce) in self._fresh

    def _freshness(self, hb: Heartbeat, addr: Address, now: float) -> None:
        """A verified heartbeat: an echo of our challenge proves its run; else challenge it."""
        sid, run = hb.stream_id, hb.run_nonce
        if (sid, run) in self._fresh:
            self._fresh.move_to_end((sid, run))
            return
        reporter, token = self.reporter, self.token
        assert reporter is not None and token is not None
        pending = self._pending.get(sid)
        if (
            pending is not None
            and pending.run_nonce == run
            and hb.echo_receiver_id == reporter.receiver_id
            and hb.echo_challenge == pending.value
        ):
            del self._pending[sid]
            self._fresh[(sid, run)] = None
            while len(self._fresh) > MAX_FRESH:
                self._fresh.popitem(last=False)
            self.trust_counters["echoes"] += 1
            held = self._held.pop(sid, None)
            if sid != self.followed:
                self._consider(sid)
            if held is not None and sid == self.followed:
                self._events.append(FrameReady(held.frame))
            return
        interval = max(hb.interval_ms / 1000, 0.1)
        if pending is not None and pending.run_nonce == run:
            if now >= pending.deadline and not pending.stale_counted:
                pending.stale_counted = True
                self.trust_counters["stale_run"] += 1
            if now - pending.sent_at < CHALLENGE_EVERY:
                return
        elif len(self._pending) >= MAX_PENDING:
            # Drop the oldest pending run that is past its deadline, else refuse.
            expired = [s for s, c in self._pending.items() if now >= c.deadline]
            if not expired:
                self.trust_counters["challenge_budget"] += 1
                return
            del self._pending[min(expired, key=lambda s: self._pending[s].sent_at)]
        value = token() or 1
        deadline = (
            pending.deadline
            if pending is not None and pending.run_nonce == run
            else (now + 3 * interval)
        )
        stale = pending.stale_counted if pending is not None and pending.run_nonce == run else False
        self._pending[sid] = _Challenge(run, value, now, deadline, stale)
        self._outgoing.append(reporter.challenge(hb, addr, value))
        self.trust_counters["challenges"] += 1

    def trust_status(self) -> dict[str, Any]:
        """Freshness state, JSON-ready: counters, fresh runs, runs pending, frames held."""
        return {
            **{k: self.trust_counters[k] for k in ("challenges", "echoes", "stale_run")},
            "awaiting_freshness": self.trust_counters["awaiting_freshness"],
            "fresh_runs": len(self._fresh),
            "pending": len(self._pending),
            "held": len(self._held),
            "runs_cached": len(self.verifier.runs) if self.verifier is not None else 0,
            "key_derivations": self.verifier.runs.derivations if self.verifier else 0,
        }

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
        if self.verifier is not None:
            self._freshness(hb, addr, now)
        self._heard(hb.stream_id, now, info.heartbeat_interval or None)
        self._events.append(HeartbeatReceived(hb, addr, now))
        if self.reporter is not None and hb.stream_id == self.followed:
            self.reporter.on_heartbeat(hb, addr, now)
            self._configure_nacks(hb, now)
        if first_name and hb.stream_id != self.followed:
            self._consider(hb.stream_id)
            if self.reporter is not None and hb.stream_id == self.followed:
                # followed from this heartbeat on: report and NACK from it, not from the
                # next one (a heartbeat interval later: 1 s of frames without NACK repair,
                # and the sender's no-report default redundancy 1 s longer)
                self.reporter.on_heartbeat(hb, addr, now)
                self._configure_nacks(hb, now)

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
        if self.verifier is not None and not self._is_fresh(sid):
            return  # with a key, never switch to a run that has not proved it is live (§8.6)
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
        if self.verifier is not None and not self._is_fresh(sid):
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
        self._held.pop(sid, None)

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
            fresh = self.verifier is None or self._is_fresh(sid)
            if sid != self.followed and alive and fresh and self._wanted(sid):
                self._follow(sid)
                return
