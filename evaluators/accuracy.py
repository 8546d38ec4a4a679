"""Greedy-decoding accuracy on a kinship split, overall and broken down.

Each prompt is completed greedily by the KV-cache sampler and scored by the gold reward
(`tasks.kinship.score`); an example counts as correct when its score is exactly 1. Breakdowns:
question type, difficulty, hops, and relation family (of the answer term for relation
questions, of the queried term otherwise).

    report = evaluate_run("runs/sft-l1", "data/l1", split="test")
    report["accuracy"], report["by_question_type"]["count"]["accuracy"]
    report["interval"]["low"], report["interval"]["high"]   # bootstrap 95% (evaluators.stats)

`pass_at_k_report` scores several sampled completions per prompt the same way.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from evaluators.stats import bootstrap_interval, pass_at_k_items
from tasks.kinship import score
from tasks.kinship.terms import family_of
from trainers.checkpoint import load_policy
from trainers.data import bucket_length, load_records
from trainers.sampling import generate, shard_rows
from trainers.tokenizer import decode


def complete(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int = 64,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> list[str | None]:
    """Completions of `prompts` (greedy when `temperature` is 0, else sampled with `top_k` and
    `top_p`), decoded as the task writes text, without the EOS.

    Prompts are sorted by length, left-padded to a 32-token bucket and decoded `batch_size`
    at a time (a short last batch is filled with copies, so shapes repeat and each bucket
    compiles once), the rows split over all devices (`trainers.sampling.shard_rows`).
    `max_new_tokens` defaults to the room left in the context. A prompt that
    leaves no room to answer gets None. `progress`: a bar over the prompts.
    """
    graphdef, state = nnx.split(model)
    devices = jax.local_device_count()
    batch_size = -(-batch_size // devices) * devices  # rows split evenly over the devices
    state = shard_rows(state)[0]  # replicated once over every device (if several)
    n_positions = model.cfg.n_positions
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    completions: list[str | None] = [None] * len(encoded)
    order = [int(i) for i in np.argsort([len(e) for e in encoded], kind="stable")]
    order = [i for i in order if len(encoded[i]) < n_positions]
    key = jax.random.key(seed)
    bar = tqdm(total=len(order), unit="prompt", desc="decoding", disable=not progress)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = _left_pad([encoded[i] for i in chunk], batch_size, n_positions,
                              tokenizer.pad_token_id)  # fmt: skip
        room = n_positions - ids.shape[1]
        _, ids, mask = shard_rows(state, ids, mask)  # rows split over the devices
        key, step_key = jax.random.split(key)
        out = generate(
            graphdef, state, ids, mask, step_key,
            max_new_tokens=room if max_new_tokens is None else min(max_new_tokens, room),
            temperature=temperature or 1.0, top_k=top_k, top_p=top_p, greedy=temperature == 0,
            eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
        )  # fmt: skip
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        for row, index in enumerate(chunk):
            completions[index] = decode(tokenizer, tokens[row, : lengths[row]])
        bar.update(len(chunk))
    bar.close()
    return completions


def _left_pad(
    sequences: list[list[int]], rows: int, n_positions: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, T) ids and 0/1 mask, left-padded to a bucket of T; missing rows repeat the last
    sequence (their outputs are ignored)."""
    width = bucket_length(max(len(s) for s in sequences), n_positions - 1)
    ids = np.full((rows, width), pad_id, np.int32)
    mask = np.zeros((rows, width), np.int32)
    for row in range(rows):
        seq = sequences[min(row, len(sequences) - 1)]
        ids[row, width - len(seq) :] = seq
        mask[row, width - len(seq) :] = 1
    return ids, mask


def relation_family(record: dict[str, Any]) -> str:
    """The relation family an example is about: its answer's for relation questions, the
    queried term's otherwise."""
    if record["question_type"] == "relation":
        return family_of(record["answer"])
    return family_of(record["query"]["term"])


def accuracy_report(
    records: Sequence[dict[str, Any]], completions: Sequence[str | None]
) -> dict[str, Any]:
    """{"accuracy", "n", "mean_score", "no_room", "interval", "correct", "by_question_type",
    "by_difficulty", "by_hops", "by_family"}.

    "interval": the percentile bootstrap 95% interval of the accuracy over the items
    (`evaluators.stats.bootstrap_interval`; None with no records). "correct": each record's
    0/1 correctness in record order, for paired comparisons of two runs on the same items
    (`evaluators.stats.paired_bootstrap`) without decoding again. Each breakdown maps a value
    to {"accuracy", "n", "low", "high"}, the interval of that cell from 2,000 resamples
    (cells are many; more resamples only steady the endpoints, they do not narrow them).
    """
    scores = [0.0 if c is None else score(r, c) for r, c in zip(records, completions, strict=True)]
    correct = [int(s == 1.0) for s in scores]
    keys = {
        "by_question_type": lambda r: r["question_type"],
        "by_difficulty": lambda r: str(r["difficulty"]),
        "by_hops": lambda r: str(r["hops"]),
        "by_family": relation_family,
    }
    report: dict[str, Any] = {
        "accuracy": float(np.mean(correct)) if correct else 0.0,
        "n": len(records),
        "mean_score": float(np.mean(scores)) if scores else 0.0,
        "no_room": sum(c is None for c in completions),
        "interval": bootstrap_interval(correct) if correct else None,
        "correct": correct,
    }
    for name, key in keys.items():
        groups: dict[str, list[int]] = defaultdict(list)
        for record, ok in zip(records, correct, strict=True):
            groups[key(record)].append(ok)
        report[name] = {
            value: _cell(oks)
            for value, oks in sorted(groups.items(), key=lambda item: _sort_key(item[0]))
        }
    return report


def _cell(correct: list[int]) -> dict[str, Any]:
    """{"accuracy", "n", "low", "high"} of one breakdown cell."""
    interval = bootstrap_interval(correct, samples=2_000)
    return {"accuracy": interval["mean"], "n": len(correct),
            "low": interval["low"], "high": interval["high"]}  # fmt: skip


def pass_at_k_report(
    records: Sequence[dict[str, Any]],
    samples: Sequence[Sequence[str | None]],
    ks: Sequence[int] = (1, 4, 8),
) -> dict[str, Any]:
    """pass@k of sampled completions: {"pass@k": {k: {"mean", "low", "high"}}, "n",
    "samples"}.

    `samples[i]` holds the completions sampled for `records[i]` (None: no room to answer,
    counted wrong), the same number for every record; a completion is correct when its gold
    reward (`tasks.kinship.score`) is exactly 1. Each item's pass@k is the unbiased estimate
    of Chen et al. 2021 (`evaluators.stats.pass_at_k`); "mean" averages the items and
    "low"/"high" bound it by the bootstrap over items (the sampling noise within an item is
    already averaged by the estimator). Every k must be at most the samples per record.
    """
    if len(samples) != len(records):
        raise ValueError(f"need one list of samples per record ({len(records)} records, "
                         f"{len(samples)} lists)")  # fmt: skip
    if not records:
        raise ValueError("pass@k needs at least one record")
    sizes = {len(s) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"every record needs the same number of samples (got {sorted(sizes)})")
    n = sizes.pop()
    if bad := [k for k in ks if not 1 <= k <= n]:
        raise ValueError(f"every k must be in [1, {n}] with {n} samples per record (got {bad})")
    counts = [sum(c is not None and score(r, c) == 1.0 for c in completions)
              for r, completions in zip(records, samples, strict=True)]  # fmt: skip
    table = {}
    for k in ks:
        interval = bootstrap_interval(pass_at_k_items(counts, n, k))
        table[k] = {key: interval[key] for key in ("mean", "low", "high")}
    return {"pass@k": table, "n": len(records), "samples": n}


def _sort_key(value: str) -> tuple[int, Any]:
    return (0, int(value)) if value.isdigit() else (1, value)


def evaluate(
    model: Any,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Greedy accuracy report (see `accuracy_report`) of `model` on `records`."""
    prompts = [r["prompt"] for r in records]
    completions = complete(model, tokenizer, prompts, batch_size=batch_size, progress=progress)
    return accuracy_report(records, completions)


def check_report_path(path: str | os.PathLike[str] | None) -> None:
    """ValueError naming --json unless a report can be written to `path` (None: no report):
    checked before any decoding, so a typo costs nothing."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--json {path} is a folder; give a file path such as {path}/eval.json")
    folder = target.absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"--json {path}: its folder {folder} is missing or unwritable")


def write_report(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write `report` as JSON to `path`, whole or not at all (no temporary file left)."""
    tmp = Path(f"{path}.tmp")
    try:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path,
    split: str = "test",
    *,
    limit: int | None = None,
    batch_size: int = 64,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Greedy accuracy of a run's latest checkpoint on `split` of a dataset folder (the first
    `limit` records if given), also written as JSON to `json_path` when given."""
    check_report_path(json_path)
    model, _, tokenizer = load_policy(run_dir)
    records = load_records(data_dir, split, exact=True)[:limit]
    report = {
        "run": str(run_dir),
        "data": str(data_dir),
        "split": split,
        **evaluate(model, tokenizer, records, batch_size=batch_size),
    }
    if json_path is not None:
        write_report(report, json_path)
    return report
