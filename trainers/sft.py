"""Supervised fine-tuning (SFT): next-token cross-entropy on the completion tokens.

    train("sft", SFTConfig(steps=2000), "data/l1", "runs/sft-l1")

One optimizer step sees `batch_size * grad_accum` sequences as `grad_accum` micro-batches,
scanned inside the jitted `sft_step`. The loss is the mean over every completion token of
the whole step (each micro-batch's token-loss sum is divided by the step's total token count
before the gradients are added), so batch 8 x accumulation 1 and batch 1 x accumulation 8
take the same step. `prompt_loss_weight` > 0 also trains on the prompt's tokens.

Examples are packed several to a row of `pack_width` tokens (`trainers/data.py`), kept apart
by a block-causal mask with positions restarting, so the loss and gradient equal one example
per row. Held out: `eval/loss`, the mean completion-token loss of the `validation` split.
The loop, checkpoints and export are the engine's (`trainers/engine.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tasks.registry import EXAMPLES_KIND
from trainers.config import SFTConfig
from trainers.data import (
    Batch,
    BatchIterator,
    TokenizedSplit,
    fixed_size_chunks,
    has_split,
    load_records,
    make_batch,
    require_step_examples,
    tokenize_examples,
)
from trainers.engine import Method, Metrics, Prepared, Setup, apply_gradients
from trainers.logprobs import token_losses
from trainers.model import GPT, segment_attention, segment_positions
from trainers.sharding import batch_divisor, batch_sharding


def _loss_sum(model: GPT, tokens: jax.Array, segments: jax.Array, mask: jax.Array) -> jax.Array:
    """Sum of the masked token losses of one (B, T) micro-batch; `segments` is the batch's
    `attention_mask` (segment ids: one sequence per row, or several packed)."""
    hidden = model.hidden_states(
        tokens, positions=segment_positions(segments), attend=segment_attention(segments)
    )
    logits = model.lm_head(hidden)  # (B, T, V)
    return jnp.sum(token_losses(logits, tokens) * mask[:, 1:])


def sft_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    opt_state: optax.OptState,
    batch: Batch,
    key: jax.Array | None = None,
    *,
    config: SFTConfig | None = None,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """One optimizer step on a (A, B, T) batch: scan the A micro-batches, adding gradients of
    (token-loss sum / the whole step's token count), then clip and apply AdamW.

    Metrics: loss (mean token loss), grad_norm (before clipping), loss_tokens (the tokens the
    loss is over). The loss weights are the batch's own (`loss_mask`): neither the key nor
    the config change the step."""
    del key, config
    total = jnp.maximum(jnp.sum(batch.loss_mask[:, :, 1:]), 1.0)

    def scaled_loss(params: nnx.State, micro: Batch) -> jax.Array:
        model = nnx.merge(graphdef, params)
        return _loss_sum(model, micro.tokens, micro.attention_mask, micro.loss_mask) / total

    def accumulate(grads: nnx.State, micro: Batch) -> tuple[nnx.State, jax.Array]:
        loss, micro_grads = jax.value_and_grad(scaled_loss)(params, micro)
        return jax.tree.map(jnp.add, grads, micro_grads), loss

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, losses = jax.lax.scan(accumulate, zeros, batch)
    params, opt_state = apply_gradients(params, opt_state, grads, optimizer)
    metrics = {"loss": jnp.sum(losses), "grad_norm": optax.global_norm(grads),
               "loss_tokens": total.astype(jnp.int32)}  # fmt: skip
    return params, opt_state, metrics


def sft_eval_step(
    graphdef: nnx.GraphDef, params: nnx.State, batch: Batch, *, config: SFTConfig | None = None
) -> Metrics:
    """Summed completion-token loss and token count of a (1, B, T) batch (no update)."""
    del config
    model = nnx.merge(graphdef, params)
    micro = jax.tree.map(lambda x: x[0], batch)
    loss = _loss_sum(model, micro.tokens, micro.attention_mask, micro.loss_mask)
    return {"loss_sum": loss, "tokens": jnp.sum(micro.loss_mask[:, 1:])}


def eval_batches(data: TokenizedSplit, config: SFTConfig, pad_id: int,
                 max_length: int) -> list[tuple[Batch, int]]:  # fmt: skip
    """The validation set as (1, batch_size, T) batches sorted by length, each with its real
    count; the last batch is filled up with copies whose loss mask is zeroed (fixed shapes,
    nothing counted twice)."""
    order = np.argsort(data.lengths, kind="stable")
    batches = []
    for chunk, filled in fixed_size_chunks(order, config.batch_size):
        batch = make_batch(data, filled, grad_accum=1, pad_id=pad_id, max_length=max_length,
                           bucket=config.length_bucket)  # fmt: skip
        batch.loss_mask[:, len(chunk) :] = 0.0
        batches.append((batch, len(chunk)))
    return batches


def prepare(setup: Setup) -> Prepared:
    """Tokenise the train split (and the first `eval_examples` of validation)."""
    config, tokenizer, max_length = setup.config, setup.tokenizer, setup.model_cfg.n_positions
    train = tokenize_examples(load_records(setup.data_dir, "train"), tokenizer, max_length)
    require_step_examples(len(train), config.batch_size * config.grad_accum)
    held_out = []
    if has_split(setup.data_dir, "validation"):
        records = load_records(setup.data_dir, "validation")[: config.eval_examples]
        validation = tokenize_examples(records, tokenizer, max_length)
        if len(validation):
            held_out = eval_batches(validation, config, tokenizer.pad_token_id, max_length)

    def batches(position: int) -> BatchIterator:
        return BatchIterator(
            train, batch_size=config.batch_size, grad_accum=config.grad_accum,
            seed=config.seed, pad_id=tokenizer.pad_token_id, max_length=max_length,
            length_grouping=config.length_grouping, bucket=config.length_bucket,
            prompt_weight=config.prompt_loss_weight, position=position,
            pack_width=config.pack_width, row_multiple=batch_divisor(setup.mesh),
        )  # fmt: skip

    return Prepared(batches, batch_sharding(setup.mesh), held_out, len(train),
                    rate=("tokens", lambda batch: int(np.count_nonzero(batch.attention_mask))),
                    dropped=train.dropped, data={"train": train})  # fmt: skip


def evaluate(config: SFTConfig, outputs: list[tuple[dict[str, np.ndarray], int]]) -> dict:
    """The mean completion-token loss over the validation batches."""
    loss = sum(float(metrics["loss_sum"]) for metrics, _ in outputs)
    return {"loss": loss / max(sum(float(metrics["tokens"]) for metrics, _ in outputs), 1.0)}


METHOD = Method(
    name="sft",
    config_class=SFTConfig,
    data_kind=EXAMPLES_KIND,
    prepare=prepare,
    step=sft_step,
    eval_step=sft_eval_step,
    evaluate=evaluate,
)
