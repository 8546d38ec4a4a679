"""PPO for language models, with the implementation details of the TL;DR reproduction
(Huang et al. 2024, "The N+ implementation details of RLHF with PPO").

    train("ppo", PPOConfig(), "data/l2", "runs/ppo", init="runs/sft")

A step is one rollout (`trainers/online.py`) and `ppo_epochs` x `minibatches` updates on it:

* **Rewards per token**: `-coef * k(t)` at every completion token (the KL estimate of the
  rollout's policy against the reference, k1 by default, `--kl-in reward`), plus the score
  (gold or proxy, minus the missing-answer penalty) at the last token. With `--kl-in loss`
  the penalty goes into the loss instead, as GRPO's does.
* **The KL coefficient** `coef` is `beta`, or with `--adaptive-kl` Ziegler et al.'s
  controller (`trainers.estimators.adaptive_kl_controller`), steered after every rollout by
  its mean sequence KL towards `kl_target`, over a horizon counted in completions. It is
  state: checkpointed, resumed.
* **The value model**: `--value-model separate` is a second GPT with a scalar head,
  initialised from the reward model with `--reward rm:RUN` and from the policy (a fresh head)
  with the gold reward; `head` puts a scalar head on the policy's own trunk. Either way its
  weights live in the step's carried state beside the optimizer's (`PPOState`), so the run's
  parameters, its checkpoints' `params` and its export are the policy alone. One AdamW
  updates policy and value together (one gradient clip over both), as the reproduction's
  policy-and-value wrapper does.
* **Advantages**: GAE (`gamma` 1, `lam` 0.95) on the values of the rollout (before any
  update), whitened over the rollout's tokens; returns = advantages + values.
* **Losses**: the clipped surrogate (`epsilon`) averaged over the minibatch's tokens; the
  clipped value loss `0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, +-value_clip) -
  R)^2))` weighted by `value_coef`.
* **Epochs** of minibatches in `lax.scan`, the prompts in a fresh random order each epoch;
  with `target_approx_kl` > 0 a rollout's remaining updates are skipped once the
  approximate KL to the sampling policy passes it.
* Log-probs are of the tempered policy (the temperature correction); the model has no
  dropout anywhere.

Logged (besides the rollout's figures): `value/loss`, `value/clip_frac`,
`value/explained_variance`, `value/mean`, `policy/clip_low` and `clip_high`,
`policy/approx_kl`, `policy/updates` (fewer than epochs x minibatches after an early stop),
`kl/coef`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tasks.registry import EXAMPLES_KIND
from trainers.config import PPOConfig
from trainers.engine import Method, Metrics, Prepared, Setup
from trainers.estimators import (
    KLController,
    KLControlState,
    adaptive_kl_controller,
    fixed_kl_controller,
    gae,
    whiten,
)
from trainers.model import GPT, init_model
from trainers.online import (
    Rollout,
    completion_hidden,
    load_reward_model,
    prepare_online,
    token_logps,
)
from trainers.policy_gradient import aggregate, clipped_objective, kl_penalty, run_updates


class PPOState(NamedTuple):
    """What a PPO step carries beside the policy's parameters."""

    opt: optax.OptState  # the optimizer's state over (policy, value)
    value: Any  # the value model's state (separate), or the head's {"kernel", "bias"} (head)
    kl: KLControlState


def kl_controller(config: PPOConfig) -> KLController:
    if config.adaptive_kl and config.beta > 0:
        return adaptive_kl_controller(config.beta, config.kl_target, config.kl_horizon)
    return fixed_kl_controller(config.beta)


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def logits_and_values(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    value: Any,
    batch: Rollout,
    *,
    config: PPOConfig,
    value_graphdef: nnx.GraphDef | None,
) -> tuple[jax.Array, jax.Array]:
    """(P * G, N, V) tempered policy logits and (P * G, N) values of the states that choose
    each completion token."""
    G = config.group_size
    args = (batch.prompt_ids, batch.prompt_mask, batch.completions, G)
    policy: GPT = nnx.merge(graphdef, params)
    hidden = completion_hidden(policy, *args)
    logits = policy.lm_head(hidden) / config.temperature
    if value_graphdef is None:  # a head on the policy's trunk
        values = (hidden.astype(jnp.float32) @ value["kernel"])[..., 0] + value["bias"][0]
    else:
        model: GPT = nnx.merge(value_graphdef, value)
        values = model.value(completion_hidden(model, *args))
    return logits, values


def ppo_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    opt_state: PPOState,
    batch: Rollout,
    key: jax.Array,
    *,
    config: PPOConfig,
    optimizer: optax.GradientTransformation,
    value_graphdef: nnx.GraphDef | None = None,
) -> tuple[nnx.State, PPOState, Metrics]:
    """PPO's updates on one rollout. Pure; the engine jits it with the state donated."""
    mask = batch.completion_mask
    P = batch.prompt_ids.shape[0]
    coef = opt_state.kl.coef
    kl_in_reward = config.beta > 0 and config.kl_in == "reward"
    kl_in_loss = config.beta > 0 and config.kl_in == "loss"
    forward = functools.partial(logits_and_values, graphdef, config=config,
                                value_graphdef=value_graphdef)  # fmt: skip
    _, old_values = forward(params, opt_state.value, batch)
    old_values = jax.lax.stop_gradient(old_values) * mask
    # Rewards per token: the KL penalty everywhere, the score at the last token.
    token_rewards = jnp.zeros_like(mask)
    if kl_in_reward:
        kl = kl_penalty(batch.sampling_logps, batch.reference_logps, batch.sampling_logps, mask,
                        config.kl_estimator)  # fmt: skip
        token_rewards = -coef * kl
    last = jnp.maximum(jnp.sum(mask, axis=1).astype(jnp.int32) - 1, 0)
    token_rewards = token_rewards + jax.nn.one_hot(last, mask.shape[1]) * batch.rewards[:, None]
    advantages, returns = gae(token_rewards, old_values, mask, gamma=config.gamma, lam=config.lam)
    if config.whiten_advantages:
        advantages = whiten(advantages, mask)

    def loss_fn(joint: tuple, minibatch: tuple) -> tuple[jax.Array, Metrics]:
        policy, value = joint
        rollout, advantages, returns, old_values = minibatch
        lmask = rollout.completion_mask
        logits, values = forward(policy, value, rollout)
        logps = token_logps(logits, rollout.completions) * lmask
        losses, metrics = clipped_objective(
            logps, rollout.sampling_logps, advantages, lmask, epsilon_low=config.epsilon,
            epsilon_high=config.epsilon,
        )  # fmt: skip
        if kl_in_loss:
            kl = kl_penalty(logps, rollout.reference_logps, rollout.sampling_logps, lmask,
                            config.kl_estimator)  # fmt: skip
            losses = losses + coef * kl
        policy_loss = aggregate(losses, lmask, "bnpo", max_tokens=config.max_new_tokens)
        clipped_values = old_values + jnp.clip(values - old_values, -config.value_clip,
                                               config.value_clip)  # fmt: skip
        unclipped_error, clipped_error = (values - returns) ** 2, (clipped_values - returns) ** 2
        value_loss = 0.5 * _masked_mean(jnp.maximum(unclipped_error, clipped_error), lmask)
        sg = jax.lax.stop_gradient
        metrics["value_loss"] = sg(value_loss)
        metrics["value_clip_frac"] = sg(_masked_mean(clipped_error > unclipped_error, lmask))
        metrics["policy_loss"] = sg(policy_loss)
        return policy_loss + config.value_coef * value_loss, metrics

    (params, value), opt, metrics = run_updates(
        (params, opt_state.value), opt_state.opt, (batch, advantages, returns, old_values),
        loss_fn, optimizer, prompts=P, minibatches=config.minibatches,
        epochs=config.ppo_epochs, key=key, target_kl=config.target_approx_kl,
    )  # fmt: skip
    sequence_kl = jnp.mean(jnp.sum((batch.sampling_logps - batch.reference_logps) * mask, 1))
    kl_state = kl_controller(config).update(opt_state.kl, sequence_kl, mask.shape[0])
    out = {
        "loss": metrics.pop("loss"),
        "grad_norm": metrics.pop("grad_norm"),
        "value/loss": metrics.pop("value_loss"),
        "value/clip_frac": metrics.pop("value_clip_frac"),
        "value/mean": _masked_mean(old_values, mask),
        "value/explained_variance": 1.0
        - _masked_variance(returns - old_values, mask)
        / jnp.maximum(_masked_variance(returns, mask), 1e-8),
        "kl/coef": opt_state.kl.coef,
        "policy/advantage_abs": _masked_mean(jnp.abs(advantages), mask),
    }
    out.update({f"policy/{k}": v for k, v in metrics.items()})
    return params, PPOState(opt, value, kl_state), out


def _masked_variance(x: jax.Array, mask: jax.Array) -> jax.Array:
    mean = _masked_mean(x, mask)
    return _masked_mean((x - mean) ** 2, mask)


def initial_value(setup: Setup) -> tuple[nnx.GraphDef | None, Any]:
    """(graphdef, state) of the value model, or (None, head weights) with a value head on the
    policy (see the module docstring)."""
    config: PPOConfig = setup.config
    cfg = setup.model_cfg
    if config.value_model == "head":
        rng = np.random.default_rng(config.seed)
        kernel = (0.02 * rng.standard_normal((cfg.n_embd, 1))).astype(np.float32)
        return None, {"kernel": jnp.asarray(kernel), "bias": jnp.zeros((1,), jnp.float32)}
    if config.reward_model is not None:  # the reward model's trunk and head
        model, _ = load_reward_model(config.reward_model, setup.tokenizer)
        model_cfg = dataclasses.replace(model.cfg, dtype=cfg.dtype, remat=cfg.remat)
        value_model = init_model(model_cfg, config.seed)
        nnx.update(value_model, nnx.state(model))
    else:  # the policy's weights and a fresh head
        value_model = init_model(dataclasses.replace(cfg, value_head=True), config.seed)
        nnx.update(value_model, nnx.state(setup.model))
    graphdef, state = nnx.split(value_model)
    return graphdef, state


def prepare(setup: Setup) -> Prepared:
    config: PPOConfig = setup.config
    value_graphdef, value = initial_value(setup)
    controller = kl_controller(config)

    def opt_state(optimizer: optax.GradientTransformation, params: nnx.State) -> PPOState:
        return PPOState(optimizer.init((params, value)), value, controller.init())

    return prepare_online(setup, opt_state=opt_state,
                          step_kwargs={"value_graphdef": value_graphdef})  # fmt: skip


METHOD = Method(
    name="ppo",
    config_class=PPOConfig,
    data_kind=EXAMPLES_KIND,
    prepare=prepare,
    step=ppo_step,
)
