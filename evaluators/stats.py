"""Uncertainty for evaluation figures: bootstrap intervals, paired differences, spread over
seeds, and pass@k.

Pure numpy; every function returns plain floats, ints, None, lists and dicts, so a result can
go straight into a JSON report.

    bootstrap_interval(correct)          # {"mean", "low", "high", "level", "n"}
    paired_bootstrap(before, after)      # the same, of the per-item difference after - before
    seed_spread([0.41, 0.44, 0.43])      # {"mean", "std", "min", "max", "n_seeds"}
    pass_at_k(n=8, c=3, k=4)             # unbiased pass@k of one item (Chen et al. 2021)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CHUNK = 1000  # resamples drawn at a time: memory is CHUNK x n indices, whatever `samples` is


def _bootstrap_means(values: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """`samples` means of `values` resampled with replacement, drawn CHUNK at a time."""
    means = np.empty(samples)
    for start in range(0, samples, CHUNK):
        count = min(CHUNK, samples - start)
        rows = rng.integers(0, len(values), (count, len(values)))
        means[start : start + count] = values[rows].mean(axis=1)
    return means


def _percentile_interval(
    values: np.ndarray, samples: int, seed: int, level: float
) -> dict[str, Any]:
    """{"mean", "low", "high", "level", "n"}: the percentile bootstrap interval of the mean."""
    if values.ndim != 1 or not len(values):
        raise ValueError("need a non-empty 1-D sequence of per-item values")
    if not np.all(np.isfinite(values)):
        raise ValueError("per-item values must be finite (got NaN or inf)")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1) (got {level})")
    if samples < 1:
        raise ValueError(f"samples must be at least 1 (got {samples})")
    means = _bootstrap_means(values, samples, np.random.default_rng(seed))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high),
            "level": level, "n": len(values)}  # fmt: skip


def bootstrap_interval(
    values: Sequence[float], *, samples: int = 10_000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """The mean of per-item `values` (e.g. each test item's 0/1 correctness) and its
    percentile bootstrap interval at `level`: {"mean", "low", "high", "level", "n"}.

    Items are resampled with replacement `samples` times (1,000 resamples at a time, so
    memory stays bounded); the interval is the middle `level` of the resampled means. It
    describes the uncertainty from which items were drawn, not from sampling the model again.
    Deterministic for a given `seed`.
    """
    return _percentile_interval(np.asarray(values, np.float64), samples, seed, level)


def paired_bootstrap(before: Sequence[float], after: Sequence[float], *, samples: int = 10_000,
                     seed: int = 0, level: float = 0.95) -> dict[str, float]:  # fmt: skip
    """The mean of `after - before` over the same items (e.g. each test item's correctness
    under two models) and its percentile bootstrap interval at `level`: items are resampled
    with replacement, both scores of an item together, so the interval is of the difference
    on these items (their pairing removes the items' own difficulty from its width)."""
    a, b = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError("before and after need the same, non-zero number of items")
    return _percentile_interval(b - a, samples, seed, level)


def seed_spread(values: Sequence[float]) -> dict[str, Any]:
    """One figure (e.g. test accuracy) measured over several training seeds:
    {"mean", "std", "min", "max", "n_seeds"}. `std` is the sample standard deviation
    (ddof=1), an estimate of the seed-to-seed spread; None with a single seed, where there
    is no spread to estimate (not 0, which would claim the figure is exact)."""
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or not len(x):
        raise ValueError("need a non-empty 1-D sequence of one figure per seed")
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else None,
            "min": float(x.min()), "max": float(x.max()), "n_seeds": len(x)}  # fmt: skip


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from `n` samples of one item of which `c` are correct
    (Chen et al. 2021, "Evaluating large language models trained on code"): the chance that
    a k-subset drawn without replacement from the n holds at least one correct sample,
    1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the binomials (they
    overflow a float for a few hundred samples); 1 when every k-subset must hold a correct
    sample (n - c < k).
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n (got k={k}, n={n})")
    if not 0 <= c <= n:
        raise ValueError(f"the correct count must be in [0, n] (got c={c}, n={n})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_k_items(correct_counts: Sequence[int], n: int, k: int) -> list[float]:
    """pass@k of each item (see `pass_at_k`), every item having `n` samples of which
    `correct_counts[i]` are correct: per-item values, so the caller can average them and
    bootstrap the mean (`bootstrap_interval`)."""
    return [pass_at_k(n, int(c), k) for c in correct_counts]
