"""Sampled policy and reward-model evaluations (`evaluators/policy_eval.py`): the KL of a
model against itself, against another model by plain forwards, the chain rule and the
estimators' expectations on small categoricals, every checkpoint of a run, a reward model's
accuracy and calibration by hand, and its agreement with the gold order."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from evaluators.policy_eval import (
    best_of_n_samples,
    gold_agreement,
    kl_drift,
    pair_quality,
    rm_gold_agreement,
    rm_quality,
    sample_policy,
    saved_steps,
)
from tasks.kinship import KinshipConfig, generate_dataset
from tasks.kinship.pairs import FeedbackConfig
from tasks.registry import EXAMPLES_KIND, PREFERENCE_KIND
from trainers.checkpoint import Checkpoints, create_run
from trainers.data import load_records
from trainers.estimators import exact_kl, kl_estimates
from trainers.model import GPTConfig, forward, init_model
from trainers.reward_model import OFFSET_FILE, expected_calibration_error
from trainers.tokenizer import kinship_tokenizer

MAX_NEW = 16


@pytest.fixture(scope="module")
def tokenizer():
    return kinship_tokenizer()


@pytest.fixture(scope="module")
def cfg(tokenizer) -> GPTConfig:
    return GPTConfig(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list]:
    root = tmp_path_factory.mktemp("data")
    generate_dataset(root / "l1", KinshipConfig.for_level(1), 12, seed=3, progress=False)
    generate_dataset(root / "pairs", KinshipConfig.for_level(1), 24, seed=3, kind="preference",
                     feedback=FeedbackConfig(), progress=False)  # fmt: skip
    return {"examples": load_records(root / "l1", "train", EXAMPLES_KIND)[:5],
            "pairs": load_records(root / "pairs", "train", PREFERENCE_KIND)}  # fmt: skip


def _save_run(path: Path, cfg: GPTConfig, tokenizer, models: dict[int, nnx.Module],
              method: str = "grpo", init: str | None = None) -> Path:  # fmt: skip
    """A run folder written by hand: config.json, tokenizer and a checkpoint per step."""
    record = {"method": method, method: {"max_new_tokens": MAX_NEW}, "data": "-", "init": init,
              "model": dataclasses.asdict(cfg)}  # fmt: skip
    create_run(path, record, tokenizer)
    checkpoints = Checkpoints(path, keep=len(models))
    for step, model in models.items():
        checkpoints.save(step, nnx.state(model), {"count": np.zeros((), np.int32)}, {"step": step})
    checkpoints.close()
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cfg, tokenizer) -> dict[str, Path]:
    """An initial policy run, a run "trained" from it with checkpoints 1, 2, 3 (other
    initialisations), and a reward model (offset 0.25)."""
    root = tmp_path_factory.mktemp("runs")
    init = _save_run(root / "init", cfg, tokenizer, {5: init_model(cfg, 0)}, method="sft")
    steps = {step: init_model(cfg, step) for step in (1, 2, 3)}
    policy = _save_run(root / "policy", cfg, tokenizer, steps, init=str(init))
    rm_cfg = dataclasses.replace(cfg, value_head=True)
    rm = _save_run(root / "rm", rm_cfg, tokenizer, {1: init_model(rm_cfg, 7)}, method="rm")
    (rm / OFFSET_FILE).write_text(json.dumps({"offset": 0.25}))
    return {"init": init, "policy": policy, "rm": rm}


# ----------------------------------------------------------------------------- the KL


def test_a_checkpoint_against_itself_has_zero_kl_and_kl_drift_lists_every_step(runs, data):
    assert saved_steps(runs["policy"]) == [1, 2, 3]
    drift = kl_drift(runs["policy"], data["examples"], samples_per_prompt=2)
    assert [c["step"] for c in drift["checkpoints"]] == [1, 2, 3]
    assert drift["reference"] == str(runs["init"])  # the run's initial model by default
    assert drift["max_new_tokens"] == MAX_NEW and drift["temperature"] == 1.0
    for checkpoint in drift["checkpoints"]:
        assert checkpoint["n"] == 2 * drift["prompts"]
        assert checkpoint["kl"]["exact"] > 0 and checkpoint["kl"]["exact_seq"] > 0
        assert checkpoint["proxy"] is None and 0 <= checkpoint["gold"] <= 1
    # Against its own latest checkpoint: checkpoint 3's KL is 0 by every measure.
    own = kl_drift(runs["policy"], data["examples"], reference=runs["policy"], steps=[3, 1],
                   samples_per_prompt=2)  # fmt: skip
    assert [c["step"] for c in own["checkpoints"]] == [1, 3]
    assert all(abs(v) < 1e-6 for v in own["checkpoints"][1]["kl"].values())
    assert own["checkpoints"][0]["kl"]["exact"] > 0
    # The same seed gives checkpoint 1 the same samples whatever the reference.
    assert own["checkpoints"][0]["gold"] == drift["checkpoints"][0]["gold"]
    with pytest.raises(ValueError, match="no checkpoint"):
        kl_drift(runs["policy"], data["examples"], steps=[4])


def test_sample_policy_kl_matches_plain_forwards(runs, data, cfg, tokenizer):
    """Against another model: the KL is > 0, each column has one entry per completion, a
    prompt too long is skipped and counted, and one completion's exact KL (summed over the
    vocabulary at each of its tokens) equals the one computed from two plain forwards."""
    long = dict(data["examples"][0], prompt=data["examples"][0]["prompt"] * 4)
    records = [*data["examples"], long]
    policy, reference = init_model(cfg, 1), init_model(cfg, 2)
    out = sample_policy(
        (policy, tokenizer),
        records,
        group=3,
        max_new_tokens=MAX_NEW,
        reference=reference,
        reward_run=runs["rm"],
        batch_prompts=2,
        seed=1,
    )
    json.dumps(out)  # plain JSON
    n = 3 * len(data["examples"])
    assert out["skipped"] == 1 and len(out["prompts"]) == len(data["examples"]) and out["n"] == n
    assert out["record"] == [i for i in range(len(data["examples"])) for _ in range(3)]
    for key in ("text", "gold", "answered", "truncated", "length", "proxy"):
        assert len(out[key]) == n, key
    assert set(out["kl"]) == {"exact", "k1", "k2", "k3", "exact_seq", "k1_seq", "k2_seq",
                              "k3_seq"}  # fmt: skip
    assert min(out["kl"]["exact_seq"]) > 0 and min(out["kl"]["k3"]) >= 0
    assert out["reward_offset"] == 0.25
    np.testing.assert_allclose(out["kl"]["exact"], np.array(out["kl"]["exact_seq"])
                               / np.array(out["length"]), rtol=1e-6)  # fmt: skip
    graphdef, p_state = nnx.split(policy)
    q_state = nnx.state(reference)
    checked = 0
    for row, text in enumerate(out["text"]):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        completion = ids + ([] if out["truncated"][row] else [tokenizer.eos_token_id])
        if len(completion) != out["length"][row] or tokenizer.pad_token_id in completion:
            continue  # decoding and encoding again does not give the sampled tokens back
        prompt = tokenizer(out["prompts"][out["prompt"][row]], add_special_tokens=False)
        sequence = np.array([prompt["input_ids"] + completion], np.int32)
        start = len(prompt["input_ids"]) - 1  # the slot predicting the first completion token
        logits = [np.asarray(forward(graphdef, s, sequence, np.ones_like(sequence)), np.float64)
                  [0, start : start + len(completion)] for s in (p_state, q_state)]  # fmt: skip
        log_p, log_q = (x - np.log(np.exp(x).sum(-1, keepdims=True)) for x in logits)
        direct = (np.exp(log_p) * (log_p - log_q)).sum()
        assert out["kl"]["exact_seq"][row] == pytest.approx(direct, rel=1e-4)
        picked = np.arange(len(completion)), completion
        k1 = (log_p[picked] - log_q[picked]).sum()
        assert out["kl"]["k1_seq"][row] == pytest.approx(k1, rel=1e-3, abs=1e-4)
        checked += 1
        if checked == 2:  # each length compiles a forward of its own
            break
    assert checked


def test_chain_rule_and_the_estimators_expectations_on_small_categoricals():
    """A two-token autoregressive model over 3 symbols: the sequence-level KL(P || Q) is the
    expectation under P of the per-sequence exact KL (the per-token full-vocabulary KLs
    summed along the sample), and of k1's and k3's sums; k2's sum has the known bias
    E[k2] = (Var(log p/q) + KL^2) / 2, small only when the models are close."""
    V = 3
    keys = jax.random.split(jax.random.key(4), 4)
    first_p, first_q = jax.random.normal(keys[0], (V,)), jax.random.normal(keys[1], (V,))
    second_p, second_q = jax.random.normal(keys[2], (V, V)), jax.random.normal(keys[3], (V, V))

    def chain(first, second, x):  # (2, V) next-token logits along the sequence x
        return jnp.stack([first, second[x[0]]])

    sequences = list(itertools.product(range(V), repeat=2))
    log_prob = {}
    for x in sequences:
        for name, (a, b) in {"p": (first_p, second_p), "q": (first_q, second_q)}.items():
            logits = chain(a, b, x)
            log_prob[name, x] = jax.nn.log_softmax(logits)[jnp.arange(2), jnp.array(x)]
    p_seq = {x: float(jnp.exp(log_prob["p", x].sum())) for x in sequences}
    sequence_kl = sum(p_seq[x] * float((log_prob["p", x] - log_prob["q", x]).sum())
                      for x in sequences)  # fmt: skip
    expected = {"exact": 0.0, "k1": 0.0, "k2": 0.0, "k3": 0.0}
    log_ratios = []
    for x in sequences:
        mask = jnp.ones((1, 2))
        exact = exact_kl(chain(first_p, second_p, x)[None], chain(first_q, second_q, x)[None],
                         mask)  # fmt: skip
        est = kl_estimates(log_prob["p", x][None], log_prob["q", x][None], mask)
        expected["exact"] += p_seq[x] * float(exact.sum())
        for name in ("k1", "k2", "k3"):
            expected[name] += p_seq[x] * float(getattr(est, f"{name}_sum")[0])
        log_ratios.append(float(est.k1_sum[0]))
    assert sum(p_seq.values()) == pytest.approx(1.0, abs=1e-6)
    assert expected["exact"] == pytest.approx(sequence_kl, rel=1e-5)
    assert expected["k1"] == pytest.approx(sequence_kl, rel=1e-5)
    # k3 is unbiased for each token's KL given the tokens before, so its sum for the chain's
    assert expected["k3"] == pytest.approx(sequence_kl, rel=1e-5)
    assert abs(expected["k2"] - sequence_kl) > 0.05 * sequence_kl  # biased here
    # One token: E_p[k2] = E_p[(log p/q)^2] / 2 = (Var_p(log p/q) + KL^2) / 2.
    p, q = jax.nn.log_softmax(first_p), jax.nn.log_softmax(first_q)
    weights, log_ratio = np.exp(np.asarray(p, np.float64)), np.asarray(p - q, np.float64)
    kl = float(np.sum(weights * log_ratio))
    variance = float(np.sum(weights * (log_ratio - kl) ** 2))
    est = kl_estimates(p[:, None], q[:, None], jnp.ones((V, 1)))
    k2 = float(np.sum(weights * np.asarray(est.k2[:, 0])))
    assert k2 == pytest.approx((variance + kl**2) / 2, rel=1e-5)
    # Close models: k2 is within a few per cent of the KL (they agree to second order).
    q = jax.nn.log_softmax(first_p + 0.05 * jax.random.normal(keys[1], (V,)))
    log_ratio = np.asarray(p - q, np.float64)
    kl = float(np.sum(weights * log_ratio))
    assert float(np.sum(weights * 0.5 * log_ratio**2)) == pytest.approx(kl, rel=0.05)


# ----------------------------------------------------------------------------- reward models


def test_pair_quality_by_hand():
    margins = [0.1, -1.0, 2.0, 3.0]  # confidence sigmoid(|m|): .525, .731, .881, .953
    sig = [1 / (1 + math.exp(-abs(m))) for m in margins]
    report = pair_quality(margins, ["a", "b", "a", "b"], bins=2)
    assert report["accuracy"] == 0.75 and report["n"] == 4
    low, high = report["reliability"]
    assert (low["low"], low["high"], high["low"], high["high"]) == (0.5, 0.75, 0.75, 1.0)
    assert low["count"] == 2 and low["accuracy"] == 0.5
    assert low["confidence"] == pytest.approx((sig[0] + sig[1]) / 2)
    assert high["count"] == 2 and high["accuracy"] == 1.0
    assert high["confidence"] == pytest.approx((sig[2] + sig[3]) / 2)
    ece = 0.5 * abs(0.5 - (sig[0] + sig[1]) / 2) + 0.5 * abs(1.0 - (sig[2] + sig[3]) / 2)
    assert report["ece"] == pytest.approx(ece)
    assert report["ece"] == expected_calibration_error(np.array(margins), 2)  # one ECE
    kinds = report["by_negative_kind"]
    assert kinds == {"a": {"accuracy": 1.0, "n": 2}, "b": {"accuracy": 0.5, "n": 2}}
    correct = sum(k["accuracy"] * k["n"] for k in kinds.values())
    assert correct == report["accuracy"] * report["n"]
    empty = pair_quality([5.0], ["a"], bins=4)["reliability"]
    assert [b["count"] for b in empty] == [0, 0, 0, 1] and empty[0]["accuracy"] is None


def test_rm_quality_minds_flipped_labels(runs, data):
    pairs = data["pairs"]
    report = rm_quality(runs["rm"], pairs, bins=5)
    json.dumps(report)
    assert report["n"] + report["skipped"] == len(pairs) and report["n"] > 0
    assert sum(b["count"] for b in report["reliability"]) == report["n"]
    kinds = report["by_negative_kind"]
    assert sum(k["n"] for k in kinds.values()) == report["n"]
    correct = sum(k["accuracy"] * k["n"] for k in kinds.values())
    assert correct == pytest.approx(report["accuracy"] * report["n"])
    # The same pairs with the labels flipped (chosen and rejected swapped, `flipped` set):
    # the same gold order, so the same accuracy against it; the labels' accuracy flips.
    swapped = [dict(r, chosen=r["rejected"], rejected=r["chosen"], flipped=not r["flipped"])
               for r in pairs]  # fmt: skip
    again = rm_quality(runs["rm"], swapped, bins=5)
    assert again["accuracy"] == report["accuracy"] and again["ece"] == report["ece"]
    assert again["label_accuracy"] == pytest.approx(1 - report["label_accuracy"])


def test_gold_agreement_on_hand_made_scores():
    groups = [0, 0, 0, 1, 1, 2, 2]
    gold = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0]
    proxy = [2.0, -1.0, 3.0, 0.0, 5.0, 1.0, 1.0]
    # Prompt 0: (1 vs 0) agrees, (1 vs .5) disagrees, (0 vs .5) agrees; prompt 1: gold tie,
    # left out; prompt 2: a proxy tie, half.
    got = gold_agreement(proxy, gold, groups)
    assert got == {"agreement": pytest.approx(2.5 / 4), "pairs": 4, "proxy_ties": 1,
                   "gold_ties": 1, "prompts": 2}  # fmt: skip
    assert gold_agreement([1.0], [1.0], [0])["agreement"] is None
    samples = {"proxy": proxy, "gold": gold, "prompt": groups, "reward_run": "rm"}
    assert rm_gold_agreement(None, samples)["agreement"] == pytest.approx(0.625)


def test_samples_scored_by_the_reward_model(runs, data, cfg, tokenizer):
    """best_of_n's arrays are sample_policy's, by prompt; rm_gold_agreement reads the
    samples' proxy when they were scored by that reward model, and scores the texts again
    otherwise."""
    policy = init_model(cfg, 1)
    draws = best_of_n_samples((policy, tokenizer), runs["rm"], data["examples"], 4,
                              max_new_tokens=MAX_NEW, batch_prompts=2)  # fmt: skip
    samples = sample_policy(
        (policy, tokenizer),
        data["examples"],
        group=4,
        max_new_tokens=MAX_NEW,
        reward_run=runs["rm"],
        batch_prompts=2,
    )
    P = len(data["examples"])
    assert np.shape(draws["proxy"]) == (P, 4) and np.shape(draws["gold"]) == (P, 4)
    np.testing.assert_allclose(np.ravel(draws["proxy"]), samples["proxy"])
    assert draws["records"] == list(range(P))
    agreement = rm_gold_agreement(runs["rm"], samples)
    assert agreement["reward_run"] == str(runs["rm"])
    rescored = rm_gold_agreement(str(runs["rm"]) + "/", samples)  # another name: scored again
    assert rescored["pairs"] == agreement["pairs"]
