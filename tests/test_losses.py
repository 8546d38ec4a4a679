"""Tests for trainers/losses.py."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.losses import (
    DPO_LOSSES,
    bradley_terry_loss,
    cdpo_loss,
    dpo_loss,
    hinge_dpo_loss,
    ipo_loss,
    kto_loss,
    robust_dpo_loss,
    rpo_nll,
    simpo_loss,
    with_rpo_nll,
)

HYPOTHESIS = settings(max_examples=30, deadline=None, derandomize=True)
# Fewer examples for tests that are already parametrized over all eight losses.
HYPOTHESIS_PER_LOSS = settings(max_examples=15, deadline=None, derandomize=True)


def log_sigmoid(x: float) -> float:
    """Reference log(sigmoid(x)) written out by hand (stable for the small values used here)."""
    return -math.log1p(math.exp(-x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture
def x64():
    """Enable float64 for one test and restore the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def test_x64_fixture_enables_float64(x64):
    assert jnp.asarray(1.0).dtype == jnp.float64


def test_default_precision_is_float32_outside_fixture():
    # Guards the fixture above: the rest of the suite must run in the default precision.
    assert jnp.asarray(1.0).dtype == jnp.float32


# Two concrete pairs. Pair 0: h = (-1 - -1.5) - (-2 - -1) = 0.5 + 1 = 1.5.
# Pair 1: h = (-3 - -2) - (-2.5 - -3) = -1 - 0.5 = -1.5.
PC = [-1.0, -3.0]
PR = [-2.0, -2.5]
RC = [-1.5, -2.0]
RR = [-1.0, -3.0]
H = [1.5, -1.5]


def arrays(*lists: list[float]) -> list[jax.Array]:
    return [jnp.asarray(v, dtype=jnp.float32) for v in lists]


def assert_close(actual, expected, rtol=1e-6, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------
# Hand-computed values.
# --------------------------------------------------------------------------------------------


def test_h_of_the_fixture_pairs():
    for pc, pr, rc, rr, h in zip(PC, PR, RC, RR, H, strict=True):
        assert (pc - rc) - (pr - rr) == h


def test_dpo_hand_computed():
    beta = 0.1
    loss, m = dpo_loss(*arrays(PC, PR, RC, RR), beta=beta)
    # -log sigmoid(0.15) = log(1 + e^-0.15); -log sigmoid(-0.15) = log(1 + e^0.15)
    expected = [math.log(1 + math.exp(-0.15)), math.log(1 + math.exp(0.15))]
    assert loss.shape == (2,)
    assert_close(loss, expected)
    assert_close(m["rewards/chosen"], [0.1 * 0.5, 0.1 * -1.0])
    assert_close(m["rewards/rejected"], [0.1 * -1.0, 0.1 * 0.5])
    assert_close(m["rewards/margins"], [0.15, -0.15])
    assert_close(m["rewards/accuracies"], [1.0, 0.0])
    for v in m.values():
        assert v.shape == (2,)


def test_cdpo_hand_computed():
    beta, e = 0.5, 0.2
    loss, m = cdpo_loss(*arrays(PC, PR, RC, RR), beta=beta, label_smoothing=e)
    # beta*h = +-0.75
    expected = [
        -0.8 * log_sigmoid(0.75) - 0.2 * log_sigmoid(-0.75),
        -0.8 * log_sigmoid(-0.75) - 0.2 * log_sigmoid(0.75),
    ]
    assert_close(loss, expected)
    assert_close(m["rewards/margins"], [0.75, -0.75])


def test_robust_dpo_hand_computed():
    beta, e = 0.5, 0.2
    loss, m = robust_dpo_loss(*arrays(PC, PR, RC, RR), beta=beta, label_smoothing=e)
    # (-(1-e) log s(x) + e log s(-x)) / (1 - 2e), x = +-0.75, 1-2e = 0.6
    expected = [
        (-0.8 * log_sigmoid(0.75) + 0.2 * log_sigmoid(-0.75)) / 0.6,
        (-0.8 * log_sigmoid(-0.75) + 0.2 * log_sigmoid(0.75)) / 0.6,
    ]
    assert_close(loss, expected)
    assert_close(m["rewards/accuracies"], [1.0, 0.0])


def test_hinge_hand_computed():
    beta = 0.5
    loss, _ = hinge_dpo_loss(*arrays(PC, PR, RC, RR), beta=beta)
    # max(0, 1 - 0.75) = 0.25; max(0, 1 + 0.75) = 1.75
    assert_close(loss, [0.25, 1.75])
    loss, _ = hinge_dpo_loss(*arrays(PC, PR, RC, RR), beta=2.0)
    # max(0, 1 - 3) = 0; max(0, 1 + 3) = 4
    assert_close(loss, [0.0, 4.0])


def test_ipo_hand_computed():
    beta = 0.25
    loss, m = ipo_loss(*arrays(PC, PR, RC, RR), beta=beta)
    # target 1/(2*0.25) = 2: (1.5 - 2)^2 = 0.25; (-1.5 - 2)^2 = 12.25
    assert_close(loss, [0.25, 12.25])
    assert_close(m["rewards/chosen"], [0.25 * 0.5, 0.25 * -1.0])


def test_simpo_hand_computed():
    beta, gamma = 2.0, 0.5
    pc_avg, pr_avg = arrays([-0.5, -1.2], [-0.9, -0.7])
    loss, m = simpo_loss(pc_avg, pr_avg, beta=beta, gamma=gamma)
    # 2*(-0.5 + 0.9) - 0.5 = 0.3; 2*(-1.2 + 0.7) - 0.5 = -1.5
    expected = [-log_sigmoid(0.3), -log_sigmoid(-1.5)]
    assert_close(loss, expected)
    assert_close(m["rewards/chosen"], [-1.0, -2.4])
    assert_close(m["rewards/rejected"], [-1.8, -1.4])
    assert_close(m["rewards/margins"], [0.8, -1.0])
    assert_close(m["rewards/accuracies"], [1.0, 0.0])


def test_kto_hand_computed():
    beta, kl = 0.5, 0.4
    policy, ref = arrays([-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0])  # r = 1, -1, 0
    desirable = jnp.asarray([True, False, True])
    loss, m = kto_loss(
        policy,
        ref,
        desirable,
        kl=kl,
        beta=beta,
        desirable_weight=1.5,
        undesirable_weight=0.7,
    )
    expected = [
        1.5 * (1 - sigmoid(0.5 * (1.0 - 0.4))),  # desirable, r = 1
        0.7 * (1 - sigmoid(0.5 * (0.4 - -1.0))),  # undesirable, r = -1
        1.5 * (1 - sigmoid(0.5 * (0.0 - 0.4))),  # desirable, r = 0
    ]
    assert_close(loss, expected)
    assert_close(m["rewards"], [0.5, -0.5, 0.0])
    assert_close(m["rewards/desirable"], [0.5, 0.0, 0.0])
    assert_close(m["rewards/undesirable"], [0.0, -0.5, 0.0])
    assert_close(m["is_desirable"], [1.0, 0.0, 1.0])
    assert_close(m["kl"], [0.4, 0.4, 0.4])
    for v in m.values():
        assert v.shape == (3,)


def test_bradley_terry_hand_computed():
    chosen, rejected = arrays([1.0, -0.5], [0.25, 0.5])
    loss, m = bradley_terry_loss(chosen, rejected)
    assert_close(loss, [-log_sigmoid(0.75), -log_sigmoid(-1.0)])
    assert_close(m["rewards/margins"], [0.75, -1.0])
    assert_close(m["rewards/accuracies"], [1.0, 0.0])
    loss, m = bradley_terry_loss(chosen, rejected, margin=0.5)
    assert_close(loss, [-log_sigmoid(0.25), -log_sigmoid(-1.5)])
    assert_close(m["rewards/margins"], [0.75, -1.0])  # margin does not change the metric
    per_pair = jnp.asarray([0.5, -1.0], dtype=jnp.float32)
    loss, _ = bradley_terry_loss(chosen, rejected, margin=per_pair)
    assert_close(loss, [-log_sigmoid(0.25), -log_sigmoid(0.0)])


def test_accuracy_is_zero_on_ties():
    z = jnp.zeros(3, dtype=jnp.float32)
    _, m = dpo_loss(z, z, z, z, beta=0.1)
    assert_close(m["rewards/accuracies"], [0.0, 0.0, 0.0])


def test_registry():
    expected = {
        "sigmoid": dpo_loss,
        "cdpo": cdpo_loss,
        "robust": robust_dpo_loss,
        "hinge": hinge_dpo_loss,
        "ipo": ipo_loss,
        "simpo": simpo_loss,
    }
    assert expected == DPO_LOSSES


def test_rpo_hand_computed():
    """DPO plus alpha times the chosen completion's mean NLL per token."""
    counts = jnp.asarray([4.0, 2.0])
    base, base_m = dpo_loss(*arrays(PC, PR, RC, RR), beta=0.1)
    loss, m = with_rpo_nll((base, base_m), *arrays(PC), counts, alpha=0.5)
    # nll = -pc / n: 1/4 and 3/2
    expected = [math.log(1 + math.exp(-0.15)) + 0.5 * 0.25,
                math.log(1 + math.exp(0.15)) + 0.5 * 1.5]  # fmt: skip
    assert_close(loss, expected)
    assert_close(m["loss/rpo_nll"], [0.25, 1.5])
    assert_close(rpo_nll(*arrays(PC), counts), [0.25, 1.5])
    for key, value in base_m.items():  # the pairwise metrics pass through
        assert_close(m[key], value)


def test_rpo_empty_completion_counts_one_token():
    assert_close(rpo_nll(*arrays([-2.0, 0.0]), jnp.asarray([0.0, 0.0])), [2.0, 0.0])


def test_rpo_alpha_zero_adds_nothing():
    base = dpo_loss(*arrays(PC, PR, RC, RR), beta=0.1)
    loss, _ = with_rpo_nll(base, *arrays(PC), jnp.asarray([4.0, 2.0]), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(loss), np.asarray(base[0]))


def test_rpo_gradient_raises_the_chosen_log_prob():
    """The added term's gradient on pc is -alpha / n (descent raises pc), and nothing on the
    rejected or reference log-probs."""
    pc, pr, rc, rr = arrays(PC, PR, RC, RR)
    counts = jnp.asarray([4.0, 2.0])

    def added(pc, pr, rc, rr):
        base = dpo_loss(pc, pr, rc, rr, beta=0.1)
        return jnp.sum(with_rpo_nll(base, pc, counts, alpha=0.5)[0] - base[0])

    grads = jax.grad(added, argnums=(0, 1, 2, 3))(pc, pr, rc, rr)
    assert_close(grads[0], [-0.5 / 4, -0.5 / 2])
    for g in grads[1:]:
        assert_close(g, [0.0, 0.0])


def test_rpo_alpha_is_validated():
    base = dpo_loss(*arrays(PC, PR, RC, RR), beta=0.1)
    with pytest.raises(ValueError, match="alpha must be in"):
        with_rpo_nll(base, *arrays(PC), jnp.asarray([4.0, 2.0]), alpha=-0.1)
    with pytest.raises(ValueError, match="shape"):
        rpo_nll(*arrays(PC), jnp.asarray([4.0, 2.0, 1.0]))


# --------------------------------------------------------------------------------------------
# Finite-difference gradient checks (float64).
# --------------------------------------------------------------------------------------------

# name -> (function of a tuple of (B,) arrays returning (B,) loss, number of array arguments)
GRAD_CASES: dict[str, tuple[Callable[..., jax.Array], int]] = {
    "dpo": (lambda *a: dpo_loss(*a, beta=0.7)[0], 4),
    "cdpo": (lambda *a: cdpo_loss(*a, beta=0.7, label_smoothing=0.15)[0], 4),
    "robust": (lambda *a: robust_dpo_loss(*a, beta=0.7, label_smoothing=0.15)[0], 4),
    "hinge": (lambda *a: hinge_dpo_loss(*a, beta=0.7)[0], 4),
    "ipo": (lambda *a: ipo_loss(*a, beta=0.7)[0], 4),
    "simpo": (lambda *a: simpo_loss(*a, beta=1.3, gamma=0.4)[0], 2),
    "kto": (
        lambda p, r: kto_loss(
            p,
            r,
            jnp.asarray([True, False, True, False, True]),
            kl=0.3,
            beta=0.7,
            desirable_weight=1.2,
            undesirable_weight=0.8,
        )[0],
        2,
    ),
    "bradley_terry": (lambda c, r: bradley_terry_loss(c, r, margin=0.2)[0], 2),
    "rpo": (
        lambda *a: with_rpo_nll(
            dpo_loss(*a, beta=0.7), a[0], jnp.asarray([1.0, 2.0, 3.0, 5.0, 8.0]), alpha=0.6
        )[0],
        4,
    ),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradient_matches_central_differences(name, x64):
    fn, n_args = GRAD_CASES[name]
    rng = np.random.default_rng(0)
    args = [rng.normal(scale=2.0, size=5) for _ in range(n_args)]
    if name == "hinge":
        # Keep away from the kink at beta*h = 1 (h = 1/0.7) so the loss is differentiable.
        h = (args[0] - args[2]) - (args[1] - args[3])
        assert np.all(np.abs(0.7 * h - 1.0) > 1e-2)

    @jax.jit
    def total(*xs):
        return jnp.sum(fn(*xs))

    grads = jax.grad(total, argnums=tuple(range(n_args)))(*[jnp.asarray(a) for a in args])
    eps = 1e-6
    for i in range(n_args):
        assert grads[i].dtype == jnp.float64
        numeric = np.zeros(5)
        for j in range(5):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[i][j] += eps
            minus[i][j] -= eps
            f_plus = float(total(*[jnp.asarray(a) for a in plus]))
            f_minus = float(total(*[jnp.asarray(a) for a in minus]))
            numeric[j] = (f_plus - f_minus) / (2 * eps)
        np.testing.assert_allclose(np.asarray(grads[i]), numeric, rtol=1e-6, atol=1e-8)
        # A gradient check that compares zeros to zeros proves little.
        assert np.any(np.abs(numeric) > 1e-3)


# --------------------------------------------------------------------------------------------
# Relations between the DPO variants.
# --------------------------------------------------------------------------------------------


def test_cdpo_and_robust_reduce_to_dpo_at_zero_smoothing():
    rng = np.random.default_rng(1)
    inputs = [jnp.asarray(rng.normal(scale=3.0, size=16), dtype=jnp.float32) for _ in range(4)]
    dpo, dpo_m = dpo_loss(*inputs, beta=0.3)
    cdpo, cdpo_m = cdpo_loss(*inputs, beta=0.3, label_smoothing=0.0)
    robust, robust_m = robust_dpo_loss(*inputs, beta=0.3, label_smoothing=0.0)
    assert_close(cdpo, dpo)
    assert_close(robust, dpo)
    for key in dpo_m:
        assert_close(cdpo_m[key], dpo_m[key])
        assert_close(robust_m[key], dpo_m[key])
    # ...and they genuinely differ from DPO once label_smoothing > 0.
    cdpo, _ = cdpo_loss(*inputs, beta=0.3, label_smoothing=0.1)
    robust, _ = robust_dpo_loss(*inputs, beta=0.3, label_smoothing=0.1)
    assert not np.allclose(cdpo, dpo)
    assert not np.allclose(robust, dpo)


def _h_inputs(h: jax.Array) -> list[jax.Array]:
    """pc = h and pr = rc = rr = 0, so that (pc - rc) - (pr - rr) = h."""
    zeros = jnp.zeros_like(h)
    return [h, zeros, zeros, zeros]


@HYPOTHESIS
@given(
    h=st.floats(-30.0, 30.0),
    e=st.floats(0.0, 0.45),
    beta=st.floats(0.01, 5.0),
)
def test_robust_dpo_is_unbiased_under_label_flips(h, e, beta):
    # Chowdhury et al. 2024, Lemma 3.1: E_flip[L_rob] = clean DPO loss. A flip maps h -> -h.
    with jax.enable_x64(True):
        hs = jnp.asarray([h, -h], dtype=jnp.float64)
        rob, _ = robust_dpo_loss(*_h_inputs(hs), beta=beta, label_smoothing=e)
        clean, _ = dpo_loss(*_h_inputs(hs), beta=beta)
        expected_over_flip = (1 - e) * rob[0] + e * rob[1]
        np.testing.assert_allclose(float(expected_over_flip), float(clean[0]), rtol=1e-9, atol=1e-9)


def test_cdpo_is_not_unbiased():
    # Contrast with the robust loss: the same identity fails for cDPO, so the test above can fail.
    beta, e = 1.0, 0.2
    hs = jnp.asarray([2.0, -2.0], dtype=jnp.float32)
    c, _ = cdpo_loss(*_h_inputs(hs), beta=beta, label_smoothing=e)
    clean, _ = dpo_loss(*_h_inputs(hs), beta=beta)
    assert abs(float((1 - e) * c[0] + e * c[1]) - float(clean[0])) > 1e-2


# --------------------------------------------------------------------------------------------
# KTO specifics.
# --------------------------------------------------------------------------------------------


def _kto(policy, ref, desirable, kl, **kw):
    kw = {"beta": 0.5, "desirable_weight": 1.0, "undesirable_weight": 1.0} | kw
    return kto_loss(policy, ref, desirable, kl=kl, **kw)


KTO_POLICY = jnp.asarray([-1.0, -2.0, -0.5, -4.0], dtype=jnp.float32)
KTO_REF = jnp.asarray([-1.5, -1.0, -0.5, -3.0], dtype=jnp.float32)
KTO_DESIRABLE = jnp.asarray([True, False, True, False])


def test_kto_no_gradient_through_kl():
    def total(kl):
        return jnp.sum(_kto(KTO_POLICY, KTO_REF, KTO_DESIRABLE, kl)[0])

    assert float(jax.grad(total)(jnp.float32(0.3))) == 0.0
    per_example_kl = jnp.asarray([0.1, 0.2, 0.3, 0.4], dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(jax.grad(total)(per_example_kl)), np.zeros(4))
    # ...although the loss value does depend on kl (so the zero gradient is a stop_gradient).
    assert float(total(jnp.float32(0.3))) != pytest.approx(float(total(jnp.float32(0.8))))
    # Gradients w.r.t. the log-probs still flow.
    g = jax.grad(lambda p: jnp.sum(_kto(p, KTO_REF, KTO_DESIRABLE, 0.3)[0]))(KTO_POLICY)
    assert np.all(np.abs(np.asarray(g)) > 0)


def test_kto_clamps_negative_kl_to_zero():
    at_zero, m0 = _kto(KTO_POLICY, KTO_REF, KTO_DESIRABLE, 0.0)
    assert_close(m0["kl"], np.zeros(4))
    for kl in (-0.5, -3.0):
        neg, m = _kto(KTO_POLICY, KTO_REF, KTO_DESIRABLE, kl)
        assert_close(neg, at_zero)
        assert_close(m["kl"], np.zeros(4))
    # A positive kl is not clamped.
    pos, m = _kto(KTO_POLICY, KTO_REF, KTO_DESIRABLE, 0.5)
    assert not np.allclose(pos, at_zero)
    assert_close(m["kl"], np.full(4, 0.5))
    # Per-example kl arrays are clamped elementwise.
    kl_arr = jnp.asarray([-1.0, 0.5, -0.2, 0.0], dtype=jnp.float32)
    _, m = _kto(KTO_POLICY, KTO_REF, KTO_DESIRABLE, kl_arr)
    assert_close(m["kl"], [0.0, 0.5, 0.0, 0.0])


def test_kto_weights_scale_each_group():
    base, _ = _kto(KTO_POLICY, KTO_REF, KTO_DESIRABLE, 0.2)
    scaled, _ = _kto(
        KTO_POLICY, KTO_REF, KTO_DESIRABLE, 0.2, desirable_weight=3.0, undesirable_weight=0.25
    )
    expected = np.where(np.asarray(KTO_DESIRABLE), 3.0, 0.25) * np.asarray(base)
    assert_close(scaled, expected)
    zero_u, _ = _kto(KTO_POLICY, KTO_REF, KTO_DESIRABLE, 0.2, undesirable_weight=0.0)
    assert_close(zero_u, np.where(np.asarray(KTO_DESIRABLE), np.asarray(base), 0.0))


def test_kto_rejects_non_bool_mask():
    with pytest.raises(ValueError, match="desirable"):
        _kto(KTO_POLICY, KTO_REF, jnp.asarray([1.0, 0.0, 1.0, 0.0]), 0.1)


# --------------------------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------------------------

V = jnp.zeros(3, dtype=jnp.float32)
B = jnp.asarray([True, False, True])


@pytest.mark.parametrize(
    ("call", "argname"),
    [
        (lambda: dpo_loss(V, V, V, V, beta=0.0), "beta"),
        (lambda: dpo_loss(V, V, V, V, beta=-1.0), "beta"),
        (lambda: dpo_loss(V, V, V, V, beta=float("nan")), "beta"),
        (lambda: dpo_loss(V, V, V, V, beta=np.float32(-0.1)), "beta"),
        (lambda: cdpo_loss(V, V, V, V, beta=0.1, label_smoothing=-0.1), "label_smoothing"),
        (lambda: cdpo_loss(V, V, V, V, beta=0.1, label_smoothing=0.6), "label_smoothing"),
        (lambda: robust_dpo_loss(V, V, V, V, beta=0.1, label_smoothing=0.5), "label_smoothing"),
        (lambda: robust_dpo_loss(V, V, V, V, beta=0.1, label_smoothing=-0.01), "label_smoothing"),
        (lambda: hinge_dpo_loss(V, V, V, V, beta=0.0), "beta"),
        (lambda: ipo_loss(V, V, V, V, beta=-2.0), "beta"),
        (lambda: simpo_loss(V, V, beta=0.0, gamma=0.5), "beta"),
        (lambda: simpo_loss(V, V, beta=2.0, gamma=-0.5), "gamma"),
        (lambda: kto_loss(V, V, B, kl=0.0, beta=0.0), "beta"),
        (lambda: kto_loss(V, V, B, kl=0.0, beta=0.1, desirable_weight=-1.0), "desirable_weight"),
        (
            lambda: kto_loss(V, V, B, kl=0.0, beta=0.1, undesirable_weight=-1.0),
            "undesirable_weight",
        ),
        (lambda: kto_loss(V, V, B, kl=float("nan"), beta=0.1), "kl"),
        (lambda: bradley_terry_loss(V, V, margin=float("inf")), "margin"),
    ],
)
def test_invalid_hyperparameters_raise(call, argname):
    with pytest.raises(ValueError, match=rf"^{argname} must be in [\[(]"):
        call()


def test_error_message_states_range():
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0\.5\); got 0\.5"):
        robust_dpo_loss(V, V, V, V, beta=0.1, label_smoothing=0.5)
    with pytest.raises(ValueError, match=r"beta must be in \(0, inf\); got -1"):
        dpo_loss(V, V, V, V, beta=-1)


def test_boundary_values_are_accepted():
    cdpo_loss(V, V, V, V, beta=0.1, label_smoothing=0.5)
    cdpo_loss(V, V, V, V, beta=0.1, label_smoothing=0)
    robust_dpo_loss(V, V, V, V, beta=0.1, label_smoothing=0.0)
    simpo_loss(V, V, beta=1, gamma=0)
    kto_loss(V, V, B, kl=-1.0, beta=0.1, desirable_weight=0.0, undesirable_weight=0.0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(V, V, V, jnp.zeros(4), beta=0.1)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        dpo_loss(V[None], V[None], V[None], V[None], beta=0.1)


@pytest.mark.parametrize(
    "call",
    [
        lambda w: cdpo_loss(V, V, w, V, beta=0.1, label_smoothing=0.1),
        lambda w: robust_dpo_loss(V, w, V, V, beta=0.1, label_smoothing=0.1),
        lambda w: hinge_dpo_loss(w, V, V, V, beta=0.1),
        lambda w: ipo_loss(V, V, V, w, beta=0.1),
        lambda w: simpo_loss(V, w, beta=0.1, gamma=0.0),
        lambda w: kto_loss(w, V, B, kl=0.0, beta=0.1),
        lambda w: bradley_terry_loss(w, V),
    ],
)
def test_every_loss_checks_shapes(call):
    with pytest.raises(ValueError, match="shape"):
        call(jnp.zeros(5))


def test_traced_hyperparameters_skip_validation():
    # Inside jit, beta is a tracer: no eager validation, no error, and the formula still applies.
    out = jax.jit(lambda b: dpo_loss(V, V, V, V, beta=b)[0])(jnp.float32(-1.0))
    assert_close(out, np.full(3, math.log(2.0)))


# --------------------------------------------------------------------------------------------
# Property tests: stability, monotonicity, jittability.
# --------------------------------------------------------------------------------------------

# name -> function of h (shape (B,)) returning (loss, metrics); hyperparameters fixed.
BY_H: dict[str, Callable[[jax.Array], tuple[jax.Array, dict]]] = {
    "dpo": lambda h: dpo_loss(*_h_inputs(h), beta=0.5),
    "cdpo": lambda h: cdpo_loss(*_h_inputs(h), beta=0.5, label_smoothing=0.1),
    "robust": lambda h: robust_dpo_loss(*_h_inputs(h), beta=0.5, label_smoothing=0.1),
    "hinge": lambda h: hinge_dpo_loss(*_h_inputs(h), beta=0.5),
    "ipo": lambda h: ipo_loss(*_h_inputs(h), beta=0.5),
    "simpo": lambda h: simpo_loss(h, jnp.zeros_like(h), beta=0.5, gamma=0.3),
    "kto": lambda h: kto_loss(
        h, jnp.zeros_like(h), jnp.arange(h.shape[0]) % 2 == 0, kl=0.2, beta=0.5
    ),
    "bradley_terry": lambda h: bradley_terry_loss(h, jnp.zeros_like(h), margin=0.1),
}

BIG = st.floats(min_value=1e3, max_value=1e4)
_GRAD_BY_H = {
    name: jax.jit(jax.grad(lambda x, fn=fn: jnp.sum(fn(x)[0]))) for name, fn in BY_H.items()
}


@pytest.mark.parametrize("name", sorted(BY_H))
@HYPOTHESIS_PER_LOSS
@given(magnitude=BIG)
def test_loss_and_gradient_finite_for_large_h(name, magnitude):
    h = jnp.asarray([magnitude, -magnitude, 1e4, -1e4], dtype=jnp.float32)
    loss, metrics = BY_H[name](h)  # eager
    assert np.all(np.isfinite(np.asarray(loss)))
    for v in metrics.values():
        assert np.all(np.isfinite(np.asarray(v)))
    grad = _GRAD_BY_H[name](h)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_sigmoid_losses_are_accurate_at_large_h():
    # -log sigmoid(x) ~ |x| for x -> -inf and ~ e^-x for x -> +inf; log(sigmoid) would give inf/0.
    h = jnp.asarray([1e4, -1e4, 200.0], dtype=jnp.float32)
    loss, _ = dpo_loss(*_h_inputs(h), beta=1.0)
    assert_close(loss, [0.0, 1e4, 0.0], rtol=1e-6, atol=1e-30)
    assert float(loss[2]) == pytest.approx(math.exp(-200.0), rel=1e-3)


_DPO_GRAD_H = jax.jit(jax.grad(lambda x, b: jnp.sum(dpo_loss(*_h_inputs(x), beta=b)[0])))


@HYPOTHESIS
@given(
    h1=st.floats(-1e4, 1e4),
    h2=st.floats(-1e4, 1e4),
    beta=st.floats(0.01, 10.0),
)
def test_dpo_monotone_decreasing_in_h(h1, h2, beta):
    lo, hi = min(h1, h2), max(h1, h2)
    x = jnp.asarray([lo, hi], dtype=jnp.float32)
    loss, _ = dpo_loss(*_h_inputs(x), beta=beta)
    assert float(loss[0]) >= float(loss[1])
    if abs(beta * lo) < 10 and abs(beta * hi) < 10 and beta * (hi - lo) > 1e-2:
        assert float(loss[0]) > float(loss[1])
    # And the derivative with respect to h is never positive.
    g = _DPO_GRAD_H(x, jnp.float32(beta))
    assert np.all(np.asarray(g) <= 0.0)


_JIT_BY_H = {name: jax.jit(fn) for name, fn in BY_H.items()}


@pytest.mark.parametrize("name", sorted(BY_H))
@HYPOTHESIS_PER_LOSS
@given(h=st.lists(st.floats(-50.0, 50.0), min_size=6, max_size=6))
def test_jit_matches_eager(name, h):
    x = jnp.asarray(h, dtype=jnp.float32)
    eager_loss, eager_m = BY_H[name](x)
    jit_loss, jit_m = _JIT_BY_H[name](x)
    assert jit_loss.shape == (6,)
    assert_close(jit_loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert eager_m.keys() == jit_m.keys()
    for key in eager_m:
        assert jit_m[key].shape == (6,)
        assert_close(jit_m[key], eager_m[key], rtol=1e-5, atol=1e-6)


_JIT_TRACED_HPARAMS = {
    "dpo": jax.jit(lambda h, b, e: dpo_loss(*_h_inputs(h), beta=b)[0]),
    "cdpo": jax.jit(lambda h, b, e: cdpo_loss(*_h_inputs(h), beta=b, label_smoothing=e)[0]),
    "robust": jax.jit(lambda h, b, e: robust_dpo_loss(*_h_inputs(h), beta=b, label_smoothing=e)[0]),
    "hinge": jax.jit(lambda h, b, e: hinge_dpo_loss(*_h_inputs(h), beta=b)[0]),
    "ipo": jax.jit(lambda h, b, e: ipo_loss(*_h_inputs(h), beta=b)[0]),
    "simpo": jax.jit(lambda h, b, e: simpo_loss(h, jnp.zeros_like(h), beta=b, gamma=e)[0]),
    "kto": jax.jit(
        lambda h, b, e: kto_loss(
            h,
            jnp.zeros_like(h),
            h > 0,
            kl=e,
            beta=b,
            desirable_weight=e,
            undesirable_weight=b,
        )[0]
    ),
    "bradley_terry": jax.jit(lambda h, b, e: bradley_terry_loss(h * b, h * 0, margin=e)[0]),
}

_EAGER_HPARAMS = {
    "dpo": lambda h, b, e: dpo_loss(*_h_inputs(h), beta=b)[0],
    "cdpo": lambda h, b, e: cdpo_loss(*_h_inputs(h), beta=b, label_smoothing=e)[0],
    "robust": lambda h, b, e: robust_dpo_loss(*_h_inputs(h), beta=b, label_smoothing=e)[0],
    "hinge": lambda h, b, e: hinge_dpo_loss(*_h_inputs(h), beta=b)[0],
    "ipo": lambda h, b, e: ipo_loss(*_h_inputs(h), beta=b)[0],
    "simpo": lambda h, b, e: simpo_loss(h, jnp.zeros_like(h), beta=b, gamma=e)[0],
    "kto": lambda h, b, e: kto_loss(
        h, jnp.zeros_like(h), h > 0, kl=e, beta=b, desirable_weight=e, undesirable_weight=b
    )[0],
    "bradley_terry": lambda h, b, e: bradley_terry_loss(h * b, h * 0, margin=e)[0],
}


@pytest.mark.parametrize("name", sorted(_JIT_TRACED_HPARAMS))
@HYPOTHESIS_PER_LOSS
@given(
    h=st.lists(st.floats(-50.0, 50.0), min_size=4, max_size=4),
    beta=st.floats(0.01, 5.0),
    e=st.floats(0.0, 0.45),
)
def test_jit_with_traced_hyperparameters_matches_eager(name, h, beta, e):
    x = jnp.asarray(h, dtype=jnp.float32)
    eager = _EAGER_HPARAMS[name](x, beta, e)
    jitted = _JIT_TRACED_HPARAMS[name](x, jnp.float32(beta), jnp.float32(e))
    assert_close(jitted, eager, rtol=1e-5, atol=1e-5)
