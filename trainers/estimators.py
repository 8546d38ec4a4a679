"""KL and advantage estimators for the online methods (PPO, GRPO, RLOO): pure, jittable.

Shapes: token-level arrays are `(B, T)` over the completion slots, with `mask` `(B, T)` 1.0 on
the completion's real tokens and 0.0 on padding; sequence-level arrays are `(B,)`.

KL of the policy p from the reference q, along completions sampled from p:

* `exact_kl`: the full-vocabulary KL at every token, `sum_v p_v (log p_v - log q_v)`, from both
  models' logits: no estimate at all, what the estimates below are checked against.
* `kl_estimates`: Schulman's k1, k2 and k3 of the sampled tokens' log-probs,
  `k1 = log p - log q`, `k2 = (log p - log q)^2 / 2`, `k3 = (r - 1) - log r` with
  `r = q / p`; k1 and k3 are unbiased for KL(p || q) when the tokens are drawn from p, k2 is
  biased but low-variance. Drawn from another policy mu (an old policy, or sampling at a
  temperature), give `sampling_logps` (log mu): each estimate is then weighted by the
  importance ratio `p / mu` (held constant), the correction the estimators need off-policy.
  As values to *log*, all three are sound; as a *loss*, differentiating k3 does not give the
  KL's gradient (the known bias of "k3 as a loss"): k2 in the loss, or k1 in the reward, does
  (`trainers/policy_gradient.py`).

Advantages:

* `gae`: generalised advantage estimation (Schulman et al. 2016) over the completion tokens,
  and the returns `advantages + values`;
* `whiten`: masked standardisation (as PPO applies to advantages);
* `group_advantages`: GRPO's reward minus its group's mean, scaled by the group's or the
  batch's standard deviation, or not at all (Dr. GRPO);
* `leave_one_out_advantages`: RLOO's reward minus the mean of the other k - 1 samples of its
  prompt.

The KL coefficient of PPO's per-token penalty: `fixed_kl_controller(beta)` or
`adaptive_kl_controller(beta, target, horizon)` (Ziegler et al. 2019), each an optax-shaped
`(init, update)` pair over a `KLControlState`, so the coefficient is jittable state that a
checkpoint holds like the optimizer's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

SCALINGS = ("group", "batch", "none")


class KLEstimates(NamedTuple):
    """Per-token `(B, T)` estimates (0 on padding) and their per-sequence sums `(B,)`."""

    k1: jax.Array
    k2: jax.Array
    k3: jax.Array
    k1_sum: jax.Array
    k2_sum: jax.Array
    k3_sum: jax.Array


def exact_kl(policy_logits: jax.Array, reference_logits: jax.Array, mask: jax.Array) -> jax.Array:
    """`(B, T, V)` logits of both models at the same positions -> `(B, T)` KL(p || q) of the
    next-token distributions, 0 where `mask` is 0."""
    log_p = jax.nn.log_softmax(policy_logits.astype(jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(reference_logits.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
    return kl * mask


def kl_estimates(
    policy_logps: jax.Array,
    reference_logps: jax.Array,
    mask: jax.Array,
    sampling_logps: jax.Array | None = None,
) -> KLEstimates:
    """k1, k2, k3 of the sampled tokens' log-probs `(B, T)` under the policy and the
    reference (see the module docstring); `sampling_logps`: the log-probs the tokens were
    drawn with, when not the policy's."""
    log_ratio = policy_logps - reference_logps  # log p - log q
    k1 = log_ratio
    k2 = 0.5 * log_ratio**2
    k3 = jnp.expm1(-log_ratio) + log_ratio  # (q/p - 1) - log(q/p)
    if sampling_logps is not None:
        weight = jax.lax.stop_gradient(jnp.exp(policy_logps - sampling_logps))
        k1, k2, k3 = k1 * weight, k2 * weight, k3 * weight
    k1, k2, k3 = k1 * mask, k2 * mask, k3 * mask
    return KLEstimates(k1, k2, k3, k1.sum(-1), k2.sum(-1), k3.sum(-1))


def gae(
    rewards: jax.Array,
    values: jax.Array,
    mask: jax.Array,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[jax.Array, jax.Array]:
    """Advantages and returns `(B, T)` of per-token `rewards` and `values` over the completion
    (`mask`; right-padded): `delta_t = r_t + gamma V_{t+1} - V_t` (`V` past the last token is
    0), `A_t = delta_t + gamma lam A_{t+1}`, returns `A + V`; 0 on padding."""
    rewards, values = rewards * mask, values * mask
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    deltas = rewards + gamma * next_values - values

    def back(carry: jax.Array, delta: jax.Array) -> tuple[jax.Array, jax.Array]:
        advantage = delta + gamma * lam * carry
        return advantage, advantage

    _, advantages = jax.lax.scan(back, jnp.zeros_like(deltas[:, 0]), deltas.T, reverse=True)
    advantages = advantages.T * mask
    return advantages, (advantages + values) * mask


def whiten(x: jax.Array, mask: jax.Array, shift_mean: bool = True, eps: float = 1e-8) -> jax.Array:
    """`(x - mean) / std` over the masked entries (the unbiased variance, as TRL and the TL;DR
    reproduction use); `shift_mean=False` only rescales. 0 where `mask` is 0."""
    n = jnp.maximum(jnp.sum(mask), 1.0)
    mean = jnp.sum(x * mask) / n
    variance = jnp.sum(((x - mean) * mask) ** 2) / jnp.maximum(n - 1.0, 1.0)
    out = (x - mean) * jax.lax.rsqrt(variance + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def group_advantages(rewards: jax.Array, group_size: int, scale: str = "group",
                     eps: float = 1e-4) -> jax.Array:  # fmt: skip
    """GRPO: `(B,)` rewards of B / G prompts' G consecutive samples -> reward minus its
    group's mean, divided by the group's standard deviation (`scale="group"`), the whole
    batch's (`"batch"`), or nothing (`"none"`, Dr. GRPO); the unbiased standard deviation plus
    `eps`, as TRL computes it."""
    if scale not in SCALINGS:
        raise ValueError(f"scale must be one of {', '.join(SCALINGS)} (got {scale!r})")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
    groups = rewards.reshape(-1, group_size)
    centred = (groups - groups.mean(axis=1, keepdims=True)).reshape(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = jnp.repeat(jnp.std(groups, axis=1, ddof=1), group_size) if group_size > 1 else 0.0
    else:
        std = jnp.std(rewards, ddof=1) if rewards.shape[0] > 1 else 0.0
    return centred / (std + eps)


def leave_one_out_advantages(rewards: jax.Array, k: int) -> jax.Array:
    """RLOO: `(B,)` rewards of B / k prompts' k consecutive samples -> each reward minus the
    mean reward of the other k - 1 samples of its prompt."""
    if k < 2 or rewards.shape[0] % k:
        raise ValueError(f"RLOO needs k >= 2 samples per prompt dividing {rewards.shape[0]}")
    groups = rewards.reshape(-1, k)
    baseline = (groups.sum(axis=1, keepdims=True) - groups) / (k - 1)
    return (groups - baseline).reshape(-1)


class KLControlState(NamedTuple):
    coef: jax.Array  # the current KL coefficient, a float32 scalar


class KLController(NamedTuple):
    """`init() -> state`; `update(state, kl, steps) -> state` after `steps` optimizer steps
    (of batches) whose mean sequence KL was `kl`."""

    init: Callable[[], KLControlState]
    update: Callable[[KLControlState, jax.Array, int], KLControlState]


def fixed_kl_controller(coef: float) -> KLController:
    """A constant coefficient."""
    return KLController(lambda: KLControlState(jnp.float32(coef)), lambda state, kl, steps: state)


def adaptive_kl_controller(coef: float, target: float, horizon: float) -> KLController:
    """Ziegler et al. (2019): `coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * steps / horizon`,
    so the KL is steered towards `target` over about `horizon` steps (what TRL's and the TL;DR
    reproduction's adaptive controllers do)."""
    if not (coef > 0 and target > 0 and horizon > 0):
        raise ValueError("coef, target and horizon must be > 0")

    def update(state: KLControlState, kl: jax.Array, steps: int) -> KLControlState:
        error = jnp.clip(kl / target - 1.0, -0.2, 0.2)
        return KLControlState(state.coef * (1.0 + error * steps / horizon))

    return KLController(lambda: KLControlState(jnp.float32(coef)), update)
