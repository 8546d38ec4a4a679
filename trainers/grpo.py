"""GRPO (Shao et al. 2024) and the variants TRL offers: G samples per prompt, each advantage
its reward against its group's, a clipped importance-ratio loss.

    train("grpo", GRPOConfig(), "data/l2", "runs/grpo", init="runs/sft")

A step is one rollout (`trainers/online.py`: P prompts x G samples, scored, with the sampling
and reference log-probs) and `num_iterations` x `minibatches` optimizer updates on it
(`trainers.policy_gradient.run_updates`). The advantage of sample i of a group is
`r_i - mean(r)`, divided by the group's standard deviation (`--scale-rewards group`), the
batch's (`batch`) or nothing (`none`, Dr. GRPO). The loss per token is the clipped surrogate
(`--epsilon`, `--epsilon-high`; one ratio per sequence with `--sequence-ratio`, GSPO), plus
`beta` x the KL estimate with `--kl-in loss` (GRPO's default, k3), aggregated by
`--loss-type`. With `--kl-in reward`, `beta` x the sequence's KL estimate is taken off its
reward before the advantages instead. `--drop-zero-variance` leaves groups whose samples all
scored alike out of the loss, as DAPO's dynamic sampling filters them (without drawing
replacements): their scores carry no signal, so what goes is their KL terms and, with `bnpo`
and `dapo` aggregation, their tokens' share of the normaliser. `--mask-truncated` leaves
completions cut at `max_new_tokens` out of the loss. With `beta` 0 no reference pass is made
(and no KL is logged).

RLOO (`trainers/rloo.py`) is this step with its own advantages and aggregation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tasks.registry import EXAMPLES_KIND
from trainers.config import GRPOConfig, PolicyGradientConfig
from trainers.engine import Method, Metrics, Prepared, Setup
from trainers.estimators import group_advantages
from trainers.online import Rollout, policy_logps, prepare_online
from trainers.policy_gradient import aggregate, clipped_objective, kl_penalty, run_updates


def policy_gradient_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    opt_state: optax.OptState,
    batch: Rollout,
    *,
    config: PolicyGradientConfig,
    optimizer: optax.GradientTransformation,
    advantages_of: Callable[[jax.Array], jax.Array],
    loss_type: str,
    sequence_ratio: bool = False,
    drop_zero_variance: bool = False,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """The updates of GRPO and RLOO on one rollout; `advantages_of` maps the (P * G,)
    rewards, after any KL in the reward, to advantages."""
    G, N = config.group_size, config.max_new_tokens
    P = batch.prompt_ids.shape[0]
    mask = batch.completion_mask
    rewards = batch.rewards
    kl_in_loss = config.beta > 0 and config.kl_in == "loss"
    if config.beta > 0 and config.kl_in == "reward":
        kl = kl_penalty(batch.sampling_logps, batch.reference_logps, batch.sampling_logps, mask,
                        config.kl_estimator)  # fmt: skip
        rewards = rewards - config.beta * jnp.sum(kl, axis=1)
    advantages = advantages_of(rewards)
    # Left out of the loss altogether: completions cut at max_new_tokens (--mask-truncated),
    # and groups whose scores all tie, before any KL in the reward (--drop-zero-variance).
    kept = jnp.ones_like(rewards)
    if config.mask_truncated:
        kept = kept * (1.0 - batch.truncated.astype(jnp.float32))
    if drop_zero_variance:
        spread = jnp.std(batch.rewards.reshape(-1, G), axis=1) > 0
        kept = kept * jnp.repeat(spread, G).astype(jnp.float32)
    loss_mask = mask * kept[:, None]
    step_tokens = jnp.sum(loss_mask)

    def loss_fn(params: nnx.State, minibatch: tuple) -> tuple[jax.Array, Metrics]:
        rollout, advantages, loss_mask = minibatch
        logps = policy_logps(nnx.merge(graphdef, params), rollout, G, config.temperature)
        losses, metrics = clipped_objective(
            logps, rollout.sampling_logps, advantages, loss_mask, epsilon_low=config.epsilon,
            epsilon_high=config.clip_high, sequence_ratio=sequence_ratio,
        )  # fmt: skip
        if kl_in_loss:
            kl = kl_penalty(logps, rollout.reference_logps, rollout.sampling_logps, loss_mask,
                            config.kl_estimator)  # fmt: skip
            losses = losses + config.beta * kl
            tokens = jnp.maximum(jnp.sum(loss_mask), 1.0)
            metrics["kl_loss"] = jax.lax.stop_gradient(jnp.sum(kl * loss_mask) / tokens)
        loss = aggregate(losses, loss_mask, loss_type, max_tokens=N, step_tokens=step_tokens)
        return loss, metrics

    params, opt_state, metrics = run_updates(
        params, opt_state, (batch, advantages, loss_mask), loss_fn, optimizer, prompts=P,
        minibatches=config.minibatches, epochs=config.num_iterations,
    )  # fmt: skip
    out = {k if k in ("loss", "grad_norm") else f"policy/{k}": v for k, v in metrics.items()}
    out["policy/advantage_abs"] = jnp.mean(jnp.abs(advantages))
    out["policy/trained_fraction"] = jnp.mean(kept)
    return params, opt_state, out


def grpo_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    opt_state: optax.OptState,
    batch: Rollout,
    key: jax.Array | None = None,
    *,
    config: GRPOConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """GRPO's updates on one rollout. Pure; the engine jits it with the state donated."""
    del key  # the updates are deterministic given the rollout

    def advantages_of(rewards: jax.Array) -> jax.Array:
        return group_advantages(rewards, config.group_size, config.scale_rewards)

    return policy_gradient_step(
        graphdef, params, opt_state, batch, config=config, optimizer=optimizer,
        advantages_of=advantages_of, loss_type=config.loss_type,
        sequence_ratio=config.sequence_ratio, drop_zero_variance=config.drop_zero_variance,
    )  # fmt: skip


def prepare(setup: Setup) -> Prepared:
    return prepare_online(setup)


METHOD = Method(
    name="grpo",
    config_class=GRPOConfig,
    data_kind=EXAMPLES_KIND,
    prepare=prepare,
    step=grpo_step,
)
