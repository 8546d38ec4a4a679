"""Reward model: the value head read at the last real token, a trunk kept from the initial
model, the calibration error on hand-computed cases, config validation, and a tiny end-to-end
run that reports held-out accuracy and stores the reward offset."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tasks.kinship import KinshipConfig, generate_dataset
from tasks.kinship.pairs import FeedbackConfig
from trainers.checkpoint import load_run
from trainers.config import RewardModelConfig
from trainers.data import PREFERENCE_KIND, load_records
from trainers.engine import train as train_method
from trainers.model import GPTConfig, init_model
from trainers.preference_data import (
    make_packed_pair_batch,
    make_pair_batch,
    tokenize_pairs,
)
from trainers.reward_model import (
    expected_calibration_error,
    mean_reference_reward,
    packed_pair_rewards,
    pair_rewards,
    read_reward_offset,
    sequence_rewards,
    with_value_head,
)

TINY = GPTConfig(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)


def test_reward_is_the_value_at_the_last_real_token():
    model, _ = with_value_head(init_model(TINY, 0), TINY, seed=1)
    tokens = jnp.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
    attention = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    rewards = sequence_rewards(model, tokens, attention)
    values = model.value(model.hidden_states(tokens, attention))
    np.testing.assert_allclose(rewards, [values[0, 3], values[1, 5]])
    alone = sequence_rewards(model, tokens[:1, :4], attention[:1, :4])  # no padding at all
    np.testing.assert_allclose(rewards[0], alone[0], rtol=1e-5, atol=1e-6)


def test_packed_rewards_equal_separate_sequences(data_dir):
    from trainers.tokenizer import kinship_tokenizer

    tokenizer = kinship_tokenizer()
    records = load_records(data_dir, "train", PREFERENCE_KIND)[:8]
    pairs = tokenize_pairs(records, tokenizer, 128)
    cfg = dataclasses.replace(TINY, vocab_size=len(tokenizer), n_positions=128)
    model, _ = with_value_head(init_model(cfg, 0), cfg, seed=1)
    indices = np.arange(len(pairs))
    unpacked = make_pair_batch(pairs, indices, None, grad_accum=1, pad_id=0, max_length=128)
    packed = make_packed_pair_batch(pairs, indices, None, grad_accum=1, pad_id=0)
    want = pair_rewards(model, unpacked.tokens[0], unpacked.attention_mask[0])
    got = packed_pair_rewards(model, *(x[0] for x in packed[:3]), packed.last[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    shared = make_packed_pair_batch(pairs, indices, None, grad_accum=1, pad_id=0, width=256)
    assert shared.tokens.shape[1] < len(indices)  # several pairs to a row
    got = packed_pair_rewards(model, *(x[0] for x in shared[:3]), shared.last[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_value_head_computes_in_float32_under_bf16():
    """Under bf16 compute the trunk runs in bf16 but the scalar head in float32, so rewards
    are not quantised to bf16's few significant digits."""
    cfg = dataclasses.replace(TINY, dtype="bfloat16")
    model, _ = with_value_head(init_model(cfg, 0), cfg, seed=1)
    hidden = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 32)), jnp.bfloat16)
    values = model.value(hidden)
    kernel, bias = model.value_head.kernel[...], model.value_head.bias[...]
    expected = (np.asarray(hidden, np.float32) @ np.asarray(kernel) + np.asarray(bias))[..., 0]
    assert values.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-5, atol=1e-6)


def test_value_head_is_added_to_the_initial_trunk():
    base = init_model(TINY, 0)
    model, cfg = with_value_head(base, TINY, seed=1)
    assert cfg.value_head and model.value_head is not None
    np.testing.assert_array_equal(model.wte.embedding[...], base.wte.embedding[...])
    np.testing.assert_array_equal(model.h[1].mlp.c_fc.kernel[...], base.h[1].mlp.c_fc.kernel[...])
    assert with_value_head(model, cfg, seed=2)[0] is model


def test_calibration_error_hand_cases():
    log3 = math.log(3.0)  # sigmoid(log 3) = 0.75
    assert expected_calibration_error(np.full(4, log3)) == pytest.approx(0.25)  # 100% vs 75%
    assert expected_calibration_error(np.array([log3, -log3])) == pytest.approx(0.25)  # 50 vs 75
    assert expected_calibration_error(np.zeros(3)) == pytest.approx(0.5)  # ties count as wrong
    # calibrated: 3 of 4 right at confidence 0.75
    assert expected_calibration_error(np.array([log3, log3, log3, -log3])) == pytest.approx(0.0)
    # two bins: 0.75 (all right) and 0.99 (all right), weights 1/2 each
    margins = np.array([log3, math.log(99.0)])
    assert expected_calibration_error(margins) == pytest.approx(0.5 * 0.25 + 0.5 * 0.01)


@pytest.mark.parametrize(("field", "value"), [("offset_examples", 0), ("calibration_bins", 0),
                                              ("clip_norm", 0.0), ("steps", 0)])  # fmt: skip
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        RewardModelConfig(**{field: value})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "pairs"
    generate_dataset(out, KinshipConfig.for_level(1), 400, seed=9, kind="preference",
                     feedback=FeedbackConfig(), progress=False)  # fmt: skip
    return out


def test_tiny_run_reports_accuracy_calibration_and_offset(data_dir, tmp_path, nano64):
    config = RewardModelConfig(preset=nano64, steps=40, batch_size=8, learning_rate=1e-3,
                               warmup_steps=4, eval_interval=0, offset_examples=64)  # fmt: skip
    run = tmp_path / "rm"
    summary = train_method("rm", config, data_dir, run, progress=False)
    assert summary["eval/rewards/accuracies"] > 0.6, summary  # 60 held-out pairs
    assert 0.0 <= summary["eval/calibration_error"] <= 0.5
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/rewards/accuracies" in x for x in lines)
    model, cfg, tokenizer = load_run(run)
    assert cfg.value_head and dataclasses.asdict(cfg)["n_layer"] == 4  # nano trunk + head
    records = load_records(data_dir, "train", PREFERENCE_KIND)[:64]
    mean, count = mean_reference_reward(model, tokenizer, records, batch_size=16)
    stored = json.loads((run / "reward_offset.json").read_text())
    assert stored["examples"] == count and 32 < count <= 64  # those that fit the context
    assert read_reward_offset(run) == pytest.approx(mean, abs=1e-4)  # normalised mean is 0
    assert summary["reward_offset"] == read_reward_offset(run)
    _, state = nnx.split(model)
    assert "value_head" in state
