"""The DPO family on preference pairs: one trainer, the loss chosen by name.

    train_dpo(DPOConfig(loss="ipo", beta=0.5), "data/pairs", "runs/ipo", init="runs/sft")

Losses (`trainers.losses.DPO_LOSSES`): `sigmoid` (DPO), `cdpo` (label-smoothed), `robust`
(unbiased under label noise), `hinge`, `ipo` and `simpo`. What each sees:

* sigmoid, cdpo, robust, hinge: summed completion log-probs of policy and reference;
* ipo: per-token-mean log-probs of both (as the IPO paper does);
* simpo: per-token-mean (length-normalised) policy log-probs and no reference at all.

The reference is the initial policy: its log-probs are computed once before training and
cached in the run folder (`trainers.offline`), so training holds one model. Chosen and
rejected sequences go through the model in one concatenated (2B, T) batch.

Metrics (train and held-out): `rewards/chosen`, `rewards/rejected`, `rewards/margins`,
`rewards/accuracies` (the implicit rewards, as the losses define them), `logps/chosen`,
`logps/rejected` (policy summed log-probs) and `loss`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tasks.fields import documented
from trainers.data import PREFERENCE_KIND
from trainers.losses import DPO_LOSSES
from trainers.offline import (
    PACK_PAIRS_HELP,
    Metrics,
    OfflineConfig,
    accumulate_gradients,
    apply_gradients,
    micro_pair_logps,
    require,
    require_number,
)
from trainers.offline_run import Method, OfflineSetup, prepare_offline, run_offline
from trainers.preference_data import PackedPairBatch, PairBatch

PER_TOKEN_MEAN_LOSSES = ("ipo", "simpo")


@dataclass(frozen=True)
class DPOConfig(OfflineConfig):
    """Hyper-parameters of a DPO-family run; every field is a `kinrl train dpo` option."""

    loss: str = documented(f"preference loss: {', '.join(DPO_LOSSES)}", default="sigmoid")
    beta: float = documented("inverse temperature (IPO: tau; SimPO: reward scale), > 0",
                             default=0.1)  # fmt: skip
    label_smoothing: float = documented(
        "assumed label-flip rate (cdpo: 0..0.5, robust: 0..<0.5; 0 for the others)", default=0.0
    )
    gamma: float = documented("SimPO target reward margin, >= 0", default=0.5)
    pack_pairs: bool = documented(PACK_PAIRS_HELP, default=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.pack_pairs, bool), "pack_pairs", "true or false", self.pack_pairs)
        require(self.loss in DPO_LOSSES, "loss", f"one of {', '.join(DPO_LOSSES)}", self.loss)
        require_number(self, "beta", lambda v: v > 0, "a number > 0")
        require_number(self, "gamma", lambda v: v >= 0, "a number >= 0")
        smoothing = {
            "cdpo": (lambda v: 0 <= v <= 0.5, "in 0..0.5 for loss cdpo"),
            "robust": (lambda v: 0 <= v < 0.5, "in [0, 0.5) for loss robust"),
        }.get(self.loss, (lambda v: v == 0, "0 unless loss is cdpo or robust"))
        require_number(self, "label_smoothing", *smoothing)


def preference_loss(
    config: DPOConfig, policy: jax.Array, counts: jax.Array, reference: jax.Array
) -> tuple[jax.Array, Metrics]:
    """The configured loss on (2, B) chosen/rejected summed log-probs `policy`, `reference`
    and completion token `counts` -> per-pair loss (B,) and metrics (B,) each."""
    if config.loss in PER_TOKEN_MEAN_LOSSES:
        counts = jnp.maximum(counts, 1.0)
        policy, reference = policy / counts, reference / counts
    loss_fn = DPO_LOSSES[config.loss]
    if config.loss == "simpo":
        return loss_fn(policy[0], policy[1], beta=config.beta, gamma=config.gamma)
    kwargs: dict[str, Any] = {"beta": config.beta}
    if config.loss in ("cdpo", "robust"):
        kwargs["label_smoothing"] = config.label_smoothing
    return loss_fn(policy[0], policy[1], reference[0], reference[1], **kwargs)


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
    state: nnx.State,
    opt_state: optax.OptState,
    batch: PairBatch | PackedPairBatch,
    *,
    optimizer: optax.GradientTransformation,
    config: DPOConfig,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """One optimizer step on a batch of pairs (either layout) with cached reference log-probs
    (A, 2, B). Pure; jit once with `graphdef` static and state donated."""
    example_loss = functools.partial(dpo_example_loss, config)
    grads, metrics = accumulate_gradients(graphdef, state, batch, example_loss)
    state, opt_state = apply_gradients(state, opt_state, grads, optimizer)
    return state, opt_state, metrics


def dpo_eval_step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    batch: PairBatch | PackedPairBatch,
    *,
    config: DPOConfig,
) -> Metrics:
    """Per-pair held-out metrics (B,) of a one-micro-batch batch, `loss` included."""
    micro = jax.tree.map(lambda x: x[0], batch)
    loss, metrics = dpo_example_loss(config, nnx.merge(graphdef, state), micro)
    return {**metrics, "loss": loss}


def dpo_method(config: DPOConfig) -> Method:
    """The DPO pieces the offline run loop needs (a reference, steps, no summary extras)."""
    return Method(
        name="dpo",
        data_kind=PREFERENCE_KIND,
        needs_reference=config.loss != "simpo",
        step=functools.partial(dpo_step, config=config),
        eval_step=functools.partial(dpo_eval_step, config=config),
        packed=config.pack_pairs,
    )


def prepare_dpo(
    config: DPOConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    init: str | None = None,
    *,
    progress: bool = False,
) -> OfflineSetup:
    """Every check of the user's input (ValueError), the run folder, the data and the cached
    reference log-probs."""
    return prepare_offline(dpo_method(config), config, data_dir, run_dir, init, progress=progress)


def run_dpo(
    config: DPOConfig, setup: OfflineSetup, run_dir: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train from the latest checkpoint (or the start) to `config.steps`; export to RUN/hf."""
    return run_offline(dpo_method(config), config, setup, run_dir, progress=progress)


def train_dpo(
    config: DPOConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    init: str | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on the `train` split of a `kinrl generate --kind preference` folder, evaluating on
    `validation`; resume if `run_dir` holds a crashed run of this config. `init`: a run
    folder or HF GPT-2 folder / name (default a fresh `config.preset` model). Returns the
    last train and held-out metrics."""
    setup = prepare_dpo(config, data_dir, run_dir, init, progress=progress)
    return run_dpo(config, setup, run_dir, progress=progress)
