"""KL and advantage estimators (`trainers/estimators.py`): hand-computed values, the exact KL
against a direct sum, the estimators' unbiasedness by Monte Carlo, and properties."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.estimators import (
    adaptive_kl_controller,
    exact_kl,
    fixed_kl_controller,
    gae,
    group_advantages,
    kl_estimates,
    leave_one_out_advantages,
    whiten,
)


def test_kl_estimates_by_hand():
    # log p - log q = 0.5 and -1.0 on two real tokens; a third slot is padding.
    policy = jnp.array([[-1.0, -2.0, -3.0]])
    reference = jnp.array([[-1.5, -1.0, -9.0]])
    mask = jnp.array([[1.0, 1.0, 0.0]])
    est = kl_estimates(policy, reference, mask)
    np.testing.assert_allclose(est.k1, [[0.5, -1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(est.k2, [[0.125, 0.5, 0.0]], rtol=1e-6)
    k3 = [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0, 0.0]  # r - 1 - log r, r = q / p
    np.testing.assert_allclose(est.k3, [k3], rtol=1e-6)
    np.testing.assert_allclose(est.k1_sum, [-0.5], rtol=1e-6)
    np.testing.assert_allclose(est.k3_sum, [k3[0] + k3[1]], rtol=1e-6)
    # Drawn from another policy mu: weighted by p / mu (here e^{0.2} and e^{-0.1}).
    sampling = jnp.array([[-1.2, -1.9, 0.0]])
    weighted = kl_estimates(policy, reference, mask, sampling_logps=sampling)
    np.testing.assert_allclose(weighted.k1, [[0.5 * math.exp(0.2), -math.exp(-0.1), 0.0]],
                               rtol=1e-6)  # fmt: skip


def test_exact_kl_is_the_sum_over_the_vocabulary():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 5))
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    kl = np.asarray(exact_kl(jnp.asarray(a), jnp.asarray(b), mask))
    p = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(-1, keepdims=True)
    direct = (p * (np.log(p) - np.log(q))).sum(-1) * np.asarray(mask)
    np.testing.assert_allclose(kl, direct, rtol=1e-5, atol=1e-7)
    assert (kl >= -1e-7).all() and kl[0, 2] == 0.0


def test_k1_and_k3_are_unbiased_and_k3_is_never_negative():
    """Tokens drawn from p: the means of k1 and k3 approach the exact KL(p || q); so do they
    when drawn from mu with the importance weights."""
    key_p, key_q, key_mu, key_s, key_t = jax.random.split(jax.random.key(0), 5)
    logits_p = jax.random.normal(key_p, (8,))
    logits_q = jax.random.normal(key_q, (8,))
    log_p, log_q = jax.nn.log_softmax(logits_p), jax.nn.log_softmax(logits_q)
    exact = float(exact_kl(logits_p[None, None], logits_q[None, None], jnp.ones((1, 1)))[0, 0])
    n = 200_000
    x = jax.random.categorical(key_s, logits_p, shape=(1, n))
    est = kl_estimates(log_p[x], log_q[x], jnp.ones((1, n)))
    assert float(est.k1.mean()) == pytest.approx(exact, abs=0.01)
    assert float(est.k3.mean()) == pytest.approx(exact, abs=0.01)
    assert float(est.k3.min()) >= 0.0
    log_mu = jax.nn.log_softmax(jax.random.normal(key_mu, (8,)) * 0.3)
    y = jax.random.categorical(key_t, log_mu, shape=(1, n))
    off = kl_estimates(log_p[y], log_q[y], jnp.ones((1, n)), sampling_logps=log_mu[y])
    assert float(off.k1.mean()) == pytest.approx(exact, abs=0.03)
    assert float(off.k3.mean()) == pytest.approx(exact, abs=0.03)


def test_gae_by_hand():
    # One sequence of 3 tokens (+1 pad): gamma 1, lambda 0.5.
    rewards = jnp.array([[0.0, 0.0, 1.0, 7.0]])
    values = jnp.array([[0.5, 0.25, 0.75, 9.0]])
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    d2 = 1.0 + 0.0 - 0.75  # the last token: V beyond it is 0
    d1 = 0.0 + 0.75 - 0.25
    d0 = 0.0 + 0.25 - 0.5
    a2, a1 = d2, d1 + 0.5 * d2
    a0 = d0 + 0.5 * a1
    np.testing.assert_allclose(advantages, [[a0, a1, a2, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(returns, [[a0 + 0.5, a1 + 0.25, a2 + 0.75, 0.0]], rtol=1e-6)
    # lambda 1, gamma 1: the advantage is the reward-to-go minus the value.
    advantages, _ = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(advantages, [[0.5, 0.75, 0.25, 0.0]], rtol=1e-6)


@settings(deadline=None, max_examples=25)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=12), st.integers(1, 11))
def test_whiten_gives_zero_mean_unit_variance_on_the_mask(values, real):
    x = jnp.asarray(values, jnp.float32)[None]
    real = min(real, len(values))
    mask = (jnp.arange(len(values)) < real).astype(jnp.float32)[None]
    out = np.asarray(whiten(x, mask))[0]
    assert (out[real:] == 0).all()
    if real >= 2 and np.std(values[:real]) > 1e-3:
        assert abs(out[:real].mean()) < 1e-4
        assert np.var(out[:real], ddof=1) == pytest.approx(1.0, rel=1e-3)


def test_group_advantages_by_hand():
    rewards = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])  # three prompts x 2 samples
    centred = [0.5, -0.5, -0.5, 0.5, 0.0, 0.0]
    np.testing.assert_allclose(group_advantages(rewards, 2, "none"), centred)
    scaled = 0.5 / (math.sqrt(0.5) + 1e-4)  # the std (ddof 1) of (1, 0) is sqrt(1/2)
    np.testing.assert_allclose(group_advantages(rewards, 2, "group"),
                               [scaled, -scaled, -scaled, scaled, 0.0, 0.0], rtol=1e-6)  # fmt: skip
    batch_std = float(np.std(np.asarray(rewards), ddof=1))
    np.testing.assert_allclose(group_advantages(rewards, 2, "batch"),
                               np.array(centred) / (batch_std + 1e-4), rtol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="scale must be one of group, batch, none"):
        group_advantages(rewards, 2, "rank")
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_advantages(rewards, 4)


def test_leave_one_out_by_hand():
    rewards = jnp.array([1.0, 0.0, 0.5, 2.0, 2.0, 2.0])  # two prompts x 3 samples
    # Prompt 1: baselines (0 + .5) / 2, (1 + .5) / 2, (1 + 0) / 2.
    np.testing.assert_allclose(
        leave_one_out_advantages(rewards, 3), [0.75, -0.75, 0.0, 0.0, 0.0, 0.0], rtol=1e-6
    )
    with pytest.raises(ValueError, match="k >= 2"):
        leave_one_out_advantages(rewards, 1)


def test_estimators_jit():
    mask = jnp.ones((2, 3))
    jax.jit(gae)(jnp.ones((2, 3)), jnp.zeros((2, 3)), mask)
    jax.jit(kl_estimates)(jnp.zeros((2, 3)), jnp.zeros((2, 3)), mask)
    jax.jit(group_advantages, static_argnums=(1, 2))(jnp.arange(4.0), 2, "group")


def test_kl_controllers_by_hand():
    fixed = fixed_kl_controller(0.05)
    assert float(fixed.update(fixed.init(), jnp.float32(9.0), 8).coef) == pytest.approx(0.05)
    adaptive = adaptive_kl_controller(0.1, target=6.0, horizon=10_000)
    state = adaptive.init()
    state = adaptive.update(state, jnp.float32(9.0), 512)  # error clipped at +0.2
    assert float(state.coef) == pytest.approx(0.1 * (1 + 0.2 * 512 / 10_000), rel=1e-6)
    state = jax.jit(adaptive.update, static_argnums=2)(state, jnp.float32(5.4), 512)  # -0.1
    assert float(state.coef) == pytest.approx(
        0.1 * (1 + 0.2 * 512 / 10_000) * (1 - 0.1 * 512 / 10_000), rel=1e-5
    )
    with pytest.raises(ValueError, match="must be > 0"):
        adaptive_kl_controller(0.1, target=0.0, horizon=1.0)
