"""KTO on binary feedback (Ethayarajh et al., 2024): desirable / undesirable completions.

    train_kto(KTOConfig(desirable_weight=4.0), "data/kto", "runs/kto", init="runs/sft")

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tasks.fields import documented
from trainers.data import FEEDBACK_KIND
from trainers.losses import kto_loss
from trainers.offline import (
    Metrics,
    OfflineConfig,
    accumulate_gradients,
    apply_gradients,
    require,
    require_number,
    sequence_logps,
)
from trainers.offline_run import Method, OfflineSetup, prepare_offline, run_offline
from trainers.preference_data import PairBatch, tokenize_feedback


@dataclass(frozen=True)
class KTOConfig(OfflineConfig):
    """Hyper-parameters of a KTO run; every field is a `kinrl train kto` option."""

    beta: float = documented("inverse temperature of the implicit reward, > 0", default=0.1)
    desirable_weight: float = documented("loss weight of desirable examples, >= 0", default=1.0)
    undesirable_weight: float = documented("loss weight of undesirable examples, >= 0",
                                           default=1.0)  # fmt: skip
    eval_examples: int = documented("held-out examples evaluated, >= 2 (z pairs them)",
                                    default=512)  # fmt: skip
    length_grouping: int = documented(
        "must be 1: the KL reference point z is estimated from each batch, so batches are plain "
        "random draws (length-sorted ones would tie z to their lengths)",
        default=1,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_number(self, "beta", lambda v: v > 0, "a number > 0")
        for name in ("desirable_weight", "undesirable_weight"):
            require_number(self, name, lambda v: v >= 0, "a number >= 0")
        if self.desirable_weight == 0 and self.undesirable_weight == 0:
            raise ValueError("desirable_weight must be > 0 when undesirable_weight is 0")
        why = "1 for KTO (z is a batch statistic; sorted batches would bias it)"
        require(self.length_grouping == 1, "length_grouping", why, self.length_grouping)
        why = "an integer >= 2 for KTO (z pairs held-out examples)"
        require(self.eval_examples >= 2, "eval_examples", why, self.eval_examples)


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
    state: nnx.State,
    opt_state: optax.OptState,
    batch: PairBatch,
    *,
    optimizer: optax.GradientTransformation,
    config: KTOConfig,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """One optimizer step on an (A, 2, B, T) batch (judged, mismatched) with cached reference
    log-probs (A, 2, B) and labels (A, B). Pure; jit once with state donated."""
    kl = kl_estimate(graphdef, state, batch)
    example_loss = functools.partial(kto_example_loss, config, kl)
    grads, metrics = accumulate_gradients(graphdef, state, batch, example_loss)
    state, opt_state = apply_gradients(state, opt_state, grads, optimizer)
    return state, opt_state, _group_means(metrics)


def kto_eval_step(
    graphdef: nnx.GraphDef, state: nnx.State, batch: PairBatch, *, config: KTOConfig
) -> Metrics:
    """Per-example held-out log-ratios (B,) of a (1, 2, B, T) batch: `log_ratio` (policy -
    reference summed log-prob) of the judged sequences, `kl_log_ratio` of the mismatched ones,
    and `is_desirable`. The loss needs z over the whole held-out set (not this batch, whose
    last may be filled up with copies): `_summarize` computes it from these."""
    del config  # the loss is computed by `_summarize`, over every held-out example
    model = nnx.merge(graphdef, state)
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


def _summarize(config: KTOConfig, arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """Held-out KTO figures from `kto_eval_step`'s per-example arrays (real examples only):
    z = the mean mismatched log-ratio over all of them, then `kto_loss` with it."""
    desirable = arrays["is_desirable"] > 0
    loss, metrics = kto_loss(
        jnp.asarray(arrays["log_ratio"]), jnp.zeros(len(desirable)), jnp.asarray(desirable),
        kl=jnp.mean(jnp.asarray(arrays["kl_log_ratio"])), beta=config.beta,
        desirable_weight=config.desirable_weight, undesirable_weight=config.undesirable_weight,
    )  # fmt: skip
    rewards = np.asarray(metrics["rewards"])
    means = {
        "loss": float(np.mean(np.asarray(loss))),
        "kl": float(np.asarray(metrics["kl"])[0]),
        "rewards/desirable": float(rewards[desirable].mean()) if desirable.any() else 0.0,
        "rewards/undesirable": float(rewards[~desirable].mean()) if (~desirable).any() else 0.0,
    }
    means["rewards/margins"] = means["rewards/desirable"] - means["rewards/undesirable"]
    return means


def kto_method(config: KTOConfig) -> Method:
    tokenize = functools.partial(tokenize_feedback, group_size=config.batch_size, seed=config.seed)
    return Method(
        name="kto",
        data_kind=FEEDBACK_KIND,
        needs_reference=True,
        step=functools.partial(kto_step, config=config),
        eval_step=functools.partial(kto_eval_step, config=config),
        tokenize=tokenize,
        summarize=functools.partial(_summarize, config),
    )


def prepare_kto(
    config: KTOConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    init: str | None = None,
    *,
    progress: bool = False,
) -> OfflineSetup:
    """Every check of the user's input (ValueError), the run folder, the data (with its
    mismatched pairs) and the cached reference log-probs."""
    return prepare_offline(kto_method(config), config, data_dir, run_dir, init, progress=progress)


def run_kto(
    config: KTOConfig, setup: OfflineSetup, run_dir: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train to `config.steps` (resuming), export to RUN/hf; the summary adds the data's
    desirable/undesirable counts and `data/weighted_ratio` (desirable_weight * n_D /
    (undesirable_weight * n_U))."""
    n_desirable = int(setup.train.labels.sum())
    n_undesirable = len(setup.train) - n_desirable
    weighted = config.undesirable_weight * n_undesirable
    ratio = config.desirable_weight * n_desirable / weighted if weighted else float("inf")
    summary = run_offline(kto_method(config), config, setup, run_dir, progress=progress)
    return {**summary, "data/desirable": n_desirable, "data/undesirable": n_undesirable,
            "data/weighted_ratio": round(ratio, 3)}  # fmt: skip


def train_kto(
    config: KTOConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    init: str | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on the `train` split of a `kinrl generate --kind feedback` folder (held-out:
    `validation`); resume a crashed run of this config. Returns the last metrics (see
    `run_kto`)."""
    setup = prepare_kto(config, data_dir, run_dir, init, progress=progress)
    return run_kto(config, setup, run_dir, progress=progress)
