"""SFT: data masks and batching, the loss against a reference, accumulation invariance, every
parameter moving, config validation, and a tiny end-to-end run whose loss falls."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.kinship import KinshipConfig, generate_dataset
from trainers.checkpoint import load_run
from trainers.config import SFTConfig
from trainers.data import (
    BatchIterator,
    bucket_length,
    deal_by_length,
    load_records,
    make_batch,
    make_packed_batch,
    pack_rows,
    read_data_config,
    tokenize_examples,
)
from trainers.engine import init_from, make_optimizer
from trainers.engine import train as train_method
from trainers.hf import from_hf
from trainers.model import PRESETS, GPTConfig, forward, init_model, segment_positions
from trainers.sft import sft_step
from trainers.tokenizer import kinship_tokenizer

TINY = GPTConfig(vocab_size=1, n_positions=64, n_embd=32, n_layer=2, n_head=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "l1"
    generate_dataset(out, KinshipConfig.for_level(1), 400, seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return kinship_tokenizer()


@pytest.fixture(scope="module")
def train_data(data_dir, tokenizer):
    return tokenize_examples(load_records(data_dir, "train"), tokenizer, TINY.n_positions)


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny", TINY)
    return "tiny"


def test_tokenized_sequence_and_loss_mask(data_dir, tokenizer):
    record = load_records(data_dir, "train")[0]
    split = tokenize_examples([record], tokenizer, 256)
    prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
    completion = tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
    assert split.tokens[0].tolist() == [*prompt, *completion, tokenizer.eos_token_id]
    batch = make_batch(split, np.array([0]), grad_accum=1, pad_id=0, max_length=256)
    length = len(split.tokens[0])
    assert batch.tokens.shape == (1, 1, bucket_length(length, 256))
    expected = np.r_[np.zeros(len(prompt)), np.ones(len(completion) + 1)]
    np.testing.assert_array_equal(batch.loss_mask[0, 0, :length], expected)
    assert (
        not batch.loss_mask[0, 0, length:].any() and not batch.attention_mask[0, 0, length:].any()
    )


def test_prompt_loss_weight_weights_prompt_tokens_only(data_dir, tokenizer):
    split = tokenize_examples(load_records(data_dir, "train")[:3], tokenizer, 256)
    plain = make_batch(split, np.arange(3), grad_accum=1, pad_id=0, max_length=256)
    weighted = make_batch(
        split, np.arange(3), grad_accum=1, pad_id=0, max_length=256, prompt_weight=0.25
    )
    for row in range(3):
        prompt, length = split.prompt_lengths[row], len(split.tokens[row])
        np.testing.assert_array_equal(weighted.loss_mask[0, row, :prompt], 0.25)
        np.testing.assert_array_equal(
            weighted.loss_mask[0, row, prompt:], plain.loss_mask[0, row, prompt:]
        )
        assert not weighted.loss_mask[0, row, length:].any()


def test_too_long_records_are_dropped_and_buckets_are_capped(data_dir, tokenizer):
    records = load_records(data_dir, "train")
    split = tokenize_examples(records, tokenizer, 40)
    assert split.dropped == sum(
        len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1 > 40 for r in records
    )
    assert bucket_length(33, 256) == 64 and bucket_length(64, 256) == 64
    assert bucket_length(250, 256) == 256 and bucket_length(70, 80) == 80


def test_batch_order_is_a_pure_function_of_seed_and_position(train_data):
    kwargs = dict(batch_size=4, grad_accum=2, pad_id=0, max_length=64, length_grouping=4)
    first = BatchIterator(train_data, seed=1, **kwargs)
    batches = [next(first) for _ in range(60)]  # crosses epoch boundaries
    resumed = BatchIterator(train_data, seed=1, position=45, **kwargs)
    for expected in batches[45:]:
        np.testing.assert_array_equal(next(resumed).tokens, expected.tokens)
    other = BatchIterator(train_data, seed=2, **kwargs)
    assert not np.array_equal(next(other).tokens, batches[0].tokens)
    per_epoch = first.steps_per_epoch
    seen = np.concatenate([first.indices(step) for step in range(per_epoch)])
    assert len(set(seen.tolist())) == len(seen)  # an epoch never repeats an example


def test_wrong_data_kind_and_missing_split_are_clear(tmp_path, data_dir):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "kinship/preference"}))
    with pytest.raises(ValueError, match="kinship/preference"):
        read_data_config(tmp_path)
    with pytest.raises(ValueError, match="no split 'nope'"):
        load_records(data_dir, "nope")


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("steps", 0), ("learning_rate", -1.0), ("warmup_steps", 5000),
     ("min_lr_ratio", 2.0), ("preset", "huge"), ("bf16", "yes"), ("seed", -1),
     ("prompt_loss_weight", 1.5), ("length_bucket", 0)],
)  # fmt: skip
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        SFTConfig(**{field: value})


def _split_model(seed: int = 0, **overrides):
    cfg = dataclasses.replace(TINY, vocab_size=1056, **overrides)
    return nnx.split(init_model(cfg, seed))


def _step(config: SFTConfig, state, batch, optimizer=None, graphdef=None):
    optimizer = optimizer or make_optimizer(config)
    step = jax.jit(sft_step, static_argnums=0, static_argnames="optimizer")
    graphdef = graphdef or _split_model()[0]
    opt_state = optimizer.init(state)
    return step(graphdef, state, opt_state, jax.tree.map(jnp.asarray, batch), optimizer=optimizer)


def test_loss_is_the_mean_completion_token_cross_entropy(train_data):
    graphdef, state = _split_model()
    batch = make_batch(train_data, np.arange(6), grad_accum=2, pad_id=0, max_length=64)
    _, _, metrics = _step(SFTConfig(), state, batch)
    tokens = batch.tokens.reshape(6, -1)
    logits = np.asarray(forward(graphdef, state, tokens, batch.attention_mask.reshape(6, -1)))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target_logp = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
    mask = batch.loss_mask.reshape(6, -1)[:, 1:]
    reference = -(target_logp * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(metrics["loss"]), reference, rtol=1e-5)


def test_prompt_weighted_loss_is_the_weighted_token_mean(train_data):
    graphdef, state = _split_model()
    batch = make_batch(
        train_data, np.arange(6), grad_accum=2, pad_id=0, max_length=64, prompt_weight=0.5
    )
    _, _, metrics = _step(SFTConfig(prompt_loss_weight=0.5), state, batch)
    tokens = batch.tokens.reshape(6, -1)
    logits = np.asarray(forward(graphdef, state, tokens, batch.attention_mask.reshape(6, -1)))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target_logp = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
    weight = batch.loss_mask.reshape(6, -1)[:, 1:]
    assert {0.0, 0.5, 1.0} <= set(np.unique(weight).tolist())
    reference = -(target_logp * weight).sum() / weight.sum()
    np.testing.assert_allclose(float(metrics["loss"]), reference, rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(40, 90))
def test_pack_rows_places_every_sequence_once_within_the_width(lengths, width):
    rows = pack_rows(lengths, width)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= width for row in rows)
    assert rows == pack_rows(lengths, width)  # deterministic
    # First fit: a later row's first sequence did not fit any earlier row, so no two rows
    # could be merged into one.
    fills = [sum(lengths[i] for i in row) for row in rows]
    assert all(fills[i] + fills[j] > width for i in range(len(rows)) for j in range(i))


@given(
    st.integers(1, 12),
    st.integers(1, 9),
    st.integers(1, 8),
    st.lists(st.integers(1, 200), min_size=108, max_size=108),
)
def test_deal_by_length_regroups_within_windows_into_balanced_groups(groups, n, window, pool):
    lengths = np.array(pool[: groups * n])
    order = np.random.default_rng(groups + n).permutation(groups * n).reshape(groups, n)
    dealt = deal_by_length(order, lengths, window, np.random.default_rng(7))
    assert dealt.shape == order.shape
    again = deal_by_length(order, lengths, window, np.random.default_rng(7))
    np.testing.assert_array_equal(dealt, again)  # a pure function of its inputs
    for start in range(0, groups, window):  # the same examples in each window, none lost
        assert sorted(dealt[start : start + window].ravel()) == sorted(
            order[start : start + window].ravel()
        )
        # Dealing balances the groups' total lengths to within the window's length range.
        window_lengths = lengths[order[start : start + window]]
        totals = lengths[dealt[start : start + window]].sum(axis=1)
        assert totals.max() - totals.min() <= window_lengths.max() - window_lengths.min()


def test_deal_by_length_changes_partners_with_the_random_generator():
    """Even with all lengths distinct, the dealt groups depend on the generator: the same
    window does not give the same batches every epoch."""
    order = np.arange(64).reshape(8, 8)
    lengths = np.arange(64) * 3 + 1
    first = deal_by_length(order, lengths, 8, np.random.default_rng(0))
    second = deal_by_length(order, lengths, 8, np.random.default_rng(1))
    assert {frozenset(g) for g in first.tolist()} != {frozenset(g) for g in second.tolist()}


def test_packed_batch_keeps_each_sequence_whole_and_apart(train_data):
    indices = np.arange(12)
    batch = make_packed_batch(train_data, indices, grad_accum=2, pad_id=0, width=64,
                              row_multiple=4, prompt_weight=0.5)  # fmt: skip
    assert batch.tokens.shape[:2] == (2, batch.tokens.shape[1]) and batch.tokens.shape[1] % 4 == 0
    positions = np.asarray(segment_positions(jnp.asarray(batch.attention_mask.reshape(-1, 64))))
    found = []
    for row, segs in enumerate(batch.attention_mask.reshape(-1, 64)):
        tokens, loss = batch.tokens.reshape(-1, 64)[row], batch.loss_mask.reshape(-1, 64)[row]
        for k in sorted(set(segs.tolist()) - {0}):
            where = np.flatnonzero(segs == k)
            assert (np.diff(where) == 1).all() and positions[row, where].tolist() == list(
                range(len(where))
            )
            assert loss[where[0]] == 0.0  # nothing predicts a sequence's first token
            found.append((tokens[where].tolist(), loss[where[1:]].tolist()))
        assert (positions[row, segs == 0] == 0).all()
    plain = make_batch(train_data, indices, grad_accum=1, pad_id=0, max_length=64,
                       prompt_weight=0.5)  # fmt: skip
    expected = []
    for row in range(12):
        n = int(plain.attention_mask[0, row].sum())
        expected.append((plain.tokens[0, row, :n].tolist(), plain.loss_mask[0, row, 1:n].tolist()))
    assert sorted(found) == sorted(expected)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_packed_step_equals_one_sequence_per_row(train_data, optimizer):
    _, state = _split_model()
    tx = optax.sgd(1.0) if optimizer == "sgd" else None
    config = SFTConfig(batch_size=6, grad_accum=2, warmup_steps=0, prompt_loss_weight=1.0)
    common = dict(grad_accum=2, pad_id=0, prompt_weight=1.0)
    plain = make_batch(train_data, np.arange(12), max_length=64, **common)
    packed = make_packed_batch(train_data, np.arange(12), width=128, **common)
    a, _, ma = _step(config, jax.tree.map(jnp.copy, state), plain, tx)
    b, _, mb = _step(config, jax.tree.map(jnp.copy, state), packed, tx)
    for key in ("loss", "grad_norm", "loss_tokens"):
        np.testing.assert_allclose(ma[key], mb[key], rtol=1e-5)
    lr = SFTConfig().learning_rate
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-3 * lr)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_batch_8_by_1_equals_batch_1_by_8(train_data, optimizer):
    _, state = _split_model()
    before = [np.asarray(leaf) for leaf in jax.tree.leaves(state)]
    results = []
    for batch_size, accum in ((8, 1), (1, 8)):
        config = SFTConfig(batch_size=batch_size, grad_accum=accum, warmup_steps=0)
        # SGD with lr 1 makes the update exactly minus the accumulated gradient.
        tx = optax.sgd(1.0) if optimizer == "sgd" else None
        batch = make_batch(train_data, np.arange(8), grad_accum=accum, pad_id=0, max_length=64)
        results.append(_step(config, jax.tree.map(jnp.copy, state), batch, tx))
    (state_a, _, metrics_a), (state_b, _, metrics_b) = results
    for key in ("loss", "grad_norm", "loss_tokens"):
        np.testing.assert_allclose(metrics_a[key], metrics_b[key], rtol=1e-5)
    leaves = zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), before, strict=True)
    for a, b, old in leaves:
        update_a, update_b = np.asarray(a) - old, np.asarray(b) - old
        if optimizer == "sgd":
            scale = np.abs(update_a).max()
            np.testing.assert_allclose(update_b, update_a, rtol=1e-4, atol=1e-5 * scale)
        else:
            # Adam divides by |gradient|, which turns float noise in gradients that are zero in
            # exact arithmetic (the key bias) into visible updates; the rest agrees to 1e-5.
            lr = SFTConfig().learning_rate
            np.testing.assert_allclose(update_b, update_a, rtol=1e-5, atol=1e-3 * lr)


def test_every_parameter_changes_after_one_step(train_data):
    _, state = _split_model()
    before = [np.asarray(leaf) for leaf in jax.tree.leaves(state)]
    batch = make_batch(train_data, np.arange(8), grad_accum=1, pad_id=0, max_length=64)
    # No weight decay: a parameter must move because of its gradient, not the decay.
    new_state, _, _ = _step(SFTConfig(weight_decay=0.0, warmup_steps=0), state, batch)
    after = jax.tree_util.tree_leaves_with_path(new_state)
    assert len(after) == len(before) == 4 + 12 * TINY.n_layer
    for (path, leaf), old in zip(after, before, strict=True):
        assert not np.array_equal(np.asarray(leaf), old), jax.tree_util.keystr(path)


def test_bf16_and_remat_step_matches_float32(train_data):
    _, state = _split_model()
    batch = make_batch(train_data, np.arange(8), grad_accum=2, pad_id=0, max_length=64)
    config = SFTConfig(warmup_steps=0)
    _, _, reference = _step(config, jax.tree.map(jnp.copy, state), batch)
    graphdef, _ = _split_model(dtype="bfloat16", remat=True)
    new_state, _, metrics = _step(config, state, batch, graphdef=graphdef)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_state))
    np.testing.assert_allclose(metrics["loss"], reference["loss"], rtol=2e-2)
    np.testing.assert_allclose(metrics["grad_norm"], reference["grad_norm"], rtol=5e-2)


def test_tiny_sft_run_learns_and_exports(tmp_path, data_dir, tiny_preset):
    config = SFTConfig(
        preset=tiny_preset, steps=60, batch_size=16, learning_rate=1e-2, warmup_steps=5,
        log_interval=10, eval_interval=30, eval_examples=32, save_interval=30,
    )  # fmt: skip
    summary = train_method("sft", config, data_dir, tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    train = [line for line in lines if "train/loss" in line]
    assert [line["step"] for line in train] == list(range(1, 61))
    assert {"train/loss", "train/tokens_per_s", "train/lr", "train/grad_norm"} <= set(train[0])
    first = np.mean([line["train/loss"] for line in train[:5]])
    last = np.mean([line["train/loss"] for line in train[-5:]])
    assert last < 0.5 * first, (first, last)
    evals = [line["eval/loss"] for line in lines if "eval/loss" in line]
    assert len(evals) == 2 and evals[1] < evals[0] and summary["eval/loss"] == evals[1]
    # The HF export holds exactly the final checkpoint's weights.
    model, _, tokenizer = load_run(tmp_path / "run")
    exported, _ = from_hf(tmp_path / "run" / "hf")
    ids = jnp.asarray(tokenizer("Ann is Bob's mother.\n")["input_ids"])[None]
    np.testing.assert_allclose(
        forward(*nnx.split(exported), ids), forward(*nnx.split(model), ids), atol=1e-6
    )
    assert (tmp_path / "run" / "hf" / "tokenizer.json").exists()
    # Both the run folder and its HF export can start a new run, with the same weights.
    for source in (tmp_path / "run", tmp_path / "run" / "hf"):
        start, start_cfg, start_tokenizer = init_from(str(source), config)
        assert start_cfg.n_embd == TINY.n_embd and len(start_tokenizer) == len(tokenizer)
        np.testing.assert_allclose(
            forward(*nnx.split(start), ids), forward(*nnx.split(model), ids), atol=1e-6
        )
    with pytest.raises(ValueError, match="--init"):
        init_from(str(tmp_path / "missing"), config)


def test_a_broken_record_file_names_the_file_and_the_line(data_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    lines = (broken / "train.jsonl").read_text(encoding="utf-8").splitlines()
    lacking = json.loads(lines[1])
    del lacking["completion"]
    (broken / "train.jsonl").write_text(
        "\n".join([lines[0], json.dumps(lacking), "{not json", *lines[3:]]) + "\n"
    )
    with pytest.raises(ValueError, match=r"train\.jsonl line 2 lacks completion"):
        load_records(broken, "train")
    (broken / "train.jsonl").write_text("\n".join([lines[0], "{not json"]) + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl line 2 is not valid JSON"):
        load_records(broken, "train")
