"""The leaderboard: Bradley-Terry ratings of the runs from the votes, with bootstrap intervals,
and how often each annotator agrees with the gold reward.

Bradley-Terry: P(i beats j) = sigmoid(theta_i - theta_j). A vote for A is a win of A's run, a
tie or both-bad vote half a win each (Chatbot Arena's convention). theta maximises the
log-likelihood plus a small Gaussian prior (`PRIOR`, which keeps an unbeaten run finite) by
Newton's method, then is centred and shown on the Elo scale (1000 + 400 log10 odds). The
interval is the 2.5-97.5 percentile band of the ratings refitted on `rounds` resamples of the
votes (with replacement; a seeded generator, so the page shows the same band twice).

Gold agreement: among an annotator's votes on battles whose two gold rewards differ, the share
that picks the higher one (a tie or both-bad vote there disagrees). `consistent` counts every
vote: A or B agrees when that side's gold reward is higher, tie when they are equal, both-bad
when neither is fully right.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

PRIOR = 0.05  # precision of the zero-mean Gaussian prior on theta
ELO = 400 / math.log(10)


def fit(pairs: np.ndarray, scores: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """theta (n,) of Bradley-Terry: pairs (m, 2) of run indices, scores (m,) the first one's
    score (1 win, 0.5 tie, 0 loss), weights (m,) how many times each row counts."""
    theta = np.zeros(n)
    if len(pairs) == 0:
        return theta
    i, j = pairs[:, 0], pairs[:, 1]
    for _ in range(50):
        p = 1 / (1 + np.exp(-(theta[i] - theta[j])))
        residual = weights * (scores - p)
        gradient = np.bincount(i, residual, n) - np.bincount(j, residual, n) - PRIOR * theta
        curvature = weights * p * (1 - p)
        hessian = np.zeros((n, n))
        np.add.at(hessian, (i, i), curvature)
        np.add.at(hessian, (j, j), curvature)
        np.add.at(hessian, (i, j), -curvature)
        np.add.at(hessian, (j, i), -curvature)
        hessian += PRIOR * np.eye(n)
        step = np.linalg.solve(hessian, gradient)
        theta += step
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta - theta.mean()


def _outcomes(votes: list[Mapping[str, Any]], index: dict[str, int]) -> tuple[np.ndarray, ...]:
    pairs = np.array([[index[v["run_a"]], index[v["run_b"]]] for v in votes], dtype=np.int64)
    scores = np.array([{"a": 1.0, "b": 0.0}.get(v["choice"], 0.5) for v in votes])
    return pairs.reshape(-1, 2), scores


def leaderboard(votes: Iterable[Mapping[str, Any]], runs: Iterable[str] = (), *,
                rounds: int = 200, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """{"runs": [...], "annotators": [...], "votes": N}. Each vote has run_a, run_b, choice,
    annotator, reward_a, reward_b. `runs`: names listed even without a vote (rating None)."""
    votes = [v for v in votes if v["run_a"] != v["run_b"]]
    names = sorted({*runs, *(v["run_a"] for v in votes), *(v["run_b"] for v in votes)})
    index = {name: i for i, name in enumerate(names)}
    pairs, scores = _outcomes(votes, index)
    # Identical outcomes are one weighted row: a fit costs the same for 10 votes or 100,000.
    rows_of = np.column_stack([pairs, scores * 2]).astype(np.int64)
    unique, inverse = np.unique(rows_of, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    groups, group_scores = unique[:, :2], unique[:, 2] / 2
    counts = np.bincount(inverse, minlength=len(unique)).astype(float)
    theta = fit(groups, group_scores, counts, len(names))
    rng = np.random.default_rng(seed)
    samples = np.zeros((rounds, len(names)))
    for r in range(rounds if len(votes) else 0):
        drawn = inverse[rng.integers(0, len(votes), len(votes))]
        weights = np.bincount(drawn, minlength=len(unique)).astype(float)
        samples[r] = fit(groups, group_scores, weights, len(names))
    low, high = np.percentile(samples, [2.5, 97.5], axis=0) if rounds else (theta, theta)
    rows = []
    for name, i in index.items():
        mine = [v for v in votes if name in (v["run_a"], v["run_b"])]
        won = sum(1 for v in mine if v["choice"] in ("a", "b") and v["run_" + v["choice"]] == name)
        ties = sum(1 for v in mine if v["choice"] == "tie")
        bad = sum(1 for v in mine if v["choice"] == "both_bad")
        rewards = [v["reward_a"] if v["run_a"] == name else v["reward_b"] for v in mine]
        rated = bool(mine)
        rows.append({
            "name": name, "votes": len(mine), "wins": won, "losses": len(mine) - won - ties - bad,
            "ties": ties, "both_bad": bad,
            "rating": round(1000 + ELO * theta[i], 1) if rated else None,
            "low": round(1000 + ELO * low[i], 1) if rated else None,
            "high": round(1000 + ELO * high[i], 1) if rated else None,
            "gold_accuracy": round(sum(r == 1.0 for r in rewards) / len(rewards), 4)
            if rewards else None,
        })  # fmt: skip
    rows.sort(key=lambda r: (r["rating"] is None, -(r["rating"] or 0), r["name"]))
    return {"runs": rows, "annotators": agreement(votes), "votes": len(votes),
            "rounds": rounds}  # fmt: skip


def consistent(choice: str, reward_a: float, reward_b: float) -> bool:
    if choice == "a":
        return reward_a > reward_b
    if choice == "b":
        return reward_b > reward_a
    if choice == "tie":
        return reward_a == reward_b
    return max(reward_a, reward_b) < 1.0


def gold_agrees(choice: str, reward_a: float, reward_b: float) -> bool | None:
    """Whether a vote picks the side with the higher gold reward; None when they are equal."""
    if reward_a == reward_b:
        return None
    return choice == ("a" if reward_a > reward_b else "b")


def agreement(votes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per annotator: votes, choices, gold agreement (with its count) and consistency."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for v in votes:
        by.setdefault(v["annotator"], []).append(v)
    rows = []
    for name, mine in sorted(by.items()):
        judged = [gold_agrees(v["choice"], v["reward_a"], v["reward_b"]) for v in mine]
        judged = [j for j in judged if j is not None]
        same = [consistent(v["choice"], v["reward_a"], v["reward_b"]) for v in mine]
        rows.append({
            "annotator": name, "votes": len(mine),
            "choices": {c: sum(v["choice"] == c for v in mine) for c in ("a", "b", "tie",
                                                                       "both_bad")},
            "gold_comparable": len(judged),
            "gold_agreement": round(sum(judged) / len(judged), 4) if judged else None,
            "consistent": round(sum(same) / len(same), 4),
        })  # fmt: skip
    return rows
