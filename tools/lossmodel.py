"""Seeded datagram loss models: Gilbert–Elliott (bursty) and Bernoulli (independent).

Pure code: no sockets, no clock. Every model draws from one ``random.Random`` (passed in, or
made from ``seed``), so a seed reproduces a loss pattern exactly. A model answers one question
per datagram, :meth:`drop`, in arrival order.

Gilbert–Elliott model
---------------------

A two-state Markov chain, one step per datagram (E. N. Gilbert, "Capacity of a burst-noise
channel", Bell Syst. Tech. J. 39, 1960; E. O. Elliott, "Estimates of error rates for codes on
burst-noise channels", Bell Syst. Tech. J. 42, 1963)::

            p (G→B)
      ┌───┐ ──────▶ ┌───┐
      │ G │         │ B │     1 − p: stay Good,  1 − r: stay Bad
      └───┘ ◀────── └───┘
            r (B→G)

A datagram is lost with probability ``loss_good`` in state Good and ``loss_bad`` in state
Bad. In Gilbert's and Elliott's notation the *success* probabilities are ``k = 1 − loss_good``
and ``h = 1 − loss_bad``; Gilbert's original model is ``k = 1`` (``loss_good = 0``), and the
"simple Gilbert" model used by :meth:`GilbertElliott.from_loss` also has ``h = 0``
(``loss_bad = 1``: every datagram in Bad is lost).

Stationary state probabilities and average loss::

    π_B = p / (p + r),   π_G = r / (p + r)
    avg = π_G · loss_good + π_B · loss_bad

The chain starts in a state drawn from (π_G, π_B), so the loss process is stationary from
the first datagram.

A *burst* is a maximal run of consecutive lost datagrams: a "loss period" of RFC 3357 §5,
and the burst of RFC 3611 §4.7.2 (and RFC 6958, which reports the same metric) with
``Gmin = 1``. The mean burst length of a stationary process is the loss rate divided by the
rate at which bursts start (a received datagram followed by a lost one)::

    P(start) = Σ_s Σ_s' π_s · (1 − loss_s) · P(s → s') · loss_s'
    mean_burst = avg / P(start)

For the simple Gilbert model a burst is exactly one stay in Bad, geometric with mean
``1 / r``, hence the constructor from (average loss, mean burst length)::

    r = 1 / mean_burst
    p = r · avg / (1 − avg) = avg / (mean_burst · (1 − avg))

which needs ``mean_burst ≥ 1`` and ``p ≤ 1``, i.e. ``mean_burst ≥ avg / (1 − avg)``. With
``mean_burst = 1 / (1 − avg)`` the two states are memoryless (``p + r = 1``) and the model is
exactly Bernoulli loss: independent drops of probability ``p`` have mean burst
``1 / (1 − p)``, which :class:`Bernoulli` reports.

Usage::

    from lossmodel import Bernoulli, GilbertElliott, apply_loss, burst_stats, loss_pattern

    model = GilbertElliott.from_loss(avg=0.02, mean_burst=4.0, seed=1)
    kept = apply_loss(model, datagrams)          # the datagrams that survive, in order
    stats = burst_stats(loss_pattern(GilbertElliott.from_loss(0.05, 4.0, seed=2), 100_000))
    stats.loss_rate, stats.mean_burst            # ≈ 0.05, ≈ 4.0

``tools/lossy_relay.py`` applies these models to real datagrams in the namespace lab.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")


class LossModel(Protocol):
    """What a loss model offers: one decision per datagram, and its expected figures."""

    def drop(self) -> bool:
        """``True`` when the next datagram is lost."""
        ...

    @property
    def average_loss(self) -> float:
        """Long-run fraction of datagrams lost (0..1)."""
        ...

    @property
    def expected_mean_burst(self) -> float:
        """Long-run mean burst length in datagrams (0.0 when nothing is ever lost)."""
        ...

    def describe(self) -> dict[str, object]:
        """The model's kind and parameters, JSON-serialisable."""
        ...


def _rng(seed: int | None, rng: random.Random | None) -> random.Random:
    if rng is not None and seed is not None:
        raise ValueError("give either seed or rng, not both")
    return rng if rng is not None else random.Random(seed)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"bad {name} {value!r}: must be a probability in 0..1")


class Bernoulli:
    """Independent loss: each datagram is lost with probability ``loss`` (0..1).

    Expected mean burst length ``1 / (1 − loss)`` datagrams (``inf`` at ``loss = 1``).

    Raises:
        ValueError: ``loss`` outside 0..1, or both ``seed`` and ``rng`` given.

    """

    def __init__(
        self, loss: float, seed: int | None = None, rng: random.Random | None = None
    ) -> None:
        _check_probability("loss", loss)
        self.loss = loss
        self.rng = _rng(seed, rng)

    def drop(self) -> bool:
        """``True`` when the next datagram is lost (one draw from the generator)."""
        return self.rng.random() < self.loss

    @property
    def average_loss(self) -> float:
        """``loss``."""
        return self.loss

    @property
    def expected_mean_burst(self) -> float:
        """``1 / (1 − loss)`` datagrams; 0.0 when ``loss = 0``, ``inf`` when ``loss = 1``."""
        if self.loss == 0.0:
            return 0.0
        if self.loss == 1.0:
            return math.inf
        return 1.0 / (1.0 - self.loss)

    def describe(self) -> dict[str, object]:
        """``{"kind": "bernoulli", "loss": ..., "expected_mean_burst": ...}``."""
        return {
            "kind": "bernoulli",
            "loss": self.loss,
            "expected_mean_burst": self.expected_mean_burst,
        }


class GilbertElliott:
    """Two-state bursty loss (Good/Bad Markov chain, one step per datagram); see the module.

    ``p``: probability Good → Bad per datagram; ``r``: probability Bad → Good; ``loss_good`` /
    ``loss_bad``: probability that a datagram is lost in that state (Gilbert's ``1 − k`` and
    ``1 − h``). All four are probabilities in 0..1, and ``p + r > 0``. The initial state is
    drawn from the stationary distribution; :attr:`bad` is the current state.

    Raises:
        ValueError: a parameter outside 0..1, ``p = r = 0``, or both ``seed`` and ``rng``.

    """

    def __init__(
        self,
        p: float,
        r: float,
        loss_good: float = 0.0,
        loss_bad: float = 1.0,
        seed: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        for name, value in (("p", p), ("r", r), ("loss_good", loss_good), ("loss_bad", loss_bad)):
            _check_probability(name, value)
        if p + r == 0.0:
            raise ValueError("bad p = r = 0: the chain never changes state (no stationary loss)")
        self.p = p
        self.r = r
        self.loss_good = loss_good
        self.loss_bad = loss_bad
        self.rng = _rng(seed, rng)
        self.bad = self.rng.random() < self.pi_bad

    @classmethod
    def from_loss(
        cls,
        avg: float,
        mean_burst: float,
        seed: int | None = None,
        rng: random.Random | None = None,
    ) -> GilbertElliott:
        """Simple Gilbert model with average loss ``avg`` and mean burst ``mean_burst``.

        ``avg`` is a fraction in 0..1 (0.02 = 2 %); ``mean_burst`` is in datagrams.
        ``loss_good = 0``, ``loss_bad = 1``, ``r = 1 / mean_burst``,
        ``p = avg / (mean_burst · (1 − avg))``.

        Raises:
            ValueError: ``avg`` outside 0..1 (1 excluded), ``mean_burst < 1``, or
                ``mean_burst < avg / (1 − avg)`` (``p`` would exceed 1).

        """
        if not 0.0 <= avg < 1.0 or math.isnan(avg):
            raise ValueError(f"bad average loss {avg!r}: must be in 0..1 (1 excluded)")
        if not mean_burst >= 1.0:
            raise ValueError(f"bad mean burst {mean_burst!r}: must be at least 1 datagram")
        p = avg / (mean_burst * (1.0 - avg))
        if p > 1.0:
            raise ValueError(
                f"bad mean burst {mean_burst!r} for average loss {avg!r}: "
                f"need at least {avg / (1.0 - avg):.3f} datagrams"
            )
        return cls(p=p, r=1.0 / mean_burst, loss_good=0.0, loss_bad=1.0, seed=seed, rng=rng)

    @property
    def pi_bad(self) -> float:
        """Stationary probability of the Bad state, ``p / (p + r)``."""
        return self.p / (self.p + self.r)

    def drop(self) -> bool:
        """``True`` when the next datagram is lost; then the chain takes one step.

        Two draws from the generator per datagram (loss in the current state, transition).
        """
        lost = self.rng.random() < (self.loss_bad if self.bad else self.loss_good)
        self.bad = self.rng.random() >= self.r if self.bad else self.rng.random() < self.p
        return lost

    @property
    def average_loss(self) -> float:
        """``π_G · loss_good + π_B · loss_bad``."""
        return (1.0 - self.pi_bad) * self.loss_good + self.pi_bad * self.loss_bad

    @property
    def expected_mean_burst(self) -> float:
        """``avg / P(received then lost)`` datagrams (module docstring); 0.0 when lossless."""
        avg = self.average_loss
        if avg == 0.0:
            return 0.0
        # P(the next datagram is lost | the current state)
        next_lost_good = (1.0 - self.p) * self.loss_good + self.p * self.loss_bad
        next_lost_bad = self.r * self.loss_good + (1.0 - self.r) * self.loss_bad
        start = (1.0 - self.pi_bad) * (1.0 - self.loss_good) * next_lost_good + (
            self.pi_bad * (1.0 - self.loss_bad) * next_lost_bad
        )
        return avg / start if start > 0.0 else math.inf

    def describe(self) -> dict[str, object]:
        """Kind, ``p``, ``r``, per-state loss, expected average loss and mean burst."""
        return {
            "kind": "gilbert-elliott",
            "p": self.p,
            "r": self.r,
            "loss_good": self.loss_good,
            "loss_bad": self.loss_bad,
            "loss": self.average_loss,
            "expected_mean_burst": self.expected_mean_burst,
        }


@dataclass
class BurstCounter:
    """Streaming loss and burst counts over a sequence of datagrams, in order.

    ``datagrams``: datagrams seen; ``lost``: of them lost; ``bursts``: maximal runs of
    consecutive losses (RFC 3357 loss periods); ``max_burst``: the longest run, in datagrams.
    """

    datagrams: int = 0
    lost: int = 0
    bursts: int = 0
    max_burst: int = 0
    _run: int = 0

    def record(self, lost: bool) -> None:
        """Count one datagram (``lost`` = it was dropped)."""
        self.datagrams += 1
        if lost:
            self.lost += 1
            if self._run == 0:
                self.bursts += 1
            self._run += 1
            self.max_burst = max(self.max_burst, self._run)
        else:
            self._run = 0

    @property
    def loss_rate(self) -> float:
        """``lost / datagrams`` (0.0 before the first datagram)."""
        return self.lost / self.datagrams if self.datagrams else 0.0

    @property
    def mean_burst(self) -> float:
        """``lost / bursts`` datagrams (0.0 with no loss)."""
        return self.lost / self.bursts if self.bursts else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """The counts and rates as a JSON-serialisable dict."""
        return {
            "datagrams": self.datagrams,
            "lost": self.lost,
            "bursts": self.bursts,
            "max_burst": self.max_burst,
            "loss_rate": self.loss_rate,
            "mean_burst": self.mean_burst,
        }


def loss_pattern(model: LossModel, count: int) -> list[bool]:
    """``count`` successive decisions of ``model`` (``True`` = lost).

    Raises:
        ValueError: ``count`` is negative.

    """
    if count < 0:
        raise ValueError(f"bad count {count}: must be >= 0")
    return [model.drop() for _ in range(count)]


def apply_loss(model: LossModel, items: Iterable[T]) -> list[T]:
    """The items that survive ``model``, in order (one decision per item)."""
    return [item for item in items if not model.drop()]


def burst_stats(pattern: Iterable[bool]) -> BurstCounter:
    """Loss and burst counts of a loss pattern (``True`` = lost)."""
    counter = BurstCounter()
    for lost in pattern:
        counter.record(lost)
    return counter
