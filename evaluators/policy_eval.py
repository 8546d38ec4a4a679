"""Sampled evaluations of policies and reward models: KL from a reference, proxy and gold
rewards of samples, best-of-n draws, and a reward model's accuracy, calibration and agreement
with the gold reward.

    samples = sample_policy("runs/grpo", records, group=4, max_new_tokens=64,
                            reference="runs/sft", reward_run="runs/rm")
    drift = kl_drift("runs/grpo", records, samples_per_prompt=4)
    draws = best_of_n_samples("runs/sft", "runs/rm", records, 16, max_new_tokens=64)
    quality = rm_quality("runs/rm", load_records("data/pairs", "test"))
    agreement = rm_gold_agreement("runs/rm", samples)

Sampling and scoring go through the trainers' own rollout mechanism
(`trainers.online.sample_and_score`): G completions per prompt from the KV-cache sampler,
decoded and gold-scored (`tasks.kinship.score`), then one shared-prefix pass through the
policy, the reference and the reward model. So the figures here are those the online
trainers log, on any prompts: the KL is between the *tempered* distributions that sampled
(the policy's and the reference's logits both divided by `temperature`; at the default
temperature 1, the models' own distributions), the exact one summed over the vocabulary
at every sampled position and Schulman's k1, k2, k3 of the sampled tokens; the proxy reward
is the reward model's score at the completion's last token minus the run's stored offset.

Prompts that leave no room for `max_new_tokens` in the policy's context are skipped and
counted. Prompts go `batch_prompts` at a time, all left-padded to one width, the last batch
filled up with copies whose outputs are dropped: the sampler and the scoring pass compile
once per completion-width bucket. Batch b draws with `fold_in(key(seed), b)`: the same seed,
prompts and batch size give the same samples, for every checkpoint of a run (common random
numbers across `kl_drift`'s checkpoints).

Every function returns plain JSON-serialisable dicts (lists, floats, ints, strings, None).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from trainers.checkpoint import Checkpoints, is_run_folder, load_policy, load_run, read_run_config
from trainers.data import bucket_length, fixed_size_chunks
from trainers.estimators import kl_estimates
from trainers.hf import from_hf
from trainers.model import GPT
from trainers.online import (
    PROMPT_BUCKET,
    PromptBatch,
    left_pad,
    load_reward_model,
    sample_and_score,
)
from trainers.reward_model import completion_rewards, expected_calibration_error

ESTIMATORS = ("k1", "k2", "k3")
KL_NAMES = ("exact", *ESTIMATORS)

PolicySource = str | Path | tuple[GPT, Any]  # a run folder, or (model, tokenizer)
ModelSource = str | Path | GPT  # a run folder (latest checkpoint), a GPT-2 folder, or a model


# ----------------------------------------------------------------------------- loading


def saved_steps(run_dir: str | Path) -> list[int]:
    """The steps of a run's saved checkpoints, ascending."""
    read_run_config(run_dir)
    checkpoints = Checkpoints(run_dir)
    try:
        return sorted(int(step) for step in checkpoints.manager.all_steps())
    finally:
        checkpoints.close()


def _load_model(source: ModelSource) -> tuple[GPT, str]:
    """A model and its name: a run folder's latest checkpoint, a Hugging Face GPT-2 folder or
    hub name, or a model as it is."""
    if isinstance(source, GPT):
        return source, "model"
    if is_run_folder(source):
        return load_run(source)[0], str(source)
    return from_hf(source)[0], str(source)


def _policy(source: PolicySource, step: int | None = None) -> tuple[GPT, Any, str]:
    if isinstance(source, tuple):
        model, tokenizer = source
        return model, tokenizer, "model"
    model, _, tokenizer = load_policy(source, step)
    return model, tokenizer, str(source) if step is None else f"{source}@{step}"


def _initial_model(run_dir: str | Path) -> tuple[GPT, str]:
    """The model a run started from (its config.json's `init`): what the online trainers
    use as the reference."""
    init = read_run_config(run_dir).get("init")
    if init is None:
        raise ValueError(
            f"{run_dir} was trained from a fresh initialisation (no init); give reference="
        )
    return _load_model(init)


def _reference_state(reference: ModelSource, policy: GPT) -> tuple[nnx.State, str]:
    """The reference's weights as a state of the policy's graph (the scoring pass runs both
    through the policy's graphdef); ValueError unless the two models have the same shapes."""
    model, name = _load_model(reference)
    state = nnx.state(model)
    want = jax.tree.map(lambda x: x.shape, nnx.state(policy))
    got = jax.tree.map(lambda x: x.shape, state)
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
        raise ValueError(f"reference {name} is not a model of the policy's architecture")
    return state, name


# ----------------------------------------------------------------------------- sampling


def _sample(
    model: GPT,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    *,
    group: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    reference: nnx.State | None,
    reward: tuple[GPT, float] | None,
    batch_prompts: int,
) -> dict[str, Any]:
    """`sample_policy`'s per-completion columns, plus each completion's token count under
    "_tokens" (for pooled per-token means)."""
    if group < 1 or batch_prompts < 1 or max_new_tokens < 1:
        raise ValueError("group, batch_prompts and max_new_tokens must be >= 1")
    room = model.cfg.n_positions - max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens must be below the model's context of "
            f"{model.cfg.n_positions} positions (got {max_new_tokens})"
        )
    encoded = tokenizer([r["prompt"] for r in records], add_special_tokens=False)["input_ids"]
    kept = [i for i, ids in enumerate(encoded) if 0 < len(ids) <= room]
    columns: dict[str, list[Any]] = defaultdict(list)
    out: dict[str, Any] = {
        "prompts": [records[i]["prompt"] for i in kept],
        "skipped": len(records) - len(kept),
    }
    if not kept:
        return {**out, "columns": columns}
    width = bucket_length(max(len(encoded[i]) for i in kept), room, PROMPT_BUCKET)
    rm_state = None
    if reward is not None:
        if reward[0].cfg.n_positions < width + max_new_tokens:
            raise ValueError(
                f"the reward model's context of {reward[0].cfg.n_positions} "
                f"positions is shorter than a prompt and max_new_tokens "
                f"({width + max_new_tokens})"
            )
        rm_state = nnx.split(reward[0])
    graphdef, params = nnx.split(model)
    root = jax.random.key(seed)
    size = min(batch_prompts, len(kept))
    positions = {index: p for p, index in enumerate(kept)}
    for number, (chunk, filled) in enumerate(fixed_size_chunks(np.asarray(kept), size)):
        ids, prompt_mask = left_pad([encoded[i] for i in filled], tokenizer.pad_token_id, width)
        sampled = sample_and_score(
            graphdef,
            params,
            reference,
            rm_state,
            PromptBatch(ids, prompt_mask, filled),
            records,
            jax.random.fold_in(root, number),
            group=group,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            tokenizer=tokenizer,
        )
        rows = len(chunk) * group  # the copies filling the last batch are dropped
        rollout, scores = sampled.rollout, sampled.scores
        mask = rollout.completion_mask[:rows]
        tokens = mask.sum(axis=1)
        per_token = np.maximum(tokens, 1.0)
        columns["record"] += [int(i) for i in np.repeat(chunk, group)]
        columns["prompt"] += [positions[int(i)] for i in np.repeat(chunk, group)]
        columns["text"] += sampled.texts[:rows]
        columns["gold"] += rollout.gold[:rows].tolist()
        columns["answered"] += sampled.answered[:rows].tolist()
        columns["truncated"] += rollout.truncated[:rows].tolist()
        columns["length"] += sampled.lengths[:rows].tolist()
        columns["_tokens"] += tokens.tolist()
        if reward is not None:
            columns["proxy"] += (scores.proxy[:rows] - reward[1]).tolist()
        if reference is not None:
            est = jax.device_get(
                kl_estimates(
                    jnp.asarray(scores.sampling_logps[:rows]),
                    jnp.asarray(scores.reference_logps[:rows]),
                    jnp.asarray(mask),
                )
            )
            sums = {"exact": scores.exact_kl[:rows].sum(axis=1)}
            sums.update({name: getattr(est, f"{name}_sum") for name in ESTIMATORS})
            for name, seq in sums.items():
                columns[f"kl_{name}_seq"] += seq.tolist()
                columns[f"kl_{name}"] += (seq / per_token).tolist()
    return {**out, "columns": columns}


def _plain(columns: dict[str, list[Any]]) -> dict[str, Any]:
    """Per-completion columns as JSON values, the KL ones under "kl"."""
    out: dict[str, Any] = {}
    for key, values in columns.items():
        if key.startswith("_"):
            continue
        if key in ("gold", "proxy", "length") or key.startswith("kl_"):
            values = [float(v) if key != "length" else int(v) for v in values]
        elif key in ("answered", "truncated"):
            values = [bool(v) for v in values]
        if key.startswith("kl_"):
            out.setdefault("kl", {})[key[3:]] = values
        else:
            out[key] = values
    return out


def sample_policy(
    run_or_model: PolicySource,
    records: Sequence[dict[str, Any]],
    *,
    group: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    reference: ModelSource | None = None,
    reward_run: str | Path | None = None,
    batch_prompts: int = 8,
    step: int | None = None,
) -> dict[str, Any]:
    """`group` sampled completions of each prompt of `records` (kinship examples) by a policy
    (a run folder at checkpoint `step`, default the latest, or a `(model, tokenizer)` pair),
    scored as the module docstring says.

    Returns {"policy", "reference", "reward_run", "reward_offset", "group", "max_new_tokens",
    "temperature", "seed", "batch_prompts", "n" (completions), "prompts" (the texts of the
    prompts sampled), "skipped" (prompts without room for max_new_tokens)} and one list
    entry per completion (prompt p's G completions together, in the records' order):
    "record" (index into `records`), "prompt" (index into "prompts"), "text", "gold",
    "answered" (a parsable `Answer:` line), "truncated" (cut at max_new_tokens without EOS),
    "length" (tokens, the EOS counted); with `reward_run`, "proxy" (raw score minus offset);
    with a `reference`, "kl": {"exact", "k1", "k2", "k3"} per token (the sequence's sum over
    its length) and {"exact_seq", "k1_seq", "k2_seq", "k3_seq"} per sequence."""
    model, tokenizer, name = _policy(run_or_model, step)
    ref_state, ref_name = None, None
    if reference is not None:
        ref_state, ref_name = _reference_state(reference, model)
    reward = None if reward_run is None else load_reward_model(str(reward_run), tokenizer)
    result = _sample(
        model,
        tokenizer,
        records,
        group=group,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        reference=ref_state,
        reward=reward,
        batch_prompts=batch_prompts,
    )
    return {
        "policy": name,
        "reference": ref_name,
        "reward_run": None if reward_run is None else str(reward_run),
        "reward_offset": None if reward is None else float(reward[1]),
        "group": group,
        "max_new_tokens": max_new_tokens,
        "temperature": float(temperature),
        "seed": seed,
        "batch_prompts": batch_prompts,
        "n": len(result["columns"].get("gold", [])),
        "prompts": result["prompts"],
        "skipped": result["skipped"],
        **_plain(result["columns"]),
    }


def _summary(columns: dict[str, list[Any]]) -> dict[str, Any]:
    """Pooled means of one checkpoint's samples: the KL per token (all tokens' KL over all
    tokens, as the trainers log `kl/*`) and per sequence (`*_seq`), gold, proxy, length."""
    n = len(columns.get("gold", []))

    def mean(key: str) -> float | None:
        return float(np.mean(columns[key])) if n and key in columns else None

    tokens = float(np.sum(columns.get("_tokens", [])))
    kl: dict[str, float | None] = {}
    for name in KL_NAMES:
        seq = columns.get(f"kl_{name}_seq")
        kl[name] = float(np.sum(seq) / max(tokens, 1.0)) if seq else None
        kl[f"{name}_seq"] = float(np.mean(seq)) if seq else None
    gold = np.asarray(columns.get("gold", []))
    return {
        "kl": kl,
        "gold": mean("gold"),
        "accuracy": float(np.mean(gold == 1.0)) if n else None,
        "proxy": mean("proxy"),
        "length": mean("length"),
        "truncated": mean("truncated"),
        "n": n,
    }


def kl_drift(
    run_dir: str | Path,
    records: Sequence[dict[str, Any]],
    *,
    reference: ModelSource | None = None,
    steps: Sequence[int] | None = None,
    samples_per_prompt: int = 4,
    max_new_tokens: int | None = None,
    reward_run: str | Path | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    batch_prompts: int = 8,
) -> dict[str, Any]:
    """The KL from the reference, and the gold and proxy rewards, of every saved checkpoint of
    a run (or of `steps`), each sampling `samples_per_prompt` completions of `records`' prompts
    with the same seed.

    `reference` defaults to the run's initial model (config.json's `init`, loaded as the
    engine loads it: a run folder's latest checkpoint, or a GPT-2 folder), the reference of
    the online trainers. The KL is of the sampling distributions at `temperature` (default
    1: the models' own), the policy's from the reference's, along the policy's samples.
    `max_new_tokens` defaults to the run's own (its method config's), `reward_run` to none
    (no proxy).

    Returns {"run", "reference", "temperature", "samples_per_prompt", "max_new_tokens",
    "reward_run", "seed", "prompts", "skipped", "checkpoints": [{"step", "kl": {"exact",
    "k1", "k2", "k3" per token; "exact_seq", ... per sequence}, "gold", "accuracy", "proxy",
    "length", "truncated", "n"}]}, the checkpoints in ascending step order."""
    config = read_run_config(run_dir)
    available = saved_steps(run_dir)
    wanted = available if steps is None else sorted({int(s) for s in steps})
    missing = [s for s in wanted if s not in available]
    if missing or not wanted:
        raise ValueError(f"{run_dir} has no checkpoint {missing or ''} (it has {available})")
    if max_new_tokens is None:
        max_new_tokens = config.get(config.get("method"), {}).get("max_new_tokens")
        if max_new_tokens is None:
            raise ValueError(f"{run_dir} records no max_new_tokens; give max_new_tokens=")
    checkpoints: list[dict[str, Any]] = []
    ref_name, sampled = None, {}
    reward, ref_model = None, None
    for step in wanted:
        model, _, tokenizer = load_policy(run_dir, step)
        if ref_model is None:
            ref_model, ref_name = (
                _initial_model(run_dir) if reference is None else _load_model(reference)
            )
            if reward_run is not None:
                reward = load_reward_model(str(reward_run), tokenizer)
        ref_state, _ = _reference_state(ref_model, model)
        sampled = _sample(
            model,
            tokenizer,
            records,
            group=samples_per_prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            reference=ref_state,
            reward=reward,
            batch_prompts=batch_prompts,
        )
        checkpoints.append({"step": step, **_summary(sampled["columns"])})
    return {
        "run": str(run_dir),
        "reference": ref_name,
        "temperature": float(temperature),
        "samples_per_prompt": samples_per_prompt,
        "max_new_tokens": int(max_new_tokens),
        "reward_run": None if reward_run is None else str(reward_run),
        "seed": seed,
        "prompts": len(sampled["prompts"]),
        "skipped": sampled["skipped"],
        "checkpoints": checkpoints,
    }


def best_of_n_samples(
    policy_run: PolicySource,
    reward_run: str | Path,
    records: Sequence[dict[str, Any]],
    n: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    batch_prompts: int = 8,
    step: int | None = None,
) -> dict[str, Any]:
    """n samples per prompt, scored by the proxy (the reward model minus its offset) and the
    gold reward: {"proxy": (P, n) list, "gold": (P, n) list, "records": the P prompts'
    indices into `records`, "skipped", "n"} (what
    `evaluators.overoptimisation.best_of_n_curve` consumes)."""
    samples = sample_policy(
        policy_run,
        records,
        group=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        reward_run=reward_run,
        batch_prompts=batch_prompts,
        step=step,
    )
    P = len(samples["prompts"])
    proxy = np.asarray(samples.get("proxy", []), np.float64).reshape(P, n)
    gold = np.asarray(samples.get("gold", []), np.float64).reshape(P, n)
    return {
        "proxy": proxy.tolist(),
        "gold": gold.tolist(),
        "records": samples.get("record", [])[::n],
        "skipped": samples["skipped"],
        "n": n,
    }


# ----------------------------------------------------------------------------- reward models


def _reward_model(rm_run: str | Path) -> tuple[GPT, Any]:
    model, cfg, tokenizer = load_run(rm_run)
    if not cfg.value_head:
        raise ValueError(f"{rm_run} is not a reward model (no value head)")
    return model, tokenizer


def pair_quality(
    margins: Sequence[float], kinds: Sequence[str], *, bins: int = 10
) -> dict[str, Any]:
    """Accuracy, ECE with its reliability bins, and accuracy by negative kind of pairs whose
    `margins` are r(gold-better) - r(gold-worse): a pair is correct when its margin is > 0,
    and sigmoid(margin) is the predicted probability that the gold-better side wins."""
    margins = np.asarray(margins, np.float64)
    correct = margins > 0
    ece, table = expected_calibration_error(margins, bins, return_bins=True)
    groups: dict[str, list[bool]] = defaultdict(list)
    for kind, ok in zip(kinds, correct.tolist(), strict=True):
        groups[kind].append(ok)
    return {
        "accuracy": float(correct.mean()) if len(margins) else None,
        "n": len(margins),
        "ece": ece if len(margins) else None,
        "reliability": table,
        "by_negative_kind": {
            kind: {"accuracy": float(np.mean(oks)), "n": len(oks)}
            for kind, oks in sorted(groups.items())
        },
    }


def rm_quality(
    rm_run: str | Path,
    pair_records: Sequence[dict[str, Any]],
    *,
    bins: int = 10,
    batch_size: int = 64,
) -> dict[str, Any]:
    """A reward model on held-out preference records: a pair is correct when the RM scores
    its gold-better side higher (`chosen`, or `rejected` when the label was `flipped`).

    Returns {"accuracy", "n", "ece", "reliability": [{"low", "high", "confidence",
    "accuracy", "count"}] (the `bins` equal-width bins of confidence max(p, 1 - p), p =
    sigmoid(margin), against the gold order), "by_negative_kind": {kind: {"accuracy", "n"}},
    "label_accuracy" (against the labels as given, flips included), "skipped" (pairs with
    a side longer than the RM's context)}. Scores are the raw rewards of
    `trainers.reward_model.completion_rewards`, the way the RM was trained to score."""
    model, tokenizer = _reward_model(rm_run)
    examples = [
        {"prompt": r["prompt"], "completion": r[side]}
        for side in ("chosen", "rejected")
        for r in pair_records
    ]
    rewards = completion_rewards(model, tokenizer, examples, batch_size)
    chosen, rejected = rewards[: len(pair_records)], rewards[len(pair_records) :]
    fits = np.isfinite(chosen) & np.isfinite(rejected)
    label_margin = (chosen - rejected)[fits]
    flipped = np.array([bool(r["flipped"]) for r in pair_records], bool)[fits]
    margins = np.where(flipped, -label_margin, label_margin)
    kinds = [str(r.get("negative_kind")) for r, ok in zip(pair_records, fits, strict=True) if ok]
    report = pair_quality(margins, kinds, bins=bins)
    report["label_accuracy"] = float(np.mean(label_margin > 0)) if len(margins) else None
    report["skipped"] = int((~fits).sum())
    return report


def gold_agreement(
    proxy: Sequence[float], gold: Sequence[float], groups: Sequence[int]
) -> dict[str, Any]:
    """Over pairs of completions of the same prompt (`groups`) whose gold scores differ, the
    share the proxy orders as gold does (a proxy tie counts half; NaN proxies are left out).

    {"agreement" (None without such pairs), "pairs", "proxy_ties", "gold_ties" (same-prompt
    pairs left out for equal gold), "prompts" (prompts with at least one pair)}."""
    proxy, gold = np.asarray(proxy, np.float64), np.asarray(gold, np.float64)
    by_prompt: dict[int, list[int]] = defaultdict(list)
    for row, group in enumerate(groups):
        if np.isfinite(proxy[row]):
            by_prompt[int(group)].append(row)
    agree, pairs, ties, gold_ties, prompts = 0.0, 0, 0, 0, 0
    for rows in by_prompt.values():
        counted = 0
        for i, j in itertools.combinations(rows, 2):
            if gold[i] == gold[j]:
                gold_ties += 1
                continue
            counted += 1
            product = np.sign(proxy[i] - proxy[j]) * np.sign(gold[i] - gold[j])
            agree += 1.0 if product > 0 else 0.5 if product == 0 else 0.0
            ties += product == 0
        pairs += counted
        prompts += counted > 0
    return {
        "agreement": agree / pairs if pairs else None,
        "pairs": pairs,
        "proxy_ties": int(ties),
        "gold_ties": gold_ties,
        "prompts": prompts,
    }


def rm_gold_agreement(rm_run: str | Path | None, samples: dict[str, Any]) -> dict[str, Any]:
    """`gold_agreement` of a reward model on a policy's samples (`sample_policy` with group
    >= 2): the distribution a proxy is optimised on. The samples' own "proxy" is used when
    they were scored by this reward model (`rm_run` their "reward_run", or None), on the
    sampled tokens exactly as the trainers score them; otherwise the RM scores the decoded
    texts (prompt + completion + EOS, `completion_rewards`; a truncated completion gets an EOS
    it did not have)."""
    if rm_run is None or ("proxy" in samples and str(rm_run) == samples.get("reward_run")):
        proxy = np.asarray(samples["proxy"], np.float64)
        source = samples.get("reward_run")
    else:
        model, tokenizer = _reward_model(rm_run)
        examples = [
            {"prompt": samples["prompts"][p], "completion": text}
            for p, text in zip(samples["prompt"], samples["text"], strict=True)
        ]
        proxy = completion_rewards(model, tokenizer, examples)
        source = str(rm_run)
    return {"reward_run": source, **gold_agreement(proxy, samples["gold"], samples["prompt"])}
