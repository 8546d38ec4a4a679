"""Kinship feedback records (spec section 5): preference pairs and binary feedback.

Each item builds on the example of the same (seed, index), so a preference dataset and an
example dataset with the same seed share their questions. Randomness is split into streams
derived from (seed, index): one for the negative, one for the annotator, so changing the noise
model relabels the very same pairs (which is what makes a noise sweep a controlled experiment).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.feedback import AnnotatorConfig, label, prefer
from tasks.fields import documented
from tasks.kinship.config import KinshipConfig
from tasks.kinship.generator import make_example
from tasks.kinship.negatives import NEGATIVE_KINDS, make_negative

# A valid reasoning chain outranks a broken one with the same outcome reward, by less than any
# reward difference: exact annotators see it, Bradley-Terry ones barely (outcome-only raters).
PROCESS_BONUS = 1e-3
_ANNOTATOR_STREAM = 0xA77


def default_negative_weights() -> tuple[tuple[str, float], ...]:
    return tuple((kind, 0.0 if kind == "broken_chain" else 1.0) for kind in NEGATIVE_KINDS)


@dataclass(frozen=True)
class FeedbackConfig:
    """How pairs and binary feedback are made and labelled."""

    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    negative_weights: tuple[tuple[str, float], ...] = documented(
        "weights of the negative kinds (broken_chain is off by default)",
        default_factory=default_negative_weights,
    )
    min_margin: float = documented(
        "minimum gold-reward gap between the better and worse, 0..1", default=0.0
    )
    desirable_fraction: float = documented(
        "binary feedback: share of desirable completions", default=0.5
    )

    def __post_init__(self) -> None:
        unknown = [k for k, _ in self.negative_weights if k not in NEGATIVE_KINDS]
        if unknown:
            raise ValueError(
                f"negative_weights must name kinds from: {', '.join(NEGATIVE_KINDS)} "
                f"(got {', '.join(unknown)})"
            )
        weights = [w for _, w in self.negative_weights]
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError("negative_weights must be non-negative and not all zero")
        if not 0.0 <= self.min_margin <= 1.0:
            raise ValueError(f"min_margin must be in 0..1 (got {self.min_margin})")
        if not 0.0 < self.desirable_fraction < 1.0:
            raise ValueError(
                f"desirable_ratio must give a desirable share strictly between 0 and 1 "
                f"(got {self.desirable_fraction})"
            )

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.negative_weights)

    def to_dict(self) -> dict[str, Any]:
        return {
            "annotator": dataclasses.asdict(self.annotator),
            "negative_weights": dict(self.negative_weights),
            "min_margin": self.min_margin,
            "desirable_fraction": self.desirable_fraction,
        }


def parse_ratio(text: str) -> float:
    """'1:4' (desirable:undesirable) -> 0.2, the desirable share."""
    try:
        desirable, undesirable = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"desirable_ratio must look like 1:4 (got {text!r})") from None
    if desirable <= 0 or undesirable <= 0:
        raise ValueError(f"desirable_ratio must have two positive parts (got {text!r})")
    return desirable / (desirable + undesirable)


# `kinrl generate`'s feedback options: name -> (default, help). Given away from its default
# with a --kind it has no effect on, an option is refused (`check_feedback_options`).
FEEDBACK_OPTIONS: dict[str, tuple[Any, str]] = {
    "noise": (0.0, "label flip rate 0..0.5"),
    "annotator": ("exact", "base model: exact or bradley_terry"),
    "temperature": (0.1, "Bradley-Terry temperature, > 0"),
    "length_bias": (0.0, "probability the longer completion wins outright, 0..1"),
    "position_bias": (0.0, "probability the first-shown one wins outright, 0..1"),
    "negative_weights": (None, "KIND=W,... weights of negative kinds (unlisted kinds keep "
                         "their default)"),
    "min_margin": (0.0, "minimum gold-reward gap, 0..1"),
    "desirable_ratio": ("1:1", "D:U share of desirable completions (--kind feedback)"),
}  # fmt: skip


def check_feedback_options(kind: str, options: dict[str, Any]) -> None:
    """ValueError for a feedback option set away from its default where it has no effect."""
    for name, (default, _) in FEEDBACK_OPTIONS.items():
        applies = ("feedback",) if name == "desirable_ratio" else ("preference", "feedback")
        if options.get(name, default) != default and kind not in applies:
            kinds = " or ".join(applies)
            raise ValueError(f"--{name.replace('_', '-')} applies to --kind {kinds} only")


def feedback_config(options: dict[str, Any]) -> FeedbackConfig:
    """The `FeedbackConfig` of the `FEEDBACK_OPTIONS` (missing ones at their defaults)."""
    options = {name: default for name, (default, _) in FEEDBACK_OPTIONS.items()} | options
    weights = dict(default_negative_weights()) | (options["negative_weights"] or {})
    annotator = AnnotatorConfig(
        model=options["annotator"], flip_rate=options["noise"],
        temperature=options["temperature"], length_bias=options["length_bias"],
        position_bias=options["position_bias"],
    )  # fmt: skip
    return FeedbackConfig(annotator=annotator, negative_weights=tuple(weights.items()),
                          min_margin=options["min_margin"],
                          desirable_fraction=parse_ratio(options["desirable_ratio"]))  # fmt: skip


def _streams(seed: int, index: int) -> tuple[random.Random, np.random.Generator]:
    negatives = random.Random(f"kinrl/kinship/negative/{seed}/{index}")
    annotator = np.random.default_rng([seed, index, _ANNOTATOR_STREAM])
    return negatives, annotator


def make_pair(
    config: KinshipConfig, feedback: FeedbackConfig, seed: int, index: int, split: str = "train"
) -> dict[str, Any]:
    """A preference record: the example's fields (but `completion`), chosen/rejected, their
    gold rewards, `flipped` (the label disagrees with the gold order), `negative_kind`, and
    `chosen_first` / `*_chain_valid` for position and process studies."""
    record = make_example(config, seed, index, split)
    negatives, annotator = _streams(seed, index)
    kind, worse, worse_reward = make_negative(
        record, negatives, feedback.weights, feedback.min_margin
    )
    better, better_valid, worse_valid = record["completion"], True, kind != "broken_chain"
    better_first = negatives.random() < 0.5
    first, second = (better, worse) if better_first else (worse, better)
    u_better = 1.0 + PROCESS_BONUS * better_valid
    u_worse = worse_reward + PROCESS_BONUS * worse_valid
    u_first, u_second = (u_better, u_worse) if better_first else (u_worse, u_better)
    prefer_first, flipped = prefer(
        np.array([u_first]),
        np.array([u_second]),
        np.array([len(first)]),
        np.array([len(second)]),
        config=feedback.annotator,
        rng=annotator,
    )
    chose_first = bool(prefer_first[0])
    chosen_is_better = chose_first == better_first
    pair = {k: v for k, v in record.items() if k != "completion"}
    pair.update(
        chosen=first if chose_first else second,
        rejected=second if chose_first else first,
        chosen_reward=1.0 if chosen_is_better else worse_reward,
        rejected_reward=worse_reward if chosen_is_better else 1.0,
        flipped=bool(flipped[0]),
        negative_kind=kind,
        chosen_first=chose_first,
        chosen_chain_valid=better_valid if chosen_is_better else worse_valid,
        rejected_chain_valid=worse_valid if chosen_is_better else better_valid,
    )
    return pair


def make_binary(
    config: KinshipConfig, feedback: FeedbackConfig, seed: int, index: int, split: str = "train"
) -> dict[str, Any]:
    """A binary feedback record: the example's fields with `completion` the judged one,
    `label` (True = desirable), `gold_reward`, `flipped` and `negative_kind` (null for the
    reference completion)."""
    record = make_example(config, seed, index, split)
    negatives, annotator = _streams(seed, index)
    if negatives.random() < feedback.desirable_fraction:
        kind, completion, reward = None, record["completion"], 1.0
    else:
        kind, completion, reward = make_negative(
            record, negatives, feedback.weights, max(feedback.min_margin, 1e-9)
        )
    desirable, flipped = label(np.array([reward]), config=feedback.annotator, rng=annotator)
    out = dict(record)
    out.update(
        completion=completion,
        label=bool(desirable[0]),
        gold_reward=reward,
        flipped=bool(flipped[0]),
        negative_kind=kind,
    )
    return out
