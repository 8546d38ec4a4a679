"""evaluators.overoptimisation: the best-of-n KL, the best-of-n curve against enumerating
every subset, and the Gao et al. fits recovering known coefficients and peaks."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from evaluators.overoptimisation import best_of_n_curve, bon_kl, fit_bon, fit_rl


def test_bon_kl_hand_values_and_growth():
    assert bon_kl(1) == 0.0
    assert bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert bon_kl(16) == pytest.approx(math.log(16) - 15 / 16)
    values = [bon_kl(n) for n in range(1, 2000)]
    assert all(b > a for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError):
        bon_kl(0)


def _exact_bon_kl(probs: np.ndarray, n: int) -> float:
    """KL(best-of-n || base) of a base distribution over outcomes of distinct, increasing
    reward: the best of n is outcome i with probability F(i)^n - F(i-1)^n."""
    cdf = np.cumsum(probs)
    bon = cdf**n - np.concatenate([[0.0], cdf[:-1]]) ** n
    keep = bon > 0
    return float((bon[keep] * np.log(bon[keep] / probs[keep])).sum())


def test_bon_kl_bounds_the_exact_kl_and_is_tight_for_a_continuous_reward():
    rng = np.random.default_rng(0)
    for n in (2, 4, 16, 64):
        fine = np.full(20_000, 1 / 20_000)  # many equally likely outcomes: nearly continuous
        assert _exact_bon_kl(fine, n) == pytest.approx(bon_kl(n), abs=2e-3)
        for size in (2, 3, 10):  # few outcomes: the best of n repeats, the KL is smaller
            probs = rng.dirichlet(np.ones(size))
            assert _exact_bon_kl(probs, n) < bon_kl(n)


def _brute_force(proxy: np.ndarray, gold: np.ndarray, n: int) -> tuple[float, float]:
    """Mean over prompts and over every n-subset of the proxy and gold of the subset's best
    by proxy, ties going to the later position."""
    proxies, golds = [], []
    for p_row, g_row in zip(proxy, gold, strict=True):
        subsets = list(itertools.combinations(range(len(p_row)), n))
        best = [max(s, key=lambda j: (p_row[j], j)) for s in subsets]
        proxies.append(np.mean([p_row[j] for j in best]))
        golds.append(np.mean([g_row[j] for j in best]))
    return float(np.mean(proxies)), float(np.mean(golds))


@pytest.mark.parametrize("ties", [False, True])
def test_best_of_n_curve_matches_enumerating_every_subset(ties):
    rng = np.random.default_rng(4 + ties)
    proxy = rng.integers(0, 3, (3, 6)).astype(float) if ties else rng.normal(size=(3, 6))
    gold = rng.normal(size=(3, 6))
    curve = best_of_n_curve(proxy, gold, ns=range(1, 7))
    for point in curve:
        brute_proxy, brute_gold = _brute_force(proxy, gold, point["n"])
        assert point["proxy"] == pytest.approx(brute_proxy, abs=1e-12)
        assert point["gold"] == pytest.approx(brute_gold, abs=1e-12)
        assert point["kl"] == bon_kl(point["n"]) and point["d"] == pytest.approx(
            math.sqrt(point["kl"])
        )
    assert curve[0]["proxy"] == pytest.approx(proxy.mean())
    assert curve[0]["gold"] == pytest.approx(gold.mean())
    assert all(b["proxy"] >= a["proxy"] for a, b in itertools.pairwise(curve))
    json.dumps(curve)


def test_best_of_n_curve_at_large_n_and_bad_input():
    rng = np.random.default_rng(6)
    proxy = rng.normal(size=(2, 3000))
    curve = best_of_n_curve(proxy, proxy, ns=[1, 1500, 3000])  # binomials past a float
    assert np.isfinite([p["proxy"] for p in curve]).all()
    assert curve[2]["proxy"] == pytest.approx(proxy.max(axis=1).mean())
    with pytest.raises(ValueError, match="n must be"):
        best_of_n_curve(proxy, proxy, ns=[3001])
    with pytest.raises(ValueError, match="same shape"):
        best_of_n_curve(proxy, proxy[:, :5], ns=[1])


def _bon(d, alpha, beta):
    return d * (alpha - beta * d)


def _rl(d, alpha, beta):
    return d * (alpha - beta * np.log(np.where(d > 0, d, 1.0)))


CASES = [  # (fit, form, alpha, beta, d points, true peak)
    (fit_bon, _bon, 1.0, 0.25, np.linspace(0.0, 5.0, 30), 2.0),
    (fit_rl, _rl, 1.0, 0.5, np.linspace(0.0, 8.0, 30), math.e),
]


@pytest.mark.parametrize(("fit", "form", "alpha", "beta", "d", "peak"), CASES)
def test_fits_recover_known_coefficients_and_peak(fit, form, alpha, beta, d, peak):
    exact = fit(d, form(d, alpha, beta))  # d = 0 included
    assert exact["alpha"] == pytest.approx(alpha) and exact["beta"] == pytest.approx(beta)
    assert exact["d_star"] == pytest.approx(peak) and exact["r2"] == pytest.approx(1.0)
    assert exact["r_star"] == pytest.approx(float(form(np.array(peak), alpha, beta)))
    assert exact["n"] == 29 and exact["rmse"] == pytest.approx(0.0, abs=1e-9)  # d = 0 left out

    rng = np.random.default_rng(7)
    estimates, errors = [], []
    for _ in range(300):
        noisy = fit(d, form(d, alpha, beta) + rng.normal(0, 0.05, len(d)))
        estimates.append((noisy["alpha"], noisy["beta"], noisy["d_star"]))
        errors.append((noisy["alpha_se"], noisy["beta_se"]))
    estimates, errors = np.array(estimates), np.array(errors)
    first = fit(d, form(d, alpha, beta) + np.random.default_rng(8).normal(0, 0.05, len(d)))
    assert abs(first["alpha"] - alpha) < 3 * first["alpha_se"]
    assert abs(first["beta"] - beta) < 3 * first["beta_se"]
    assert first["d_star"] == pytest.approx(peak, rel=0.1) and first["r2"] > 0.9
    # the standard errors are the spread of the estimates over noise draws
    spread = estimates[:, :2].std(axis=0, ddof=1)
    ratio = spread / errors.mean(axis=0)
    assert np.all((ratio > 0.85) & (ratio < 1.15)), ratio
    assert np.all(np.abs(estimates[:, :2].mean(axis=0) - [alpha, beta]) < 4 * spread / 300**0.5)
    json.dumps(first)


def test_fits_without_a_peak_and_bad_input():
    d = np.linspace(0.5, 4.0, 10)
    rising = fit_bon(d, _bon(d, 1.0, -0.1))  # convex: never turns down
    assert rising["beta"] < 0 and rising["d_star"] is None and rising["r_star"] is None
    assert fit_rl(d, _rl(d, 1.0, -0.2))["d_star"] is None
    for fit in (fit_bon, fit_rl):
        with pytest.raises(ValueError, match="at least 3 points"):
            fit([1.0, 2.0], [0.5, 0.6])
        with pytest.raises(ValueError, match="distinct"):
            fit([0.0, 2.0, 2.0, 2.0], [0.0, 0.5, 0.6, 0.7])
        with pytest.raises(ValueError, match="negative"):
            fit([-1.0, 1.0, 2.0], [0.0, 0.5, 0.6])
        with pytest.raises(ValueError, match="same length"):
            fit([0.0, 1.0, 2.0], [0.0, 0.5])


def test_a_point_at_the_origin_adds_no_degree_of_freedom():
    """R(0) = 0 by form: the point d = 0 neither moves the fit nor narrows its errors."""
    d = np.array([0.4, 0.9, 1.3, 1.8])
    r = _bon(d, 0.1, 0.05) + np.array([0.004, -0.003, 0.002, -0.001])
    for fit in (fit_bon, fit_rl):
        without, with_origin = fit(d, r), fit(np.r_[0.0, d], np.r_[0.0, r])
        for key in ("alpha", "beta", "alpha_se", "beta_se", "r2", "n"):
            assert with_origin[key] == pytest.approx(without[key]), key
    with pytest.raises(ValueError, match="at least 3 points at d > 0"):
        fit_rl([0.0, 0.5, 0.9], [0.0, 0.03, -0.01])
