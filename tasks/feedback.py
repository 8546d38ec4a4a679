"""Simulated annotators: preference and binary labels from gold rewards, under noise models.

The same decision functions label offline datasets and, later, online samples, so a noisy
annotator means the same thing everywhere. They are vectorised with NumPy over a batch and
take their randomness explicitly (a `numpy.random.Generator`).

A preference between completions a and b is decided in this order:
1. position bias: with probability `position_bias` the first-shown (a) wins outright;
2. length bias: otherwise, with probability `length_bias` the longer one wins (when lengths
   differ);
3. the base model: `exact` prefers the higher gold utility (ties at random), `bradley_terry`
   prefers a with probability sigmoid((u_a - u_b) / temperature);
4. label noise: the result is flipped with probability `flip_rate` (epsilon).

`flipped` marks labels that disagree with the gold utility order (never set on ties).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.fields import documented

ANNOTATOR_MODELS = ("exact", "bradley_terry")


@dataclass(frozen=True)
class AnnotatorConfig:
    """Noise model of a simulated annotator."""

    model: str = documented("base model: exact or bradley_terry", default="exact")
    flip_rate: float = documented("probability a label is flipped (epsilon), 0..0.5", default=0.0)
    temperature: float = documented("Bradley-Terry temperature T > 0", default=0.1)
    length_bias: float = documented(
        "probability the longer completion wins outright, 0..1", default=0.0
    )
    position_bias: float = documented(
        "probability the first-shown one wins outright, 0..1", default=0.0
    )

    def __post_init__(self) -> None:
        if self.model not in ANNOTATOR_MODELS:
            raise ValueError(
                f"annotator must be one of {', '.join(ANNOTATOR_MODELS)} (got {self.model!r})"
            )
        if not 0.0 <= self.flip_rate <= 0.5:
            raise ValueError(f"noise must be a flip rate in 0..0.5 (got {self.flip_rate})")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive (got {self.temperature})")
        for name in ("length_bias", "position_bias"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"{name} must be a probability in 0..1 (got {getattr(self, name)})"
                )


def prefer(
    utility_a: np.ndarray,
    utility_b: np.ndarray,
    length_a: np.ndarray,
    length_b: np.ndarray,
    *,
    config: AnnotatorConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised preference labels.

    Args: gold utilities and lengths of a and b, each (N,); a is the first shown.
    Returns: (prefer_a, flipped), bool arrays (N,).
    """
    ua, ub = np.asarray(utility_a, float), np.asarray(utility_b, float)
    la, lb = np.asarray(length_a), np.asarray(length_b)
    n = ua.shape[0]
    u = rng.random((n, 5))  # one column per random decision, so each is independent
    if config.model == "exact":
        base = np.where(ua == ub, u[:, 0] < 0.5, ua > ub)
    else:
        base = u[:, 0] < _sigmoid((ua - ub) / config.temperature)
    by_length = (u[:, 1] < config.length_bias) & (la != lb)
    choice = np.where(by_length, la > lb, base)
    choice = np.where(u[:, 2] < config.position_bias, True, choice)
    choice = choice ^ (u[:, 3] < config.flip_rate)
    gold_a = ua > ub
    flipped = (ua != ub) & (choice != gold_a)
    return choice.astype(bool), flipped.astype(bool)


def label(
    utility: np.ndarray,
    *,
    config: AnnotatorConfig,
    rng: np.random.Generator,
    threshold: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised binary labels: desirable when utility >= threshold (`exact`), or with
    probability sigmoid((utility - threshold + 0.5) / temperature) (`bradley_terry`), then
    flipped at `flip_rate`. Returns (desirable, flipped), bool arrays (N,)."""
    u = np.asarray(utility, float)
    draws = rng.random((u.shape[0], 2))
    gold = u >= threshold
    if config.model == "exact":
        base = gold
    else:
        base = draws[:, 0] < _sigmoid((u - threshold + 0.5) / config.temperature)
    choice = base ^ (draws[:, 1] < config.flip_rate)
    return choice, choice != gold


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


@dataclass(frozen=True)
class SimulatedAnnotator:
    """Labels model completions of task records with the task's gold reward under a noise model.

    `score` is the task's gold reward (record, completion) -> [0, 1]. Lengths are in characters.
    """

    score: Callable[[dict[str, Any], str], float]
    config: AnnotatorConfig = AnnotatorConfig()

    def preferences(
        self,
        records: Sequence[dict[str, Any]],
        completions_a: Sequence[str],
        completions_b: Sequence[str],
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """prefer_a, flipped, reward_a, reward_b for a batch (a shown first)."""
        reward_a = np.array([self.score(r, c) for r, c in zip(records, completions_a, strict=True)])
        reward_b = np.array([self.score(r, c) for r, c in zip(records, completions_b, strict=True)])
        prefer_a, flipped = prefer(
            reward_a,
            reward_b,
            np.array([len(c) for c in completions_a]),
            np.array([len(c) for c in completions_b]),
            config=self.config,
            rng=rng,
        )
        return {
            "prefer_a": prefer_a,
            "flipped": flipped,
            "reward_a": reward_a,
            "reward_b": reward_b,
        }

    def labels(
        self,
        records: Sequence[dict[str, Any]],
        completions: Sequence[str],
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """desirable, flipped, reward for a batch of single completions."""
        reward = np.array([self.score(r, c) for r, c in zip(records, completions, strict=True)])
        desirable, flipped = label(reward, config=self.config, rng=rng)
        return {"desirable": desirable, "flipped": flipped, "reward": reward}


def reward_model_pairs(
    records: Sequence[dict[str, Any]],
    sample: Callable[[Sequence[dict[str, Any]]], tuple[Sequence[str], Sequence[str]]],
    annotator: SimulatedAnnotator,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Preference pairs from a model's own samples, labelled by the annotator, so a proxy
    reward model is trained on exactly the distribution it will later score.

    `sample(records)` returns two completions per record (e.g. two temperature samples).
    Each pair keeps the record's fields (but `completion`) plus chosen/rejected, their gold
    rewards, `flipped`, and `negative_kind` = "model_sample".
    """
    first, second = sample(records)
    result = annotator.preferences(records, first, second, rng)
    pairs = []
    for i, record in enumerate(records):
        a_wins = bool(result["prefer_a"][i])
        chosen, rejected = (first[i], second[i]) if a_wins else (second[i], first[i])
        ra, rb = float(result["reward_a"][i]), float(result["reward_b"][i])
        pair = {k: v for k, v in record.items() if k != "completion"}
        pair.update(
            chosen=chosen,
            rejected=rejected,
            chosen_reward=ra if a_wins else rb,
            rejected_reward=rb if a_wins else ra,
            flipped=bool(result["flipped"][i]),
            negative_kind="model_sample",
        )
        pairs.append(pair)
    return pairs
