"""Preference-optimisation and reward-model losses.

Every function here is pure, module-level and jittable, and returns
``(per_example_loss, metrics)``:

* ``per_example_loss`` has shape ``(B,)``: no reduction and no masking is applied; the caller
  chooses both (e.g. ``jnp.mean``, or a weighted/masked mean over valid rows).
* ``metrics`` is a ``dict[str, jax.Array]`` of per-example arrays of shape ``(B,)`` (also left
  unreduced for the caller). Metric values are wrapped in ``stop_gradient``: they are for logging.

Hyperparameters are keyword-only. When they are Python (or NumPy) numbers they are validated
eagerly and a ``ValueError`` names the argument and its allowed range; when they are JAX arrays
(e.g. traced inside ``jax.jit``) validation is skipped so that the functions stay jittable.

Notation for the pairwise DPO family: ``pc``/``pr`` are the policy's summed log-probabilities of
the chosen/rejected completions and ``rc``/``rr`` the reference model's, all of shape ``(B,)``,
and ``h = (pc - rc) - (pr - rr)`` is the difference of the implicit log-ratio rewards.

All log-sigmoids are computed with ``jax.nn.log_sigmoid`` (never ``log(sigmoid(x))``), so the
losses and their gradients stay finite for arbitrarily large ``|h|``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "DPO_LOSSES",
    "bradley_terry_loss",
    "cdpo_loss",
    "dpo_loss",
    "hinge_dpo_loss",
    "ipo_loss",
    "kto_loss",
    "robust_dpo_loss",
    "rpo_nll",
    "simpo_loss",
    "with_rpo_nll",
]

Metrics = dict[str, jax.Array]
LossOutput = tuple[jax.Array, Metrics]


# --------------------------------------------------------------------------------------------
# Validation helpers (static only: they never touch traced values).
# --------------------------------------------------------------------------------------------


def _static_value(value: object) -> float | None:
    """Return ``value`` as a float if it is a concrete Python/NumPy real number, else ``None``.

    JAX arrays (traced or not) return ``None``: validating them would either be impossible
    (tracers) or force a device-to-host transfer.
    """
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _check_range(
    name: str,
    value: object,
    *,
    low: float,
    high: float,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
) -> None:
    """Raise ``ValueError`` if the static ``value`` lies outside the interval ``low .. high``.

    Written so that NaN always fails (every comparison with NaN is False).
    """
    v = _static_value(value)
    if v is None:
        return
    above_low = v >= low if low_inclusive else v > low
    below_high = v <= high if high_inclusive else v < high
    if not (above_low and below_high):
        lo = ("[" if low_inclusive else "(") + f"{low:g}"
        hi = f"{high:g}" + ("]" if high_inclusive else ")")
        raise ValueError(f"{name} must be in {lo}, {hi}; got {value!r}")


_INF = float("inf")


def _check_positive(name: str, value: object) -> None:
    _check_range(name, value, low=0.0, high=_INF, low_inclusive=False)


def _check_nonnegative(name: str, value: object) -> None:
    _check_range(name, value, low=0.0, high=_INF)


def _check_finite(name: str, value: object) -> None:
    _check_range(name, value, low=-_INF, high=_INF, low_inclusive=False)


def _check_same_1d(**arrays: jax.Array) -> None:
    """Shapes are static even under ``jit``, so this check is always safe."""
    shapes = {name: jnp.shape(a) for name, a in arrays.items()}
    for name, shape in shapes.items():
        if len(shape) != 1:
            raise ValueError(f"{name} must have shape (B,); got shape {shape}")
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{n}={s}" for n, s in shapes.items())
        raise ValueError(f"inputs must all have the same shape (B,); got {desc}")


def _pair_metrics(chosen_rewards: jax.Array, rejected_rewards: jax.Array) -> Metrics:
    chosen_rewards = jax.lax.stop_gradient(chosen_rewards)
    rejected_rewards = jax.lax.stop_gradient(rejected_rewards)
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).astype(chosen_rewards.dtype),
    }


def _dpo_logits(
    pc: jax.Array, pr: jax.Array, rc: jax.Array, rr: jax.Array, beta: float | jax.Array
) -> tuple[jax.Array, Metrics]:
    """Validate shapes and return ``(h, metrics)`` shared by the DPO family."""
    _check_same_1d(
        policy_chosen_logps=pc,
        policy_rejected_logps=pr,
        ref_chosen_logps=rc,
        ref_rejected_logps=rr,
    )
    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    h = chosen_logratios - rejected_logratios
    metrics = _pair_metrics(beta * chosen_logratios, beta * rejected_logratios)
    return h, metrics


# --------------------------------------------------------------------------------------------
# DPO family.
# --------------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float | jax.Array,
) -> LossOutput:
    """Sigmoid DPO loss (Rafailov et al., 2023, "Direct Preference Optimization").

    ``loss = -log sigmoid(beta * h)`` with ``h = (pc - rc) - (pr - rr)``.

    Args:
        policy_chosen_logps: ``(B,)`` policy summed log-probs of the chosen completions (pc).
        policy_rejected_logps: ``(B,)`` policy summed log-probs of the rejected completions (pr).
        ref_chosen_logps: ``(B,)`` reference summed log-probs of the chosen completions (rc).
        ref_rejected_logps: ``(B,)`` reference summed log-probs of the rejected completions (rr).
        beta: inverse temperature / KL coefficient, ``beta > 0``.

    Returns:
        ``(loss, metrics)``: ``loss`` of shape ``(B,)``; metrics (each ``(B,)``)
        ``rewards/chosen = beta*(pc-rc)``, ``rewards/rejected = beta*(pr-rr)``,
        ``rewards/margins`` (their difference) and ``rewards/accuracies`` (1.0 where the chosen
        reward exceeds the rejected one, else 0.0).
    """
    _check_positive("beta", beta)
    h, metrics = _dpo_logits(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = -jax.nn.log_sigmoid(beta * h)
    return loss, metrics


def cdpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float | jax.Array,
    label_smoothing: float | jax.Array,
) -> LossOutput:
    """Conservative DPO, i.e. label-smoothed DPO (Mitchell, 2023, "A note on DPO with noisy
    preferences & relationship to IPO").

    ``loss = -(1-e) * log sigmoid(beta*h) - e * log sigmoid(-beta*h)``, with
    ``e = label_smoothing`` the assumed probability that a preference label is flipped. This is
    the cross-entropy against the smoothed target ``1 - e``; it equals :func:`dpo_loss` at
    ``e = 0``. Unlike :func:`robust_dpo_loss` it is *biased* under label noise (it keeps the
    optimum at a finite margin rather than de-noising the expected loss).

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps:
            ``(B,)`` summed log-probs, as in :func:`dpo_loss`.
        beta: ``beta > 0``.
        label_smoothing: ``e`` in ``[0, 0.5]``.

    Returns:
        ``(loss, metrics)`` with ``loss`` of shape ``(B,)`` and the DPO metrics.
    """
    _check_positive("beta", beta)
    _check_range("label_smoothing", label_smoothing, low=0.0, high=0.5, high_inclusive=True)
    h, metrics = _dpo_logits(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    e = label_smoothing
    loss = -(1.0 - e) * jax.nn.log_sigmoid(beta * h) - e * jax.nn.log_sigmoid(-beta * h)
    return loss, metrics


def robust_dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float | jax.Array,
    label_smoothing: float | jax.Array,
) -> LossOutput:
    """Robust DPO (Chowdhury et al., 2024, "Provably Robust DPO: Aligning Language Models with
    Noisy Feedback").

    ``loss = (-(1-e) * log sigmoid(beta*h) + e * log sigmoid(-beta*h)) / (1 - 2e)``, with
    ``e = label_smoothing`` the label-flip rate. The loss is an unbiased estimate of the clean
    DPO loss: if each pair's label is flipped with probability ``e`` (which maps ``h -> -h``),
    ``(1-e) * L(h) + e * L(-h) = -log sigmoid(beta*h)``. Equals :func:`dpo_loss` at ``e = 0``.
    Note that for ``e > 0`` the per-example loss is unbounded below as ``h -> -inf``.

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps:
            ``(B,)`` summed log-probs, as in :func:`dpo_loss`.
        beta: ``beta > 0``.
        label_smoothing: ``e`` in ``[0, 0.5)`` (the loss diverges at ``e = 0.5``).

    Returns:
        ``(loss, metrics)`` with ``loss`` of shape ``(B,)`` and the DPO metrics.
    """
    _check_positive("beta", beta)
    _check_range("label_smoothing", label_smoothing, low=0.0, high=0.5)
    h, metrics = _dpo_logits(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    e = label_smoothing
    loss = (-(1.0 - e) * jax.nn.log_sigmoid(beta * h) + e * jax.nn.log_sigmoid(-beta * h)) / (
        1.0 - 2.0 * e
    )
    return loss, metrics


def hinge_dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float | jax.Array,
) -> LossOutput:
    """Hinge variant of DPO (the SLiC-style hinge on the DPO implicit reward; listed as the
    "hinge" loss alongside DPO in TRL; SLiC-HF: Zhao et al., 2023).

    ``loss = max(0, 1 - beta*h)``.

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps:
            ``(B,)`` summed log-probs, as in :func:`dpo_loss`.
        beta: ``beta > 0`` (``1/beta`` is the margin in log-ratio units).

    Returns:
        ``(loss, metrics)`` with ``loss`` of shape ``(B,)`` and the DPO metrics.
    """
    _check_positive("beta", beta)
    h, metrics = _dpo_logits(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = jax.nn.relu(1.0 - beta * h)
    return loss, metrics


def ipo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float | jax.Array,
) -> LossOutput:
    """IPO loss (Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from
    Human Preferences").

    ``loss = (h - 1/(2*beta))**2``: a squared regression of the log-ratio difference onto the
    target ``1/(2*beta)`` (the paper's ``tau`` is ``beta`` here).

    The trainer passes **per-token-mean** log-probs (log-probs averaged over each completion's
    tokens) rather than sums, as the IPO paper does; this function itself just uses whatever it
    is given, so the caller is responsible for that normalisation.

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps:
            ``(B,)`` per-token-mean log-probs.
        beta: regularisation strength ``tau > 0``.

    Returns:
        ``(loss, metrics)`` with ``loss`` of shape ``(B,)`` and the DPO metrics (computed from
        the log-probs as given, i.e. from per-token means).
    """
    _check_positive("beta", beta)
    h, metrics = _dpo_logits(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = jnp.square(h - 1.0 / (2.0 * beta))
    return loss, metrics


def simpo_loss(
    policy_chosen_avg_logps: jax.Array,
    policy_rejected_avg_logps: jax.Array,
    *,
    beta: float | jax.Array,
    gamma: float | jax.Array,
) -> LossOutput:
    """SimPO loss (Meng et al., 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward").

    ``loss = -log sigmoid(beta * (pc_avg - pr_avg) - gamma)``. Reference-free: the implicit
    reward is the length-normalised (per-token-mean) policy log-prob scaled by ``beta``, and
    ``gamma`` is the target reward margin.

    Args:
        policy_chosen_avg_logps: ``(B,)`` per-token-mean policy log-probs of chosen completions.
        policy_rejected_avg_logps: ``(B,)`` per-token-mean policy log-probs of rejected ones.
        beta: ``beta > 0``.
        gamma: target reward margin, ``gamma >= 0``.

    Returns:
        ``(loss, metrics)``: ``loss`` of shape ``(B,)``; metrics ``rewards/chosen =
        beta*pc_avg``, ``rewards/rejected = beta*pr_avg``, ``rewards/margins``,
        ``rewards/accuracies``, each ``(B,)``.
    """
    _check_positive("beta", beta)
    _check_nonnegative("gamma", gamma)
    _check_same_1d(
        policy_chosen_avg_logps=policy_chosen_avg_logps,
        policy_rejected_avg_logps=policy_rejected_avg_logps,
    )
    chosen_rewards = beta * policy_chosen_avg_logps
    rejected_rewards = beta * policy_rejected_avg_logps
    loss = -jax.nn.log_sigmoid(chosen_rewards - rejected_rewards - gamma)
    return loss, _pair_metrics(chosen_rewards, rejected_rewards)


# --------------------------------------------------------------------------------------------
# RPO: the DPO family plus an NLL term on the chosen completion.
# --------------------------------------------------------------------------------------------


def rpo_nll(policy_chosen_logps: jax.Array, chosen_token_counts: jax.Array) -> jax.Array:
    """Mean negative log-likelihood per token of each chosen completion, ``(B,)``:
    ``-pc / max(n, 1)`` with ``pc`` the summed log-probs and ``n`` the completion's token
    count (an empty completion counts 1 token, so the term stays finite).

    RPO (Pang et al., 2024, "Iterative Reasoning Preference Optimization") adds
    ``alpha * NLL(chosen)`` to the DPO loss; the paper divides each chosen sequence's NLL by
    its length (prompt included), and TRL's ``rpo_alpha`` uses the cross-entropy averaged over
    the chosen completion tokens, pooled over its batch. Here, as TRL, only completion tokens
    count, but the mean is taken per pair and the caller averages pairs like every other
    per-example loss: the step then does not depend on how the batch is split into
    micro-batches or devices (a batch-pooled token mean would), and a long completion does not
    outweigh a short one. Per pair and pooled agree when the completions are equally long.
    """
    _check_same_1d(policy_chosen_logps=policy_chosen_logps, chosen_token_counts=chosen_token_counts)
    return -policy_chosen_logps / jnp.maximum(chosen_token_counts, 1.0)


def with_rpo_nll(
    output: LossOutput,
    policy_chosen_logps: jax.Array,
    chosen_token_counts: jax.Array,
    *,
    alpha: float | jax.Array,
) -> LossOutput:
    """RPO: a DPO-family ``(loss, metrics)`` plus ``alpha * rpo_nll(pc, n)`` per pair.

    The term pulls the chosen completion's likelihood up, which the pairwise losses alone do
    not: they only widen the chosen-rejected margin, and both log-probs may fall together
    ("likelihood displacement"). Its gradient is ``-alpha / n`` on ``pc``.

    Args:
        output: ``(loss, metrics)`` of a pairwise loss, ``loss`` of shape ``(B,)``.
        policy_chosen_logps: ``(B,)`` policy **summed** log-probs of the chosen completions,
            whatever normalisation the pairwise loss itself used.
        chosen_token_counts: ``(B,)`` token counts of the chosen completions.
        alpha: the NLL weight, ``alpha >= 0`` (0 adds nothing but the metric).

    Returns:
        ``(loss + alpha * nll, metrics)`` with the metric ``loss/rpo_nll`` (the unweighted
        per-token NLL, ``(B,)``) added.
    """
    _check_nonnegative("alpha", alpha)
    loss, metrics = output
    nll = rpo_nll(policy_chosen_logps, chosen_token_counts)
    return loss + alpha * nll, {**metrics, "loss/rpo_nll": jax.lax.stop_gradient(nll)}


# --------------------------------------------------------------------------------------------
# KTO.
# --------------------------------------------------------------------------------------------


def kto_loss(
    policy_logps: jax.Array,
    ref_logps: jax.Array,
    desirable: jax.Array,
    *,
    kl: float | jax.Array,
    beta: float | jax.Array,
    desirable_weight: float | jax.Array = 1.0,
    undesirable_weight: float | jax.Array = 1.0,
) -> LossOutput:
    """KTO loss (Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect Theoretic
    Optimization").

    With ``r = policy_logps - ref_logps`` and reference point ``z = max(0, kl)`` held constant
    (``stop_gradient``; no gradient flows into ``kl``):

    * desirable examples:   ``desirable_weight   * (1 - sigmoid(beta * (r - z)))``
    * undesirable examples: ``undesirable_weight * (1 - sigmoid(beta * (z - r)))``

    Args:
        policy_logps: ``(B,)`` policy summed log-probs of each (unpaired) completion.
        ref_logps: ``(B,)`` reference summed log-probs of the same completions.
        desirable: ``(B,)`` bool array, True where the completion is desirable.
        kl: estimate of ``KL(policy || reference)`` (the paper uses mismatched prompt/completion
            pairs in the batch); a scalar or a ``(B,)``-broadcastable array.
        beta: ``beta > 0``.
        desirable_weight: ``lambda_D >= 0``.
        undesirable_weight: ``lambda_U >= 0``.

    Returns:
        ``(loss, metrics)``: ``loss`` of shape ``(B,)``; metrics, each ``(B,)``:
        ``rewards`` = ``beta*r``; ``rewards/desirable`` / ``rewards/undesirable`` = ``beta*r`` on
        desirable / undesirable rows and 0 elsewhere; ``is_desirable`` (float mask, so the caller
        can average each group as ``sum(rewards/desirable) / sum(is_desirable)``); and ``kl`` =
        the clamped reference point ``z`` broadcast to ``(B,)``.
    """
    _check_positive("beta", beta)
    _check_finite("kl", kl)
    _check_nonnegative("desirable_weight", desirable_weight)
    _check_nonnegative("undesirable_weight", undesirable_weight)
    _check_same_1d(policy_logps=policy_logps, ref_logps=ref_logps, desirable=desirable)
    desirable = jnp.asarray(desirable)
    if desirable.dtype != jnp.bool_:
        raise ValueError(f"desirable must be a bool array; got dtype {desirable.dtype}")

    r = policy_logps - ref_logps
    z = jax.lax.stop_gradient(jnp.maximum(jnp.asarray(kl, dtype=r.dtype), 0.0))
    desirable_losses = desirable_weight * (1.0 - jax.nn.sigmoid(beta * (r - z)))
    undesirable_losses = undesirable_weight * (1.0 - jax.nn.sigmoid(beta * (z - r)))
    loss = jnp.where(desirable, desirable_losses, undesirable_losses)

    rewards = jax.lax.stop_gradient(beta * r)
    zeros = jnp.zeros_like(rewards)
    metrics = {
        "rewards": rewards,
        "rewards/desirable": jnp.where(desirable, rewards, zeros),
        "rewards/undesirable": jnp.where(desirable, zeros, rewards),
        "is_desirable": desirable.astype(rewards.dtype),
        "kl": jnp.broadcast_to(z, rewards.shape),
    }
    return loss, metrics


# --------------------------------------------------------------------------------------------
# Reward model.
# --------------------------------------------------------------------------------------------


def bradley_terry_loss(
    chosen_rewards: jax.Array,
    rejected_rewards: jax.Array,
    *,
    margin: float | jax.Array = 0.0,
) -> LossOutput:
    """Bradley-Terry pairwise reward-model loss (Bradley & Terry, 1952; as used for RLHF reward
    models by Ouyang et al., 2022; the optional margin as in Touvron et al., 2023, Llama 2).

    ``loss = -log sigmoid(chosen_rewards - rejected_rewards - margin)``.

    Args:
        chosen_rewards: ``(B,)`` scalar rewards of the chosen completions.
        rejected_rewards: ``(B,)`` scalar rewards of the rejected completions.
        margin: a finite scalar or a ``(B,)`` array of per-pair margins.

    Returns:
        ``(loss, metrics)``: ``loss`` of shape ``(B,)``; metrics ``rewards/chosen``,
        ``rewards/rejected``, ``rewards/margins`` (chosen minus rejected, without the margin
        argument), ``rewards/accuracies``, each ``(B,)``.
    """
    _check_finite("margin", margin)
    _check_same_1d(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    loss = -jax.nn.log_sigmoid(chosen_rewards - rejected_rewards - margin)
    return loss, _pair_metrics(chosen_rewards, rejected_rewards)


DPO_LOSSES: dict[str, Callable[..., LossOutput]] = {
    "sigmoid": dpo_loss,
    "cdpo": cdpo_loss,
    "robust": robust_dpo_loss,
    "hinge": hinge_dpo_loss,
    "ipo": ipo_loss,
    "simpo": simpo_loss,
}
"""Pairwise preference losses by name. All but ``simpo`` take ``(pc, pr, rc, rr, *, beta, ...)``;
``simpo`` is reference-free and takes ``(pc_avg, pr_avg, *, beta, gamma)``. ``cdpo`` and
``robust`` additionally require ``label_smoothing``."""
