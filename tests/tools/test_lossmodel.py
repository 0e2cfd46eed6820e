"""tools/lossmodel.py: Gilbert–Elliott and Bernoulli loss, checked against their theory.

Pure and seeded. Tolerances are 4 standard deviations of the estimator over ``N`` draws,
from the model's own theory (module docstring of ``tools/lossmodel.py``):

* loss rate of the simple Gilbert chain: the indicator of state Bad has autocorrelation
  ``λ^k`` with ``λ = 1 − p − r``, so ``Var(mean) ≈ π_B (1 − π_B) (1 + λ) / ((1 − λ) N)``;
* mean burst: about ``N · π_G · p`` bursts, each geometric with mean ``1/r`` and variance
  ``(1 − r) / r²``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from tests.tools.toolkit import load_tool

N = 100_000
SIGMAS = 4.0


lm = load_tool("lossmodel")


def gilbert_sigmas(avg: float, mean_burst: float, n: int) -> tuple[float, float]:
    """Standard deviations of the observed loss rate and mean burst (simple Gilbert)."""
    r = 1.0 / mean_burst
    p = avg / (mean_burst * (1.0 - avg))
    lam = 1.0 - p - r
    sigma_loss = math.sqrt(avg * (1.0 - avg) * (1.0 + lam) / ((1.0 - lam) * n))
    bursts = n * (1.0 - avg) * p
    sigma_burst = math.sqrt((1.0 - r) / (r * r) / bursts)
    return sigma_loss, sigma_burst


@pytest.mark.parametrize(
    ("avg", "mean_burst", "seed"),
    [(0.02, 4.0, 1), (0.05, 3.0, 2), (0.10, 5.0, 3), (0.01, 1.5, 4), (0.05, 4.0, 5)],
)
def test_gilbert_from_loss_gives_its_average_loss_and_mean_burst(
    avg: float, mean_burst: float, seed: int
) -> None:
    model = lm.GilbertElliott.from_loss(avg=avg, mean_burst=mean_burst, seed=seed)
    assert model.average_loss == pytest.approx(avg)
    assert model.expected_mean_burst == pytest.approx(mean_burst)
    stats = lm.burst_stats(lm.loss_pattern(model, N))
    sigma_loss, sigma_burst = gilbert_sigmas(avg, mean_burst, N)
    assert stats.datagrams == N
    assert abs(stats.loss_rate - avg) <= SIGMAS * sigma_loss, (stats.as_dict(), sigma_loss)
    assert abs(stats.mean_burst - mean_burst) <= SIGMAS * sigma_burst, (
        stats.as_dict(),
        sigma_burst,
    )
    # Bursty, not independent: far above the Bernoulli mean burst of 1 / (1 - avg).
    if mean_burst >= 3.0:
        assert stats.mean_burst > 2.0 / (1.0 - avg)
    assert stats.max_burst >= mean_burst


def test_general_gilbert_elliott_matches_its_stationary_formulas() -> None:
    """Loss in both states (k < 1, h > 0): average loss and mean burst from the formulas."""
    model = lm.GilbertElliott(p=0.01, r=0.2, loss_good=0.005, loss_bad=0.6, seed=11)
    pi_bad = 0.01 / 0.21
    assert model.average_loss == pytest.approx((1 - pi_bad) * 0.005 + pi_bad * 0.6)
    stats = lm.burst_stats(lm.loss_pattern(model, N))
    # Looser than 4 sigma of the simple model: the hidden chain adds variance; 10 % relative.
    assert stats.loss_rate == pytest.approx(model.average_loss, rel=0.10)
    assert stats.mean_burst == pytest.approx(model.expected_mean_burst, rel=0.10)
    assert 1.5 < model.expected_mean_burst < 2.0  # between Bernoulli (~1.03) and 1/r = 5


def test_mean_burst_one_over_one_minus_avg_is_bernoulli() -> None:
    """p + r = 1 makes the chain memoryless: the same figures as independent loss."""
    avg = 0.1
    model = lm.GilbertElliott.from_loss(avg=avg, mean_burst=1.0 / (1.0 - avg), seed=5)
    assert model.p + model.r == pytest.approx(1.0)
    assert model.expected_mean_burst == pytest.approx(lm.Bernoulli(avg).expected_mean_burst)


@pytest.mark.parametrize(("loss", "seed"), [(0.01, 1), (0.05, 2), (0.3, 3)])
def test_bernoulli_mean_burst_is_one_over_one_minus_p(loss: float, seed: int) -> None:
    model = lm.Bernoulli(loss, seed=seed)
    assert model.expected_mean_burst == pytest.approx(1.0 / (1.0 - loss))
    stats = lm.burst_stats(lm.loss_pattern(model, N))
    sigma_loss = math.sqrt(loss * (1.0 - loss) / N)
    assert abs(stats.loss_rate - loss) <= SIGMAS * sigma_loss
    # Runs are geometric: mean 1/(1-p), variance p/(1-p)^2, about N p (1-p) of them.
    sigma_burst = math.sqrt(loss / (1.0 - loss) ** 2 / (N * loss * (1.0 - loss)))
    assert abs(stats.mean_burst - 1.0 / (1.0 - loss)) <= SIGMAS * sigma_burst


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: lm.GilbertElliott.from_loss(0.05, 4.0, seed=seed),
        lambda seed: lm.Bernoulli(0.05, seed=seed),
    ],
    ids=["gilbert-elliott", "bernoulli"],
)
def test_a_seed_reproduces_the_pattern(make: Callable[[int], Any]) -> None:
    first = lm.loss_pattern(make(42), 5000)
    assert lm.loss_pattern(make(42), 5000) == first
    assert lm.loss_pattern(make(43), 5000) != first
    assert any(first) and not all(first)


def test_a_passed_generator_is_used_and_seed_plus_rng_is_refused() -> None:
    by_seed = lm.loss_pattern(lm.GilbertElliott.from_loss(0.05, 4.0, seed=9), 3000)
    by_rng = lm.loss_pattern(lm.GilbertElliott.from_loss(0.05, 4.0, rng=random.Random(9)), 3000)
    assert by_rng == by_seed
    with pytest.raises(ValueError, match="either seed or rng"):
        lm.Bernoulli(0.1, seed=1, rng=random.Random(1))


def test_apply_loss_keeps_the_survivors_in_order() -> None:
    items = list(range(10_000))
    pattern = lm.loss_pattern(lm.GilbertElliott.from_loss(0.05, 4.0, seed=3), len(items))
    kept = lm.apply_loss(lm.GilbertElliott.from_loss(0.05, 4.0, seed=3), items)
    assert kept == [i for i, lost in zip(items, pattern, strict=True) if not lost]
    assert len(kept) == pattern.count(False)


def test_burst_stats_counts_runs_exactly() -> None:
    pattern = [c == "x" for c in ".xx..x...xxxx.x"]
    stats = lm.burst_stats(pattern)
    assert (stats.datagrams, stats.lost, stats.bursts, stats.max_burst) == (15, 8, 4, 4)
    assert stats.mean_burst == 2.0
    assert stats.loss_rate == pytest.approx(8 / 15)
    empty = lm.burst_stats([])
    assert (empty.loss_rate, empty.mean_burst) == (0.0, 0.0)


def test_zero_loss_never_drops() -> None:
    assert not any(lm.loss_pattern(lm.GilbertElliott.from_loss(0.0, 4.0, seed=1), 10_000))
    assert not any(lm.loss_pattern(lm.Bernoulli(0.0, seed=1), 10_000))
    assert lm.GilbertElliott.from_loss(0.0, 4.0).expected_mean_burst == 0.0


@pytest.mark.parametrize(
    ("avg", "mean_burst", "message"),
    [
        (-0.1, 4.0, "bad average loss"),
        (1.0, 4.0, "bad average loss"),
        (float("nan"), 4.0, "bad average loss"),
        (0.05, 0.5, "bad mean burst"),
        (0.6, 1.2, "need at least 1.500"),
    ],
)
def test_from_loss_refuses_impossible_parameters(
    avg: float, mean_burst: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        lm.GilbertElliott.from_loss(avg, mean_burst)


def test_constructor_refuses_bad_probabilities() -> None:
    with pytest.raises(ValueError, match="bad p"):
        lm.GilbertElliott(p=1.5, r=0.2)
    with pytest.raises(ValueError, match="never changes state"):
        lm.GilbertElliott(p=0.0, r=0.0)
    with pytest.raises(ValueError, match="bad loss"):
        lm.Bernoulli(1.01)
