"""KTO: mismatched pairs for the KL reference point (never an example with itself, fixed
groups), the KL estimate against a hand computation, config validation, and a tiny run on
1:4 desirable:undesirable data."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tasks.kinship import KinshipConfig, generate_dataset
from tasks.kinship.pairs import FeedbackConfig
from trainers.config import KTOConfig
from trainers.data import FEEDBACK_KIND, load_records
from trainers.engine import open_run
from trainers.engine import train as train_method
from trainers.kto import kl_estimate
from trainers.logprobs import sequence_logps
from trainers.model import GPTConfig, init_model
from trainers.preference_data import (
    eval_pair_batches,
    kl_partners,
    make_pair_batch,
    tokenize_feedback,
)
from trainers.tokenizer import kinship_tokenizer

TINY = GPTConfig(vocab_size=1056, n_positions=128, n_embd=32, n_layer=2, n_head=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "kto"
    feedback = FeedbackConfig(desirable_fraction=0.2)  # 1:4
    generate_dataset(out, KinshipConfig.for_level(1), 400, seed=4, kind="feedback",
                     feedback=feedback, progress=False)  # fmt: skip
    return out


@pytest.mark.parametrize(("n", "group"), [(10, 4), (9, 3), (2, 8), (33, 16)])
def test_kl_partners_shift_by_one_within_fixed_groups(n, group):
    partners = kl_partners(n, group, seed=3)
    assert sorted(partners.tolist()) == list(range(n))  # every completion used once
    assert all(partners[i] != i for i in range(n))
    np.testing.assert_array_equal(partners, kl_partners(n, group, seed=3))
    cycles, seen = [], set()
    for i in range(n):
        if i not in seen:
            cycle, j = [], i
            while j not in seen:
                seen.add(j)
                cycle.append(j)
                j = int(partners[j])
            cycles.append(len(cycle))
    assert all(min(group, n) <= size < 2 * max(group, 2) for size in cycles)  # one per group


def test_mismatched_sequence_is_own_prompt_with_partner_completion(data_dir):
    tokenizer = kinship_tokenizer()
    records = load_records(data_dir, "train", FEEDBACK_KIND)[:12]
    data = tokenize_feedback(records, tokenizer, 256, group_size=4, seed=0)
    partners = kl_partners(12, 4, seed=0)
    ids = functools.partial(lambda t: tokenizer(t, add_special_tokens=False)["input_ids"])
    for i in (0, 5, 11):
        expected = [*ids(records[i]["prompt"]), *ids(records[partners[i]]["completion"])]
        assert data.sequences.tokens[12 + i].tolist() == [*expected, tokenizer.eos_token_id]
        assert data.sequences.prompt_lengths[12 + i] == len(ids(records[i]["prompt"]))
    assert data.labels.tolist() == [r["label"] for r in records]


def test_kl_estimate_is_the_mean_mismatched_log_ratio(data_dir):
    tokenizer = kinship_tokenizer()
    records = load_records(data_dir, "train", FEEDBACK_KIND)[:8]
    data = tokenize_feedback(records, tokenizer, 128, group_size=4, seed=0)
    refs = np.linspace(-90.0, -60.0, 16).astype(np.float32)
    batch = make_pair_batch(data, np.arange(8), refs, grad_accum=2, pad_id=0, max_length=128)
    graphdef, state = nnx.split(init_model(TINY, 0))
    kl = jax.jit(kl_estimate, static_argnums=0)(graphdef, state, batch)
    model = nnx.merge(graphdef, state)
    expected = []
    for a in range(2):
        micro = jax.tree.map(lambda x, a=a: jnp.asarray(x[a]), batch)
        sums, _ = sequence_logps(model, micro.tokens[1], micro.attention_mask[1],
                                 micro.loss_mask[1])  # fmt: skip
        expected.append(sums - micro.ref_logps[1])
    np.testing.assert_allclose(kl, np.mean(expected), rtol=1e-5)
    np.testing.assert_array_equal(batch.ref_logps[1, 1], refs[8 + 4 : 8 + 8])


@pytest.mark.parametrize(
    ("field", "value"), [("beta", 0.0), ("desirable_weight", -1.0), ("undesirable_weight", -0.5)]
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        KTOConfig(**{field: value})
    with pytest.raises(ValueError, match=r"^length_grouping must be 1 for KTO"):
        KTOConfig(length_grouping=8)  # z is a batch statistic: batches stay random draws
    with pytest.raises(ValueError, match=r"^eval_examples must be an integer >= 2 for KTO"):
        KTOConfig(eval_examples=1)
    with pytest.raises(ValueError, match=r"^desirable_weight must be > 0"):
        KTOConfig(desirable_weight=0.0, undesirable_weight=0.0)


def test_held_out_z_is_one_estimate_over_every_real_example(data_dir, tmp_path):
    """Held-out KTO metrics do not depend on the evaluation batch size: z is the mean
    mismatched log-ratio over all held-out examples, not per batch, and the copies filling up
    the last batch count nowhere."""
    config = KTOConfig(preset="nano", steps=1, warmup_steps=0, batch_size=8, eval_examples=21)
    run = open_run("kto", config, data_dir, tmp_path / "run", progress=False)
    validation = run.prepared.data["validation"]
    # References moved off the policy, so every batch's own z would differ.
    n = len(validation)
    shift = np.random.default_rng(0).normal(-2.0, 3.0, 2 * n).astype(np.float32)
    refs = run.prepared.data["references"]["validation"] + shift
    summaries = []
    for batch_size in (8, 5, 21):
        batches = eval_pair_batches(validation, refs, batch_size, 0, 128)
        summaries.append(run.evaluate(held_out=batches))
    for other in summaries[1:]:
        for key in ("loss", "kl", "rewards/margins", "kl_log_ratio"):
            assert other[key] == pytest.approx(summaries[0][key], rel=1e-5, abs=1e-6), key
    # Fresh model: the policy is the reference before the shift, so z = mean(-shift) over the
    # mismatched sequences (the second half), clamped at 0.
    assert summaries[0]["kl"] == pytest.approx(max(0.0, -shift[n:].mean()), abs=1e-3)
    assert summaries[0]["kl"] > 0.5


def test_tiny_run_on_one_to_four_data(data_dir, tmp_path, nano64):
    """Nano preset, 320 examples at 1 desirable : 4 undesirable, desirable_weight 4 (the
    paper's balance): held-out desirable completions end with the higher implicit reward."""
    config = KTOConfig(preset=nano64, steps=50, batch_size=16, learning_rate=3e-4, warmup_steps=4,
                       desirable_weight=4.0, eval_interval=0)  # fmt: skip
    summary = train_method("kto", config, data_dir, tmp_path / "run", progress=False)
    n_d, n_u = summary["data/desirable"], summary["data/undesirable"]
    assert 3.0 < n_u / n_d < 5.5, (n_d, n_u)  # 1:4 up to sampling noise
    assert 0.75 <= summary["data/weighted_ratio"] <= 1.4
    assert np.isfinite(summary["train/loss"]) and summary["train/kl"] >= 0.0
    assert summary["eval/rewards/margins"] > 0.0, summary
    share = summary["eval/is_desirable"]  # at policy = reference every loss is weight / 2
    assert summary["eval/loss"] < 0.5 * (4.0 * share + 1.0 * (1.0 - share)), summary
    assert (tmp_path / "run" / "reference_logps.npz").exists()
