"""DPO family: pair batches, one concatenated forward equal to two, cached reference log-probs
equal to a fresh forward, every parameter moving, accumulation invariance, each loss's inputs,
config validation, and a tiny end-to-end run whose held-out reward accuracy rises."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
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
from tasks.kinship.pairs import FeedbackConfig
from tests.devices import run_on_cpu_devices
from trainers.config import DPOConfig, OnlineDPOConfig
from trainers.data import PREFERENCE_KIND, TokenizedSplit, load_records
from trainers.dpo import dpo_step, preference_loss
from trainers.engine import make_optimizer, open_run
from trainers.engine import train as train_method
from trainers.logprobs import (
    cached_reference_logps,
    packed_pair_logps,
    packed_reference_logps,
    pair_logps,
    reference_logps,
    sequence_logps,
    state_fingerprint,
)
from trainers.losses import DPO_LOSSES, dpo_loss, ipo_loss, simpo_loss
from trainers.model import PRESETS, GPTConfig, init_model, pure_jit
from trainers.preference_data import (
    PAD_SEGMENT,
    PairIterator,
    SequencePairs,
    make_packed_pair_batch,
    make_pair_batch,
    packed_rows,
    packed_width,
    tokenize_pairs,
)
from trainers.tokenizer import kinship_tokenizer

TINY = GPTConfig(vocab_size=1056, n_positions=128, n_embd=32, n_layer=2, n_head=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "pairs"
    generate_dataset(out, KinshipConfig.for_level(1), 400, seed=5, kind="preference",
                     feedback=FeedbackConfig(), progress=False)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return kinship_tokenizer()


@pytest.fixture(scope="module")
def pairs(data_dir, tokenizer):
    return tokenize_pairs(load_records(data_dir, "train", PREFERENCE_KIND), tokenizer, 128)


def test_pair_batch_puts_chosen_then_rejected(data_dir, tokenizer, pairs):
    record = load_records(data_dir, "train", PREFERENCE_KIND)[0]
    ids = functools.partial(lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    refs = np.arange(2 * len(pairs), dtype=np.float32)
    batch = make_pair_batch(pairs, np.array([0, 1]), refs, grad_accum=2, pad_id=0, max_length=128)
    assert batch.tokens.shape[:3] == (2, 2, 1) and batch.labels.shape == (2, 1)
    for column, side in enumerate(("chosen", "rejected")):
        expected = [*ids(record["prompt"]), *ids(record[side]), eos]
        assert batch.tokens[0, column, 0, : len(expected)].tolist() == expected
        mask = batch.loss_mask[0, column, 0]
        assert mask.sum() == len(ids(record[side])) + 1 and mask[len(ids(record["prompt"]))] == 1
    assert batch.ref_logps[:, :, 0].tolist() == [[0, len(pairs)], [1, len(pairs) + 1]]


def test_concatenated_forward_equals_separate_forwards(pairs):
    graphdef, state = nnx.split(init_model(TINY, 0))
    batch = make_pair_batch(pairs, np.arange(6), None, grad_accum=1, pad_id=0, max_length=128)
    micro = jax.tree.map(lambda x: jnp.asarray(x[0]), batch)
    sums, counts = pure_jit(pair_logps)(
        graphdef, state, micro.tokens, micro.attention_mask, micro.loss_mask
    )
    for side in (0, 1):
        alone, alone_counts = pure_jit(sequence_logps)(
            graphdef, state, micro.tokens[side], micro.attention_mask[side], micro.loss_mask[side]
        )
        np.testing.assert_allclose(sums[side], alone, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(counts[side], alone_counts)


def test_packed_batch_holds_the_prompt_once_then_both_completions(data_dir, tokenizer, pairs):
    record = load_records(data_dir, "train", PREFERENCE_KIND)[0]
    ids = functools.partial(lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])
    eos, prompt = tokenizer.eos_token_id, ids(record["prompt"])
    chosen, rejected = [*ids(record["chosen"]), eos], [*ids(record["rejected"]), eos]
    refs = np.arange(2 * len(pairs), dtype=np.float32)
    batch = make_packed_pair_batch(pairs, np.array([0, 1]), refs, grad_accum=2, pad_id=0)
    assert batch.tokens.shape[:2] == (2, 1) and batch.targets.shape[:2] == (2, 1)
    P, C, R = len(prompt), len(chosen), len(rejected)
    end = P + C + R
    assert batch.tokens[0, 0, :end].tolist() == prompt + chosen + rejected
    assert (batch.tokens[0, 0, end:] == 0).all() and batch.tokens.shape[-1] % 32 == 0
    assert batch.positions[0, 0, :end].tolist() == [*range(P + C), *range(P, P + R)]
    assert batch.segments[0, 0].tolist() == [0] * P + [1] * C + [2] * R + [PAD_SEGMENT] * (
        batch.tokens.shape[-1] - end
    )
    sources = batch.sources[0, 0]
    assert sources[P + C] == P - 1  # the rejected side's first token follows the prompt
    assert all(sources[t] == t - 1 for t in range(1, end) if t != P + C)
    assert batch.targets[0, 0, :end].tolist() == [-1] * P + [0] * C + [1] * R  # s * B + b
    assert batch.last[0, :, 0].tolist() == [P + C - 1, end - 1]
    assert batch.ref_logps[:, :, 0].tolist() == [[0, len(pairs)], [1, len(pairs) + 1]]


def test_several_examples_share_a_row(pairs):
    """Short examples go two or more to a row; each keeps its own segments and targets."""
    lengths = pairs.packed_lengths[:8]
    width = 2 * int(lengths.max())
    batch = make_packed_pair_batch(pairs, np.arange(8), None, grad_accum=1, pad_id=0, width=width)
    rows = batch.tokens.shape[1]
    assert rows < 8 and batch.tokens.shape[-1] == width
    assert (batch.tokens != 0).sum() == lengths.sum()  # every token once, nothing else
    targets = batch.targets[0]
    for b in range(8):  # both completions (with their EOS) of every example are there
        for s, seq in ((0, b), (1, b + len(pairs))):
            tokens = pairs.sequences.tokens[seq]
            prompt = int(pairs.sequences.prompt_lengths[seq])
            assert batch.tokens[0][targets == s * 8 + b].tolist() == tokens[prompt:].tolist()
            assert batch.tokens[0].reshape(-1)[batch.last[0, s, b]] == tokens[-1]
    with pytest.raises(ValueError, match="need"):
        make_packed_pair_batch(pairs, np.arange(8), None, grad_accum=1, pad_id=0, width=width,
                               rows=rows - 1)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)), min_size=1,
                max_size=5))  # fmt: skip
def test_packing_keeps_every_token_of_both_sequences(lengths):
    """Unpacking a packed row by its segments and positions gives both sequences back."""
    rng = np.random.default_rng(len(lengths))
    prompts = [rng.integers(5, 50, p).tolist() for p, _, _ in lengths]
    firsts = [
        prompt + rng.integers(5, 50, c).tolist()
        for prompt, (_, c, _) in zip(prompts, lengths, strict=True)
    ]
    seconds = [
        prompt + rng.integers(5, 50, r).tolist()
        for prompt, (_, _, r) in zip(prompts, lengths, strict=True)
    ]
    data = TokenizedSplit(tuple(np.array(t, np.int32) for t in firsts + seconds),
                          np.array([p for p, _, _ in lengths] * 2))  # fmt: skip
    pairs = SequencePairs(data, np.ones(len(lengths), bool))
    width = 32 * (1 + len(lengths) % 3)  # one to three examples per row
    batch = make_packed_pair_batch(pairs, np.arange(len(lengths)), None, grad_accum=1, pad_id=0,
                                   width=width)  # fmt: skip
    tokens, seg, pos, targets = (
        x[0] for x in (batch.tokens, batch.segments, batch.positions, batch.targets)
    )
    B = len(lengths)
    for b, (first, second) in enumerate(zip(firsts, seconds, strict=True)):
        row = int(np.flatnonzero((targets == b).any(axis=-1))[0])  # the row holding example b
        k = int(seg[row][targets[row] == b][0]) // 3  # its place in that row
        for side, expected in ((1, first), (2, second)):
            keep = (seg[row] == 3 * k) | (seg[row] == 3 * k + side)
            assert tokens[row][keep].tolist() == expected
            assert pos[row][keep].tolist() == list(range(len(expected)))
            assert (targets[row][seg[row] == 3 * k + side] == (side - 1) * B + b).all()


def test_packed_log_probs_equal_separate_sequences(pairs):
    graphdef, state = nnx.split(init_model(TINY, 0))
    indices = np.arange(8)
    unpacked = make_pair_batch(pairs, indices, None, grad_accum=1, pad_id=0, max_length=128)
    packed = make_packed_pair_batch(pairs, indices, None, grad_accum=1, pad_id=0, width=256)
    assert packed.tokens.size < unpacked.tokens.size and packed.tokens.shape[1] < 8
    want, want_counts = pure_jit(pair_logps)(graphdef, state, *(x[0] for x in unpacked[:3]))
    got, counts = pure_jit(packed_pair_logps, static_argnums=6)(
        graphdef, state, *(x[0] for x in packed[:5]), 8
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(counts, want_counts)
    common = dict(batch_size=4, pad_id=0)
    np.testing.assert_allclose(
        packed_reference_logps(graphdef, state, pairs.sequences, **common),
        reference_logps(graphdef, state, pairs.sequences, max_length=128, **common),
        rtol=1e-5, atol=1e-4,
    )  # fmt: skip


def test_packed_step_equals_unpacked_step(pairs):
    """The same 8 pairs, packed or not, take the same SGD step (same gradient)."""
    config = DPOConfig(steps=10, batch_size=8, warmup_steps=0)
    graphdef, state, _, batch, _ = _step_inputs(pairs, np.arange(8), 1, config)
    packed = make_packed_pair_batch(pairs, np.arange(8), None, grad_accum=1, pad_id=0,
                                    width=256)  # several pairs to a row  # fmt: skip
    packed = packed._replace(ref_logps=np.asarray(batch.ref_logps) - 0.25)  # policy != ref
    batch = batch._replace(ref_logps=np.asarray(batch.ref_logps) - 0.25)
    sgd = optax.sgd(1.0)
    step = jax.jit(functools.partial(dpo_step, optimizer=sgd, config=config), static_argnums=0)
    one, _, m1 = step(graphdef, state, sgd.init(state), batch)
    two, _, m2 = step(graphdef, state, sgd.init(state), packed)
    for key in ("loss", "grad_norm", "logps/chosen", "rewards/margins"):
        np.testing.assert_allclose(m1[key], m2[key], rtol=1e-4, atol=1e-6)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), one, two)


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny", TINY)
    return "tiny"


def test_stored_reference_logps_equal_a_fresh_reference_forward(data_dir, tmp_path, tiny_preset):
    config = DPOConfig(preset=tiny_preset, steps=1, batch_size=4, warmup_steps=0,
                       reference_batch_size=64)  # fmt: skip
    setup = open_run("dpo", config, data_dir, tmp_path / "run", progress=False)
    stored = np.load(tmp_path / "run" / "reference_logps.npz")["train"]
    np.testing.assert_array_equal(stored, setup.prepared.data["references"]["train"])
    sequences = setup.prepared.data["train"].sequences
    graphdef, state = nnx.split(setup.setup.model)
    forward = pure_jit(sequence_logps)
    for i in (
        0,
        7,
        len(setup.prepared.data["train"]) + 3,
        len(sequences) - 1,
    ):  # chosen and rejected rows
        tokens = jnp.asarray(sequences.tokens[i])[None]  # unpadded, alone in its batch
        mask = jnp.zeros_like(tokens, jnp.float32).at[0, sequences.prompt_lengths[i] :].set(1.0)
        fresh, _ = forward(graphdef, state, tokens, jnp.ones_like(tokens), mask)
        np.testing.assert_allclose(stored[i], fresh[0], rtol=1e-5, atol=1e-4)
    again = open_run("dpo", config, data_dir, tmp_path / "run", progress=False)
    assert again.prepare_seconds < setup.prepare_seconds  # read from the cache


_jitted_pair_logps = pure_jit(pair_logps)


def _step_inputs(pairs, indices, grad_accum, config):
    graphdef, state = nnx.split(init_model(TINY, 0))
    batch = make_pair_batch(pairs, indices, None, grad_accum=grad_accum, pad_id=0, max_length=128)
    reference = functools.partial(_jitted_pair_logps, graphdef, state)
    refs = [reference(*(x[a] for x in batch[:3]))[0] for a in range(grad_accum)]
    batch = batch._replace(ref_logps=np.stack(refs))
    optimizer = make_optimizer(config)
    return graphdef, state, optimizer.init(state), batch, optimizer


def test_every_parameter_changes_after_one_step(pairs):
    config = DPOConfig(steps=10, batch_size=8, warmup_steps=0, learning_rate=1e-3)
    graphdef, state, opt_state, batch, optimizer = _step_inputs(pairs, np.arange(8), 1, config)
    before = jax.tree.map(np.array, state)
    step = jax.jit(functools.partial(dpo_step, optimizer=optimizer, config=config),
                   static_argnums=0)  # fmt: skip
    new_state, _, metrics = step(graphdef, state, opt_state, batch)
    assert float(metrics["loss"]) == pytest.approx(np.log(2.0), abs=1e-5)  # policy = reference
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree.leaves_with_path(before)]
    old, new = jax.tree.leaves(before), jax.tree.leaves(new_state)
    unchanged = [p for p, a, b in zip(paths, old, new, strict=True) if np.array_equal(a, b)]
    assert not unchanged


def test_accumulation_invariance(pairs):
    """8 pairs as 1 x 8 and as 4 x 2 take the same step. Plain SGD (lr 1), so the parameter
    change is the gradient itself (Adam would hide a wrong gradient scale)."""
    config = DPOConfig(steps=10, batch_size=8, warmup_steps=0)
    results = []
    for grad_accum in (1, 4):
        graphdef, state, _, batch, _ = _step_inputs(pairs, np.arange(8), grad_accum, config)
        sgd = optax.sgd(1.0)
        step = jax.jit(functools.partial(dpo_step, optimizer=sgd, config=config),
                       static_argnums=0)  # fmt: skip
        results.append(step(graphdef, state, sgd.init(state), batch))
    (one, _, m1), (four, _, m4) = results
    for key in ("loss", "grad_norm", "logps/chosen", "rewards/margins"):
        np.testing.assert_allclose(m1[key], m4[key], rtol=1e-4, atol=1e-6)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-7), one, four)


def test_each_loss_sees_the_right_log_probs():
    policy = jnp.array([[-4.0, -6.0], [-9.0, -8.0]])  # (2, B): chosen row, rejected row
    reference = jnp.array([[-5.0, -6.5], [-8.0, -8.5]])
    counts = jnp.array([[2.0, 4.0], [3.0, 2.0]])
    loss = preference_loss(DPOConfig(beta=0.2), policy, counts, reference)[0]
    np.testing.assert_allclose(loss, dpo_loss(*policy, *reference, beta=0.2)[0])
    loss = preference_loss(DPOConfig(loss="ipo", beta=0.3), policy, counts, reference)[0]
    np.testing.assert_allclose(loss, ipo_loss(*(policy / counts), *(reference / counts),
                                              beta=0.3)[0])  # fmt: skip
    simpo = DPOConfig(loss="simpo", beta=2.0, gamma=0.4)
    loss = preference_loss(simpo, policy, counts, reference + 100.0)[0]  # reference ignored
    np.testing.assert_allclose(loss, simpo_loss(*(policy / counts), beta=2.0, gamma=0.4)[0])


@pytest.mark.parametrize("loss", ["sigmoid", "cdpo", "robust", "hinge", "ipo", "simpo"])
def test_rpo_adds_alpha_times_the_chosen_mean_nll(loss):
    """rpo_alpha 0 leaves every loss and its metrics exactly as before; > 0 adds alpha times
    -pc / n from the summed chosen log-probs (also for the per-token-mean losses)."""
    policy = jnp.array([[-4.0, -6.0], [-9.0, -8.0]])
    reference = jnp.array([[-5.0, -6.5], [-8.0, -8.5]])
    counts = jnp.array([[2.0, 4.0], [3.0, 2.0]])
    smoothing = 0.1 if loss in ("cdpo", "robust") else 0.0
    off = DPOConfig(loss=loss, beta=0.2, label_smoothing=smoothing)
    base, base_metrics = preference_loss(off, policy, counts, reference)
    if loss == "simpo":
        expected = simpo_loss(*(policy / counts), beta=0.2, gamma=off.gamma)
    else:
        args = (policy / counts, reference / counts) if loss == "ipo" else (policy, reference)
        kwargs = {"label_smoothing": smoothing} if smoothing else {}
        expected = DPO_LOSSES[loss](*args[0], *args[1], beta=0.2, **kwargs)
    np.testing.assert_array_equal(base, expected[0])
    assert base_metrics.keys() == expected[1].keys()
    on = dataclasses.replace(off, rpo_alpha=0.5)
    loss_on, metrics = preference_loss(on, policy, counts, reference)
    np.testing.assert_allclose(loss_on, base + 0.5 * jnp.array([2.0, 1.5]), rtol=1e-6)
    np.testing.assert_allclose(metrics["loss/rpo_nll"], [2.0, 1.5])
    if loss != "hinge":  # online DPO shares the loss code (its label_smoothing is < 0.5)
        online = OnlineDPOConfig(loss=loss, beta=0.2, label_smoothing=smoothing, rpo_alpha=0.5)
        np.testing.assert_array_equal(preference_loss(online, policy, counts, reference)[0],
                                      loss_on)  # fmt: skip


def test_rpo_step_raises_the_chosen_log_prob(pairs):
    """One plain-SGD step on 8 pairs: with rpo_alpha the chosen completions' mean log-prob per
    token ends higher than after the same step without it (to first order the difference is
    lr * alpha * |grad|^2 > 0), and the NLL is logged."""
    after = {}
    for alpha in (0.0, 1.0):
        config = DPOConfig(steps=10, batch_size=8, warmup_steps=0, rpo_alpha=alpha)
        graphdef, state, _, batch, _ = _step_inputs(pairs, np.arange(8), 1, config)
        sgd = optax.sgd(0.05)
        step = jax.jit(functools.partial(dpo_step, optimizer=sgd, config=config),
                       static_argnums=0)  # fmt: skip
        new_state, _, metrics = step(graphdef, state, sgd.init(state), batch)
        assert ("loss/rpo_nll" in metrics) == (alpha > 0)
        sums, counts = _jitted_pair_logps(graphdef, new_state, *(x[0] for x in batch[:3]))
        after[alpha] = float(jnp.mean(sums[0] / counts[0]))
    nll = float(metrics["loss/rpo_nll"])
    assert nll > 0
    assert float(metrics["loss"]) == pytest.approx(np.log(2.0) + nll, abs=1e-4)  # policy = ref
    assert after[1.0] > after[0.0] + 1e-3, after


@pytest.mark.parametrize(
    ("field", "value"),
    [("loss", "kto"), ("beta", 0.0), ("label_smoothing", 0.1), ("gamma", -1.0),
     ("batch_size", 0), ("warmup_steps", 300), ("learning_rate", -1e-3), ("rpo_alpha", -0.5),
     ("rpo_alpha", float("inf"))],
)  # fmt: skip
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        DPOConfig(**{field: value})
    with pytest.raises(ValueError, match=r"^label_smoothing must be in 0\.\.0\.5"):
        DPOConfig(loss="cdpo", label_smoothing=0.6)
    assert DPOConfig(loss="robust", label_smoothing=0.2).label_smoothing == 0.2


def test_wrong_data_kind_is_refused(tmp_path):
    examples = tmp_path / "examples"
    generate_dataset(examples, KinshipConfig.for_level(1), 20, seed=1, progress=False)
    config = DPOConfig(steps=1, warmup_steps=0)
    with pytest.raises(ValueError, match="expected 'kinship/preference'"):
        open_run("dpo", config, examples, tmp_path / "run")


def test_tiny_run_raises_held_out_reward_accuracy(data_dir, tmp_path, nano64):
    """Nano from scratch, ~300 pairs: the held-out implicit reward must rank chosen over
    rejected well above chance (at step 0 policy = reference, so every margin is 0)."""
    config = DPOConfig(preset=nano64, steps=40, batch_size=8, learning_rate=2e-3, warmup_steps=4,
                       beta=0.1, eval_interval=0, log_interval=10)  # fmt: skip
    summary = train_method("dpo", config, data_dir, tmp_path / "run", progress=False)
    assert summary["eval/rewards/accuracies"] >= 0.7, summary
    assert summary["eval/rewards/margins"] > 0.0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train/loss" in x] == list(range(1, 41))
    assert (tmp_path / "run" / "hf" / "config.json").exists()
    assert dataclasses.asdict(DPOConfig())["loss"] == "sigmoid"


@pytest.mark.slow  # ~100 s; SFT's resume test covers the shared checkpoint mechanism by default
def test_a_crashed_run_resumes_with_the_same_metrics(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny64", dataclasses.replace(TINY, n_positions=64))
    config = DPOConfig(preset="tiny64", steps=4, batch_size=4, warmup_steps=0, log_interval=1,
                       save_interval=2, eval_interval=0, learning_rate=1e-3)  # fmt: skip
    run = tmp_path / "run"

    def train_lines() -> list[dict]:
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [x for x in lines if "train/loss" in x]

    train_method("dpo", config, data_dir, run, progress=False)
    full = train_lines()
    shutil.rmtree(run / "checkpoints" / "4")  # as if killed after checkpoint 2 was written
    summary = train_method("dpo", config, data_dir, run, progress=False)
    assert summary["resumed_from"] == 2
    resumed = train_lines()
    assert [x["step"] for x in resumed] == [1, 2, 3, 4]  # steps 3-4 replaced, not duplicated
    for key in ("train/loss", "train/rewards/margins", "train/grad_norm"):
        assert [x[key] for x in resumed] == pytest.approx([x[key] for x in full], rel=1e-5)


SHARDED_SCRIPT = """
import functools, json, sys
import jax, numpy as np, optax
from flax import nnx
from trainers.config import DPOConfig, OnlineDPOConfig
from trainers.dpo import dpo_step
from trainers.model import GPTConfig, init_model
from trainers.preference import pair_batch_sharding
from trainers.data import PREFERENCE_KIND, load_records
from trainers.preference_data import make_packed_pair_batch, tokenize_pairs
from trainers.sharding import make_mesh, put_global, replicated
from trainers.tokenizer import kinship_tokenizer

assert len(jax.devices()) == 4
records = load_records(sys.argv[1], "train", PREFERENCE_KIND)[:8]
pairs = tokenize_pairs(records, kinship_tokenizer(), 128)
cfg = GPTConfig(vocab_size=1056, n_positions=128, n_embd=32, n_layer=2, n_head=2)
graphdef, state = nnx.split(init_model(cfg, 0))
refs = np.random.default_rng(0).normal(-30, 3, 2 * len(pairs)).astype(np.float32)
batch = make_packed_pair_batch(pairs, np.arange(8), refs, grad_accum=2, pad_id=0, width=256,
                               row_multiple=4)
config = DPOConfig(steps=1, batch_size=4, grad_accum=2, warmup_steps=0)
sgd = optax.sgd(1.0)
step = jax.jit(functools.partial(dpo_step, optimizer=sgd, config=config), static_argnums=0)
out = {}
for name, mesh in (("single", make_mesh(1, jax.devices()[:1])), ("sharded", make_mesh(1))):
    placed = jax.device_put(state, replicated(mesh))
    new, _, metrics = step(graphdef, placed, sgd.init(placed),
                           put_global(batch, pair_batch_sharding(mesh, packed=True)))
    out[name] = {"metrics": {k: float(v) for k, v in metrics.items()},
                 "params": [np.asarray(x).tolist() for x in jax.tree.leaves(new)][:3]}
print(json.dumps({"rows": batch.tokens.shape[1], **out}))
"""


def test_packed_step_sharded_over_four_devices_equals_one_device(data_dir):
    """Rows of several packed pairs split over 4 devices: the same loss and SGD step."""
    report = run_on_cpu_devices(SHARDED_SCRIPT, str(data_dir), devices=4)
    assert report["rows"] % 4 == 0
    single, sharded = report["single"], report["sharded"]
    for key, value in single["metrics"].items():
        assert sharded["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for a, b in zip(single["params"], sharded["params"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_packed_iterator_has_one_shape_for_the_whole_run(pairs):
    """Every step of a packed run has one (A, R, W) shape, R the fullest micro-batch's need
    rounded to the row multiple; length grouping (sorted windows) is not applied to packed
    pairs, whose rows pack tighter with mixed lengths."""
    common = dict(batch_size=8, grad_accum=2, seed=0, pad_id=0, max_length=128, packed=True)
    grouped = PairIterator(pairs, None, length_grouping=8, steps=40, row_multiple=2, **common)
    plain = PairIterator(pairs, None, length_grouping=1, steps=40, row_multiple=2, **common)
    assert grouped.rows == plain.rows and grouped.rows % 2 == 0 and grouped.rows <= 8
    shapes = {next(grouped).tokens.shape for _ in range(40)}
    assert shapes == {(2, grouped.rows, packed_width(pairs))}


def test_packed_iterator_deals_lengths_so_steps_need_fewer_rows(pairs):
    """Dealing the epoch's pairs by length keeps every example of the epoch exactly once
    and here needs no more rows than the random draws it regroups."""
    common = dict(batch_size=4, grad_accum=1, seed=3, pad_id=0, max_length=128)
    steps = len(pairs) // 4  # one epoch
    packed = PairIterator(pairs, None, packed=True, steps=steps, **common)
    plain = PairIterator(pairs, None, **common)
    dealt = np.concatenate([packed.indices(k) for k in range(steps)])
    drawn = np.concatenate([plain.indices(k) for k in range(steps)])
    assert sorted(dealt) == sorted(drawn) and len(set(dealt)) == len(dealt)
    rows = [len(packed_rows(pairs, plain.indices(k), grad_accum=1, width=packed.width)[0])
            for k in range(steps)]  # fmt: skip
    assert packed.rows <= max(rows)


def test_packed_reference_of_an_empty_split(tmp_path):
    graphdef, state = nnx.split(init_model(TINY, 0))
    empty = TokenizedSplit((), np.zeros(0, np.int64))
    out = packed_reference_logps(graphdef, state, empty, batch_size=4, pad_id=0)
    assert out.shape == (0,)


def test_reference_cache_is_keyed_on_the_data_and_the_reference_weights(tmp_path, pairs):
    """Stored reference log-probs are reused for the same sequences under the same weights
    only: other weights (say, an --init run retrained before a resume) recompute them."""
    path, splits, calls = tmp_path / "reference_logps.npz", {"train": pairs.sequences}, []

    def compute(data: TokenizedSplit) -> np.ndarray:
        calls.append(len(calls))
        return np.full(len(data), float(len(calls)), np.float32)

    one = state_fingerprint(nnx.split(init_model(TINY, 0))[1])
    other = state_fingerprint(nnx.split(init_model(TINY, 1))[1])
    assert one != other and one == state_fingerprint(nnx.split(init_model(TINY, 0))[1])
    first = cached_reference_logps(path, splits, compute, model=one)["train"]
    again = cached_reference_logps(path, splits, compute, model=one)["train"]
    assert len(calls) == 1 and np.array_equal(first, again)
    changed = cached_reference_logps(path, splits, compute, model=other)["train"]
    assert len(calls) == 2 and changed[0] == 2.0
