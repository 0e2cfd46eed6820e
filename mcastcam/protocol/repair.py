"""Loss-repair policy of protocol version 2 (pure: ``now`` and randomness are passed in).

docs/protocol-v2.md §5 and §7, issue #11 items 3 and 4:

- :class:`RedundancyPolicy` (sender): how many proactive repair symbols R each frame gets,
  from what receivers report (``--fec auto|off|PCT``).
- :class:`NackScheduler` (receiver): when to NACK an incomplete frame and how many symbols
  to ask for, rate-limited so that all receivers together send ≤ 1,000 NACKs/s.
- :class:`RepairAggregator` (sender): NACKs of many receivers for one frame become one
  multicast burst of fresh repair symbols, within per-frame, per-second and per-receiver
  budgets.

Nothing here encodes a datagram (the v2 codec does) or touches a symbol (:mod:`.fec` does);
these objects take and return plain values: frame ids, symbol counts, seconds.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

from mcastcam.errors import ConfigError
from mcastcam.protocol.codec import NackEntry
from mcastcam.protocol.fec import DECODE_OVERHEAD, decode_overhead, repair_capacity
from mcastcam.protocol.wire import MAX_NACK_ENTRIES, FecScheme

__all__ = [
    "FEC_SCHEMES",
    "MAX_NACK_ENTRIES",
    "NACK_REPAIR_MARGIN",
    "FecMode",
    "Nack",
    "NackEntry",
    "NackScheduler",
    "RedundancyPolicy",
    "RepairAggregator",
    "RepairOrder",
    "TokenBucket",
    "nack_repair_budget",
]


FEC_SCHEMES = {"rs": int(FecScheme.REED_SOLOMON), "raptorq": int(FecScheme.RAPTORQ)}
"""``--fec-scheme`` names and the ``fec_scheme`` they send."""

NACK_REPAIR_MARGIN = DECODE_OVERHEAD
"""Repair symbols beyond ``needed`` in a NACK answer for an MDS code (Reed–Solomon, §5a).

A RaptorQ receiver asks for k + 2 − held, two more than it usually needs; a Reed–Solomon
receiver asks for exactly k − held, so one lost repair symbol would cost a second NACK round
(issue #11's bench, 640×480 under the burst model: 99.17 % of frames without the margin,
the late ones all one round short). The sender adds these two to every Reed–Solomon order."""

SMALL_FRAME_NACK_REPAIR = 16
"""Per-frame NACK repair floor, symbols: a small frame may get up to min(k + 2, this)."""


def nack_repair_budget(k: int) -> int:
    """Most NACK repair symbols one frame of ``k`` source symbols gets (see below).

    max(⌈k/2⌉, min(k + 2, 16)). §7: ⌈k/2⌉ for frames of 32 symbols and more. A smaller
    frame may get up to k + 2 (capped at 16): at 640×480 (k ≈ 9) one loss burst of the
    Gilbert–Elliott model (mean 4) often removed more than k/2 of a frame, which the budget
    then could not repair (issue #11: 98.8 % under the burst model). The per-second budget
    (25 % of the datagrams sent) bounds a NACK flood either way.
    """
    return max(-(-k // 2), min(k + DECODE_OVERHEAD, SMALL_FRAME_NACK_REPAIR))


NACK_BURST_SECONDS = 0.5
"""A receiver's NACK bucket holds this many seconds of its NACK rate (at least 2 NACKs)."""

_EPSILON = 1e-9
"""Tokens lost to floating-point rounding that :meth:`TokenBucket.take` forgives."""


class TokenBucket:
    """A token bucket driven by ``now`` (monotonic seconds).

    Args:
        rate: tokens per second (> 0).
        burst: most tokens held (≥ 1); the bucket starts full.
        now: the time it starts at.
    """

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"bad token bucket: rate {rate}/s, burst {burst}")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def take(self, now: float) -> bool:
        """Take one token at ``now``; False (and nothing taken) when there is none.

        At :meth:`ready_at` a token is always there: the refill's rounding error (a token of
        0.9999999…) is forgiven, or a caller driven by ``ready_at`` would spin.
        """
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def ready_at(self) -> float:
        """When one token will be there (the last refill time if there is one already)."""
        if self._tokens >= 1.0:
            return self._at
        return self._at + (1.0 - self._tokens) / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        """Change the refill rate (tokens/s, > 0) from ``now`` on."""
        if not rate > 0:
            raise ValueError(f"bad token bucket rate {rate}/s")
        self._refill(now)
        self.rate = rate

    def set_burst(self, burst: float) -> None:
        """Change the bucket size (≥ 1); tokens above it are dropped."""
        if not burst >= 1:
            raise ValueError(f"bad token bucket burst {burst}")
        self.burst = float(burst)
        self._tokens = min(self._tokens, self.burst)


# --- redundancy ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FecMode:
    """What ``--fec`` says: ``auto`` (from reports), ``off`` (no FEC), or a fixed percent.

    ``percent`` (0 … 100) is used only by ``fixed``: R = ⌈k · percent / 100⌉. ``scheme``
    is what ``--fec-scheme`` says: the ``fec_scheme`` of frames with FEC, 2 (Reed–Solomon,
    the default) or 1 (RaptorQ) (docs/protocol.md §5, §5a).
    """

    kind: Literal["auto", "off", "fixed"] = "auto"
    percent: float = 0.0
    scheme: int = FEC_SCHEMES["rs"]

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "off", "fixed"):
            raise ConfigError(f"--fec {self.kind!r}: must be auto, off or a percent")
        if not 0.0 <= self.percent <= 100.0:
            raise ConfigError(f"--fec {self.percent}: the percent must be in 0..100")
        if self.scheme not in FEC_SCHEMES.values():
            raise ConfigError(f"--fec-scheme {self.scheme}: must be rs or raptorq")

    @classmethod
    def scheme_named(cls, name: str) -> int:
        """``fec_scheme`` of a ``--fec-scheme`` name: ``rs`` → 2, ``raptorq`` → 1.

        Raises:
            ConfigError: any other name.
        """
        try:
            return FEC_SCHEMES[name.strip().lower()]
        except KeyError:
            raise ConfigError(f"--fec-scheme {name!r}: must be rs or raptorq") from None

    @classmethod
    def parse(cls, text: str, scheme: int = FEC_SCHEMES["rs"]) -> FecMode:
        """``"auto"``, ``"off"`` or ``"PCT"`` / ``"PCT%"`` (0 … 100, e.g. ``"10"``).

        Raises:
            ConfigError: anything else, or a ``scheme`` other than 1 and 2.
        """
        word = text.strip().lower()
        if word == "auto":
            return cls("auto", scheme=scheme)
        if word == "off":
            return cls("off", scheme=scheme)
        try:
            percent = float(word.removesuffix("%"))
        except ValueError:
            raise ConfigError(f"--fec {text!r}: must be auto, off or a percent (0..100)") from None
        if not 0.0 <= percent <= 100.0:  # also refuses nan
            raise ConfigError(f"--fec {text!r}: the percent must be in 0..100")
        return cls("fixed", percent, scheme)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.kind == "fixed" else self.kind

    @property
    def scheme_name(self) -> str:
        """``rs`` or ``raptorq`` (the ``--fec-scheme`` name of :attr:`scheme`)."""
        return "raptorq" if self.scheme == FEC_SCHEMES["raptorq"] else "rs"


class RedundancyPolicy:
    """Proactive repair symbols per frame, R, from receiver reports.

    The rule (``auto``), from §5's R = ⌈k·p⌉ with a margin for the spread of the loss
    count: with p the loss estimate (capped at 0.5) and b the mean burst length,

        R = ⌈(k·p + z_n·√(k·p·(1 − p)·(2b − 1))) / (1 − p)⌉ + o

    — the expected losses among k symbols plus z_n standard deviations of a binomial loss
    count, whose variance a Gilbert–Elliott burst of mean length b inflates by about its
    index of dispersion 2b − 1; divided by 1 − p because repair symbols are lost too. The
    decode overhead o is 0 while NACK repair is on (``nack_repair``): RaptorQ decodes from
    exactly k symbols 99 % of the time (k + 1: 99.99 %, RFC 6330), so the frames the margin
    misses (about Φ(−z) of them, 7 % at z = 1.5) are left to NACK repair, which asks for
    k + 2 − held; with NACK repair off o = 2 (``DECODE_OVERHEAD``: decodable from k + 2).
    Reed–Solomon (scheme 2, the default) is MDS: o = 0 either way, and a NACK asks for
    k − held.
    z_n = Φ⁻¹(1 − Φ(−z)/n) for n receivers reporting, where z is ``z`` (1.5) for a frame of
    fewer than ``paced_from`` (44) source symbols and ``z_paced`` (2.33) from there on: one
    receiver gets z; with more, each frame's expected number of receivers short of k
    symbols stays Φ(−z) (7 % at z = 1.5) instead of growing with the audience, so NACK
    traffic does not either
    (1,000 receivers: z_n = 3.8 and 4.3). z = 0 and b = 1 give ⌈k·p / (1 − p)⌉. With p = 0
    (every receiver lost nothing), R = ``idle_repair`` (default 0: NACK repair only, and no
    encoder is built). R is capped at max(2, ⌈``cap_fraction``·k⌉), at k (§4: R ≤ k) and
    at the scheme's repair capacity (§5a: m(k) for Reed–Solomon).

    Why two z: a frame of up to one GSO batch (44 datagrams of 1,500 bytes, the sender's
    ``MIN_BURST``) leaves in one burst and arrives 2–3 ms after capture, so a NACK round
    (stall or last symbol + 2–4 ms + 2 ms aggregation + repair, 6–10 ms) still ends well
    within one frame interval (33 ms at 30 fps): those frames can leave Φ(−1.5) = 7 % to
    NACK. A larger frame is paced over ``--spread`` of the frame interval (16.7 ms at 30 fps):
    its NACK round would end past 33 ms (issue #11's bench: p99 35 ms at 1080×1920 and 1 %
    with z = 1.5), so it gets the margin that leaves Φ(−2.33) = 1 % short of k: the 99th
    percentile latency is then that of FEC alone, for 1–3 more repair symbols at k = 260.

    Why z = 1.5 and o = 0 (issue #11: ≤ 25 % extra datagrams at 5 % loss): at k ≈ 9
    (640×480) the old rule (z = 2, o = 2) gave R = 4-5, 44-55 %; this one gives R = 2
    (22 %) for loss estimates up to 7.4 %, leaving 1.6 % of the frames to a NACK round
    (+0.6 % NACK repair). At k = 260 (1080×1920) and 5 % it gives R = 23 instead of 24
    (8.8 % instead of 9.2 %) with 1 % of the frames NACKed (tests/protocol/test_repair.py
    ``test_proactive_rule_for_one_receiver_leaves_few_frames_to_nack`` computes these figures
    exactly; ``test_issue_11_delivery_and_overhead_over_a_scripted_link`` in
    test_receiver_session.py runs both cores over a lossy link).

    p and b: per receiver, the larger of the mean of its reports within ``window`` seconds
    and its latest report (fast to rise, slow to fall; the mean of several reports, not
    their maximum, so that the noise of one report interval does not inflate p), then the
    ``quantile`` over receivers (nearest rank: with fewer than 1 / (1 − quantile)
    receivers, the worst one), so one broken receiver among many does not set everyone's
    overhead.

    No reports within ``window`` (silent receivers, reports blocked by a firewall):
    p = ``default_loss``, b = ``default_burst``, and :meth:`no_reports` says so for the
    status. ``fixed``: R = min(k, ⌈k·percent/100⌉); ``off``: R = 0 (no FEC at all).

    Args:
        mode: see :class:`FecMode`.
        quantile: 0 < q ≤ 1 over receivers (1: the worst).
        z: standard deviations of margin for frames of fewer than ``paced_from`` source
            symbols (≥ 0).
        z_paced: the same for frames of ``paced_from`` source symbols and more (≥ 0).
        paced_from: source symbols from which a frame is paced over several bursts (≥ 1).
        default_loss: p without reports, fraction (0 … 0.5).
        default_burst: b without reports, datagrams (≥ 1).
        idle_repair: R when p = 0 (≥ 0).
        cap_fraction: most R as a fraction of k (0 … 1).
        window: seconds a report counts (> 0).
        refresh_interval: seconds between two recomputations of (p, b) (≥ 0; a first
            report, or the last one expiring, takes effect at once).
        max_receivers: receivers kept (the stalest is forgotten).
        nack_repair: whether the sender answers NACKs (o = 0), else o = 2.
    """

    def __init__(
        self,
        mode: FecMode | None = None,
        *,
        quantile: float = 0.95,
        z: float = 1.5,
        z_paced: float = 2.33,
        paced_from: int = 44,
        default_loss: float = 0.05,
        default_burst: float = 1.0,
        idle_repair: int = 0,
        cap_fraction: float = 0.5,
        window: float = 5.0,
        refresh_interval: float = 0.25,
        max_receivers: int = 4096,
        nack_repair: bool = True,
    ) -> None:
        if not 0 < quantile <= 1 or not z >= 0 or not 0 <= default_loss <= 0.5:
            raise ValueError(f"bad quantile {quantile}, z {z} or default loss {default_loss}")
        if not z_paced >= 0 or paced_from < 1:
            raise ValueError(f"bad z_paced {z_paced} or paced_from {paced_from}")
        if not default_burst >= 1 or idle_repair < 0 or not 0 <= cap_fraction <= 1:
            raise ValueError(
                f"bad default burst {default_burst}, idle repair {idle_repair} "
                f"or cap fraction {cap_fraction}"
            )
        if not window > 0 or not refresh_interval >= 0 or max_receivers < 1:
            raise ValueError(f"bad window {window} s, refresh {refresh_interval} s or table size")
        self.mode = mode if mode is not None else FecMode()
        self.quantile = quantile
        self.z = z
        self.z_paced = z_paced
        self.paced_from = paced_from
        self.default_loss = default_loss
        self.default_burst = default_burst
        self.idle_repair = idle_repair
        self.cap_fraction = cap_fraction
        self.window = window
        self.refresh_interval = refresh_interval
        self.max_receivers = max_receivers
        self.decode_overhead = 0 if nack_repair else decode_overhead(self.mode.scheme)
        # receiver -> samples (now, loss fraction, burst), oldest first; ordered by last report
        self._receivers: OrderedDict[Hashable, deque[tuple[float, float, float]]] = OrderedDict()
        self._estimate: tuple[float, float] | None = None
        self._computed_at: float | None = None
        self._z_n = (z, z_paced)  # (z, z_paced) for the receivers of the estimate

    def report(self, receiver: Hashable, loss_fraction: float, burst: float, now: float) -> None:
        """A receiver's report: datagram loss over its interval (0 … 1), mean burst (≥ 1).

        ``receiver`` is any key (e.g. (address, receiver id)). Values out of range are
        clamped: the codec has range-checked them already (``bad_report``).
        """
        p = min(1.0, max(0.0, loss_fraction))
        b = max(1.0, burst) if p > 0 else 1.0
        samples = self._receivers.get(receiver)
        if samples is None:
            if len(self._receivers) >= self.max_receivers:
                self._receivers.popitem(last=False)
            samples = self._receivers[receiver] = deque(maxlen=8)
            if self._estimate is None:
                self._computed_at = None  # the first report counts at once
        else:
            self._receivers.move_to_end(receiver)
        samples.append((now, p, b))

    def forget(self, receiver: Hashable) -> None:
        """Drop a receiver's reports (it left)."""
        self._receivers.pop(receiver, None)

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._receivers:
            key, samples = next(iter(self._receivers.items()))
            if samples[-1][0] >= horizon:
                break
            del self._receivers[key]
        if not self._receivers and self._estimate is not None:
            self._estimate = None  # the last report expired: the default at once
            self._computed_at = None

    def estimate(self, now: float) -> tuple[float, float] | None:
        """(p loss fraction, b mean burst) from recent reports, or ``None`` without any."""
        self._expire(now)
        if not self._receivers:
            return None
        if self._computed_at is not None and now - self._computed_at < self.refresh_interval:
            return self._estimate
        horizon = now - self.window
        losses: list[float] = []
        bursts: list[float] = []
        for samples in self._receivers.values():
            recent = [s for s in samples if s[0] >= horizon]
            latest = recent[-1]
            losses.append(max(latest[1], sum(s[1] for s in recent) / len(recent)))
            bursts.append(max(latest[2], sum(s[2] for s in recent) / len(recent)))
        losses.sort()
        bursts.sort()
        rank = max(0, math.ceil(self.quantile * len(losses)) - 1)
        self._estimate = (losses[rank], bursts[rank])
        self._z_n = (self.margin_z(len(losses)), self.margin_z(len(losses), self.z_paced))
        self._computed_at = now
        return self._estimate

    def margin_z(self, receivers: int, z: float | None = None) -> float:
        """z_n: standard deviations of margin with ``receivers`` (≥ 1) reporting.

        From ``z`` (default: the policy's ``z``, the one of frames below ``paced_from``).
        """
        z = self.z if z is None else z
        if receivers <= 1 or z <= 0:
            return z
        normal = NormalDist()
        return normal.inv_cdf(1.0 - (1.0 - normal.cdf(z)) / receivers)

    def no_reports(self, now: float) -> bool:
        """True when no receiver reported within ``window``: R follows ``default_loss``."""
        return self.estimate(now) is None

    def repair_count(self, k: int, now: float) -> int:
        """R for a frame of ``k`` ≥ 1 source symbols sent at ``now`` (0 … min(k, m(k))).

        m(k): the scheme's :func:`~mcastcam.protocol.fec.repair_capacity`.
        """
        if self.mode.kind == "off":
            return 0
        if self.mode.kind == "fixed":
            return min(
                k,
                math.ceil(k * self.mode.percent / 100 - 1e-9),
                repair_capacity(self.mode.scheme, k),
            )
        est = self.estimate(now)
        p, b = est if est is not None else (self.default_loss, self.default_burst)
        paced = k >= self.paced_from
        z = self._z_n[paced] if est is not None else (self.z_paced if paced else self.z)
        p = min(p, 0.5)
        cap = min(
            k,
            max(DECODE_OVERHEAD, math.ceil(self.cap_fraction * k)),
            repair_capacity(self.mode.scheme, k),
        )
        if p <= 0:
            return min(self.idle_repair, cap)
        spread = z * math.sqrt(k * p * (1 - p) * (2 * b - 1))
        r = math.ceil((k * p + spread) / (1 - p)) + self.decode_overhead
        return min(r, cap)

    def status(self, now: float) -> dict[str, Any]:
        """A JSON-ready summary: mode, receivers heard, the estimate, ``no_reports``."""
        est = self.estimate(now)
        return {
            "fec": str(self.mode),
            "fec_scheme": self.mode.scheme_name if self.mode.kind != "off" else "none",
            "receivers": len(self._receivers),
            "no_reports": est is None,
            "loss_estimate": round(est[0] if est else self.default_loss, 6),
            "burst_estimate": round(est[1] if est else self.default_burst, 3),
        }


# --- receiver: NACK scheduling ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Nack:
    """One NACK datagram's worth: 1 … 16 entries, oldest frame first."""

    entries: tuple[NackEntry, ...]


@dataclass(slots=True)
class _Incomplete:
    k: int
    held: int
    due: float
    jitter: float
    overhead: int = DECODE_OVERHEAD
    sent: int = 0


class NackScheduler:
    """When a receiver NACKs its incomplete frames (§7), with scripted time.

    A frame is :meth:`track`-ed once its geometry is known; its first NACK is due at
    ``last_planned_at + nack_delay·(1 + jitter)`` (jitter uniform in [0, 1), drawn by the
    caller: it spreads the NACKs of many receivers), each repeat ``repair_round +
    nack_delay·jitter`` after the previous one, at most ``max_repeats`` repeats. A NACK
    asks for ``needed`` = k + 2 − symbols held, within 1 … k, as of when it is sent: the
    caller reports arrivals with :meth:`update` and ends a frame (decoded, or dropped at its
    deadline) with :meth:`done`, which cancels what was due.

    NACK datagrams are rate-limited by a token bucket of ``burst`` at
    min(``rate``, ``total_rate`` / audience) per second, so all receivers together send at
    most ``total_rate`` per second; a due frame waits for a token. The default ``burst`` is
    half a second of that rate, at least 2 (5 at 10/s alone, 2 in an audience of 1,000:
    all receivers together then burst at most max(2·audience, ``total_rate``/2)); a burst of 2
    at 10/s made a receiver at 10 % loss wait for a token while the frame's successor
    arrived and made it ``late``. One datagram carries up
    to 16 entries. At most ``max_frames`` frames are tracked: a new one evicts the oldest.

    Counters: ``nacks`` datagrams, ``entries``, ``rate_limited`` (times a due NACK waited
    for a token), ``evicted`` frames, ``exhausted`` frames that used every repeat.

    Args:
        now: start time (monotonic seconds).
        nack_delay: seconds (≥ 0), ``nack_delay_ms`` / 1000.
        repair_round: seconds a NACK waits for its repair before a repeat (> 0).
        max_repeats: repeats after the first NACK (≥ 0).
        rate: NACK datagrams per second of this receiver (``nack_rate_milli`` / 1000).
        burst: bucket size (≥ 1); ``None``: max(2, 0.5 s × the rate), following the
            audience.
        total_rate: NACK datagrams per second of the whole audience.
        max_frames: frames tracked (≥ 1).
    """

    def __init__(
        self,
        now: float,
        *,
        nack_delay: float = 0.002,
        repair_round: float = 0.008,
        max_repeats: int = 2,
        rate: float = 10.0,
        burst: float | None = None,
        total_rate: float = 1000.0,
        max_frames: int = 64,
    ) -> None:
        if not nack_delay >= 0 or not repair_round > 0 or max_repeats < 0 or max_frames < 1:
            raise ValueError("bad NACK scheduler settings")
        if not total_rate > 0:
            raise ValueError(f"bad total NACK rate {total_rate}/s")
        self.nack_delay = nack_delay
        self.repair_round = repair_round
        self.max_repeats = max_repeats
        self.rate = rate
        self.total_rate = total_rate
        self.max_frames = max_frames
        self.audience = 1
        self.burst = burst
        first = min(rate, total_rate)
        self._bucket = TokenBucket(first, self._burst_for(first), now)
        self._frames: OrderedDict[int, _Incomplete] = OrderedDict()
        self._out: list[Nack] = []
        self.nacks = 0
        self.entries = 0
        self.rate_limited = 0
        self.evicted = 0
        self.exhausted = 0

    def _burst_for(self, rate: float) -> float:
        return self.burst if self.burst is not None else max(2.0, NACK_BURST_SECONDS * rate)

    def set_audience(self, audience: int, now: float) -> None:
        """Receivers of the stream as the sender counts them (≥ 1 is assumed)."""
        self.audience = max(1, audience)
        rate = min(self.rate, self.total_rate / self.audience)
        self._bucket.set_rate(rate, now)
        self._bucket.set_burst(self._burst_for(rate))

    def track(
        self,
        frame_id: int,
        k: int,
        held: int,
        last_planned_at: float,
        jitter: float,
        overhead: int = DECODE_OVERHEAD,
    ) -> None:
        """Watch an incomplete frame of ``k`` source symbols, ``held`` of its symbols in hand.

        ``last_planned_at``: when its last planned datagram arrived or was due (seconds);
        ``jitter``: uniform in [0, 1); ``overhead``: the frame decodes from k + this many
        distinct symbols (2 RaptorQ, 0 Reed–Solomon; ``needed`` = k + overhead − held).
        Tracking a frame again (say, its last planned datagram
        came early) moves its first NACK earlier, never later, and keeps ``held`` current.
        """
        due = last_planned_at + self.nack_delay * (1.0 + jitter)
        frame = self._frames.get(frame_id)
        if frame is not None:
            frame.held = max(frame.held, held)
            if frame.sent == 0:
                frame.due = min(frame.due, due)
            return
        if len(self._frames) >= self.max_frames:
            self._frames.popitem(last=False)
            self.evicted += 1
        self._frames[frame_id] = _Incomplete(k, held, due, jitter, overhead)

    def update(self, frame_id: int, held: int) -> None:
        """``held`` distinct symbols of ``frame_id`` are in hand now (ignored if untracked)."""
        frame = self._frames.get(frame_id)
        if frame is not None:
            frame.held = held

    def done(self, frame_id: int) -> None:
        """The frame decoded or was dropped: no more NACKs for it."""
        self._frames.pop(frame_id, None)

    def __len__(self) -> int:
        return len(self._frames)

    def _needed(self, frame: _Incomplete) -> int:
        return max(1, min(frame.k, frame.k + frame.overhead - frame.held))

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` has work next (monotonic seconds), or ``None``."""
        due = [f.due for f in self._frames.values() if f.sent <= self.max_repeats]
        if not due:
            return None
        return max(min(due), self._bucket.ready_at())

    def handle_timer(self, now: float) -> None:
        """Send (queue) the NACKs due at ``now`` that the rate limit allows."""
        due = [
            (f.due, fid, f)
            for fid, f in self._frames.items()
            if f.sent <= self.max_repeats and f.due <= now
        ]
        if not due:
            return
        due.sort(key=lambda x: x[0])
        while due:
            if not self._bucket.take(now):
                self.rate_limited += 1
                return
            batch, due = due[:MAX_NACK_ENTRIES], due[MAX_NACK_ENTRIES:]
            entries = []
            for _, fid, f in batch:
                entries.append(NackEntry(fid, self._needed(f)))
                f.sent += 1
                f.due = now + self.repair_round + self.nack_delay * f.jitter
                if f.sent > self.max_repeats:
                    self.exhausted += 1
            self._out.append(Nack(tuple(entries)))
            self.nacks += 1
            self.entries += len(entries)

    def nacks_to_send(self) -> list[Nack]:
        """The NACK datagrams queued by :meth:`handle_timer`, once."""
        out, self._out = self._out, []
        return out


# --- sender: NACK aggregation ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepairOrder:
    """Send ``count`` fresh repair symbols of ``frame_id``, ESIs ``start_esi`` … + count − 1."""

    frame_id: int
    start_esi: int
    count: int


@dataclass(slots=True)
class _Held:
    k: int
    sent_at: float
    next_esi: int
    limit: int  # most NACK repair symbols this frame may get
    margin: int = 0  # fresh repair symbols beyond `needed` in every order
    nack_repair: int = 0
    pending: int = 0  # largest `needed` of the open aggregation window, 0 = none open
    window_end: float = 0.0
    recent: deque[tuple[float, int]] | None = None  # (now, count) of NACK repair sent


class RepairAggregator:
    """NACKs of many receivers for one frame become one burst of fresh repair (§7).

    The sender calls :meth:`frame_sent` for every frame with FEC (k source, R planned repair
    symbols); frames are held ``repair_window`` seconds (at most ``max_frames``).
    :meth:`receive_nack` takes one NACK datagram's entries; per frame the largest ``needed``
    of an aggregation window (``window`` seconds from its first NACK) is kept. At the
    window's end (:meth:`handle_timer`) the frame gets m = that maximum minus the NACK repair
    already sent for it within the last ``holdoff`` seconds (a receiver NACKing then has not
    seen it yet), plus the frame's ``margin`` when m > 0, as a :class:`RepairOrder` with
    fresh ESIs (k + R, then onward; never one twice), from :meth:`repairs_to_send`.

    Defaults (issue #11, the NACK round within a frame interval): ``window`` 2 ms (the
    receivers' NACK delay spreads their first NACKs over 2 … 4 ms after the frame), ``holdoff``
    4 ms, shorter than a receiver's repeat (its ``repair_round``, 8 ms, minus the window), so
    a receiver whose repair was lost is answered again; they were 5 and 10 ms with a 20 ms
    repair round.

    Budgets: per frame ≤ :func:`nack_repair_budget` (k) NACK repair symbols, and no more
    than the frame's code has (its ``capacity`` minus R); overall, NACK
    repair symbols in any ``budget_interval`` seconds ≤ ``repair_fraction`` × the datagrams
    (source + planned repair) sent in it; NACK datagrams ≤ ``receiver_rate`` per second per
    receiver id and per source address (token buckets of ``receiver_burst``, in LRU tables of
    ``max_receivers`` and ``max_addresses``).

    ``counters``: ``nacks`` (datagrams taken), ``nack_entries``, ``nack_rate_limited``
    (datagrams refused), ``nack_unknown_frame`` and ``bad_nack`` (entries ignored),
    ``repair_budget_exhausted`` (orders cut short by a budget), ``repair_orders``,
    ``repair_symbols``.
    """

    def __init__(
        self,
        now: float,
        *,
        window: float = 0.002,
        holdoff: float = 0.004,
        repair_window: float = 0.5,
        max_frames: int = 64,
        receiver_rate: float = 10.0,
        receiver_burst: float = 10.0,
        max_receivers: int = 1024,
        max_addresses: int = 1024,
        repair_fraction: float = 0.25,
        budget_interval: float = 1.0,
    ) -> None:
        if not window >= 0 or not holdoff >= 0 or not repair_window > 0 or max_frames < 1:
            raise ValueError("bad repair aggregator settings")
        if max_receivers < 1 or max_addresses < 1 or not 0 <= repair_fraction <= 1:
            raise ValueError("bad repair aggregator budgets")
        if not budget_interval > 0:
            raise ValueError(f"bad budget interval {budget_interval} s")
        self.window = window
        self.holdoff = holdoff
        self.repair_window = repair_window
        self.max_frames = max_frames
        self.receiver_rate = receiver_rate
        self.receiver_burst = receiver_burst
        self.max_receivers = max_receivers
        self.max_addresses = max_addresses
        self.repair_fraction = repair_fraction
        self.budget_interval = budget_interval
        self._frames: OrderedDict[int, _Held] = OrderedDict()
        self._by_receiver: OrderedDict[int, TokenBucket] = OrderedDict()
        self._by_address: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._sent: deque[tuple[float, int]] = deque()  # (now, datagrams) of frames
        self._sent_total = 0
        self._repaired: deque[tuple[float, int]] = deque()  # (now, symbols) of NACK repair
        self._repaired_total = 0
        self._out: list[RepairOrder] = []
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "nacks",
                "nack_entries",
                "nack_rate_limited",
                "nack_unknown_frame",
                "bad_nack",
                "repair_budget_exhausted",
                "repair_orders",
                "repair_symbols",
            ),
            0,
        )

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def table_sizes(self) -> tuple[int, int, int]:
        """(frames, receiver ids, source addresses) held now."""
        return len(self._frames), len(self._by_receiver), len(self._by_address)

    def frame_sent(
        self,
        frame_id: int,
        k: int,
        repair_planned: int,
        now: float,
        capacity: int | None = None,
        margin: int = 0,
    ) -> None:
        """A frame of ``k`` source and ``repair_planned`` repair symbols left at ``now``.

        ``capacity``: most repair symbols the frame's code has in all (``None``: no limit;
        Reed–Solomon: m(k), §5a), so NACK repair stops at ESI k + capacity − 1.
        ``margin``: fresh repair symbols added to every repair order of this frame beyond
        what its NACKs need (:data:`NACK_REPAIR_MARGIN` for an MDS code).
        """
        limit = nack_repair_budget(k)
        if capacity is not None:
            limit = max(0, min(limit, capacity - repair_planned))
        self._expire(now)
        if frame_id in self._frames:
            del self._frames[frame_id]
        elif len(self._frames) >= self.max_frames:
            self._frames.popitem(last=False)
        self._frames[frame_id] = _Held(k, now, k + repair_planned, limit, margin)
        self._sent.append((now, k + repair_planned))
        self._sent_total += k + repair_planned

    def _expire(self, now: float) -> None:
        horizon = now - self.repair_window
        while self._frames:
            first = next(iter(self._frames.values()))
            if first.sent_at > horizon:
                break
            self._frames.popitem(last=False)
        horizon = now - self.budget_interval
        while self._sent and self._sent[0][0] <= horizon:
            self._sent_total -= self._sent.popleft()[1]
        while self._repaired and self._repaired[0][0] <= horizon:
            self._repaired_total -= self._repaired.popleft()[1]

    def _bucket(
        self, table: OrderedDict[Any, TokenBucket], key: Hashable, size: int, now: float
    ) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            if len(table) >= size:
                table.popitem(last=False)
            bucket = table[key] = TokenBucket(self.receiver_rate, self.receiver_burst, now)
        else:
            table.move_to_end(key)
        return bucket

    def receive_nack(
        self, receiver_id: int, address: Hashable, entries: Iterable[NackEntry], now: float
    ) -> bool:
        """One NACK datagram from ``receiver_id`` at ``address``; False if refused whole.

        Refused whole: over a rate limit (``nack_rate_limited``) or more than 16 entries
        (``bad_nack``). Otherwise each entry is taken or counted (``nack_unknown_frame``: a
        frame not held; ``bad_nack``: ``needed`` outside 1 … k).
        """
        self._expire(now)
        by_id = self._bucket(self._by_receiver, receiver_id, self.max_receivers, now)
        by_addr = self._bucket(self._by_address, address, self.max_addresses, now)
        if not (by_addr.take(now) & by_id.take(now)):  # `&`: both buckets pay
            self.counters["nack_rate_limited"] += 1
            return False
        items = list(entries)[: MAX_NACK_ENTRIES + 1]
        if not items or len(items) > MAX_NACK_ENTRIES:
            self.counters["bad_nack"] += 1
            return False
        self.counters["nacks"] += 1
        for entry in items:
            frame = self._frames.get(entry.frame_id)
            if frame is None:
                self.counters["nack_unknown_frame"] += 1
                continue
            if not 1 <= entry.needed <= frame.k:
                self.counters["bad_nack"] += 1
                continue
            self.counters["nack_entries"] += 1
            if frame.pending == 0:
                frame.window_end = now + self.window
            frame.pending = max(frame.pending, entry.needed)
        return True

    def get_timer(self) -> float | None:
        """The end of the earliest open aggregation window (seconds), or ``None``."""
        ends = [f.window_end for f in self._frames.values() if f.pending]
        return min(ends) if ends else None

    def handle_timer(self, now: float) -> None:
        """Close the aggregation windows that ended by ``now``; queue their repair orders."""
        self._expire(now)
        for frame_id, frame in self._frames.items():
            if not frame.pending or frame.window_end > now:
                continue
            wanted, frame.pending = frame.pending, 0
            recent = frame.recent
            if recent:
                while recent and recent[0][0] <= now - self.holdoff:
                    recent.popleft()
                wanted -= sum(n for _, n in recent)
            if wanted <= 0:
                continue
            wanted += frame.margin
            budget = int(self.repair_fraction * self._sent_total) - self._repaired_total
            count = min(wanted, frame.limit - frame.nack_repair, budget)
            if count < wanted:
                self.counters["repair_budget_exhausted"] += 1
            if count <= 0:
                continue
            self._out.append(RepairOrder(frame_id, frame.next_esi, count))
            frame.next_esi += count
            frame.nack_repair += count
            if frame.recent is None:
                frame.recent = deque(maxlen=8)
            frame.recent.append((now, count))
            self._repaired.append((now, count))
            self._repaired_total += count
            self.counters["repair_orders"] += 1
            self.counters["repair_symbols"] += count

    def repairs_to_send(self) -> list[RepairOrder]:
        """The repair orders queued by :meth:`handle_timer`, once."""
        out, self._out = self._out, []
        return out
