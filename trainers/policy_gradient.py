"""The clipped policy-gradient pieces the online methods share: pure and jittable.

* `clipped_objective`: PPO's clipped surrogate per token, `-min(r A, clip(r, 1 - eps_low,
  1 + eps_high) A)` with `r = exp(log p - log p_old)`; or, with `sequence_ratio` (GSPO, Zheng
  et al. 2025), one ratio per sequence, the exponential of its mean token log-ratio. Also the
  clip fractions (low: `r < 1 - eps_low` with `A < 0`; high: `r > 1 + eps_high` with `A > 0`,
  the tokens whose gradient the clip stops) and the approximate KL to the sampling policy,
  `mean((r - 1) - log r)`.
* `aggregate`: per-token losses -> the scalar loss, by GRPO's loss types (as TRL defines them):
  `grpo` the mean over sequences of each one's token mean; `bnpo` one mean over the update's
  tokens; `dr_grpo` the token sum over (sequences x max_new_tokens) (Liu et al. 2025, no length
  bias); `dapo` the token sum over the whole step's token count (Yu et al. 2025, the same
  normaliser for every minibatch); `sequence_sum` (RLOO's REINFORCE) the mean over sequences
  of each one's token sum.
* `kl_penalty`: the per-token KL term by `--kl-estimator`, importance-weighted when the tokens
  came from an older policy. Its gradient, when it goes into the loss (`--kl-in loss`),
  is `w * (log p/q) * grad log p` for k2 (the true gradient of KL(p || q), on and off policy),
  `w * (1 - q/p) * grad log p` for k3 (GRPO's choice: biased, in expectation it is the
  gradient of the reverse KL(q || p)), and `w * grad log p` for k1 (zero in expectation: no
  pull towards the reference at all, so the configs refuse k1 in the loss), w the detached
  ratio p / p_old (1 on the first pass). In the reward (`--kl-in reward`) it is a constant
  of the rollout, and k1 there gives the REINFORCE gradient of the KL-regularised objective.
* `run_updates`: `epochs` passes of `minibatches` optimizer updates over one rollout, in
  `lax.scan`, each pass optionally in a fresh random order of the prompts, stopping early
  (making no more updates) at the first minibatch whose approximate KL, before its update,
  passes a target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from trainers.estimators import kl_estimates

Metrics = dict[str, jax.Array]
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "sequence_sum")


def clipped_objective(
    logps: jax.Array,
    old_logps: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    epsilon_low: float,
    epsilon_high: float,
    sequence_ratio: bool = False,
) -> tuple[jax.Array, Metrics]:
    """Per-token clipped losses `(B, N)` (0 on padding) of token log-probs `(B, N)` under the
    policy and the sampling policy; `advantages` `(B,)` per sequence or `(B, N)` per token.
    Metrics (scalars over the real tokens): `clip_low`, `clip_high`, `approx_kl`, `ratio`."""
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    log_ratio = (logps - old_logps) * mask
    if sequence_ratio:
        seq = jnp.sum(log_ratio, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        log_ratio = jnp.broadcast_to(seq[:, None], logps.shape)
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    losses = -jnp.minimum(ratio * advantages, clipped * advantages) * mask
    tokens = jnp.maximum(jnp.sum(mask), 1.0)
    low = (ratio < 1.0 - epsilon_low) & (advantages < 0)
    high = (ratio > 1.0 + epsilon_high) & (advantages > 0)
    sg = jax.lax.stop_gradient
    metrics = {
        "clip_low": sg(jnp.sum(low * mask) / tokens),
        "clip_high": sg(jnp.sum(high * mask) / tokens),
        "approx_kl": sg(jnp.sum(((ratio - 1.0) - log_ratio) * mask) / tokens),
        "ratio": sg(jnp.sum(ratio * mask) / tokens),
    }
    return losses, metrics


def aggregate(losses: jax.Array, mask: jax.Array, loss_type: str, *, max_tokens: int,
              step_tokens: jax.Array | None = None) -> jax.Array:  # fmt: skip
    """The scalar loss of per-token `losses` `(B, N)` over `mask` (see the module docstring).
    `step_tokens`: the real tokens of the whole step (`dapo`); sequences with no real token
    count as empty in `grpo` and `sequence_sum`."""
    total = jnp.sum(losses * mask)
    B = losses.shape[0]
    if loss_type == "grpo":
        per_sequence = jnp.sum(losses * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        return jnp.mean(per_sequence)
    if loss_type == "bnpo":
        return total / jnp.maximum(jnp.sum(mask), 1.0)
    if loss_type == "dr_grpo":
        return total / (B * max_tokens)
    if loss_type == "dapo":
        if step_tokens is None:
            raise ValueError("loss_type dapo needs step_tokens")
        return total / jnp.maximum(step_tokens, 1.0)
    if loss_type == "sequence_sum":
        return total / B
    raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)} (got {loss_type!r})")


def kl_penalty(logps: jax.Array, reference_logps: jax.Array, old_logps: jax.Array,
               mask: jax.Array, estimator: str) -> jax.Array:  # fmt: skip
    """`(B, N)` per-token KL estimate `estimator` (k1, k2 or k3) of the policy against the
    reference, weighted by the detached ratio to the sampling policy."""
    estimates = kl_estimates(logps, reference_logps, mask, sampling_logps=old_logps)
    return getattr(estimates, estimator)


def minibatch_slices(tree: Any, minibatches: int, prompts: int) -> Any:
    """Every leaf with P or P * G rows -> `(minibatches, rows / minibatches, ...)`, minibatch
    m holding prompts m, m + M, m + 2M, ... (each with its G consecutive completions):
    interleaved, so a rollout split over devices by prompt stays split in every minibatch."""

    def split(x: jax.Array) -> jax.Array:
        per = x.shape[0] // prompts  # rows per prompt: 1, or G
        x = x.reshape(prompts // minibatches, minibatches, per, *x.shape[1:])
        return x.swapaxes(0, 1).reshape(minibatches, -1, *x.shape[3:])

    return jax.tree.map(split, tree)


def permute_prompts(tree: Any, order: jax.Array, prompts: int) -> Any:
    """Reorder a rollout-shaped tree by the prompt order `order` `(P,)`: leaves with P rows
    by prompt, leaves with P * G rows by prompt, keeping each prompt's G rows together."""

    def take(x: jax.Array) -> jax.Array:
        group = x.shape[0] // prompts
        rows = (order[:, None] * group + jnp.arange(group)[None]).reshape(-1)
        return x[rows]

    return jax.tree.map(take, tree)


def run_updates(
    params: Any,
    opt_state: optax.OptState,
    data: Any,
    loss_fn: Callable[[Any, Any], tuple[jax.Array, Metrics]],
    optimizer: optax.GradientTransformation,
    *,
    prompts: int,
    minibatches: int,
    epochs: int,
    key: jax.Array | None = None,
    target_kl: float = 0.0,
) -> tuple[Any, optax.OptState, Metrics]:
    """`epochs` x `minibatches` optimizer updates of `params` on `data` (a tree whose leaves
    have P or P * G rows), each with `loss_fn(params, minibatch) -> (loss, metrics)`.

    With `key`, every epoch visits the prompts in a fresh random order; `target_kl` > 0 makes
    no more updates from the first minibatch whose `approx_kl` metric (before its update)
    passes it. Metrics: the mean over the updates made of `loss`, `grad_norm` and each metric
    of `loss_fn`, and `updates` made (skipped updates do not advance the optimizer's count)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    # The metrics' names, from a trace of one minibatch-shaped call.
    _, shapes = jax.eval_shape(
        loss_fn, params, jax.tree.map(lambda x: x[0], minibatch_slices(data, minibatches, prompts))
    )
    zeros = {name: jnp.zeros((), jnp.float32) for name in (*shapes, "loss", "grad_norm")}

    def epoch(carry: tuple, epoch_key: jax.Array) -> tuple[tuple, None]:
        ordered = data
        if key is not None:
            ordered = permute_prompts(data, jax.random.permutation(epoch_key, prompts), prompts)
        return jax.lax.scan(update, carry, minibatch_slices(ordered, minibatches, prompts))[0], None

    def update(carry: tuple, minibatch: Any) -> tuple[tuple, None]:
        params, opt_state, stopped, sums, count = carry

        def step(operand: tuple) -> tuple:
            params, opt_state = operand
            (loss, metrics), grads = grad_fn(params, minibatch)
            metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
            metrics = {k: metrics[k].astype(jnp.float32) for k in zeros}
            # The KL to the sampling policy is that of the parameters before this update:
            # past the target, this update is not made either (as SB3's PPO stops).
            passed = jnp.array(False)
            if target_kl > 0:
                passed = metrics["approx_kl"] > target_kl

            def apply(operand: tuple) -> tuple:
                params, opt_state = operand
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state

            params, opt_state = jax.lax.cond(passed, lambda o: o, apply, (params, opt_state))
            return params, opt_state, metrics, passed

        def skip(operand: tuple) -> tuple:
            return (*operand, zeros, jnp.array(True))

        params, opt_state, metrics, passed = jax.lax.cond(stopped, skip, step,
                                                          (params, opt_state))  # fmt: skip
        ran = 1.0 - passed.astype(jnp.float32)
        sums = {k: sums[k] + ran * metrics[k] for k in zeros}
        return (params, opt_state, stopped | passed, sums, count + ran), None

    carry = (params, opt_state, jnp.array(False), zeros, jnp.float32(0.0))
    keys = jax.random.split(key, epochs) if key is not None else jnp.zeros((epochs, 2), jnp.uint32)
    params, opt_state, _, sums, count = jax.lax.scan(epoch, carry, keys)[0]
    metrics = {k: v / jnp.maximum(count, 1.0) for k, v in sums.items()}
    metrics["updates"] = count
    return params, opt_state, metrics
