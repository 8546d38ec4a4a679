"""Reward model: the GPT trunk with a scalar value head, trained with the Bradley-Terry loss.

    train("rm", RewardModelConfig(), "data/pairs", "runs/rm", init="runs/sft")

The reward of a sequence `prompt + completion + EOS` is the value head read at its last real
token (the EOS that closes the completion). Both sequences of a pair go through the trunk in
one concatenated (2B, T) batch; the LM head is never computed.

Held-out figures: `eval/rewards/accuracies` (the chosen completion scores higher),
`eval/calibration_error` (expected calibration error of sigmoid(margin) as the probability
that the chosen one is preferred, 10 equal-width confidence bins) and the reward means.

Normalisation, as in the TL;DR reproduction (Huang et al., 2024): after training, the rewards
of reference completions (the gold-better completion of the first `offset_examples` training
pairs: the dataset's own answer) are averaged and that mean is stored in
`RUN/reward_offset.json`; `normalised reward = reward - offset` has mean 0 there.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tasks.registry import PREFERENCE_KIND
from trainers.checkpoint import load_run, write_json_atomic
from trainers.config import RewardModelConfig
from trainers.data import (
    TokenizedSplit,
    fixed_size_chunks,
    load_records,
    make_batch,
    tokenize_examples,
)
from trainers.engine import (
    Method,
    Metrics,
    Prepared,
    Setup,
    accumulate_gradients,
    apply_gradients,
    concatenate,
)
from trainers.logprobs import packed_hidden
from trainers.losses import bradley_terry_loss
from trainers.model import GPT, GPTConfig, init_model, pure_jit
from trainers.preference import prepare_pairs
from trainers.preference_data import PackedPairBatch, PairBatch

OFFSET_FILE = "reward_offset.json"


def with_value_head(model: GPT, cfg: GPTConfig, seed: int) -> tuple[GPT, GPTConfig]:
    """The model with a (fresh, seeded) scalar value head; kept as is if it has one."""
    if cfg.value_head:
        return model, cfg
    cfg = dataclasses.replace(cfg, value_head=True)
    reward_model = init_model(cfg, seed)
    nnx.update(reward_model, nnx.state(model))  # trunk weights from `model`
    return reward_model, cfg


def sequence_rewards(model: GPT, tokens: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """(N, T) right-padded sequences -> (N,) value head at each sequence's last real token."""
    values = model.value(model.hidden_states(tokens, attention_mask))  # (N, T)
    last = jnp.sum(attention_mask, axis=-1).astype(jnp.int32) - 1  # (N,)
    return jnp.take_along_axis(values, last[:, None], axis=1)[:, 0]


def pair_rewards(model: GPT, tokens: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """(2, B, T) chosen/rejected -> (2, B) rewards, from one (2B, T) trunk pass."""
    two, B, T = tokens.shape
    rewards = sequence_rewards(
        model, tokens.reshape(two * B, T), attention_mask.reshape(two * B, T)
    )
    return rewards.reshape(two, B)


def packed_pair_rewards(
    model: GPT, tokens: jax.Array, positions: jax.Array, segments: jax.Array, last: jax.Array
) -> jax.Array:
    """(R, W) packed rows (`PackedPairBatch`) -> (2, B) rewards at the last token (the EOS,
    flat slot `last` (2, B)) of each first and second completion: `pair_rewards` of the same
    pairs."""
    values = model.value(packed_hidden(model, tokens, positions, segments))  # (R, W)
    return values.reshape(-1)[last]


def reward_example_loss(
    model: GPT, micro: PairBatch | PackedPairBatch
) -> tuple[jax.Array, Metrics]:
    """Bradley-Terry loss (B,) and its metrics for one micro-batch (either layout)."""
    if isinstance(micro, PackedPairBatch):
        rewards = packed_pair_rewards(
            model, micro.tokens, micro.positions, micro.segments, micro.last
        )
    else:
        rewards = pair_rewards(model, micro.tokens, micro.attention_mask)
    return bradley_terry_loss(rewards[0], rewards[1])


def reward_model_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    opt_state: optax.OptState,
    batch: PairBatch | PackedPairBatch,
    key: jax.Array | None = None,
    *,
    config: RewardModelConfig | None = None,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """One optimizer step on a batch of pairs (either layout). Pure; jit once, state donated."""
    del key, config
    grads, metrics = accumulate_gradients(graphdef, params, batch, reward_example_loss,
                                          batch.labels.shape)  # fmt: skip
    params, opt_state = apply_gradients(params, opt_state, grads, optimizer)
    return params, opt_state, metrics


def reward_model_eval_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    batch: PairBatch | PackedPairBatch,
    *,
    config: RewardModelConfig | None = None,
) -> Metrics:
    """Per-pair held-out metrics (B,) of a one-micro-batch batch, `loss` included."""
    del config
    micro = jax.tree.map(lambda x: x[0], batch)
    loss, metrics = reward_example_loss(nnx.merge(graphdef, params), micro)
    return {**metrics, "loss": loss}


def expected_calibration_error(
    margins: np.ndarray, bins: int = 10, *, return_bins: bool = False
) -> float | tuple[float, list[dict[str, Any]]]:
    """ECE of p = sigmoid(margin), the predicted probability that the chosen completion wins.

    Each pair's prediction is the likelier side, with confidence max(p, 1 - p) in [0.5, 1];
    it is correct when p > 0.5. ECE = sum over equal-width confidence bins of
    (share of pairs) * |accuracy - mean confidence|. `return_bins`: also the bins, each
    {"low", "high", "confidence", "accuracy", "count"} (confidence and accuracy None when
    empty): the reliability diagram."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(margins, np.float64)))
    confidence, correct = np.maximum(p, 1.0 - p), (p > 0.5).astype(np.float64)
    which = np.minimum(((confidence - 0.5) * 2.0 * bins).astype(int), bins - 1)
    error = 0.0
    table: list[dict[str, Any]] = []
    for b in range(bins):
        inside = which == b
        row: dict[str, Any] = {"low": 0.5 + b / (2 * bins), "high": 0.5 + (b + 1) / (2 * bins),
                               "confidence": None, "accuracy": None,
                               "count": int(inside.sum())}  # fmt: skip
        if inside.any():
            accuracy, mean_confidence = correct[inside].mean(), confidence[inside].mean()
            error += inside.mean() * abs(accuracy - mean_confidence)
            row.update(confidence=float(mean_confidence), accuracy=float(accuracy))
        table.append(row)
    return (float(error), table) if return_bins else float(error)


_rewards = pure_jit(sequence_rewards)


def _chunk_rewards(model: GPT, tokenizer: Any, data: TokenizedSplit,
                   batch_size: int) -> Iterator[tuple[np.ndarray, jax.Array]]:  # fmt: skip
    """(chunk, rewards) over `data` in fixed-size chunks (the last filled up with copies: one
    shape per length bucket, not one more for a short last batch); only the first
    `len(chunk)` rewards are real."""
    graphdef, state = nnx.split(model)
    for chunk, filled in fixed_size_chunks(np.arange(len(data)), batch_size):
        batch = make_batch(data, filled, grad_accum=1, pad_id=tokenizer.pad_token_id,
                           max_length=model.cfg.n_positions)  # fmt: skip
        yield chunk, _rewards(graphdef, state, batch.tokens[0], batch.attention_mask[0])


def mean_reference_reward(model: GPT, tokenizer: Any, records: list[dict[str, Any]],
                          batch_size: int = 64) -> tuple[float, int]:  # fmt: skip
    """(mean reward, count) over each pair's gold-better completion (`rejected` when the label
    was flipped, else `chosen`)."""
    examples = [
        {"prompt": r["prompt"], "completion": r["rejected"] if r.get("flipped") else r["chosen"]}
        for r in records
    ]
    data = tokenize_examples(examples, tokenizer, model.cfg.n_positions)
    total = 0.0
    for chunk, rewards in _chunk_rewards(model, tokenizer, data, batch_size):
        total += float(jnp.sum(rewards[: len(chunk)]))
    return total / max(len(data), 1), len(data)


def completion_rewards(model: GPT, tokenizer: Any, examples: Sequence[dict[str, Any]],
                       batch_size: int = 64) -> np.ndarray:  # fmt: skip
    """(len(examples),) float64 raw rewards of each {"prompt", "completion"} (+ EOS), as the
    reward model was trained to score them (no offset); NaN for one longer than the
    model's context."""
    n_positions = model.cfg.n_positions
    fits = [i for i, example in enumerate(examples)
            if not tokenize_examples([example], tokenizer, n_positions).dropped]  # fmt: skip
    data = tokenize_examples([examples[i] for i in fits], tokenizer, n_positions)
    out = np.full(len(examples), np.nan)
    kept = np.asarray(fits, np.int64)
    for chunk, rewards in _chunk_rewards(model, tokenizer, data, batch_size):
        out[kept[chunk]] = np.asarray(rewards[: len(chunk)], np.float64)
    return out


def read_reward_offset(run_dir: str | Path) -> float:
    """The offset a reward-model run subtracts (`RUN/reward_offset.json`)."""
    return float(json.loads((Path(run_dir) / OFFSET_FILE).read_text(encoding="utf-8"))["offset"])


def evaluate(config: RewardModelConfig, outputs: list[tuple[dict[str, np.ndarray], int]]) -> dict:
    """Held-out means of the per-pair metrics, and the calibration error of the margins."""
    arrays = concatenate(outputs)
    means = {key: float(np.mean(value)) for key, value in arrays.items()}
    margins = arrays["rewards/margins"]
    means["calibration_error"] = expected_calibration_error(margins, config.calibration_bins)
    return means


def store_offset(setup: Setup) -> dict[str, Any]:
    """After training: the mean reward of the reference completions of the first
    `offset_examples` train pairs, stored as the run's offset (`RUN/reward_offset.json`)."""
    config = setup.config
    model, _, tokenizer = load_run(setup.run_dir)
    records = load_records(setup.data_dir, "train", PREFERENCE_KIND)[: config.offset_examples]
    offset, count = mean_reference_reward(model, tokenizer, records)
    if jax.process_index() == 0:
        record = {"offset": offset, "examples": count, "step": config.steps}
        write_json_atomic(Path(setup.run_dir) / OFFSET_FILE, record)
    return {"reward_offset": offset}


def prepare(setup: Setup) -> Prepared:
    return prepare_pairs(setup, data_kind=PREFERENCE_KIND, packed=setup.config.pack_pairs,
                         needs_reference=False)  # fmt: skip


METHOD = Method(
    name="rm",
    config_class=RewardModelConfig,
    data_kind=PREFERENCE_KIND,
    prepare=prepare,
    step=reward_model_step,
    eval_step=reward_model_eval_step,
    evaluate=evaluate,
    policy=False,
    model=with_value_head,
    finish=store_offset,
)
