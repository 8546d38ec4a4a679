"""`kinrl tldr eval`: policies' TL;DR summaries against the human references, in the report
format of `evaluators/report.py` (report.md, results.json) plus `judgements.jsonl`.

For each run, the first `limit` prompts of the SFT folder's split are summarised
(`evaluators.accuracy.complete`, at most 53 new tokens, greedy unless a temperature is given)
and measured by:

* ROUGE-1/2/L F1 against the reference (`rouge-score`, with its Porter stemmer), mean over
  the prompts;
* the win rate against the reference: a judge sees the two summaries as A and B in an order
  drawn per prompt from `seed` and logged (`judgements.jsonl`: which was A, the verdict); a
  tie counts one half. The interval is a 95% bootstrap over prompts. The default judge is a
  local reward model (`rm:RUN`: the higher normalised reward wins); any callable
  `judge(prompts, a, b) -> [0 (A better), 1 (B better) or 0.5]` plugs in as `module:function`;
* lengths: words and GPT-2 tokens of the summaries and of the references;
* with a reward model: its mean normalised reward of the summaries and of the references, its
  agreement with the human `choice` on the preference folder's split, and that agreement by
  the annotators' `confidence` (1..9) beside the model's mean confidence sigmoid(|margin|).
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.report import heading, interval, pct, table, write_report, write_text_atomic
from tasks.registry import PREFERENCE_KIND

Judge = Callable[[Sequence[str], Sequence[str], Sequence[str]], Sequence[float]]
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
MAX_NEW_TOKENS = 53


# ----------------------------------------------------------------------------- reward model


class RewardModel:
    """A `kinrl train rm` run scoring prompt + completion + EOS, minus its stored offset."""

    def __init__(self, run: str | Path, batch_size: int = 32) -> None:
        from trainers.checkpoint import load_run, read_run_config
        from trainers.reward_model import OFFSET_FILE, read_reward_offset

        if read_run_config(run).get("method") != "rm":
            raise ValueError(f"{run} is not a reward-model run (kinrl train rm)")
        if not (Path(run) / OFFSET_FILE).exists():
            raise ValueError(f"{run} has not finished training (no {OFFSET_FILE})")
        self.run = str(run)
        self.model, self.cfg, self.tokenizer = load_run(run)
        self.offset = read_reward_offset(run)
        self.batch_size = batch_size

    def scores(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """(N,) normalised rewards; NaN for a sequence longer than the model's context."""
        from flax import nnx

        from trainers.data import TokenizedSplit, fixed_size_chunks, make_batch
        from trainers.reward_model import _rewards

        tok = self.tokenizer
        prompt_ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
        completion_ids = tok(list(completions), add_special_tokens=False)["input_ids"]
        sequences = [np.array([*p, *c, tok.eos_token_id], np.int32)
                     for p, c in zip(prompt_ids, completion_ids, strict=True)]  # fmt: skip
        fits = np.array([len(s) <= self.cfg.n_positions for s in sequences])
        kept = [s for s, ok in zip(sequences, fits, strict=True) if ok]
        out = np.full(len(sequences), np.nan)
        if not kept:
            return out
        data = TokenizedSplit(tuple(kept), np.zeros(len(kept), np.int64))
        graphdef, state = nnx.split(self.model)
        values = np.zeros(len(kept))
        for chunk, filled in fixed_size_chunks(np.arange(len(kept)), self.batch_size):
            batch = make_batch(data, filled, grad_accum=1, pad_id=tok.pad_token_id,
                               max_length=self.cfg.n_positions)  # fmt: skip
            rewards = _rewards(graphdef, state, batch.tokens[0], batch.attention_mask[0])
            values[chunk] = np.asarray(rewards)[: len(chunk)]
        out[fits] = values - self.offset
        return out

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[float]:
        """1 where B's reward is higher, 0 where A's is, 0.5 on a tie or an unscored side."""
        ra, rb = self.scores(prompts, a), self.scores(prompts, b)
        return [0.5 if not (x < y or x > y) else float(y > x) for x, y in zip(ra, rb, strict=True)]


def load_judge(spec: str) -> tuple[Judge, RewardModel | None]:
    """`rm:RUN` (a reward model) or `module:function` (a judge callable)."""
    if spec.startswith("rm:"):
        reward_model = RewardModel(spec[3:])
        return reward_model.judge, reward_model
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--judge must be rm:RUN or module:function (got {spec!r})")
    try:
        judge = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"--judge {spec} cannot be imported: {error}") from None
    if not callable(judge):
        raise ValueError(f"--judge {spec} is not callable")
    return judge, None


# ----------------------------------------------------------------------------- measures


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L F1 (`rouge_score`, stemmed)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out: dict[str, list[float]] = {name: [] for name in ROUGE_TYPES}
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)
        for name in ROUGE_TYPES:
            out[name].append(scores[name].fmeasure)
    return out


def bootstrap(values: Sequence[float], seed: int = 0, resamples: int = 2000) -> dict[str, float]:
    """{"mean", "low", "high"}: the mean and its 95% percentile bootstrap interval."""
    array = np.asarray(values, np.float64)
    if not len(array):
        return {"mean": math.nan, "low": math.nan, "high": math.nan}
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, len(array), (resamples, len(array)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(array.mean()), "low": float(low), "high": float(high)}


def length_stats(texts: Sequence[str]) -> dict[str, float]:
    """Words and GPT-2 tokens: mean, median, max; and how many are empty."""
    from tasks.tldr import gpt2

    words = [len(t.split()) for t in texts]
    tokens = [gpt2.count(t) for t in texts]
    stats: dict[str, float] = {"n": len(texts), "empty": sum(1 for t in texts if not t.strip())}
    for name, values in (("words", words), ("tokens", tokens)):
        stats[f"{name}_mean"] = float(np.mean(values)) if values else math.nan
        stats[f"{name}_median"] = float(statistics.median(values)) if values else math.nan
        stats[f"{name}_max"] = max(values, default=0)
    return stats


def win_rate(
    judge: Judge, prompts: Sequence[str], policy: Sequence[str], references: Sequence[str],
    seed: int = 0,
) -> tuple[list[float], list[dict[str, Any]]]:  # fmt: skip
    """Per prompt: 1 when the policy's summary wins, 0 when the reference's does, 0.5 on a
    tie; and the log (which was shown as A, the judge's verdict). The order is drawn per
    prompt from `seed`."""
    rng = np.random.default_rng(seed)
    policy_first = rng.random(len(prompts)) < 0.5
    a = [p if first else r for p, r, first in zip(policy, references, policy_first, strict=True)]
    b = [r if first else p for p, r, first in zip(policy, references, policy_first, strict=True)]
    verdicts = [float(v) for v in judge(prompts, a, b)]
    if len(verdicts) != len(prompts) or any(v not in (0.0, 0.5, 1.0) for v in verdicts):
        raise ValueError("the judge must return 0 (A better), 1 (B better) or 0.5 per prompt")
    wins = [v if not first else 1.0 - v for v, first in zip(verdicts, policy_first, strict=True)]
    said = {0.0: "A", 0.5: "tie", 1.0: "B"}
    log = [{"a": "policy" if first else "reference", "verdict": said[v]}
           for v, first in zip(verdicts, policy_first, strict=True)]  # fmt: skip
    return wins, log


def agreement(reward_model: RewardModel, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The reward model against the human choice: accuracy (chosen scores higher; a tie is
    half), its 95% interval, and by annotator confidence: count, accuracy, and the model's
    mean confidence sigmoid(|margin|)."""
    prompts = [r["prompt"] for r in records]
    chosen = reward_model.scores(prompts, [r["chosen"] for r in records])
    rejected = reward_model.scores(prompts, [r["rejected"] for r in records])
    margin = chosen - rejected
    scored = ~np.isnan(margin)
    correct = np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))[scored]
    model_confidence = 1.0 / (1.0 + np.exp(-np.abs(margin[scored])))
    levels = [r.get("confidence") for r, ok in zip(records, scored, strict=True) if ok]
    by_confidence = {}
    for level in sorted({c for c in levels if c is not None}):
        inside = np.array([c == level for c in levels])
        by_confidence[str(level)] = {
            "n": int(inside.sum()),
            "accuracy": float(correct[inside].mean()),
            "model_confidence": float(model_confidence[inside].mean()),
        }
    return {"n": int(scored.sum()), "unscored": int((~scored).sum()),
            "accuracy": bootstrap(correct.tolist()), "by_confidence": by_confidence}  # fmt: skip


# ----------------------------------------------------------------------------- the command


def read_responses(path: str | Path, limit: int | None = None) -> dict[str, list[str]]:
    """{"prompts", "references", "summaries"} of a CSV with `query`, `reference_responses` and
    `postprocessed_response` columns (summaries written by some model, e.g. OpenAI's 1B SFT
    sample), the first `limit` rows."""
    from tasks.tldr.sources import read_references

    rows = read_references(path)[:limit]
    with Path(path).open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if "postprocessed_response" not in (reader.fieldnames or []):
            raise ValueError(f"--responses {path} lacks the column postprocessed_response")
        summaries = [row["postprocessed_response"] or "" for row in reader][: len(rows)]
    return {"prompts": [r.query.lstrip() for r in rows],
            "references": [r.reference.strip() for r in rows],
            "summaries": [text.strip() for text in summaries]}  # fmt: skip


def evaluate(
    runs: dict[str, str],
    data: str | Path | None,
    out: str | Path,
    *,
    judge: str | None = None,
    reward_model: str | None = None,
    responses: str | Path | None = None,
    split: str = "validation",
    limit: int = 256,
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Summarise `split` of DATA/sft with each run (name -> run folder), measure, and write the
    report folder `out`; returns results.json's content. `judge` defaults to `rm:` +
    `reward_model`; `reward_model` also gives the agreement figures. With `responses` (a CSV,
    `read_responses`), its prompts and references are used instead of DATA's and its
    summaries are measured as one more entry; no win rate without a judge then."""
    from trainers.data import has_split, load_records

    if responses is not None:
        given = read_responses(responses, limit)
        prompts, references = given["prompts"], given["references"]
        source = str(Path(responses).resolve())
    else:
        if data is None:
            raise ValueError("give --data DIR (a tldr prepare folder) or --responses CSV")
        records = load_records(Path(data) / "sft", split, limit=limit)
        prompts = [r["prompt"] for r in records]
        references = [r["completion"].strip() for r in records]
        source = str(Path(data).resolve())
    if not prompts:
        raise ValueError(f"{source} has no {split} records to evaluate")
    if runs and judge is None and reward_model is None:
        raise ValueError("give --rm RUN (the default judge) or --judge module:function")
    rm = RewardModel(reward_model, batch_size) if reward_model else None
    judge_fn: Judge | None = None
    judge_name = None
    if judge is not None and judge != f"rm:{reward_model}":
        judge_fn, judge_rm = load_judge(judge)
        judge_name, rm = judge, rm or judge_rm
    elif rm is not None:
        judge_fn, judge_name = rm.judge, f"rm:{reward_model}"
    results: dict[str, Any] = {
        "data": source, "split": split if responses is None else "csv", "prompts": len(prompts),
        "judge": judge_name, "reward_model": rm.run if rm else None, "seed": seed,
        "max_new_tokens": max_new_tokens, "temperature": temperature, "interval_level": 0.95,
        "references": {"lengths": length_stats(references)}, "runs": {},
    }  # fmt: skip
    if rm is not None:
        results["references"]["reward"] = bootstrap(_finite(rm.scores(prompts, references)))
    log: list[dict[str, Any]] = []
    sources = [(name, str(run), None) for name, run in runs.items()]
    if responses is not None:
        sources.append(("responses", f"{source}:postprocessed_response", given["summaries"]))
    for index, (name, run, fixed) in enumerate(sources):
        decoded = fixed if fixed is not None else _decode(run, prompts, batch_size,
                                                           max_new_tokens, temperature, seed,
                                                           progress)  # fmt: skip
        summaries = [(text or "").strip() for text in decoded]
        scores = rouge(summaries, references)
        entry: dict[str, Any] = {
            "run": run,
            "unanswered": sum(1 for text in decoded if text is None),
            "rouge": {k: bootstrap(v, seed) for k, v in scores.items()},
            "win_rate": None,
            "ties": None,
            "lengths": length_stats(summaries),
        }
        wins, order = None, None
        if judge_fn is not None:
            wins, order = win_rate(judge_fn, prompts, summaries, references, seed + 1 + index)
            entry["win_rate"] = bootstrap(wins, seed)
            entry["ties"] = sum(1 for w in wins if w == 0.5)
        rewards = rm.scores(prompts, summaries) if rm is not None else None
        if rewards is not None:
            entry["reward"] = bootstrap(_finite(rewards), seed)
        results["runs"][name] = entry
        for i, prompt in enumerate(prompts):
            log.append({"run": name, "index": i, "prompt": prompt, "summary": summaries[i],
                        "reference": references[i], **(order[i] if order else {}),
                        "policy_wins": None if wins is None else wins[i],
                        "rougeL": scores["rougeL"][i],
                        "reward": None if rewards is None else _number(rewards[i])})  # fmt: skip
    if rm is not None and data is not None and has_split(Path(data) / "preference", split):
        pairs = load_records(Path(data) / "preference", split, PREFERENCE_KIND, limit=limit)
        results["reward_model_agreement"] = agreement(rm, pairs)
    folder = write_report(out, markdown(results), results)
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in log)
    write_text_atomic(folder / "judgements.jsonl", text)
    return results


def _decode(run: str, prompts: list[str], batch_size: int, max_new_tokens: int,
            temperature: float, seed: int, progress: bool) -> list[str | None]:  # fmt: skip
    """The run's summaries of `prompts` (None where a prompt leaves no room)."""
    from evaluators.accuracy import complete
    from trainers.checkpoint import load_policy

    model, _, tokenizer = load_policy(run)
    return complete(model, tokenizer, prompts, batch_size=batch_size,
                    max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                    progress=progress)  # fmt: skip


def _finite(values: np.ndarray) -> list[float]:
    return [float(v) for v in values if np.isfinite(v)]


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def markdown(results: dict[str, Any]) -> str:
    """report.md of `evaluate`'s results (every number taken from them)."""
    runs = results["runs"]
    lines = [
        "# TL;DR evaluation",
        "",
        f"{results['prompts']} prompts of the `{results['split']}` split of "
        f"`{results['data']}`; runs' summaries of at most {results['max_new_tokens']} new "
        f"tokens at temperature {results['temperature']} (0: greedy). Judge: "
        f"`{results['judge'] or 'none (no win rate)'}`; the A/B order is drawn per prompt and "
        "logged in `judgements.jsonl`. ROUGE: F1 with stemming (`rouge-score`). Intervals: 95% "
        "bootstrap over prompts.",
        heading("Summaries against the references"),
        table(
            ["run", "ROUGE-1", "ROUGE-2", "ROUGE-L", "win rate vs reference", "ties"],
            [
                [
                    name,
                    r["rouge"]["rouge1"]["mean"],
                    r["rouge"]["rouge2"]["mean"],
                    interval(r["rouge"]["rougeL"], 3, percent=False),
                    interval(r["win_rate"]),
                    r["ties"],
                ]
                for name, r in runs.items()
            ],
        ),
        heading("Lengths"),
        table(
            [
                "summaries of",
                "words (mean)",
                "words (median)",
                "GPT-2 tokens (mean)",
                "tokens (max)",
                "empty",
            ],
            [
                [
                    name,
                    s["words_mean"],
                    s["words_median"],
                    s["tokens_mean"],
                    s["tokens_max"],
                    s["empty"],
                ]
                for name, s in [
                    *((n, r["lengths"]) for n, r in runs.items()),
                    ("references", results["references"]["lengths"]),
                ]
            ],
        ),
    ]
    if results.get("reward_model"):
        rows = [[name, interval(r.get("reward"), 3, percent=False)] for name, r in runs.items()]
        rows.append(["references", interval(results["references"].get("reward"), 3, False)])
        lines += [
            heading("Reward model"),
            f"`{results['reward_model']}`, normalised so that the SFT folder's reference "
            "summaries score 0 on average.",
            "",
            table(["summaries of", "mean normalised reward"], rows),
        ]
    agreement_figures = results.get("reward_model_agreement")
    if agreement_figures:
        lines += [
            f"Agreement with the human choice on {agreement_figures['n']} comparisons: "
            f"{interval(agreement_figures['accuracy'])}.",
            "",
            table(
                ["annotator confidence", "pairs", "agreement", "model confidence"],
                [
                    [level, f["n"], pct(f["accuracy"]), pct(f["model_confidence"])]
                    for level, f in agreement_figures["by_confidence"].items()
                ],
            ),
        ]
    return "\n".join(lines) + "\n"
