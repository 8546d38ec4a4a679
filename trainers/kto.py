"""KTO on binary feedback (Ethayarajh et al., 2024): desirable / undesirable completions.

    train("kto", KTOConfig(desirable_weight=4.0), "data/kto", "runs/kto", init="runs/sft")

The reference point z is the KL of policy from reference, estimated as the paper and TRL do
from mismatched prompt/completion pairs: each example's prompt with another example's
completion (fixed groups of `batch_size`, completions shifted by one; see
`trainers/preference_data.py`). Per step, z = mean over the step's mismatched sequences of
(policy - reference) summed log-probs, from a forward without gradients; `kto_loss` clamps it
at 0 and holds it constant. Reference log-probs of both kinds of sequence are computed once
before training and cached in the run folder.

Imbalanced data: the paper advises desirable_weight * n_desirable / (undesirable_weight *
n_undesirable) in [1, 4/3]; with 1:4 data, desirable_weight 4..5.33 (undesirable 1). The run
summary reports that ratio for the training data (`data/weighted_ratio`).

Batches are plain random draws (`length_grouping` is 1): z is a statistic of its batch, and a
length-sorted batch would move it with the batch's lengths. Held out, z is one estimate over
every held-out mismatched pair (not per evaluation batch), and the loss uses it.

Metrics: `rewards/desirable`, `rewards/undesirable` (mean implicit reward beta * log-ratio of
each group), `rewards/margins` (their difference), `kl` (the reference point) and `loss`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tasks.registry import FEEDBACK_KIND
from trainers.config import KTOConfig
from trainers.engine import (
    Method,
    Metrics,
    Prepared,
    Setup,
    accumulate_gradients,
    apply_gradients,
    concatenate,
)
from trainers.logprobs import sequence_logps
from trainers.losses import kto_loss
from trainers.preference import prepare_pairs
from trainers.preference_data import PairBatch, tokenize_feedback


def kl_estimate(graphdef: nnx.GraphDef, state: nnx.State, batch: PairBatch) -> jax.Array:
    """Scalar mean (policy - reference) summed log-prob of the step's mismatched sequences
    (`batch.tokens[:, 1]`, (A, B, T)), without gradients."""
    model = nnx.merge(graphdef, jax.lax.stop_gradient(state))

    def one(micro: PairBatch) -> jax.Array:
        policy, _ = sequence_logps(
            model, micro.tokens[1], micro.attention_mask[1], micro.loss_mask[1]
        )
        return jnp.mean(policy - micro.ref_logps[1])

    return jnp.mean(jax.lax.map(one, batch))


def kto_example_loss(
    config: KTOConfig, kl: jax.Array, model: nnx.Module, micro: PairBatch
) -> tuple[jax.Array, Metrics]:
    """KTO loss (B,) and metrics of the judged sequences (`micro.tokens[0]`, (B, T))."""
    policy, _ = sequence_logps(model, micro.tokens[0], micro.attention_mask[0], micro.loss_mask[0])
    return kto_loss(
        policy, micro.ref_logps[0], micro.labels, kl=kl, beta=config.beta,
        desirable_weight=config.desirable_weight, undesirable_weight=config.undesirable_weight,
    )  # fmt: skip


def _group_means(metrics: Metrics) -> Metrics:
    """Per-step means over all examples -> means within each group (desirable/undesirable)."""
    share = metrics["is_desirable"]
    desirable = metrics["rewards/desirable"] / jnp.maximum(share, 1e-9)
    undesirable = metrics["rewards/undesirable"] / jnp.maximum(1.0 - share, 1e-9)
    return {**metrics, "rewards/desirable": desirable, "rewards/undesirable": undesirable,
            "rewards/margins": desirable - undesirable}  # fmt: skip


def kto_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    opt_state: optax.OptState,
    batch: PairBatch,
    key: jax.Array | None = None,
    *,
    config: KTOConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """One optimizer step on an (A, 2, B, T) batch (judged, mismatched) with cached reference
    log-probs (A, 2, B) and labels (A, B). Pure; the engine jits it once, state donated."""
    del key  # deterministic
    kl = kl_estimate(graphdef, params, batch)
    example_loss = functools.partial(kto_example_loss, config, kl)
    grads, metrics = accumulate_gradients(graphdef, params, batch, example_loss,
                                          batch.labels.shape)  # fmt: skip
    params, opt_state = apply_gradients(params, opt_state, grads, optimizer)
    return params, opt_state, _group_means(metrics)


def kto_eval_step(
    graphdef: nnx.GraphDef, params: nnx.State, batch: PairBatch, *, config: KTOConfig
) -> Metrics:
    """Per-example held-out log-ratios (B,) of a (1, 2, B, T) batch: `log_ratio` (policy -
    reference summed log-prob) of the judged sequences, `kl_log_ratio` of the mismatched ones,
    and `is_desirable`. The loss needs z over the whole held-out set (not this batch, whose
    last may be filled up with copies): `evaluate` computes it from these."""
    del config  # the loss is computed by `evaluate`, over every held-out example
    model = nnx.merge(graphdef, params)
    micro = jax.tree.map(lambda x: x[0], batch)
    judged, _ = sequence_logps(model, micro.tokens[0], micro.attention_mask[0], micro.loss_mask[0])
    mismatched, _ = sequence_logps(
        model, micro.tokens[1], micro.attention_mask[1], micro.loss_mask[1]
    )
    return {
        "log_ratio": judged - micro.ref_logps[0],
        "kl_log_ratio": mismatched - micro.ref_logps[1],
        "is_desirable": micro.labels.astype(jnp.float32),
    }


def evaluate(config: KTOConfig, outputs: list[tuple[dict[str, np.ndarray], int]]) -> dict:
    """Held-out KTO figures from `kto_eval_step`'s per-example arrays (real examples only):
    z = the mean mismatched log-ratio over all of them, then `kto_loss` with it."""
    arrays = concatenate(outputs)
    means = {key: float(np.mean(value)) for key, value in arrays.items()}
    desirable = arrays["is_desirable"] > 0
    loss, metrics = kto_loss(
        jnp.asarray(arrays["log_ratio"]), jnp.zeros(len(desirable)), jnp.asarray(desirable),
        kl=jnp.mean(jnp.asarray(arrays["kl_log_ratio"])), beta=config.beta,
        desirable_weight=config.desirable_weight, undesirable_weight=config.undesirable_weight,
    )  # fmt: skip
    rewards = np.asarray(metrics["rewards"])
    means |= {
        "loss": float(np.mean(np.asarray(loss))),
        "kl": float(np.asarray(metrics["kl"])[0]),
        "rewards/desirable": float(rewards[desirable].mean()) if desirable.any() else 0.0,
        "rewards/undesirable": float(rewards[~desirable].mean()) if (~desirable).any() else 0.0,
    }
    means["rewards/margins"] = means["rewards/desirable"] - means["rewards/undesirable"]
    return means


def prepare(setup: Setup) -> Prepared:
    """Feedback with its mismatched pairs (fixed groups of `batch_size`), reference log-probs
    of both; the summary reports the desirable/undesirable counts and `data/weighted_ratio`
    (desirable_weight * n_D / (undesirable_weight * n_U))."""
    config = setup.config
    tokenize = functools.partial(tokenize_feedback, group_size=config.batch_size, seed=config.seed)
    prepared = prepare_pairs(setup, data_kind=FEEDBACK_KIND, packed=False, needs_reference=True,
                             tokenize=tokenize)  # fmt: skip
    labels = prepared.data["train"].labels
    n_desirable = int(np.sum(labels))
    n_undesirable = len(labels) - n_desirable
    weighted = config.undesirable_weight * n_undesirable
    ratio = config.desirable_weight * n_desirable / weighted if weighted else float("inf")
    summary = {"data/desirable": n_desirable, "data/undesirable": n_undesirable,
               "data/weighted_ratio": round(ratio, 3)}  # fmt: skip
    return prepared._replace(summary=summary)


METHOD = Method(
    name="kto",
    config_class=KTOConfig,
    data_kind=FEEDBACK_KIND,
    prepare=prepare,
    step=kto_step,
    eval_step=kto_eval_step,
    evaluate=evaluate,
)
