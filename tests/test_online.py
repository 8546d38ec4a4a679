"""The online methods (GRPO, RLOO, PPO, online DPO): the packed layout against plain forwards,
the loss pieces by hand, the KL-penalty gradients against the exact KL's, one update's
direction, resume, bad input, and several devices against one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kinrl.cli import main
from tasks.kinship import KinshipConfig, generate_dataset
from tasks.kinship.pairs import FeedbackConfig
from trainers import engine
from trainers.checkpoint import Checkpoints
from trainers.config import GRPOConfig, OnlineDPOConfig, PPOConfig, RLOOConfig
from trainers.engine import open_run
from trainers.model import PRESETS, GPTConfig, forward, init_model
from trainers.online import (
    Rollout,
    _completion_slot_values,
    completion_hidden,
    last_token_values,
    policy_logps,
)
from trainers.policy_gradient import (
    aggregate,
    clipped_objective,
    kl_penalty,
    permute_prompts,
    run_updates,
)
from trainers.reward_model import sequence_rewards
from trainers.sharding import put_global

TINY = GPTConfig(vocab_size=1, n_positions=64, n_embd=32, n_layer=2, n_head=2)
# Small rollouts: 4 prompts x 4 samples of at most 16 tokens.
ONLINE = dict(steps=2, prompts_per_step=4, group_size=4, max_new_tokens=16, eval_examples=8,
              log_interval=1)  # fmt: skip
CONFIGS = {
    "grpo": GRPOConfig,
    "rloo": RLOOConfig,
    "ppo": lambda **kw: PPOConfig(**{**kw, "group_size": 2}),
    "online-dpo": lambda **kw: OnlineDPOConfig(**{**kw, "group_size": 2}),
}


@pytest.fixture(scope="module")
def tiny_preset():
    PRESETS["tiny"] = TINY
    yield "tiny"
    del PRESETS["tiny"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    generate_dataset(root / "l1", KinshipConfig.for_level(1), 120, seed=3, progress=False)
    generate_dataset(root / "pairs", KinshipConfig.for_level(1), 120, seed=3, kind="preference",
                     feedback=FeedbackConfig(), progress=False)  # fmt: skip
    return {"examples": root / "l1", "pairs": root / "pairs"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, folders, tiny_preset) -> dict[str, Path]:
    """A tiny SFT run and a reward model trained from it, through the command line."""
    root = tmp_path_factory.mktemp("runs")
    short = ["--preset", tiny_preset, "--steps", "3", "--batch-size", "8", "--eval-examples",
             "8", "--quiet"]  # fmt: skip
    sft = ["train", "sft", "--data", str(folders["examples"]), "--out", str(root / "sft")]
    assert main([*sft, *short]) == 0
    rm = ["train", "rm", "--data", str(folders["pairs"]), "--out", str(root / "rm")]
    assert main([*rm, *short, "--init", str(root / "sft")]) == 0
    return {"sft": root / "sft", "rm": root / "rm"}


# ----------------------------------------------------------------------------- the layout


def _rollout(P: int = 2, G: int = 3, Tp: int = 5, N: int = 4, seed: int = 0) -> Rollout:
    rng = np.random.default_rng(seed)
    prompt_ids = rng.integers(1, 60, (P, Tp)).astype(np.int32)
    prompt_mask = np.ones((P, Tp), np.int32)
    prompt_mask[0, :2] = 0  # a left-padded prompt
    prompt_ids[prompt_mask == 0] = 0
    completions = rng.integers(1, 60, (P * G, N)).astype(np.int32)
    lengths = rng.integers(1, N + 1, P * G)
    mask = (np.arange(N)[None] < lengths[:, None]).astype(np.float32)
    completions[mask == 0] = 0
    zeros = np.zeros((P * G, N), np.float32)
    return Rollout(prompt_ids, prompt_mask, completions, mask, zeros, zeros,
                   np.zeros(P * G, np.float32), np.zeros(P * G, np.float32),
                   np.zeros(P * G, bool), np.repeat(np.arange(P), G))  # fmt: skip


def test_rollout_log_probs_and_rewards_equal_plain_forwards():
    """Log-probs and reward-model values from the shared-prefix forward (each prompt once for
    its G completions) equal a plain forward over each prompt + completion on its own."""
    cfg = dataclasses.replace(TINY, vocab_size=64, value_head=True)
    model = init_model(cfg, 0)
    graphdef, state = nnx.split(model)
    P, G, Tp, N = 2, 3, 5, 4
    batch = _rollout(P, G, Tp, N)

    @jax.jit
    def packed_outputs(state, batch):
        model = nnx.merge(graphdef, state)
        hidden = completion_hidden(model, batch.prompt_ids, batch.prompt_mask,
                                   batch.completions, G)  # fmt: skip
        values = _completion_slot_values(model, batch, G)
        return (policy_logps(model, batch, G, 0.7), hidden,
                last_token_values(values, batch.completion_mask))  # fmt: skip

    packed, hidden, rewards = jax.device_get(packed_outputs(state, batch))
    assert hidden.shape == (P * G, N, cfg.n_embd)
    # Each prompt + completion on its own row, right-padded: one plain forward for all.
    width = Tp + N
    ids = np.zeros((P * G, width), np.int32)
    attention = np.zeros((P * G, width), np.int32)
    spans = []
    for row in range(P * G):
        prompt = batch.prompt_ids[row // G][batch.prompt_mask[row // G].astype(bool)]
        n = int(batch.completion_mask[row].sum())
        sequence = np.concatenate([prompt, batch.completions[row, :n]])
        ids[row, : len(sequence)], attention[row, : len(sequence)] = sequence, 1
        spans.append((len(prompt), n))
    logits = np.asarray(forward(graphdef, state, ids, attention), np.float64) / 0.7
    plain_rewards = jax.jit(lambda state, ids, mask: sequence_rewards(
        nnx.merge(graphdef, state), ids, mask))(state, ids, attention)  # fmt: skip
    for row, (start, n) in enumerate(spans):
        rows = logits[row, start - 1 : start - 1 + n]
        lse = np.log(np.exp(rows).sum(-1))
        expected = rows[np.arange(n), batch.completions[row, :n]] - lse
        np.testing.assert_allclose(packed[row, :n], expected, atol=1e-5)
        assert np.all(packed[row, n:] == 0)
    np.testing.assert_allclose(rewards, plain_rewards, atol=1e-5)


def test_grouped_hidden_states_equal_one_sequence_each():
    """The shared-prefix forward gives every prompt + continuation the hidden states of that
    sequence run on its own (and a continuation never sees another's tokens)."""
    cfg = dataclasses.replace(TINY, vocab_size=64)
    model = init_model(cfg, 1)
    graphdef, state = nnx.split(model)
    batch = _rollout(P=2, G=3, Tp=5, N=4, seed=2)
    P, G, N = 2, 3, 4
    grouped = jnp.asarray(batch.completions.reshape(P, G, N))
    run = jax.jit(lambda state, ids, mask, c: nnx.merge(graphdef, state).grouped_hidden_states(
        ids, mask, c))  # fmt: skip
    hp, hc = jax.device_get(run(state, batch.prompt_ids, batch.prompt_mask, grouped))
    changed = grouped.at[0, 1].set((grouped[0, 1] + 7) % 64)  # another continuation changes
    hp2, hc2 = jax.device_get(run(state, batch.prompt_ids, batch.prompt_mask, changed))
    np.testing.assert_array_equal(hc2[0, 0], hc[0, 0])
    np.testing.assert_array_equal(hp2, hp)
    plain = jax.jit(lambda state, ids: nnx.merge(graphdef, state).hidden_states(ids))
    for p in range(P):
        prompt = batch.prompt_ids[p][batch.prompt_mask[p].astype(bool)]
        for g in range(G):
            ids = np.concatenate([prompt, batch.completions[p * G + g]])[None]
            expected = np.asarray(plain(state, ids))[0]
            np.testing.assert_allclose(hc[p, g], expected[len(prompt) :], atol=1e-5)
            real = batch.prompt_mask[p].astype(bool)
            np.testing.assert_allclose(hp[p][real], expected[: len(prompt)], atol=1e-5)


# ----------------------------------------------------------------------------- the losses


def test_aggregations_by_hand():
    losses = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # grpo: the mean of the sequences' token means: ((1 + 2) / 2 + (4 + 5 + 6) / 3) / 2
    assert float(aggregate(losses, mask, "grpo", max_tokens=4)) == pytest.approx(3.25)
    # bnpo: one mean over the 5 real tokens
    assert float(aggregate(losses, mask, "bnpo", max_tokens=4)) == pytest.approx(18 / 5)
    # dr_grpo: the token sum over sequences x max_new_tokens
    assert float(aggregate(losses, mask, "dr_grpo", max_tokens=4)) == pytest.approx(18 / 8)
    # dapo: the token sum over the whole step's tokens (here 9 over two minibatches)
    got = aggregate(losses, mask, "dapo", max_tokens=4, step_tokens=jnp.float32(9))
    assert float(got) == pytest.approx(2.0)
    # RLOO's sequence_sum: the mean over sequences of each one's token sum
    assert float(aggregate(losses, mask, "sequence_sum", max_tokens=4)) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="loss_type"):
        aggregate(losses, mask, "mean", max_tokens=4)


def test_clipped_objective_by_hand():
    old = jnp.zeros((1, 4))
    ratios = jnp.array([[0.5, 0.9, 1.1, 1.5]])
    mask = jnp.array([[1.0, 1.0, 1.0, 1.0]])
    for advantage in (1.0, -1.0):
        losses, m = clipped_objective(jnp.log(ratios), old, jnp.array([advantage]), mask,
                                      epsilon_low=0.2, epsilon_high=0.28)  # fmt: skip
        clipped = np.clip([0.5, 0.9, 1.1, 1.5], 0.8, 1.28)
        expected = -np.minimum(np.array([0.5, 0.9, 1.1, 1.5]) * advantage, clipped * advantage)
        np.testing.assert_allclose(losses[0], expected, rtol=1e-6)
        # only the ratio past the clip on the side the advantage pushes towards is clipped
        assert float(m["clip_high"]) == (0.25 if advantage > 0 else 0.0)
        assert float(m["clip_low"]) == (0.25 if advantage < 0 else 0.0)
    # GSPO: one ratio per sequence, exp(mean log ratio) = (0.5 * 0.9 * 1.1 * 1.5) ** (1 / 4)
    gspo = dict(epsilon_low=0.2, epsilon_high=0.2, sequence_ratio=True)
    losses, m = clipped_objective(jnp.log(ratios), old, jnp.array([1.0]), mask, **gspo)
    ratio = (0.5 * 0.9 * 1.1 * 1.5) ** 0.25
    np.testing.assert_allclose(losses[0], [-ratio] * 4, rtol=1e-6)
    assert float(m["approx_kl"]) == pytest.approx((ratio - 1) - np.log(ratio), rel=1e-4)


def test_kl_penalty_gradients_in_the_loss():
    """On a categorical policy, the expected gradient of k2 in the loss is the exact KL's; k3's
    (GRPO's) is not, and k1's is zero (`trainers.policy_gradient`'s docstring)."""
    logits = jnp.array([0.3, -1.0, 0.8, 0.1])
    log_q = jax.nn.log_softmax(jnp.array([0.0, 0.5, -0.5, 0.2]))

    def exact(theta):
        log_p = jax.nn.log_softmax(theta)
        return jnp.sum(jnp.exp(log_p) * (log_p - log_q))

    def expected_surrogate(theta, estimator):
        log_p = jax.nn.log_softmax(theta)
        p = jax.lax.stop_gradient(jnp.exp(log_p))  # sampled from p: the weights of each token
        k = kl_penalty(log_p[:, None], log_q[:, None], jax.lax.stop_gradient(log_p)[:, None],
                       jnp.ones((4, 1)), estimator)[:, 0]  # fmt: skip
        return jnp.sum(p * k)

    true = jax.grad(exact)(logits)
    k2 = jax.grad(expected_surrogate)(logits, "k2")
    k3 = jax.grad(expected_surrogate)(logits, "k3")
    k1 = jax.grad(expected_surrogate)(logits, "k1")
    np.testing.assert_allclose(k2, true, atol=1e-6)
    assert not np.allclose(k3, true, atol=1e-3)
    np.testing.assert_allclose(k1, 0.0, atol=1e-6)


def test_run_updates_counts_epochs_stops_early_and_keeps_groups_together():
    import optax

    params = {"w": jnp.zeros(())}
    data = (jnp.arange(4.0), jnp.arange(8.0))  # 4 prompts, 2 completions each

    def loss_fn(params, minibatch):
        prompts, completions = minibatch
        assert prompts.shape == (2,) and completions.shape == (4,)
        # a group's two completions are 2p and 2p + 1 of its prompt p
        pair_ok = jnp.all(completions.reshape(2, 2)[:, 0] == 2 * prompts)
        loss = (params["w"] - 10.0) ** 2
        # as PPO's, measured before this minibatch's update: 0, then 2 after the first
        metrics = {"approx_kl": jnp.abs(params["w"]), "pairs": pair_ok.astype(jnp.float32),
                   "first_prompt": prompts[0]}  # fmt: skip
        return loss, metrics

    sgd = optax.sgd(0.1)
    _, _, m = run_updates(params, sgd.init(params), data, loss_fn, sgd, prompts=4,
                          minibatches=2, epochs=3, key=jax.random.key(0))  # fmt: skip
    assert float(m["updates"]) == 6 and float(m["pairs"]) == 1.0
    # In order, minibatches interleave the prompts: (0, 2), then (1, 3).
    _, _, m = run_updates(params, sgd.init(params), data, loss_fn, sgd, prompts=4,
                          minibatches=2, epochs=1)  # fmt: skip
    assert float(m["first_prompt"]) == 0.5  # the mean of prompts 0 and 1, the minibatches' first
    w, _, m = run_updates(params, sgd.init(params), data, loss_fn, sgd, prompts=4,
                          minibatches=2, epochs=3, target_kl=0.1)  # fmt: skip
    # The second minibatch's KL before its update passed the target: one update made.
    assert float(m["updates"]) == 1 and float(w["w"]) == pytest.approx(2.0)
    order = jnp.array([2, 0, 3, 1])
    prompts, completions = permute_prompts(data, order, 4)
    assert prompts.tolist() == [2, 0, 3, 1]
    assert completions.tolist() == [4, 5, 0, 1, 6, 7, 2, 3]


# ----------------------------------------------------------------------------- training


def _open(method: str, folders, runs, tmp_path, **overrides):
    config = CONFIGS[method](**{**ONLINE, "reward": f"rm:{runs['rm']}", **overrides})
    return open_run(method, config, folders["examples"], tmp_path / method, str(runs["sft"]),
                    progress=False)  # fmt: skip


@pytest.mark.parametrize("method", list(CONFIGS))
def test_one_update_changes_every_parameter_towards_the_advantage(method, folders, runs,
                                                                  tmp_path):  # fmt: skip
    """After one step every parameter (PPO: and every value-model weight) has moved, and the
    log-probs of the step's own samples moved with their advantage: up where a sample scored
    above its group, down below (online DPO: the chosen above the rejected)."""
    run = _open(method, folders, runs, tmp_path)
    checkpoints = Checkpoints(run.setup.run_dir)
    graphdef, state, _ = run.initial_state(checkpoints)
    before = jax.device_get(state)
    step_fn, root = run.compiled_step(state)
    prompts = next(run.prepared.batches(0))
    batch, metrics = run.prepared.rollout(graphdef, state.params, prompts, 1)
    assert float(metrics["rollout/logprob_gap"]) < 1e-4  # the sampler's and training's agree
    state, metrics = step_fn(graphdef, state, root, put_global(batch, run.prepared.sharding))
    after = jax.device_get(state)
    checkpoints.close()
    trees = [(before.params, after.params)]
    if method == "ppo":
        trees.append((before.opt_state.value, after.opt_state.value))
    for old, new in trees:
        unchanged = [jax.tree_util.keystr(path) for (path, a), b in zip(
            jax.tree_util.tree_leaves_with_path(old), jax.tree.leaves(new), strict=True
        ) if np.array_equal(a, b)]  # fmt: skip
        assert not unchanged, unchanged
    G = run.setup.config.group_size
    jbatch = jax.tree.map(jnp.asarray, batch)
    logp = [np.asarray(policy_logps(nnx.merge(graphdef, p), jbatch, G, 1.0).sum(1))
            for p in (before.params, after.params)]  # fmt: skip
    moved = logp[1] - logp[0]
    rewards = np.asarray(batch.rewards).reshape(-1, G)
    if method == "online-dpo":  # rewards hold the labels: 1 chosen, 0 rejected, 0.5 a tie
        signed = (rewards - 0.5).reshape(-1)
    else:
        signed = (rewards - rewards.mean(axis=1, keepdims=True)).reshape(-1)
    assert float(np.sum(signed * moved)) > 0


def test_an_interrupted_online_run_resumes_to_the_same_metrics(folders, runs, tmp_path,
                                                               monkeypatch):  # fmt: skip
    config = GRPOConfig(**{**ONLINE, "steps": 4, "reward": f"rm:{runs['rm']}"})
    args = ("grpo", config, folders["examples"])
    engine.train(*args, tmp_path / "whole", str(runs["sft"]), progress=False)
    calls = {"n": 0}

    def stop_after_two(self):
        calls["n"] += 1
        return calls["n"] >= 2

    with monkeypatch.context() as patch:
        patch.setattr(engine._StopRequest, "everywhere", stop_after_two)
        with pytest.raises(engine.Interrupted) as stopped:
            engine.train(*args, tmp_path / "split", str(runs["sft"]), progress=False)
    assert stopped.value.step == 2
    engine.train(*args, tmp_path / "split", str(runs["sft"]), progress=False)

    def lines(run):
        out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in line.items() if "time/" not in k and "_per_s" not in k}
                for line in out]  # fmt: skip

    whole, split = lines(tmp_path / "whole"), lines(tmp_path / "split")
    assert [line["step"] for line in whole] == [line["step"] for line in split]
    for a, b in zip(whole, split, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)


def test_bad_input_is_one_line(folders, runs, tmp_path, usage_error):
    base = ["train", "grpo", "--init", str(runs["sft"]), "--data", str(folders["examples"]),
            "--out", str(tmp_path / "run"), "--max-new-tokens", "16", "--quiet"]  # fmt: skip
    assert "--group-size must be an integer >= 2 for GRPO" in usage_error([*base, "--group-size",
                                                                           "1"])  # fmt: skip
    line = usage_error([*base, "--reward", f"rm:{runs['sft']}"])
    assert "is a sft run, not a reward model" in line
    line = usage_error([*base[:5], str(folders["pairs"]), *base[6:]])
    assert "kinship/preference" in line or "preference" in line
    line = usage_error([*base, "--prompts-per-step", "5000"])
    assert "--prompts-per-step must be at most" in line
    assert not (tmp_path / "run").exists()  # nothing left that would block the fixed command


FOUR_DEVICES = """
import json, sys
import jax
from trainers.config import GRPOConfig
from trainers.engine import open_run
from trainers.sharding import make_mesh

data, sft, rm, out = sys.argv[1:]
config = GRPOConfig(steps=2, prompts_per_step=4, group_size=4, max_new_tokens=16,
                    eval_examples=8, log_interval=1, reward="rm:" + rm)
lines = {}
for name, mesh in (("one", make_mesh(1, jax.devices()[:1])), ("four", make_mesh(1))):
    run = open_run("grpo", config, data, out + "/" + name, sft, progress=False, mesh=mesh)
    run.train()
    lines[name] = [json.loads(l) for l in open(out + "/" + name + "/metrics.jsonl")]
print(json.dumps({"devices": len(jax.devices()), **lines}))
"""


def test_four_devices_give_the_results_of_one(folders, runs, tmp_path):
    """Rollouts and updates split over 4 (simulated) devices: the metrics of one device."""
    from tests.devices import run_on_cpu_devices

    report = run_on_cpu_devices(FOUR_DEVICES, str(folders["examples"]), str(runs["sft"]),
                                str(runs["rm"]), str(tmp_path))  # fmt: skip
    assert report["devices"] == 4
    for one, four in zip(report["one"], report["four"], strict=True):
        assert one.keys() == four.keys()
        for key, value in one.items():
            if "time/" not in key and "_per_s" not in key:
                assert four[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (one["step"], key)
