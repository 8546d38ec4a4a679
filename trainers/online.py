"""What the online methods (GRPO, RLOO, PPO, online DPO) share: rollouts and their scoring.

Each engine step of an online method is one rollout and the method's updates on it:

1. `PromptIterator`: the step's `prompts_per_step` training prompts (P), left-padded to a
   bucketed width Tp (few shapes, few compilations), in a seeded order that a resumed run
   continues.
2. `Rollouts.__call__` (the engine's `Prepared.rollout` hook), through `sample_and_score`
   (the evaluators' sampling, `evaluators/policy_eval.py`, is the same function):
   * samples `group_size` (G) completions of at most `max_new_tokens` (N) tokens per prompt
     with the jitted KV-cache sampler (`trainers.sampling.generate(..., group=G)`: each
     prompt's prefill runs once and its cache is shared by its G samples);
   * decodes them and scores them on the host with the task's gold reward
     (`tasks.kinship.score`), and marks those without a parsable `Answer:` line;
   * runs ONE jitted pass (`score_pass`) over the samples (each prompt once for its G
     completions: `GPT.grouped_hidden_states`, shared-prefix attention) through the current
     policy, the reference policy (the initial model) and, with `--reward rm:RUN`, the
     reward model: the sampling policy's and the reference's token log-probs, the exact
     full-vocabulary KL and the entropy at every sampled position, and the proxy reward;
   * returns the step's `Rollout` (below) and its metrics.
3. The method's jitted step makes its updates on the `Rollout` (`trainers/grpo.py`,
   `rloo.py`, `ppo.py`, `online_dpo.py`), through the same shared-prefix forward.

Log-probs are of the *tempered* policy (logits / temperature, the distribution actually
sampled; the TL;DR reproduction's temperature correction), for the policy and the reference
alike; the KL is between the two tempered distributions.

The reward optimised is the gold score (`--reward gold`) or the reward model's score minus its
stored offset (`--reward rm:RUN`, so that a reference answer scores about 0), minus
`missing_answer_penalty` for a completion with no parsable `Answer:` line. A text task without
a gold reward (TL;DR, `kinrl tldr prepare`'s sft folder) needs `--reward rm:RUN`; there the
penalty is for a completion that did not end with the EOS (the reproduction's), no gold reward
is logged, and there is no held-out greedy evaluation (`kinrl tldr eval` measures the run).
With a reward model on a task that has one, the gold reward is still computed and logged,
never optimised: the two side by side show over-optimisation as it happens.

Logged every step (`train/` + these names): `reward/gold`, `reward/proxy`, `reward/mean`,
`reward/std`, `reward/zero_std_groups`, `reward/accuracy` (gold score 1), `reward/no_answer`;
`kl/exact` and `kl/k1`, `kl/k2`, `kl/k3` per token and `kl/*_seq` per sequence (of the
sampling policy against the reference; absent when `beta` is 0, which skips the reference
pass); `policy/entropy`; `completion/length`, `completion/truncated`; `rollout/completions`,
`rollout/logprob_gap` (largest gap between the sampler's and the training forward's token
log-probs: a check that both compute the same policy); `time/generate_s`, `time/score_s`,
`time/update_s`; `train/completions_per_s`. Held out (`eval/`): greedy accuracy and mean gold
score on the first `eval_examples` validation prompts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from tasks.kinship.scoring import parse_answer, score
from tasks.registry import EXAMPLES_KIND
from trainers.checkpoint import is_run_folder, load_run, read_run_config
from trainers.config import OnlineConfig
from trainers.data import bucket_length, epoch_order, has_split, load_records, read_data_config
from trainers.engine import Metrics, Prepared, Setup
from trainers.estimators import exact_kl, kl_estimates
from trainers.model import GPT, GraphdefJit
from trainers.runtime import trim_host_memory
from trainers.sampling import generate, shard_rows
from trainers.sharding import BATCH_AXES, put_global, state_shardings
from trainers.tokenizer import decode

PROMPT_BUCKET = 16  # prompt widths are padded up to a multiple of this (few compiled shapes)
COMPLETION_BUCKET = 16  # and a rollout's completions to the longest one's multiple of this
SAMPLE_STREAM = 0x5A17  # folded into a step's key for its samples (the update uses the other)


class Rollout(NamedTuple):
    """One step's scored samples: P prompts, G completions each (row p * G + g is prompt p's
    sample g), completions right-padded to N slots.

    prompt_ids:      (P, Tp) int32, left-padded prompts
    prompt_mask:     (P, Tp) int32, 1 on real prompt tokens
    completions:     (P * G, N) int32 sampled tokens (EOS included, then pad); N is the
                     longest completion's length rounded up to COMPLETION_BUCKET (at most
                     max_new_tokens)
    completion_mask: (P * G, N) float32, 1 on the sampled tokens (EOS included)
    sampling_logps:  (P * G, N) float32 token log-probs of the tempered policy that sampled,
                     recomputed by the training forward (0 on padding)
    reference_logps: (P * G, N) float32 the same under the reference policy (0 with beta 0)
    rewards:         (P * G,) float32 the reward optimised (gold or proxy, minus penalties)
    gold:            (P * G,) float32 the gold reward
    truncated:       (P * G,) bool, cut at N tokens without an EOS
    groups:          (P * G,) int32 the prompt (0..P-1) of each completion
    """

    prompt_ids: Any
    prompt_mask: Any
    completions: Any
    completion_mask: Any
    sampling_logps: Any
    reference_logps: Any
    rewards: Any
    gold: Any
    truncated: Any
    groups: Any


def rollout_sharding(mesh: jax.sharding.Mesh) -> Rollout:
    """Every array split along its first axis (prompts, or completions grouped by prompt)."""
    rows = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    return Rollout(*(rows,) * len(Rollout._fields))


# ----------------------------------------------------------------------------- the layout


def completion_hidden(model: GPT, prompt_ids: jax.Array, prompt_mask: jax.Array,
                      completions: jax.Array, group: int) -> jax.Array:  # fmt: skip
    """(P * G, N, C) final hidden states that predict each completion token: the prompt's
    last for token 0, then each completion's own (`GPT.grouped_hidden_states`: one forward,
    each prompt run once for its G completions)."""
    P, N = prompt_ids.shape[0], completions.shape[1]
    grouped = completions.reshape(P, group, N)
    hp, hc = model.grouped_hidden_states(prompt_ids, prompt_mask, grouped)
    last = jnp.broadcast_to(hp[:, None, -1:], (P, group, 1, hp.shape[-1]))
    return jnp.concatenate([last, hc[:, :, :-1]], axis=2).reshape(P * group, N, -1)


def token_logps(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """(..., V) logits, (...) tokens -> (...) log-softmax at the tokens."""
    picked = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def policy_logits(model: GPT, batch: Rollout, group: int, temperature: float) -> jax.Array:
    """(P * G, N, V) tempered logits of the completions under `model`."""
    hidden = completion_hidden(model, batch.prompt_ids, batch.prompt_mask, batch.completions,
                               group)  # fmt: skip
    return model.lm_head(hidden) / temperature


def policy_logps(model: GPT, batch: Rollout, group: int, temperature: float) -> jax.Array:
    """(P * G, N) tempered token log-probs of the completions under `model`, 0 on padding."""
    logits = policy_logits(model, batch, group, temperature)
    return token_logps(logits, batch.completions) * batch.completion_mask


def entropy(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, N, V) logits -> (B, N) entropy of each next-token distribution, 0 off `mask`."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1) * mask


def last_token_values(values: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, N) per-slot values -> (B,) the value at each completion's last real token."""
    last = jnp.maximum(jnp.sum(mask, axis=1).astype(jnp.int32) - 1, 0)
    return jnp.take_along_axis(values, last[:, None], axis=1)[:, 0]


class Scores(NamedTuple):
    sampling_logps: jax.Array  # (P * G, N)
    reference_logps: jax.Array  # (P * G, N), zeros without a reference
    exact_kl: jax.Array  # (P * G, N), zeros without a reference
    entropy: jax.Array  # (P * G, N)
    proxy: jax.Array  # (P * G,) the reward model's raw scores, zeros without one


def _score_pass(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    reference: nnx.State | None,
    reward_params: nnx.State | None,
    batch: Rollout,
    *,
    reward_graphdef: nnx.GraphDef | None,
    group: int,
    temperature: float,
) -> Scores:
    mask = batch.completion_mask
    logits = policy_logits(nnx.merge(graphdef, params), batch, group, temperature)
    sampling = token_logps(logits, batch.completions) * mask
    zeros = jnp.zeros_like(sampling)
    ref_logps, kl = zeros, zeros
    if reference is not None:
        ref_logits = policy_logits(nnx.merge(graphdef, reference), batch, group, temperature)
        ref_logps = token_logps(ref_logits, batch.completions) * mask
        kl = exact_kl(logits, ref_logits, mask)
    proxy = jnp.zeros(mask.shape[0], jnp.float32)
    if reward_params is not None:
        # A sequence's reward is the value head at its last token's own slot (the EOS that
        # closes it), as the reward model was trained (`trainers.reward_model`).
        values = _completion_slot_values(nnx.merge(reward_graphdef, reward_params), batch, group)
        proxy = last_token_values(values, mask)
    return Scores(sampling, ref_logps, kl, entropy(logits, mask), proxy)


def _completion_slot_values(model: GPT, batch: Rollout, group: int) -> jax.Array:
    """(P * G, N) the value head read at each completion token's own slot."""
    P, N = batch.prompt_ids.shape[0], batch.completions.shape[1]
    grouped = batch.completions.reshape(P, group, N)
    _, hc = model.grouped_hidden_states(batch.prompt_ids, batch.prompt_mask, grouped)
    return model.value(hc.reshape(P * group, N, -1))


score_pass = GraphdefJit(_score_pass,
                         static_argnames=("reward_graphdef", "group", "temperature"))  # fmt: skip


# ----------------------------------------------------------------------------- prompts


class PromptBatch(NamedTuple):
    """A step's prompts: `ids`/`mask` (P, Tp) left-padded, `indices` (P,) into the records."""

    ids: np.ndarray
    mask: np.ndarray
    indices: np.ndarray


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, width: int) -> tuple:
    """(P, width) int32 ids and mask, each sequence at the right end."""
    ids = np.full((len(sequences), width), pad_id, np.int32)
    mask = np.zeros((len(sequences), width), np.int32)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = seq
        mask[row, width - len(seq) :] = 1
    return ids, mask


class PromptIterator:
    """Endless, seeded batches of P prompts; `position` (steps taken) is its state. Every
    batch has one width, the longest prompt's rounded up to PROMPT_BUCKET: the sampler, the
    scoring pass and the step then compile once for it (a group's G completions share the
    prompt, so its padding costs little)."""

    def __init__(self, prompts: list[list[int]], count: int, seed: int, pad_id: int,
                 max_width: int, position: int = 0) -> None:  # fmt: skip
        self.prompts, self.count, self.seed = prompts, count, seed
        self.pad_id, self.position = pad_id, position
        self._lengths = np.array([len(p) for p in prompts])
        self.width = bucket_length(int(self._lengths.max()), max_width, PROMPT_BUCKET)
        self.steps_per_epoch = len(prompts) // count
        self._epoch, self._order = -1, np.empty((0, 0), np.int64)

    def __iter__(self) -> PromptIterator:
        return self

    def __next__(self) -> PromptBatch:
        epoch, within = divmod(self.position, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order = epoch_order(self._lengths, self.count, self.seed, epoch, 1)
            self._epoch = epoch
        indices = self._order[within]
        ids, mask = left_pad([self.prompts[i] for i in indices], self.pad_id, self.width)
        self.position += 1
        return PromptBatch(ids, mask, indices)


# ----------------------------------------------------------------------------- rewards


def load_reward_model(run: str, tokenizer: Any) -> tuple[GPT, float]:
    """The reward model of `--reward rm:RUN` and its offset; ValueError in one line unless RUN
    is a finished reward-model run whose tokenizer is the policy's."""
    from trainers.reward_model import OFFSET_FILE, read_reward_offset

    if not is_run_folder(run):
        raise ValueError(f"--reward rm:{run}: not a run folder")
    method = read_run_config(run).get("method")
    if method != "rm":
        raise ValueError(f"--reward rm:{run} is a {method} run, not a reward model (kinrl "
                         "train rm)")  # fmt: skip
    if not (Path(run) / OFFSET_FILE).exists():
        raise ValueError(f"--reward rm:{run} has not finished training (no {OFFSET_FILE})")
    model, _, rm_tokenizer = load_run(run)
    if rm_tokenizer.convert_ids_to_tokens(range(len(rm_tokenizer))) != (
        tokenizer.convert_ids_to_tokens(range(len(tokenizer)))
    ):
        raise ValueError(f"--reward rm:{run}: its tokenizer is not the policy's")
    return model, read_reward_offset(run)


# ----------------------------------------------------------------------------- rollouts


def place(state: nnx.State, setup: Setup) -> nnx.State:
    """A model state on the run's mesh, laid out as the train state's parameters are."""
    shardings = state_shardings(state, setup.mesh, setup.config.shard_params)
    return put_global(jax.device_get(state), shardings)


class Sampled(NamedTuple):
    """What `sample_and_score` gives, all on the host (row p * G + g is prompt p's sample g).

    rollout:       the `Rollout`, its `sampling_logps` and `reference_logps` from the scoring
                   pass; `rewards` zeros (what is optimised is the caller's choice)
    scores:        the scoring pass's `Scores` (`proxy` the reward model's raw scores)
    answered:      (P * G,) bool, the completion has a parsable `Answer:` line
    texts:         the P * G decoded completions, without the EOS
    lengths:       (P * G,) int32 sampled tokens, counting the EOS
    sampler_logps: (P * G, N) float32 the sampler's own token log-probs
    generate_s, score_s: seconds spent sampling, then decoding and scoring
    """

    rollout: Rollout
    scores: Scores
    answered: np.ndarray
    texts: list[str]
    lengths: np.ndarray
    sampler_logps: np.ndarray
    generate_s: float
    score_s: float


def gold_scores(records: Sequence[dict[str, Any]], indices: np.ndarray, tokens: np.ndarray,
                lengths: np.ndarray, group: int, tokenizer: Any,
                has_gold: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:  # fmt: skip
    """Gold scores (P * G,) of the sampled completions of prompts `records[indices]`, whether
    each has a parsable answer, and their texts (decoded without the EOS). A text task
    (`has_gold` False: TL;DR) has no gold reward (NaN), and a completion counts as answered
    when it ended with the EOS (the reproduction's penalty of completions without one)."""
    eos = tokenizer.eos_token_id
    if not has_gold:
        ended = np.array([n > 0 and seq[n - 1] == eos for seq, n in zip(tokens, lengths,
                          strict=True)], bool)  # fmt: skip
        texts = [decode(tokenizer, seq[: n - 1] if n and seq[n - 1] == eos else seq[:n])
                 for seq, n in zip(tokens, lengths, strict=True)]  # fmt: skip
        return np.full(len(tokens), np.nan, np.float32), ended, texts
    gold = np.zeros(len(tokens), np.float32)
    answered = np.zeros(len(tokens), bool)
    texts = []
    for row, (seq, length) in enumerate(zip(tokens, lengths, strict=True)):
        ids = seq[:length]
        if length and ids[-1] == eos:
            ids = ids[:-1]
        text = decode(tokenizer, ids)
        record = records[int(indices[row // group])]
        answered[row] = parse_answer(text) is not None
        gold[row] = score(record, text)
        texts.append(text)
    return gold, answered, texts


def sample_and_score(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    reference: nnx.State | None,
    reward_model: tuple[nnx.GraphDef, nnx.State] | None,
    prompts: PromptBatch,
    records: Sequence[dict[str, Any]],
    key: jax.Array,
    *,
    group: int,
    max_new_tokens: int,
    temperature: float,
    tokenizer: Any,
    sharding: Rollout | None = None,
    has_gold: bool = True,
) -> Sampled:
    """Sample `group` completions of each prompt of `prompts` (rows of `records`) with the
    policy (`graphdef`, `params`), decode and gold-score them, and score them in one
    `score_pass` through the policy, the `reference` (a state of the same graphdef, or None)
    and the reward model (its graphdef and state, or None): the one mechanism behind the
    trainers' rollouts (`Rollouts`) and the evaluators' sampling
    (`evaluators.policy_eval`). `sharding`: where the scoring pass reads the rollout (the
    run's `rollout_sharding`; None leaves it to jit). `has_gold`: False for a text task
    (`gold_scores`)."""
    G, N = group, max_new_tokens
    start = time.perf_counter()
    state, ids, mask = shard_rows(params, prompts.ids, prompts.mask)
    out = generate(graphdef, state, ids, mask, key, max_new_tokens=N, temperature=temperature,
                   eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                   group=G)  # fmt: skip
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    generated = time.perf_counter()
    truncated = (lengths == N) & (tokens[:, N - 1] != tokenizer.eos_token_id)
    # The update needs only the slots some completion filled (few widths, few compiles).
    width = bucket_length(int(lengths.max()), N, COMPLETION_BUCKET)
    tokens, sampler_logps = tokens[:, :width], np.asarray(out.logprobs)[:, :width]
    completion_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.float32)
    gold, answered, texts = gold_scores(records, prompts.indices, tokens, lengths, G, tokenizer,
                                        has_gold)  # fmt: skip
    batch = Rollout(
        prompts.ids, prompts.mask, tokens, completion_mask,
        np.zeros_like(completion_mask), np.zeros_like(completion_mask),
        np.zeros(len(tokens), np.float32), gold, truncated,
        np.repeat(np.arange(len(prompts.ids), dtype=np.int32), G),
    )  # fmt: skip
    rm_graphdef, rm_params = reward_model or (None, None)
    # On a run's mesh each device scores its prompts' samples.
    placed = batch if sharding is None else put_global(batch, sharding)
    scores = score_pass(graphdef, params, reference, rm_params, placed,
                        reward_graphdef=rm_graphdef, group=G,
                        temperature=float(temperature))  # fmt: skip
    scores = jax.device_get(scores)
    batch = batch._replace(sampling_logps=scores.sampling_logps,
                           reference_logps=scores.reference_logps)  # fmt: skip
    return Sampled(batch, scores, answered, texts, lengths, sampler_logps,
                   generated - start, time.perf_counter() - generated)  # fmt: skip


class Rollouts:
    """The engine's `Prepared.rollout` hook: sample, decode, score (see the module docstring)."""

    def __init__(self, setup: Setup, records: list[dict[str, Any]],
                 reward_model: tuple[GPT, float] | None, *, gold: bool = True) -> None:  # fmt: skip
        config: OnlineConfig = setup.config
        self.config, self.records, self.tokenizer = config, records, setup.tokenizer
        self.has_gold = gold  # False for a text task (TL;DR): no gold reward to compute
        _, reference = nnx.split(setup.model)
        # The reference is the initial policy: a copy of its weights on the run's mesh, laid
        # out as the policy's are, read by every step; the reward model's likewise.
        self.reference = place(reference, setup) if config.needs_reference else None
        self.reward_model: tuple[nnx.GraphDef, nnx.State] | None = None
        self.offset = 0.0
        if reward_model is not None:
            model, self.offset = reward_model
            graphdef, state = nnx.split(model)
            self.reward_model = (graphdef, place(state, setup))
        self.root = jax.random.key(config.seed)
        self.sharding = rollout_sharding(setup.mesh)
        self.compiled: set[tuple] = set()

    def sample_key(self, step: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(self.root, step), SAMPLE_STREAM)

    def __call__(self, graphdef: nnx.GraphDef, params: nnx.State, prompts: PromptBatch,
                 step: int) -> tuple[Rollout, Metrics]:  # fmt: skip
        config = self.config
        start = time.perf_counter()
        sampled = sample_and_score(
            graphdef, params, self.reference, self.reward_model, prompts, self.records,
            self.sample_key(step), group=config.group_size, max_new_tokens=config.max_new_tokens,
            temperature=config.temperature, tokenizer=self.tokenizer, sharding=self.sharding,
            has_gold=self.has_gold,
        )  # fmt: skip
        batch, scores, answered = sampled.rollout, sampled.scores, sampled.answered
        shapes = (batch.completions.shape, prompts.ids.shape)
        if shapes not in self.compiled:  # the sampler and scoring pass compiled for these
            self.compiled.add(shapes)
            trim_host_memory()  # the compilers' freed memory back to the system
        proxy = scores.proxy - self.offset
        optimised = proxy if self.reward_model is not None else batch.gold
        rewards = (optimised - config.missing_answer_penalty * ~answered).astype(np.float32)
        batch = batch._replace(rewards=rewards)
        metrics = self.metrics(batch, scores, proxy, answered, sampled.sampler_logps)
        metrics["time/generate_s"] = np.float32(sampled.generate_s)
        # Scoring as before: decoding to the metrics, the first trim of a shape included.
        metrics["time/score_s"] = np.float32(time.perf_counter() - start - sampled.generate_s)
        return batch, metrics

    def metrics(self, batch: Rollout, scores: Scores, proxy: np.ndarray, answered: np.ndarray,
                sampler_logps: np.ndarray) -> Metrics:  # fmt: skip
        config = self.config
        mask = batch.completion_mask
        tokens = max(float(mask.sum()), 1.0)
        G = config.group_size
        groups = batch.rewards.reshape(-1, G)
        m: dict[str, Any] = {
            "reward/mean": batch.rewards.mean(),
            "reward/std": batch.rewards.std(),
            "reward/no_answer": (~answered).mean(),
            "policy/entropy": scores.entropy.sum() / tokens,
            "completion/length": mask.sum(axis=1).mean(),
            "completion/truncated": batch.truncated.mean(),
            "rollout/completions": float(len(mask)),
            "rollout/logprob_gap": np.abs((sampler_logps - scores.sampling_logps) * mask).max(),
        }
        if self.has_gold:
            m["reward/gold"] = batch.gold.mean()
            m["reward/accuracy"] = (batch.gold == 1.0).mean()
        if G > 1:
            m["reward/zero_std_groups"] = (groups.std(axis=1) == 0).mean()
        if self.reward_model is not None:
            m["reward/proxy"] = proxy.mean()
        if self.reference is not None:
            est = jax.device_get(kl_estimates(jnp.asarray(scores.sampling_logps),
                                              jnp.asarray(scores.reference_logps),
                                              jnp.asarray(mask)))  # fmt: skip
            m["kl/exact"] = scores.exact_kl.sum() / tokens
            m["kl/exact_seq"] = scores.exact_kl.sum(axis=1).mean()
            for name in ("k1", "k2", "k3"):
                m[f"kl/{name}"] = getattr(est, name).sum() / tokens
                m[f"kl/{name}_seq"] = getattr(est, f"{name}_sum").mean()
        return {key: np.float32(value) for key, value in m.items()}


# ----------------------------------------------------------------------------- evaluation


def greedy_evaluation(setup: Setup, records: list[dict[str, Any]]) -> Any:
    """`Prepared.evaluate`: greedy accuracy and mean gold score of params on `records`."""
    from evaluators.accuracy import accuracy_report, complete

    def evaluate(graphdef: nnx.GraphDef, params: nnx.State) -> dict[str, float]:
        model = nnx.merge(graphdef, jax.device_get(params))
        completions = complete(model, setup.tokenizer, [r["prompt"] for r in records],
                               max_new_tokens=setup.config.max_new_tokens)  # fmt: skip
        report = accuracy_report(records, completions)
        return {"accuracy": report["accuracy"], "gold": report["mean_score"]}

    return evaluate


# ----------------------------------------------------------------------------- prepare


def prepare_online(setup: Setup, **hooks: Any) -> Prepared:
    """The prompts of the train split (records whose prompt leaves room for max_new_tokens),
    the reward source, the held-out greedy evaluation, and the rollout hook. `hooks`: the
    method's own `Prepared` fields (e.g. `opt_state`, `step_kwargs`)."""
    config: OnlineConfig = setup.config
    tokenizer, n_positions = setup.tokenizer, setup.model_cfg.n_positions
    room = n_positions - config.max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens must be below the model's context of {n_positions} "
                         f"positions (got {config.max_new_tokens})")  # fmt: skip
    # A text task's prompts (TL;DR: `kinrl tldr prepare`'s sft folder) have no gold reward:
    # only a reward model can score their completions.
    gold = read_data_config(setup.data_dir, EXAMPLES_KIND)["kind"] == EXAMPLES_KIND
    if not gold and config.reward_model is None:
        raise ValueError(f"reward must be rm:RUN on {setup.data_dir}: its records have no gold "
                         "reward")  # fmt: skip
    records = load_records(setup.data_dir, "train", EXAMPLES_KIND)
    encoded = tokenizer([r["prompt"] for r in records], add_special_tokens=False)["input_ids"]
    kept = [i for i, ids in enumerate(encoded) if 0 < len(ids) <= room]
    if len(kept) < config.prompts_per_step:
        raise ValueError(f"prompts_per_step must be at most the {len(kept)} training prompts "
                         f"that leave room for max_new_tokens={config.max_new_tokens} "
                         f"(got {config.prompts_per_step})")  # fmt: skip
    records = [records[i] for i in kept]
    prompts = [encoded[i] for i in kept]
    reward_model = None
    if config.reward_model is not None:
        reward_model = load_reward_model(config.reward_model, tokenizer)
        longest = max(len(p) for p in prompts) + config.max_new_tokens
        if reward_model[0].cfg.n_positions < longest:
            raise ValueError(f"--reward rm:{config.reward_model}: its context of "
                             f"{reward_model[0].cfg.n_positions} positions is shorter than a "
                             f"prompt and max_new_tokens ({longest})")  # fmt: skip
    evaluate = None
    if gold and has_split(setup.data_dir, "validation"):  # greedy accuracy by the gold reward
        held_out = load_records(setup.data_dir, "validation", EXAMPLES_KIND)
        if held_out:
            evaluate = greedy_evaluation(setup, held_out[: config.eval_examples])
    rollouts = Rollouts(setup, records, reward_model, gold=gold)

    def batches(position: int) -> PromptIterator:
        return PromptIterator(prompts, config.prompts_per_step, config.seed,
                              tokenizer.pad_token_id, room, position)  # fmt: skip

    completions = config.prompts_per_step * config.group_size
    return Prepared(
        batches, rollout_sharding(setup.mesh), [], len(prompts),
        rate=("completions", lambda batch: completions), dropped=len(encoded) - len(kept),
        rollout=rollouts, evaluate=evaluate, data={"records": records, "prompts": prompts},
        **hooks,
    )  # fmt: skip
