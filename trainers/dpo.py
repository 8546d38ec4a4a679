"""The DPO family on preference pairs: one trainer, the loss chosen by name.

    train("dpo", DPOConfig(loss="ipo", beta=0.5), "data/pairs", "runs/ipo", init="runs/sft")

Losses (`trainers.losses.DPO_LOSSES`): `sigmoid` (DPO), `cdpo` (label-smoothed), `robust`
(unbiased under label noise), `hinge`, `ipo` and `simpo`. What each sees:

* sigmoid, cdpo, robust, hinge: summed completion log-probs of policy and reference;
* ipo: per-token-mean log-probs of both (as the IPO paper does);
* simpo: per-token-mean (length-normalised) policy log-probs and no reference at all.

The reference is the initial policy: its log-probs are computed once before training and
cached in the run folder (`trainers/preference.py`), so training holds one model. Both
sequences of a pair go through the model in one forward: packed (the prompt once, then both
completions; the default) or as one concatenated (2B, T) batch (`--no-pack-pairs`).

Metrics (train and held-out): `rewards/chosen`, `rewards/rejected`, `rewards/margins`,
`rewards/accuracies` (the implicit rewards, as the losses define them), `logps/chosen`,
`logps/rejected` (policy summed log-probs) and `loss`.

RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization"; TRL's `rpo_alpha`):
`--rpo-alpha A` > 0 adds `A * NLL` of the chosen completion to any of these losses, the NLL
being the mean per token of each pair's chosen completion (`trainers.losses.rpo_nll` says why
per pair rather than TRL's batch-pooled token mean), taken from the summed log-probs the loss
already has; logged as `loss/rpo_nll`. It counters likelihood displacement: the pairwise
losses only widen the margin, so the chosen log-probs can fall along with the rejected ones.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tasks.registry import PREFERENCE_KIND
from trainers.config import DPOConfig
from trainers.engine import (
    Method,
    Metrics,
    Prepared,
    Setup,
    accumulate_gradients,
    apply_gradients,
    per_example_means,
)
from trainers.logprobs import micro_pair_logps
from trainers.losses import DPO_LOSSES, with_rpo_nll
from trainers.preference import prepare_pairs
from trainers.preference_data import PackedPairBatch, PairBatch

PER_TOKEN_MEAN_LOSSES = ("ipo", "simpo")


def preference_loss(
    config: DPOConfig, policy: jax.Array, counts: jax.Array, reference: jax.Array
) -> tuple[jax.Array, Metrics]:
    """The configured loss on (2, B) chosen/rejected summed log-probs `policy`, `reference`
    and completion token `counts` -> per-pair loss (B,) and metrics (B,) each. With
    `config.rpo_alpha` > 0 (RPO), plus `rpo_alpha` times the chosen completion's mean NLL per
    token (`trainers.losses.with_rpo_nll`), from the same summed log-probs (no other forward);
    at 0 the loss is the pairwise one alone, unchanged."""
    chosen_logps, chosen_counts = policy[0], counts[0]
    if config.loss in PER_TOKEN_MEAN_LOSSES:
        counts = jnp.maximum(counts, 1.0)
        policy, reference = policy / counts, reference / counts
    loss_fn = DPO_LOSSES[config.loss]
    if config.loss == "simpo":
        output = loss_fn(policy[0], policy[1], beta=config.beta, gamma=config.gamma)
    else:
        kwargs: dict[str, Any] = {"beta": config.beta}
        if config.loss in ("cdpo", "robust"):
            kwargs["label_smoothing"] = config.label_smoothing
        output = loss_fn(policy[0], policy[1], reference[0], reference[1], **kwargs)
    if config.rpo_alpha > 0:
        output = with_rpo_nll(output, chosen_logps, chosen_counts, alpha=config.rpo_alpha)
    return output


def dpo_example_loss(
    config: DPOConfig, model: nnx.Module, micro: PairBatch | PackedPairBatch
) -> tuple:
    """Per-pair loss (B,) and metrics of one micro-batch (one forward over both sequences)."""
    policy, counts = micro_pair_logps(model, micro)
    loss, metrics = preference_loss(config, policy, counts, micro.ref_logps)
    policy = jax.lax.stop_gradient(policy)
    return loss, {**metrics, "logps/chosen": policy[0], "logps/rejected": policy[1]}


def dpo_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    opt_state: optax.OptState,
    batch: PairBatch | PackedPairBatch,
    key: jax.Array | None = None,
    *,
    config: DPOConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """One optimizer step on a batch of pairs (either layout) with cached reference log-probs
    (A, 2, B). Pure; the engine jits it once with `graphdef` static and the state donated."""
    del key  # deterministic
    example_loss = functools.partial(dpo_example_loss, config)
    grads, metrics = accumulate_gradients(graphdef, params, batch, example_loss,
                                          batch.labels.shape)  # fmt: skip
    params, opt_state = apply_gradients(params, opt_state, grads, optimizer)
    return params, opt_state, metrics


def dpo_eval_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    batch: PairBatch | PackedPairBatch,
    *,
    config: DPOConfig,
) -> Metrics:
    """Per-pair held-out metrics (B,) of a one-micro-batch batch, `loss` included."""
    micro = jax.tree.map(lambda x: x[0], batch)
    loss, metrics = dpo_example_loss(config, nnx.merge(graphdef, params), micro)
    return {**metrics, "loss": loss}


def prepare(setup: Setup) -> Prepared:
    config = setup.config
    return prepare_pairs(setup, data_kind=PREFERENCE_KIND, packed=config.pack_pairs,
                         needs_reference=config.loss != "simpo")  # fmt: skip


METHOD = Method(
    name="dpo",
    config_class=DPOConfig,
    data_kind=PREFERENCE_KIND,
    prepare=prepare,
    step=dpo_step,
    eval_step=dpo_eval_step,
    evaluate=per_example_means,
)
