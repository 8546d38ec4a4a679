"""evaluators.stats: bootstrap intervals cover the truth about as often as they claim, the
paired interval holds 0 under the null, pass@k matches hand values and subset enumeration;
and accuracy_report / pass_at_k_report carry intervals around their means."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from evaluators.accuracy import accuracy_report, pass_at_k_report
from evaluators.stats import (
    bootstrap_interval,
    paired_bootstrap,
    pass_at_k,
    pass_at_k_items,
    seed_spread,
)
from tasks.kinship import KinshipConfig, KinshipTask


def _band(level: float, repetitions: int, sigmas: float = 3.0) -> tuple[float, float]:
    """The range a coverage over `repetitions` independent intervals falls in, `sigmas`
    binomial standard deviations around `level`."""
    half = sigmas * math.sqrt(level * (1 - level) / repetitions)
    return level - half, level + half


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_bootstrap_interval_covers_a_binomial_mean_at_its_level(level):
    rng = np.random.default_rng(1)
    p, n, repetitions = 0.3, 200, 400
    hits = 0
    for rep in range(repetitions):
        draws = (rng.random(n) < p).astype(int)
        interval = bootstrap_interval(draws, samples=1000, seed=rep, level=level)
        assert interval["low"] <= interval["mean"] <= interval["high"]
        hits += interval["low"] <= p <= interval["high"]
    low, high = _band(level, repetitions)
    assert low <= hits / repetitions <= high


def test_bootstrap_interval_fields_and_determinism():
    values = [1, 0, 0, 1, 1, 0, 1, 1]
    a = bootstrap_interval(values, samples=3000, seed=5)
    assert a == bootstrap_interval(values, samples=3000, seed=5)
    assert set(a) == {"mean", "low", "high", "level", "n"} and a["n"] == 8 and a["level"] == 0.95
    assert a["mean"] == pytest.approx(5 / 8)
    json.dumps(a)  # plain floats and ints
    # samples not a multiple of the 1,000-resample chunk still fill every resample
    b = bootstrap_interval(values, samples=1500, seed=5, level=0.5)
    assert 0 < b["low"] < a["mean"] < b["high"] < 1 and a["low"] < b["low"]
    same = bootstrap_interval([1, 1, 1])
    assert same["low"] == same["high"] == same["mean"] == 1.0
    for bad in ([], [[1, 0]], [0.5, float("nan")]):
        with pytest.raises(ValueError):
            bootstrap_interval(bad)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(values, level=1.0)


def test_bootstrap_interval_width_shrinks_like_one_over_root_n():
    rng = np.random.default_rng(0)
    small = bootstrap_interval(rng.random(100) < 0.5)
    large = bootstrap_interval(rng.random(1600) < 0.5)
    ratio = (small["high"] - small["low"]) / (large["high"] - large["low"])
    assert 3.3 < ratio < 4.7  # sqrt(1600 / 100) = 4


def _correlated_pair(rng, n, copy=0.7):
    """Two 0/1 columns with the same mean item by item: each item has its own difficulty;
    `after` repeats `before` with probability `copy`, else redraws from the same item."""
    difficulty = rng.beta(0.7, 0.7, n)
    before = rng.random(n) < difficulty
    redraw = rng.random(n) < difficulty
    after = np.where(rng.random(n) < copy, before, redraw)
    return before.astype(int), after.astype(int)


def test_paired_interval_holds_zero_under_the_null_at_its_level():
    rng = np.random.default_rng(2)
    repetitions = 400
    hits = 0
    for rep in range(repetitions):
        before, after = _correlated_pair(rng, 300)
        gain = paired_bootstrap(before, after, samples=1000, seed=rep)
        hits += gain["low"] <= 0.0 <= gain["high"]
    low, high = _band(0.95, repetitions)
    assert low <= hits / repetitions <= high


def test_paired_interval_is_narrower_than_the_unpaired_one_and_detects_a_gain():
    rng = np.random.default_rng(3)
    before, after = _correlated_pair(rng, 1000, copy=0.9)
    paired = paired_bootstrap(before, after)
    a, b = bootstrap_interval(before, seed=1), bootstrap_interval(after, seed=2)
    unpaired = math.hypot(a["high"] - a["low"], b["high"] - b["low"])  # independent samples
    assert paired["high"] - paired["low"] < 0.6 * unpaired
    assert paired["mean"] == pytest.approx(after.mean() - before.mean())
    improved = np.where(rng.random(1000) < 0.1, 1, after)  # ~ +5 points on these items
    gain = paired_bootstrap(before, improved)
    assert gain["low"] > 0 and set(gain) == {"mean", "low", "high", "level", "n"}
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1, 0, 1])


def test_seed_spread():
    spread = seed_spread([0.40, 0.44, 0.45])
    assert spread["mean"] == pytest.approx(0.43) and spread["n_seeds"] == 3
    assert spread["std"] == pytest.approx(np.std([0.40, 0.44, 0.45], ddof=1))
    assert (spread["min"], spread["max"]) == (0.40, 0.45)
    one = seed_spread([0.5])
    assert one == {"mean": 0.5, "std": None, "min": 0.5, "max": 0.5, "n_seeds": 1}
    json.dumps(one)
    with pytest.raises(ValueError):
        seed_spread([])


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c = 2 < k: every 3-subset holds a correct one
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)  # no overflow at large n
    assert pass_at_k(1000, 10, 500) == pytest.approx(1 - math.comb(990, 500) / math.comb(1000, 500))
    for n, c, k in [(5, 2, 0), (5, 2, 6), (5, 6, 1), (5, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_pass_at_k_matches_subset_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            correct = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(correct, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_items():
    assert pass_at_k_items([0, 2, 5], 5, 2) == pytest.approx([0.0, 0.7, 1.0])


# --- the reports ---


@pytest.fixture(scope="module")
def records():
    task = KinshipTask(KinshipConfig.for_level(2), seed=7, size=120, split="test")
    return [task[i] for i in range(len(task))]


def test_accuracy_report_intervals_contain_the_means(records):
    rng = np.random.default_rng(0)
    right = rng.random(len(records)) < 0.6
    completions = [
        r["completion"] if ok else "no idea" for r, ok in zip(records, right, strict=True)
    ]
    completions[3] = None  # no room to answer: wrong
    report = accuracy_report(records, completions)
    expected = right.copy()
    expected[3] = False
    assert report["correct"] == expected.astype(int).tolist()
    assert report["accuracy"] == pytest.approx(expected.mean())
    interval = report["interval"]
    assert interval["low"] < report["accuracy"] < interval["high"]
    assert interval["mean"] == report["accuracy"] and interval["n"] == len(records)
    for name in ("by_question_type", "by_difficulty", "by_hops", "by_family"):
        cells = report[name]
        assert sum(cell["n"] for cell in cells.values()) == len(records)
        for cell in cells.values():
            assert set(cell) == {"accuracy", "n", "low", "high"}
            assert cell["low"] <= cell["accuracy"] <= cell["high"]
    assert report["no_room"] == 1 and {"mean_score", "by_family"} <= set(report)
    json.dumps(report)
    assert accuracy_report([], [])["interval"] is None


def test_pass_at_k_report(records):
    records = records[:40]
    # item i gets i % 5 correct completions out of 8 (one of the wrong ones had no room)
    counts = [i % 5 for i in range(len(records))]
    samples = [[r["completion"]] * c + ["wrong"] * (7 - c) + [None]
               for r, c in zip(records, counts, strict=True)]  # fmt: skip
    report = pass_at_k_report(records, samples)
    assert report["n"] == 40 and report["samples"] == 8 and set(report["pass@k"]) == {1, 4, 8}
    for k, cell in report["pass@k"].items():
        expected = np.mean([pass_at_k(8, c, k) for c in counts])
        assert cell["mean"] == pytest.approx(expected)
        assert cell["low"] <= cell["mean"] <= cell["high"]
    assert report["pass@k"][1]["mean"] < report["pass@k"][4]["mean"] < report["pass@k"][8]["mean"]
    json.dumps(report)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k_report(records, samples, ks=(1, 16))
    with pytest.raises(ValueError, match="same number"):
        pass_at_k_report(records, [*samples[:-1], samples[-1][:4]])
