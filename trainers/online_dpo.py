"""Online DPO (Guo et al. 2024, "Direct language model alignment from online AI feedback"):
two samples per prompt, labelled, then a DPO-family loss on the pair.

    train("online-dpo", OnlineDPOConfig(), "data/l2", "runs/odpo", init="runs/sft")

A step is one rollout (`trainers/online.py`, G = 2) and `minibatches` updates on it. The pair
of each prompt is labelled by
* the simulated annotator (`tasks.feedback.prefer`) on the gold reward (minus the
  missing-answer penalty), under its noise model: `--annotator exact|bradley_terry`,
  `--noise` (flip rate), `--annotator-temperature`, `--length-bias`, `--position-bias`; or
* with `--reward rm:RUN`, the reward model: the higher proxy reward wins (ties at random).

A pair whose two samples score alike (frequent with an exact, near-binary reward) would be
labelled by a coin: it is left out of the loss unless `--train-ties`. The loss is `--loss` of
the DPO family (`trainers/dpo.py`'s `preference_loss`) on the pair's summed completion
log-probs (tempered) against the reference's, computed in the rollout's one scoring pass;
`--rpo-alpha A` adds `A` times the preferred sample's mean NLL per token (RPO, as in
`trainers/dpo.py`; the iterative RPO of Pang et al. trains on the model's own samples this
way), from the same log-probs, logged as `loss/rpo_nll`. Logged besides the rollout's figures:
`label/agrees_with_gold` (the share of labels that prefer the gold-better sample, among pairs
whose gold rewards differ; NaN when none do), `label/gold_ties`, `label/trained` (the share of
pairs in the loss), `rewards/accuracies` and `rewards/margins` of the implicit rewards.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tasks.feedback import AnnotatorConfig, prefer
from tasks.registry import EXAMPLES_KIND
from trainers.config import OnlineDPOConfig
from trainers.dpo import preference_loss
from trainers.engine import Method, Metrics, Prepared, Setup
from trainers.online import Rollout, policy_logps, prepare_online
from trainers.policy_gradient import run_updates

LABEL_STREAM = 0x1ABE1  # the annotator's random stream, apart from the data's


def label_pairs(config: OnlineDPOConfig, batch: Rollout,
                step: int) -> tuple[np.ndarray, np.ndarray, dict]:  # fmt: skip
    """(P,) True where a prompt's first sample is preferred, (P,) True where the pair is
    trained on (its samples' rewards differ, or `train_ties`), and the labelling metrics."""
    utility = np.asarray(batch.rewards).reshape(-1, 2)
    rng = np.random.default_rng([config.seed, step, LABEL_STREAM])
    if config.reward_model is not None:  # the proxy decides
        first = np.where(utility[:, 0] == utility[:, 1], rng.random(len(utility)) < 0.5,
                         utility[:, 0] > utility[:, 1])  # fmt: skip
    else:
        annotator = AnnotatorConfig(
            model=config.annotator, flip_rate=config.noise,
            temperature=config.annotator_temperature, length_bias=config.length_bias,
            position_bias=config.position_bias,
        )  # fmt: skip
        lengths = np.asarray(batch.completion_mask).sum(axis=1).reshape(-1, 2)
        first, _ = prefer(utility[:, 0], utility[:, 1], lengths[:, 0], lengths[:, 1],
                          config=annotator, rng=rng)  # fmt: skip
    trained = np.ones(len(first), bool) if config.train_ties else utility[:, 0] != utility[:, 1]
    metrics = {"label/trained": np.float32(trained.mean())}
    gold = np.asarray(batch.gold).reshape(-1, 2)
    if not np.isnan(gold).all():  # a text task (TL;DR) has no gold reward to compare with
        differ = gold[:, 0] != gold[:, 1]
        agrees = (first == (gold[:, 0] > gold[:, 1]))[differ]
        metrics["label/agrees_with_gold"] = np.float32(agrees.mean() if agrees.size else np.nan)
        metrics["label/gold_ties"] = np.float32(1.0 - differ.mean())
    return first, trained, metrics


def online_dpo_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    opt_state: optax.OptState,
    batch: Rollout,
    key: jax.Array | None = None,
    *,
    config: OnlineDPOConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """The DPO updates on one labelled rollout: `batch.rewards` holds 1 for each pair's
    preferred sample and 0 for the other, or 0.5 for both of a pair left out (a tie;
    `labelled_rollouts`)."""
    del key
    P = batch.prompt_ids.shape[0]

    def pair(x: jax.Array, first: jax.Array) -> jax.Array:
        """(2B,) per-sample values -> (2, B) chosen, rejected."""
        x = x.reshape(-1, 2)
        chosen = jnp.where(first, x[:, 0], x[:, 1])
        rejected = jnp.where(first, x[:, 1], x[:, 0])
        return jnp.stack([chosen, rejected])

    def loss_fn(params: nnx.State, rollout: Rollout) -> tuple[jax.Array, Metrics]:
        logps = policy_logps(nnx.merge(graphdef, params), rollout, 2, config.temperature)
        labels = rollout.rewards.reshape(-1, 2)
        first = labels[:, 0] > labels[:, 1]
        weight = jnp.abs(labels[:, 0] - labels[:, 1])  # 1 for a labelled pair, 0 for a tie
        mask = rollout.completion_mask
        policy = pair(jnp.sum(logps, axis=1), first)
        reference = pair(jnp.sum(rollout.reference_logps, axis=1), first)
        counts = pair(jnp.sum(mask, axis=1), first)
        losses, metrics = preference_loss(config, policy, counts, reference)
        total = jnp.maximum(jnp.sum(weight), 1.0)
        return jnp.sum(weight * losses) / total, {
            k: jnp.sum(weight * v) / total for k, v in metrics.items()
        }

    params, opt_state, metrics = run_updates(params, opt_state, batch, loss_fn, optimizer,
                                             prompts=P, minibatches=config.minibatches,
                                             epochs=1)  # fmt: skip
    metrics["policy/updates"] = metrics.pop("updates")
    return params, opt_state, metrics


def prepare(setup: Setup) -> Prepared:
    prepared = prepare_online(setup)
    rollouts = prepared.rollout
    config: OnlineDPOConfig = setup.config

    def labelled_rollouts(graphdef: nnx.GraphDef, params: nnx.State, prompts: Any,
                          step: int) -> tuple[Rollout, Metrics]:  # fmt: skip
        batch, metrics = rollouts(graphdef, params, prompts, step)
        first, trained, label_metrics = label_pairs(config, batch, step)
        labels = np.stack([first, ~first], axis=1).astype(np.float32)
        labels[~trained] = 0.5  # no preference: the pair leaves the loss
        return batch._replace(rewards=labels.reshape(-1)), {**metrics, **label_metrics}

    return prepared._replace(rollout=labelled_rollouts)


METHOD = Method(
    name="online-dpo",
    config_class=OnlineDPOConfig,
    data_kind=EXAMPLES_KIND,
    prepare=prepare,
    step=online_dpo_step,
)
