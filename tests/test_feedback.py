"""Feedback data (issue 3): noise models measured on generated data, negative kinds, columns."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from kinrl.cli import main
from tasks.feedback import AnnotatorConfig, SimulatedAnnotator, prefer, reward_model_pairs
from tasks.kinship import KinGraph, KinshipConfig, make_example, relation, score
from tasks.kinship.negatives import NEGATIVE_KINDS, make_negative
from tasks.kinship.pairs import FeedbackConfig, make_binary, make_pair, parse_ratio
from tasks.kinship.relations import holds
from tasks.kinship.terms import FEMALE, MALE, gender_swap

CONFIG = KinshipConfig.for_level(2)
N = 3000


def pairs(annotator: AnnotatorConfig, n: int = N, **kwargs) -> list[dict]:
    feedback = FeedbackConfig(annotator=annotator, **kwargs)
    return [make_pair(CONFIG, feedback, 11, i) for i in range(n)]


@pytest.fixture(scope="module")
def clean_pairs() -> list[dict]:
    return pairs(AnnotatorConfig())


def within_binomial(count: int, n: int, p: float, z: float = 1.96) -> bool:
    half = z * math.sqrt(p * (1 - p) / n)
    return p - half <= count / n <= p + half


def test_flip_rate_matches_epsilon_and_rewards_order_the_pairs() -> None:
    eps = 0.2
    data = pairs(AnnotatorConfig(flip_rate=eps))
    flipped = [p for p in data if p["flipped"]]
    assert within_binomial(len(flipped), len(data), eps), len(flipped) / len(data)
    for p in data:
        if p["flipped"]:
            assert p["chosen_reward"] < p["rejected_reward"]
            assert score(p, p["rejected"]) == 1.0
        else:
            assert p["chosen_reward"] > p["rejected_reward"]
            assert score(p, p["chosen"]) == 1.0
        assert score(p, p["chosen"]) == p["chosen_reward"]
        assert score(p, p["rejected"]) == p["rejected_reward"]


def test_noise_relabels_the_same_pairs(clean_pairs) -> None:
    noisy = pairs(AnnotatorConfig(flip_rate=0.3), n=200)
    for clean, other in zip(clean_pairs, noisy, strict=False):
        assert {clean["chosen"], clean["rejected"]} == {other["chosen"], other["rejected"]}


def test_bradley_terry_labels_follow_the_sigmoid_law() -> None:
    temperature = 0.5
    data = pairs(AnnotatorConfig(model="bradley_terry", temperature=temperature))
    by_gap: dict[float, list[bool]] = {}
    for p in data:
        gap = round(abs(p["chosen_reward"] - p["rejected_reward"]), 3)
        better_chosen = p["chosen_reward"] >= p["rejected_reward"]
        by_gap.setdefault(gap, []).append(better_chosen)
    tested = 0
    for gap, outcomes in by_gap.items():
        if len(outcomes) < 100:
            continue
        expected = 1 / (1 + math.exp(-(gap + 1e-3) / temperature))
        assert within_binomial(sum(outcomes), len(outcomes), expected, z=3), (gap, expected)
        tested += 1
    assert tested >= 2, by_gap.keys()


def test_bradley_terry_on_continuous_gaps_binned() -> None:
    rng = np.random.default_rng(0)
    n, temperature = 200_000, 0.3
    ua, ub = rng.random(n), rng.random(n)
    lengths = np.ones(n)
    config = AnnotatorConfig(model="bradley_terry", temperature=temperature)
    prefer_a, _ = prefer(ua, ub, lengths, lengths, config=config, rng=rng)
    gaps = ua - ub
    edges = np.linspace(-1, 1, 11)
    for lo, hi in itertools.pairwise(edges):
        inside = (gaps >= lo) & (gaps < hi)
        expected = np.mean(1 / (1 + np.exp(-gaps[inside] / temperature)))
        observed = prefer_a[inside].mean()
        assert abs(observed - expected) < 4 * math.sqrt(0.25 / inside.sum()), (lo, hi)


def test_length_bias_shows_exactly_as_configured(clean_pairs) -> None:
    bias = 0.6
    biased = pairs(AnnotatorConfig(length_bias=bias))

    def longer_chosen(data: list[dict]) -> tuple[int, int]:
        differ = [p for p in data if len(p["chosen"]) != len(p["rejected"])]
        return sum(len(p["chosen"]) > len(p["rejected"]) for p in differ), len(differ)

    base_count, base_n = longer_chosen(clean_pairs)
    count, n = longer_chosen(biased)
    assert n == base_n  # the same pairs, relabelled
    q = base_count / base_n
    assert within_binomial(count, n, bias + (1 - bias) * q, z=3), (count / n, q)


def test_position_bias_shows_exactly_as_configured(clean_pairs) -> None:
    bias = 0.4
    biased = pairs(AnnotatorConfig(position_bias=bias))
    q = sum(p["chosen_first"] for p in clean_pairs) / len(clean_pairs)
    count = sum(p["chosen_first"] for p in biased)
    assert within_binomial(count, len(biased), bias + (1 - bias) * q, z=3)


def test_min_margin_is_respected() -> None:
    data = pairs(AnnotatorConfig(), n=500, min_margin=0.6)
    assert all(p["chosen_reward"] - p["rejected_reward"] >= 0.6 for p in data)


def record_graph(record: dict) -> tuple[KinGraph, dict[str, int]]:
    g = KinGraph()
    ids = {
        p["name"]: g.add_person(p["name"], FEMALE if p["gender"] == "female" else MALE)
        for p in record["people"]
    }
    for parent, child in record["parents"]:
        g.add_parent(ids[parent], ids[child])
    for a, b in record["spouses"]:
        g.marry(ids[a], ids[b])
    return g, ids


STATEMENT = re.compile(r"^(?:So )?(.+?) is (.+?)'s ([a-z -]+)\.$")


def false_statements(record: dict, completion: str) -> int:
    g, ids = record_graph(record)
    wrong = 0
    for line in completion.splitlines():
        match = STATEMENT.match(line)
        if match and match[1] in ids and match[2] in ids:
            wrong += not holds(relation(g, ids[match[1]], ids[match[2]]), match[3])
    return wrong


@pytest.mark.parametrize("kind", NEGATIVE_KINDS)
def test_each_negative_kind_does_what_it_says(kind: str) -> None:
    import random

    weights = {kind: 1.0}
    made = 0
    for index in range(400):
        record = make_example(KinshipConfig.for_level(4), 3, index)
        rng = random.Random(index)
        got, completion, reward = make_negative(record, rng, weights)
        if got != kind:
            continue  # the kind does not apply to this question; the fallback was used
        made += 1
        answer = completion.splitlines()[-1].removeprefix("Answer: ")
        assert reward == score(record, completion)
        if kind == "broken_chain":
            assert answer == record["answer"] and reward == 1.0
            assert false_statements(record, completion) == 1
            assert false_statements(record, record["completion"]) == 0
            continue
        assert reward < 1.0 and answer != record["answer"]
        if kind == "gender_swap":
            assert answer in {gender_swap(t) for t in record["answers"]}
        elif kind == "count_off":
            assert int(answer) != int(record["answer"])
        elif kind == "yesno_flip":
            assert {answer, record["answer"]} == {"yes", "no"}
        elif kind == "missing_person":
            assert set(answer.split(", ")) < set(record["answer"].split(", "))
        elif kind == "extra_person":
            assert set(answer.split(", ")) > set(record["answer"].split(", "))
    assert made >= 10, kind


def test_binary_feedback_ratio_and_labels() -> None:
    feedback = FeedbackConfig(desirable_fraction=parse_ratio("1:4"))
    data = [make_binary(CONFIG, feedback, 5, i) for i in range(N)]
    desirable = [r for r in data if r["gold_reward"] == 1.0]
    assert within_binomial(len(desirable), len(data), 0.2)
    assert all(r["label"] == (r["gold_reward"] == 1.0) for r in data)  # no noise
    assert all(score(r, r["completion"]) == r["gold_reward"] for r in data)
    noisy = FeedbackConfig(desirable_fraction=0.5, annotator=AnnotatorConfig(flip_rate=0.1))
    data = [make_binary(CONFIG, noisy, 5, i) for i in range(N)]
    assert within_binomial(sum(r["flipped"] for r in data), len(data), 0.1)
    assert all(r["label"] != (r["gold_reward"] == 1.0) for r in data if r["flipped"])


def test_parse_ratio() -> None:
    assert parse_ratio("1:1") == 0.5 and parse_ratio("1:10") == pytest.approx(1 / 11)
    with pytest.raises(ValueError, match="desirable_ratio"):
        parse_ratio("0:3")


def test_simulated_annotator_is_vectorised_and_explicitly_random() -> None:
    records = [make_example(CONFIG, 1, i) for i in range(64)]
    good = [r["completion"] for r in records]
    bad = ["Answer: nobody"] * 64
    annotator = SimulatedAnnotator(score, AnnotatorConfig(flip_rate=0.25))
    first = annotator.preferences(records, good, bad, np.random.default_rng(3))
    again = annotator.preferences(records, good, bad, np.random.default_rng(3))
    assert np.array_equal(first["prefer_a"], again["prefer_a"])
    assert np.array_equal(first["prefer_a"], ~first["flipped"])
    assert first["reward_a"].tolist() == [1.0] * 64 and first["reward_b"].tolist() == [0.0] * 64
    labels = annotator.labels(records, good, np.random.default_rng(4))
    assert np.array_equal(labels["desirable"], ~labels["flipped"])


def test_reward_model_pairs_from_model_samples() -> None:
    records = [make_example(CONFIG, 2, i) for i in range(40)]

    def sample(batch):  # stands in for a policy: one right and one wrong completion per record
        return [r["completion"] for r in batch], ["Answer: 42"] * len(batch)

    data = reward_model_pairs(records, sample, SimulatedAnnotator(score), np.random.default_rng(0))
    assert all(p["chosen_reward"] == 1.0 and p["rejected"] == "Answer: 42" for p in data)
    assert all(p["negative_kind"] == "model_sample" and "completion" not in p for p in data)


@pytest.mark.parametrize("kind", ["preference", "feedback"])
def test_columns_load_trl_style_and_card_records_every_knob(tmp_path: Path, kind: str) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / kind
    args = ["generate", "--out", str(out), "--kind", kind, "--n", "80", "--quiet"]
    args += ["--noise", "0.1", "--length-bias", "0.2"]
    if kind == "feedback":  # refused with preference pairs, where it would do nothing
        args += ["--desirable-ratio", "1:4"]
    assert main(args) == 0
    ds = datasets.load_dataset("json", data_files={"train": str(out / "train.jsonl")})["train"]
    wanted = {"prompt", "chosen", "rejected"} if kind == "preference" else {"prompt", "completion"}
    assert wanted <= set(ds.column_names)
    if kind == "feedback":
        assert isinstance(ds[0]["label"], bool)
    else:
        assert "completion" not in ds.column_names
    card = (out / "README.md").read_text()
    for f in dataclasses.fields(AnnotatorConfig):
        assert f"annotator.{f.name}" in card
    for name in ("min_margin", "desirable_fraction", "negative_weights"):
        assert name in card
    summary = json.loads((out / "config.json").read_text())
    assert summary["feedback"]["annotator"]["flip_rate"] == 0.1
    assert summary["kind"] == f"kinship/{kind}"


def test_parquet_preference_output(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "pq"
    args = ["generate", "--out", str(out), "--kind", "preference", "--n", "40"]
    assert main([*args, "--format", "parquet", "--quiet"]) == 0
    ds = datasets.load_dataset("parquet", data_files={"train": str(out / "train.parquet")})
    assert {"chosen", "rejected", "flipped"} <= set(ds["train"].column_names)
