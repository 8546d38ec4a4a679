"""Reward-model over-optimisation: best-of-n curves and the functional forms of Gao, Schulman
& Hilton 2022 ("Scaling laws for reward model overoptimization").

Optimising a proxy reward moves the policy away from its start; the gold reward first rises
with the proxy, then falls. Gao et al. measure the distance as d = sqrt(KL(policy || start))
and fit the gold reward's gain over the start, R(d), with

    best-of-n:  R(d) = d (alpha - beta d)        peak at d* = alpha / (2 beta)
    RL:         R(d) = d (alpha - beta log d)    peak at d* = exp(alpha / beta - 1)

    curve = best_of_n_curve(proxy, gold, ns=[1, 2, 4, 8, 16])   # (P, N) rewards of samples
    fit = fit_bon([p["d"] for p in curve], [p["gold"] - curve[0]["gold"] for p in curve])
    fit["d_star"], fit["r_star"]

Pure numerics (numpy and scipy.special); results are plain floats, ints, None and dicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import gammaln


def bon_kl(n: int) -> float:
    """log n - (n - 1) / n, the KL of best-of-n sampling from its base policy as Gao et al.
    (and Stiennon et al. 2020) use it for the x axis of best-of-n curves.

    It is an upper bound on the true KL(best-of-n || base), not the KL itself: it is exact
    only in the limit of a continuous reward with no ties, and the true KL can be much
    smaller when outcomes repeat (Beirami et al. 2024, "Theoretical guarantees on the
    best-of-n alignment policy"). 0 at n = 1, increasing in n.
    """
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1 (got {n})")
    return math.log(n) - (n - 1) / n


def _max_weights(big_n: int, n: int) -> np.ndarray:
    """(big_n,) probabilities that the i-th smallest of big_n (1-based) is the largest of a
    uniformly random n-subset: C(i-1, n-1) / C(big_n, n), in logs (the binomials overflow a
    float for big_n in the low thousands)."""
    i = np.arange(1, big_n + 1)
    weights = np.zeros(big_n)
    top = i >= n
    log_choose = gammaln(i[top]) - gammaln(n) - gammaln(i[top] - n + 1)  # log C(i-1, n-1)
    log_total = gammaln(big_n + 1) - gammaln(n + 1) - gammaln(big_n - n + 1)  # log C(N, n)
    weights[top] = np.exp(log_choose - log_total)
    return weights


def best_of_n_curve(
    proxy: np.ndarray | Sequence[Sequence[float]],
    gold: np.ndarray | Sequence[Sequence[float]],
    ns: Sequence[int],
) -> list[dict[str, float]]:
    """The best-of-n curve from N samples per prompt: for each n in `ns`,
    {"n", "kl", "d", "proxy", "gold"}, the expected proxy and gold reward of the sample with
    the highest proxy among n drawn without replacement from a prompt's N, averaged over the
    P prompts; "kl" is `bon_kl(n)` and "d" its square root.

    `proxy` and `gold` are (P, N) rewards of the same samples. The expectation is exact over
    all n-subsets of the N, without drawing any (the unbiased order-statistics estimator
    Gao et al. use): with a prompt's samples sorted by proxy, the i-th smallest (1-based) is
    the best of a random n-subset with probability C(i-1, n-1) / C(N, n). Ties in proxy are
    broken by position: of equal proxies, the sample later in the row counts as the higher,
    so the result does not depend on the sort's whims. Every n must be in [1, N].
    """
    p, g = np.asarray(proxy, np.float64), np.asarray(gold, np.float64)
    if p.ndim != 2 or p.shape != g.shape or p.size == 0:
        raise ValueError(f"proxy and gold must be (P, N) arrays of the same shape "
                         f"(got {p.shape} and {g.shape})")  # fmt: skip
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(g))):
        raise ValueError("proxy and gold rewards must be finite (got NaN or inf)")
    big_n = p.shape[1]
    if bad := [n for n in ns if not 1 <= n <= big_n]:
        raise ValueError(f"every n must be in [1, {big_n}] with {big_n} samples (got {bad})")
    order = np.argsort(p, axis=1, kind="stable")  # ties: the earlier position sorts lower
    p_sorted = np.take_along_axis(p, order, axis=1)
    g_sorted = np.take_along_axis(g, order, axis=1)
    curve = []
    for n in ns:
        weights = _max_weights(big_n, int(n))
        kl = bon_kl(int(n))
        curve.append({"n": int(n), "kl": kl, "d": math.sqrt(kl),
                      "proxy": float((p_sorted @ weights).mean()),
                      "gold": float((g_sorted @ weights).mean())})  # fmt: skip
    return curve


def _fit(form: str, d: Sequence[float], r: Sequence[float]) -> dict[str, Any]:
    """Least squares of R(d) = alpha * d - beta * f(d) with f(d) = d^2 (bon) or d log d (rl)."""
    x, y = np.asarray(d, np.float64), np.asarray(r, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"d and r must be 1-D and of the same length (got {x.shape}, {y.shape})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("d and r must be finite (got NaN or inf)")
    if np.any(x < 0):
        raise ValueError("d = sqrt(KL) cannot be negative")
    # Both forms pass through the origin: a point at d = 0 says nothing about alpha or beta
    # (its row of the design is zero), so it is left out rather than counted as a degree of
    # freedom it does not give.
    x, y = x[x > 0], y[x > 0]
    if len(x) < 3:
        raise ValueError(
            f"fitting alpha and beta needs at least 3 points at d > 0, to leave "
            f"one degree of freedom for their standard errors (got {len(x)})"
        )
    curvature = x**2 if form == "bon" else x * np.log(x)
    design = np.stack([x, -curvature], axis=1)
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    if rank < 2:  # all the d > 0 equal: alpha and beta trade off freely
        raise ValueError(f"the {form} form needs points at two or more distinct d > 0")
    residual = y - design @ coef
    rss = float(residual @ residual)
    dof = len(x) - 2
    cov = rss / dof * np.linalg.inv(design.T @ design)
    tss = float(((y - y.mean()) ** 2).sum())
    alpha, beta = float(coef[0]), float(coef[1])
    d_star = r_star = None  # beta <= 0: the fitted curve never turns down, no peak to report
    if beta > 0 and form == "bon":
        d_star, r_star = alpha / (2 * beta), alpha**2 / (4 * beta)
    elif beta > 0 and alpha / beta - 1 < 700:  # beyond: a peak past any float, none in effect
        d_star = math.exp(alpha / beta - 1)
        r_star = beta * d_star
    return {
        "form": form,
        "alpha": alpha,
        "beta": beta,
        "alpha_se": float(math.sqrt(cov[0, 0])),
        "beta_se": float(math.sqrt(cov[1, 1])),
        "r2": 1.0 - rss / tss if tss > 0 else (1.0 if rss == 0 else 0.0),
        "rmse": math.sqrt(rss / len(x)),
        "n": len(x),
        "d_star": d_star,
        "r_star": r_star,
    }


def fit_bon(d: Sequence[float], r: Sequence[float]) -> dict[str, Any]:
    """Fit Gao et al.'s best-of-n form R(d) = d (alpha - beta d) to points (d, r):
    {"form", "alpha", "beta", "alpha_se", "beta_se", "r2", "rmse", "n", "d_star", "r_star"}.

    `d` is sqrt(KL) per point, `r` the gold (or proxy) reward's gain over the start: the form
    has no intercept (R(0) = 0), so subtract the start's reward first. Points at d = 0 are
    accepted and left out (they say nothing about alpha or beta); n counts those at d > 0.
    The form is linear in alpha and beta, so the fit is ordinary least squares
    (numpy's lstsq) rather than scipy's iterative curve_fit: the same minimum of the squared
    error, found exactly, with no starting guess to get wrong. The standard errors are the
    usual OLS ones, sqrt(diag(s^2 (X'X)^-1)) with s^2 = RSS / (n - 2); they assume
    independent errors of equal size, and points along one run are correlated, so read them
    as a floor. r2 is 1 - RSS / TSS about the mean of r (it can be negative: there is no
    intercept); rmse is sqrt(RSS / n). d_star = alpha / (2 beta) is the fitted peak and
    r_star = R(d_star) = alpha^2 / (4 beta); both None when beta <= 0 (the fitted curve never
    turns down). Fewer than 3 points at d > 0, or fewer than 2 distinct ones: ValueError.
    """
    return _fit("bon", d, r)


def fit_rl(d: Sequence[float], r: Sequence[float]) -> dict[str, Any]:
    """Fit Gao et al.'s RL form R(d) = d (alpha - beta log d) to points (d, r); the same
    method and keys as `fit_bon` (points at d = 0 left out alike). The fitted
    peak is d_star = exp(alpha / beta - 1), with r_star = R(d_star) = beta d_star; both None
    when beta <= 0 (or when the peak is too far out for a float).
    """
    return _fit("rl", d, r)
