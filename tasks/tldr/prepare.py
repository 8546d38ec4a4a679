"""`kinrl tldr prepare`: TL;DR comparisons and references -> the project's dataset folders.

    prepare(["comparisons_batch18.jsonl"], ["validation_sample_oai1b.csv"], "data/tldr-prep")

writes three dataset folders under OUT (each `<split>.jsonl`, `config.json`, a card README.md,
through `tasks/io.py`), which `kinrl train` and `datasets.load_dataset("json", ...)` read
unchanged:

* `OUT/preference` (`tldr/preference`: for rm and the DPO family): one record per comparison,
  `prompt` (the query, `tasks.tldr.preprocess`), `chosen` (the summary at index `choice`),
  `rejected`, `choice`, `chosen_policy`, `rejected_policy`, `reference_side` (which side is
  the human reference, policy `ref`, or null), `worker`, `confidence`, `batch`, `split` (the
  source's: train, valid1, valid2), `post_id`, `query_cut`.
* `OUT/feedback` (`tldr/feedback`: for kto): each comparison as a desirable (`label` true, the
  chosen summary) and an undesirable (`label` false) record, with its `policy`, `worker`,
  `confidence`, `split` and `post_id`.
* `OUT/sft` (`tldr/examples`: for sft, and the references of `kinrl tldr eval`): `prompt`,
  `completion` (a human reference summary), `source` (the CSV's line, or the comparison that
  showed the `ref` summary), `post_id`.

Output splits: a comparison's source split `train` goes to `train`, `valid1`/`valid2` to
`validation`, and the CNN/DM batches (`sources.CNNDM_BATCHES`) to `validation_cnndm`, apart
from TL;DR. References of a CSV go to `validation` (OpenAI's samples are of the validation
posts). With `holdout`, every TL;DR post (by its fitted query) goes instead to `validation`
with that probability, else to `train`, so a post's pairs and references never straddle the
two, whichever file they come from.

Filtered, and counted in the cards: pairs with an empty summary, pairs whose two summaries are
the same text, repeated comparison lines, empty and repeated references. Response caps (53
GPT-2 tokens for SFT, 169 for preference and feedback, with the EOS) cut longer responses,
also counted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.io import Chunk, OutputError, SplitWriters, commit_output, json_line, prepare_output
from tasks.registry import TLDR_EXAMPLES, TLDR_FEEDBACK, TLDR_PREFERENCE, DatasetKind
from tasks.tldr import preprocess as pre
from tasks.tldr.sources import (
    CNNDM_BATCHES,
    REFERENCE_POLICY,
    Comparison,
    Reference,
    Skipped,
    post_id,
    read_comparisons,
    read_references,
)

FOLDERS = {"preference": TLDR_PREFERENCE, "feedback": TLDR_FEEDBACK, "sft": TLDR_EXAMPLES}
SOURCE_SPLITS = {"train": "train", "valid1": "validation", "valid2": "validation",
                 "validation": "validation"}  # fmt: skip


@dataclass
class Prepared:
    """The records of each folder by split, and what was filtered, cut and skipped."""

    records: dict[str, dict[str, list[dict[str, Any]]]] = field(
        default_factory=lambda: {name: {} for name in FOLDERS}
    )
    filtered: Counter = field(default_factory=Counter)
    cut: Counter = field(default_factory=Counter)
    skipped: Skipped = field(default_factory=Skipped)

    def add(self, folder: str, split: str, record: dict[str, Any]) -> None:
        self.records[folder].setdefault(split, []).append(record)

    def counts(self, folder: str) -> dict[str, int]:
        return {split: len(rows) for split, rows in self.records[folder].items()}


def holdout_split(query: str, fraction: float) -> str:
    """`validation` for a `fraction` of the posts, else `train`: by a hash of the post's query
    (as fitted to the budget), the same for its comparisons and its references whatever their
    sources call the post."""
    digest = hashlib.sha256(f"kinrl/tldr/{query}".encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < fraction else "train"


def output_split(comparison: Comparison, holdout: float | None, query: str) -> str:
    if comparison.batch in CNNDM_BATCHES:
        return "validation_cnndm"
    if holdout is not None:
        return holdout_split(query, holdout)
    return SOURCE_SPLITS.get(comparison.split, comparison.split)


def _query(c: Comparison, budget: int, cache: dict[str, pre.Query]) -> pre.Query:
    key = f"{c.subreddit}\0{c.title}\0{c.post}"
    if key not in cache:
        cache[key] = pre.fit_query(c.subreddit, c.title, c.post, budget)
    return cache[key]


def _capped(text: str, cap: int, prepared: Prepared, what: str) -> str:
    capped, was_cut = pre.cap_response(pre.response(text), cap)
    prepared.cut[what] += was_cut
    return capped


def add_comparisons(
    prepared: Prepared,
    comparisons: Sequence[Comparison],
    *,
    budget: int = pre.QUERY_TOKENS,
    rm_cap: int = pre.RM_RESPONSE_TOKENS,
    sft_cap: int = pre.SFT_RESPONSE_TOKENS,
    holdout: float | None = None,
    seen: set[tuple[Any, ...]] | None = None,
) -> None:
    """The preference and feedback records of `comparisons` (and SFT examples of their `ref`
    summaries), filtered and capped, into `prepared`."""
    seen = set() if seen is None else seen
    queries: dict[str, pre.Query] = {}
    for c in comparisons:
        texts = [s.text.strip() for s in c.summaries]
        if not all(texts):
            prepared.filtered["pairs with an empty summary"] += 1
            continue
        if texts[0] == texts[1]:
            prepared.filtered["pairs of two identical summaries"] += 1
            continue
        key = (c.post_id, c.title, c.post, *texts, c.choice, c.worker, c.batch)
        if key in seen:
            prepared.filtered["repeated comparisons"] += 1
            continue
        seen.add(key)
        query = _query(c, budget, queries)
        prepared.cut["queries"] += query.cut
        split = output_split(c, holdout, query.text)
        chosen, rejected = c.summaries[c.choice], c.summaries[1 - c.choice]
        side = (
            "chosen" if chosen.policy == REFERENCE_POLICY
            else "rejected" if rejected.policy == REFERENCE_POLICY
            else None
        )  # fmt: skip
        common = {"worker": c.worker, "confidence": c.confidence, "batch": c.batch,
                  "split": c.split, "post_id": c.post_id}  # fmt: skip
        prepared.add("preference", split, {
            "prompt": query.text,
            "chosen": _capped(chosen.text, rm_cap, prepared, "preference responses"),
            "rejected": _capped(rejected.text, rm_cap, prepared, "preference responses"),
            "choice": c.choice, "chosen_policy": chosen.policy, "rejected_policy": rejected.policy,
            "reference_side": side, **common, "query_cut": query.cut,
        })  # fmt: skip
        for summary, label in ((chosen, True), (rejected, False)):
            prepared.add("feedback", split, {
                "prompt": query.text,
                "completion": _capped(summary.text, rm_cap, prepared, "feedback responses"),
                "label": label, "policy": summary.policy, **common,
            })  # fmt: skip
        for summary in c.summaries:
            if summary.policy == REFERENCE_POLICY and split != "validation_cnndm":
                _add_reference(prepared, split, query.text, summary.text, sft_cap,
                               f"{c.source} ({c.post_id})", c.post_id, seen)  # fmt: skip


def _add_reference(prepared: Prepared, split: str, prompt: str, text: str, cap: int,
                   source: str, post: str, seen: set[tuple[Any, ...]]) -> None:  # fmt: skip
    if not text.strip():
        prepared.filtered["empty references"] += 1
        return
    completion = _capped(text, cap, prepared, "SFT responses")
    if ("sft", prompt, completion) in seen:
        prepared.filtered["repeated references"] += 1
        return
    seen.add(("sft", prompt, completion))
    record = {"prompt": prompt, "completion": completion, "source": source, "post_id": post}
    prepared.add("sft", split, record)


def add_references(
    prepared: Prepared,
    references: Sequence[Reference],
    *,
    split: str = "validation",
    budget: int = pre.QUERY_TOKENS,
    sft_cap: int = pre.SFT_RESPONSE_TOKENS,
    holdout: float | None = None,
    seen: set[tuple[Any, ...]] | None = None,
) -> None:
    """SFT examples of (query, reference) rows: the query re-fitted to the budget."""
    seen = set() if seen is None else seen
    for ref in references:
        try:
            query = pre.fit_formatted_query(ref.query, budget)
        except ValueError as error:
            raise ValueError(f"{ref.source}: {error}") from None
        prepared.cut["queries"] += query.cut
        fields = pre.parse_query(query.text)
        post = hashlib.sha256(query.text.encode()).hexdigest()[:16]
        if fields is not None:  # the id a comparison of the post without an info.id gets
            post = post_id({"title": fields["title"], "post": fields["post"]})
        where = split if holdout is None else holdout_split(query.text, holdout)
        _add_reference(prepared, where, query.text, ref.reference, sft_cap, ref.source, post, seen)


def prepare(
    comparisons: Sequence[str | Path],
    references: Sequence[str | Path] = (),
    out: str | Path = "data/tldr-prepared",
    *,
    budget: int = pre.QUERY_TOKENS,
    sft_cap: int = pre.SFT_RESPONSE_TOKENS,
    rm_cap: int = pre.RM_RESPONSE_TOKENS,
    holdout: float | None = None,
    skip_malformed: bool = False,
    overwrite: bool = False,
    hub_comparisons: Sequence[Comparison] = (),
    hub_references: dict[str, list[Reference]] | None = None,
) -> dict[str, Any]:
    """Read, preprocess and write the three folders under `out`; returns the summary (also in
    `out/prepare.json`). ValueError (MalformedLine naming file and line) on bad input."""
    if holdout is not None and not 0.0 < holdout < 1.0:
        raise ValueError(f"--holdout must be in (0, 1) (got {holdout})")
    if not comparisons and not references and not hub_comparisons and not hub_references:
        raise ValueError("give --comparisons FILE, --references CSV or --hub NAME")
    prepared, seen = Prepared(), set()
    kwargs = {"budget": budget, "sft_cap": sft_cap, "holdout": holdout, "seen": seen}
    for path in comparisons:
        rows = read_comparisons(path, prepared.skipped if skip_malformed else None)
        add_comparisons(prepared, rows, rm_cap=rm_cap, **kwargs)
    if hub_comparisons:
        add_comparisons(prepared, hub_comparisons, rm_cap=rm_cap, **kwargs)
    for path in references:
        rows = read_references(path, prepared.skipped if skip_malformed else None)
        add_references(prepared, rows, **kwargs)
    for split, rows in (hub_references or {}).items():
        add_references(prepared, rows, split=split, **kwargs)
    settings = {"query_tokens": budget, "sft_response_tokens": sft_cap,
                "rm_response_tokens": rm_cap, "holdout": holdout,
                "skip_malformed": skip_malformed}  # fmt: skip
    inputs = [str(Path(p).resolve()) for p in (*comparisons, *references)]
    summary = {
        "inputs": inputs,
        "settings": settings,
        "counts": {name: prepared.counts(name) for name in FOLDERS},
        "filtered": dict(prepared.filtered),
        "cut": dict(prepared.cut),
        "skipped": {"count": prepared.skipped.count, "examples": prepared.skipped.examples},
    }
    write_folders(Path(out), prepared, summary, overwrite)
    return summary


def write_folders(out: Path, prepared: Prepared, summary: dict[str, Any], overwrite: bool) -> None:
    """Each non-empty folder written whole (a temporary folder renamed into place)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out must be a folder (got the file {out})")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"--out folder {out} is not empty (pass --overwrite to replace it)")
    for name, kind in FOLDERS.items():
        splits = prepared.records[name]
        if not any(splits.values()):
            continue
        target = out / name
        tmp = prepare_output(target, overwrite)
        try:
            writers = SplitWriters(tmp, "jsonl")
            try:
                for split in sorted(splits):
                    rows = splits[split]
                    writers.write(Chunk(split, [json_line(r) for r in rows], None, [], _NoStats()))
            finally:
                writers.close()
            config = {"kind": kind.name, "task": "tldr", "format": "jsonl", **summary,
                      "counts": dict(writers.counts)}  # fmt: skip
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            (tmp / "README.md").write_text(card(name, kind, config), encoding="utf-8")
            commit_output(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    (out / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


class _NoStats:
    def add(self, record: dict[str, Any]) -> None:
        pass

    def merge(self, other: Any) -> None:
        pass


_ABOUT = {
    "preference": "Human comparisons of two summaries of a Reddit post: `chosen` is the "
    "summary at index `choice`. Train with `kinrl train rm|dpo --data DIR`.",
    "feedback": "Each comparison as a desirable (`label` true: the chosen summary) and an "
    "undesirable record (the rejected one). Train with `kinrl train kto --data DIR`.",
    "sft": "Reddit posts with a human reference TL;DR. Train with `kinrl train sft --data DIR`; "
    "`kinrl tldr eval` compares a run's summaries with these references.",
}


def card(name: str, kind: DatasetKind, config: dict[str, Any]) -> str:
    """The dataset card of one folder."""
    settings = config["settings"]
    lines = [
        f"# TL;DR {name} (kinrl)",
        "",
        _ABOUT[name],
        "",
        "Made by `kinrl tldr prepare` with the preprocessing of Huang et al. (2024), "
        "`summarize_from_feedback_details`: the query `SUBREDDIT: r/{subreddit}\\n\\nTITLE: "
        "{title}\\n\\nPOST: {post}\\n\\nTL;DR:`, its post cut at its last newline until it fits "
        f"{settings['query_tokens']} GPT-2 tokens; responses with one leading space, cut to "
        f"{settings['sft_response_tokens']} (SFT) or {settings['rm_response_tokens']} "
        "(preference, feedback) GPT-2 tokens with the EOS the trainers append.",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("json", data_files={',
        *(f'    "{split}": "{split}.jsonl",' for split in config["counts"]),
        "})",
        "```",
        "",
        "## Contents",
        "",
        "| split | records |",
        "|---|---|",
        *(f"| {split} | {count} |" for split, count in config["counts"].items()),
        "",
        f"Fields every record has: {', '.join(f'`{f}`' for f in kind.fields)}.",
        "",
        "## Filtered, cut and skipped (over all three folders)",
        "",
        "| what | count |",
        "|---|---|",
        *(f"| filtered: {what} | {n} |" for what, n in sorted(config["filtered"].items())),
        *(f"| cut: {what} | {n} |" for what, n in sorted(config["cut"].items())),
        f"| malformed lines skipped | {config['skipped']['count']} |",
        "",
        "Malformed lines are an error unless `--skip-malformed` is given; the first skipped:",
        "",
        *(f"- {reason}" for reason in config["skipped"]["examples"]),
        "",
        "## Sources and licence",
        "",
        *(f"- `{path}`" for path in config["inputs"]),
        "",
        "The Reddit posts and summaries are OpenAI's summarize-from-feedback data (Stiennon et "
        "al., 2020), CC BY 4.0.",
    ]
    return "\n".join(lines) + "\n"
