"""`kinrl generate`: a kinship dataset folder with its splits, config and dataset card."""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from tasks.io import (
    FORMATS,
    SplitWriters,
    chunk_jobs,
    commit_output,
    prepare_output,
    run_jobs,
)
from tasks.kinship.config import KinshipConfig
from tasks.kinship.generator import make_example
from tasks.kinship.pairs import (
    FeedbackConfig,
    check_feedback_options,
    feedback_config,
    make_binary,
    make_pair,
)
from tasks.kinship.splits import Holdouts, LeakCheck, family_fingerprint, plan_splits
from tasks.kinship.stats import DatasetStats
from tasks.registry import KINSHIP


def parquet_schema(kind: str = "examples"):
    """Explicit column types, so every chunk (and `datasets`) sees the same schema."""
    import pyarrow as pa

    string = pa.string()
    columns = [
        ("id", string),
        ("split", string),
        ("difficulty", pa.int32()),
        ("seed", pa.int64()),
        ("people", pa.list_(pa.struct([("name", string), ("gender", string)]))),
        ("parents", pa.list_(pa.list_(string))),
        ("spouses", pa.list_(pa.list_(string))),
        ("facts", pa.list_(pa.struct([("kind", string), ("a", string), ("b", string)]))),
        ("description", string),
        ("question", string),
        ("question_type", string),
        ("query", pa.struct([("subject", string), ("object", string), ("term", string)])),
        ("answer", string),
        ("answers", pa.list_(string)),
        ("hops", pa.int32()),
        ("prompt", string),
    ]
    if kind == "preference":
        columns += [
            ("chosen", string),
            ("rejected", string),
            ("chosen_reward", pa.float64()),
            ("rejected_reward", pa.float64()),
            ("flipped", pa.bool_()),
            ("negative_kind", string),
            ("chosen_first", pa.bool_()),
            ("chosen_chain_valid", pa.bool_()),
            ("rejected_chain_valid", pa.bool_()),
        ]
    else:
        columns.append(("completion", string))
    if kind == "feedback":
        columns += [
            ("label", pa.bool_()),
            ("gold_reward", pa.float64()),
            ("flipped", pa.bool_()),
            ("negative_kind", string),
        ]
    return pa.schema(columns)


def _make(
    kind: str,
    config: KinshipConfig,
    feedback: FeedbackConfig | None,
    seed: int,
    split: str,
    index: int,
) -> dict[str, Any]:
    if kind == "preference":
        return make_pair(config, feedback, seed, index, split)
    if kind == "feedback":
        return make_binary(config, feedback, seed, index, split)
    return make_example(config, seed, index, split)


def _resolve_leaks(
    folder: Path, fmt: str, leaks: list[tuple[int, str, str]], order: list[str]
) -> dict[str, int]:
    """Make the splits family-disjoint after the fact: a family drawn into several splits (small
    families at low levels repeat by chance: 7 in 120,000 records at level 1) stays only in
    the latest of them in `order` (the evaluation splits come after train) and its records are
    removed from the others. Returns the records removed per split."""
    splits_of: dict[int, set[str]] = {}
    for fingerprint, first, second in leaks:
        splits_of.setdefault(fingerprint, set()).update((first, second))
    drop: dict[str, set[int]] = {}
    for fingerprint, splits in splits_of.items():
        keep = max(splits, key=order.index)
        for split in splits - {keep}:
            drop.setdefault(split, set()).add(fingerprint)
    removed = {}
    for split, fingerprints in sorted(drop.items()):
        path = folder / f"{split}.{fmt}"
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            rows = table.to_pylist()
            keep_rows = [i for i, r in enumerate(rows) if family_fingerprint(r) not in fingerprints]
            pq.write_table(table.take(keep_rows), path)
            removed[split] = len(rows) - len(keep_rows)
            continue
        kept = path.with_suffix(".kept")
        count = 0
        with path.open(encoding="utf-8") as src, kept.open("w", encoding="utf-8") as dst:
            for line in src:
                if family_fingerprint(json.loads(line)) in fingerprints:
                    count += 1
                else:
                    dst.write(line)
        os.replace(kept, path)
        removed[split] = count
    return removed


def generate_dataset(
    out: str | Path,
    config: KinshipConfig,
    n: int,
    *,
    seed: int = 0,
    kind: str = "examples",
    feedback: FeedbackConfig | None = None,
    fmt: str = "jsonl",
    num_proc: int = 1,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    holdouts: Holdouts | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a dataset folder: `<split>.jsonl|parquet`, `config.json` and `README.md`.

    Returns the summary written to config.json (counts, statistics, leak check).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    kind_name = KINSHIP.kind(kind).name  # ValueError for a kind the registry does not have
    if kind != "examples":
        feedback = feedback or FeedbackConfig()
    if num_proc < 1:
        raise ValueError(f"--num-proc must be a positive integer (got {num_proc})")
    holdouts = holdouts or Holdouts()
    plans = plan_splits(
        config,
        n,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        holdouts=holdouts,
    )
    out = Path(out)
    tmp = prepare_output(out, overwrite)
    try:
        splits = [
            (
                p.name,
                p.start,
                p.size,
                functools.partial(_make, kind, p.config, feedback, seed, p.name),
            )
            for p in plans
        ]
        jobs = list(
            chunk_jobs(splits, DatasetStats, family_fingerprint, keep_records=fmt == "parquet")
        )
        writers = SplitWriters(tmp, fmt, parquet_schema(kind) if fmt == "parquet" else None)
        stats = DatasetStats()
        leaks = LeakCheck()
        total = sum(p.size for p in plans)
        # Closed on the way out, whatever stops the loop (Ctrl-C while a chunk is written): a
        # suspended generator would keep its worker pool alive until garbage collection.
        chunks = run_jobs(jobs, num_proc, total, progress)
        try:
            for chunk in chunks:
                writers.write(chunk)
                leaks.add(chunk.split, chunk.fingerprints)
                stats.merge(chunk.stats)
        finally:
            chunks.close()
            writers.close()
        dropped = _resolve_leaks(tmp, fmt, leaks.leaks, [p.name for p in plans])
        for split, count in dropped.items():
            writers.counts[split] -= count
        summary = {
            "kind": kind_name,
            "seed": seed,
            "n": n,
            "format": fmt,
            "config": config.to_dict(),
            "feedback": feedback.to_dict() if feedback else None,
            "holdouts": {
                "hops": holdouts.hops,
                "relations": list(holdouts.relations),
                "names": holdouts.names,
            },
            "splits": {
                p.name: {"size": p.size, "first_index": p.start, "config": p.config.to_dict()}
                for p in plans
            },
            "counts": dict(writers.counts),
            "statistics": stats.to_dict(),
            "leak_check": {"families": leaks.families, "in_two_splits": 0, "dropped": dropped},
        }
        (tmp / "config.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(dataset_card(summary), encoding="utf-8")
        commit_output(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


class _Terminated(KeyboardInterrupt):
    """SIGTERM during `generate_command`: shut down like Ctrl-C (workers, temporary folder)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the cleanup finish
    raise _Terminated


def generate_command(
    out: str | Path,
    difficulty: int,
    knobs: dict[str, Any],
    n: int,
    *,
    feedback: dict[str, Any] | None = None,
    holdout_hops: int | None = None,
    holdout_relations: tuple[str, ...] = (),
    holdout_names: bool = False,
    overwrite: bool = False,
    **kwargs: Any,
) -> dict[str, Any] | None:
    """`kinrl generate`: every check of the input (ValueError, naming the option's field)
    before any work, then `generate_dataset` of the level-`difficulty` preset with `knobs`
    overridden. SIGTERM is handled like Ctrl-C (no output is left behind), and returns None."""
    from tasks.io import check_output_folder
    from tasks.kinship.generator import GenerationError

    config = KinshipConfig.for_level(difficulty, **knobs)
    holdouts = Holdouts(hops=holdout_hops, relations=holdout_relations, names=holdout_names)
    fractions = {k: kwargs[k] for k in ("validation_fraction", "test_fraction") if k in kwargs}
    plan_splits(config, n, holdouts=holdouts, **fractions)
    check_feedback_options(kwargs.get("kind", "examples"), feedback or {})
    examples = kwargs.get("kind", "examples") == "examples"
    feedback_cfg = None if examples else feedback_config(feedback or {})
    check_output_folder(out, overwrite)  # last: the other errors come first
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return generate_dataset(out, config, n, feedback=feedback_cfg, holdouts=holdouts,
                                overwrite=overwrite, **kwargs)  # fmt: skip
    except GenerationError as error:
        raise ValueError(str(error)) from None
    except _Terminated:
        return None
    finally:
        if main_thread:  # None: a handler not installed from Python; restore the default
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def dataset_card(summary: dict[str, Any]) -> str:
    """A human-readable card: what was generated, with which knobs, and what it contains."""
    fmt = summary["format"]
    lines = [
        "# Kinship dataset (kinrl)",
        "",
        "Procedurally generated family trees described in text, with questions whose answers are "
        "computed from the graph. Every record satisfies the kinship spec "
        "(`docs/spec/kinship.md` in the kinrl repository); score completions with "
        "`tasks.kinship.score`.",
        "",
        "```python",
        "import datasets",
        f'ds = datasets.load_dataset("{"json" if fmt == "jsonl" else "parquet"}", data_files={{',
    ]
    lines += [f'    "{name}": "{name}.{fmt}",' for name in summary["counts"]]
    lines += ["})", "```", "", "## Splits", "", "| split | records | hops | name pool | families |"]
    lines.append("|---|---|---|---|---|")
    for name, split in summary["splits"].items():
        cfg = split["config"]
        families = ", ".join(cfg["relation_families"]) or "all"
        lines.append(
            f"| {name} | {summary['counts'].get(name, 0)} | {cfg['min_hops']}..{cfg['max_hops']} "
            f"| {cfg['name_pool']} | {families} |"
        )
    leak = summary["leak_check"]
    lines += [
        "",
        f"Leak check: {leak['families']} distinct families, {leak['in_two_splits']} in more than "
        "one split"
        + (
            f" (records of families drawn into two splits, removed from the earlier split: "
            f"{', '.join(f'{k} {v}' for k, v in leak['dropped'].items())})."
            if leak.get("dropped")
            else "."
        ),
        "",
        "## Statistics per level",
        "",
        "| level | records | mean people | mean mentioned | mean facts | mean hops | "
        "relation | entity | count | yesno | families |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level, s in summary["statistics"].items():
        q = s["question_types"]
        lines.append(
            f"| {level} | {s['records']} | {s['mean_people']} | {s['mean_mentioned']} | "
            f"{s['mean_facts']} | {s['mean_hops']} | {q.get('relation', 0)} | "
            f"{q.get('entity', 0)} | {q.get('count', 0)} | {q.get('yesno', 0)} | "
            f"{len(s['relation_families'])} |"
        )
    for level, s in summary["statistics"].items():
        lines += ["", f"Level {level} questions by relation family (query term or answer):", ""]
        lines += [f"- {family}: {count}" for family, count in s["relation_families"].items()]
    lines += _feedback_section(summary)
    lines += ["", "## Config", "", "```json", json.dumps(summary["config"], indent=2), "```", ""]
    lines += [f"Seed {summary['seed']}; holdouts: `{json.dumps(summary['holdouts'])}`.", ""]
    return "\n".join(lines)


_COLUMNS = {
    "kinship/preference": "`prompt`/`chosen`/`rejected` (TRL's preference columns), "
    "`chosen_reward`/`rejected_reward` (gold rewards), `flipped` (the label disagrees with the "
    "gold order), `negative_kind`, `chosen_first` (position shown), "
    "`chosen_chain_valid`/`rejected_chain_valid` (reasoning chain true).",
    "kinship/feedback": "`prompt`/`completion`/`label` (TRL's unpaired-preference columns, "
    "label true = desirable), `gold_reward`, `flipped`, `negative_kind` (null for reference "
    "completions).",
}


def _feedback_section(summary: dict[str, Any]) -> list[str]:
    feedback = summary.get("feedback")
    if not feedback:
        return []
    lines = ["", "## Feedback", "", _COLUMNS[summary["kind"]], "", "| knob | value |"]
    lines.append("|---|---|")
    for name, value in feedback["annotator"].items():
        lines.append(f"| annotator.{name} | {value} |")
    for name in ("min_margin", "desirable_fraction"):
        lines.append(f"| {name} | {feedback[name]} |")
    weights = ", ".join(f"{k}={w:g}" for k, w in feedback["negative_weights"].items())
    lines.append(f"| negative_weights | {weights} |")
    for level, s in summary["statistics"].items():
        lines += ["", f"Level {level}: flipped fraction {s.get('flipped_fraction', 0)}; "]
        lines[-1] += "negative kinds " + ", ".join(
            f"{k} {v}" for k, v in s.get("negative_kinds", {}).items()
        )
        if "labels" in s:
            lines[-1] += "; labels " + ", ".join(f"{k} {v}" for k, v in s["labels"].items())
    return lines
