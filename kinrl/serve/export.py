"""Human votes as a preference dataset folder: what `kinrl labels export` writes, and what
`kinrl train dpo|rm --data DIR` reads unchanged.

Each A or B vote is one record of the spec's preference kind (`docs/spec/kinship.md` section 5,
`tasks.registry.PREFERENCE`): every example field of the puzzle but `completion`, `chosen` /
`rejected` (the completions the annotator preferred and did not), their gold rewards,
`flipped` (the chosen one has the lower gold reward), `negative_kind` (null: a run wrote it,
not a negative maker) and `chosen_first` (the chosen one was shown as A, on the left). Then who
and what: `annotator`, `labelled_at`, `vote` (a or b), `rationale`, `run_a` / `run_b` (the runs
shown as A and B), `chosen_run` / `rejected_run`, `gold_agrees` (the vote picks the higher
gold reward; null when the rewards are equal), `battle_id`, `vote_id`, `puzzle_id`,
`temperature`. The record `id` is "vote-<vote id>"; the puzzle's own id is `puzzle_id`.

Tie and both-bad votes state no preference, so they are counted in config.json but make no
record. Records go to `train`, or `validation` for a `validation_fraction` of the puzzles (by
a hash of the puzzle id, so two votes on one puzzle never straddle the splits). The folder is
written by `tasks/io.py` (a temporary folder renamed into place; `--overwrite` replaces only an
earlier dataset), with `config.json` and a dataset card.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kinrl.serve.ranking import gold_agrees
from kinrl.serve.store import SCHEMA_VERSION, Store, now
from tasks.io import Chunk, SplitWriters, commit_output, json_line, prepare_output
from tasks.registry import EXAMPLES, PREFERENCE

HUMAN_FIELDS = (
    "annotator", "labelled_at", "vote", "rationale", "run_a", "run_b", "chosen_run",
    "rejected_run", "gold_agrees", "battle_id", "vote_id", "puzzle_id", "temperature",
)  # fmt: skip
CHUNK = 500


class NoVotes(ValueError):
    """The store holds no A or B vote to export."""


def split_of(puzzle_id: str, validation_fraction: float) -> str:
    digest = hashlib.sha256(f"kinrl/labels/{puzzle_id}".encode()).digest()
    return (
        "validation" if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction else "train"
    )


def preference_record(vote: dict[str, Any], split: str) -> dict[str, Any] | None:
    """The preference record of one stored vote (with its battle and puzzle), or None for a
    tie or both-bad vote."""
    choice = vote["choice"]
    if choice not in ("a", "b"):
        return None
    other = "b" if choice == "a" else "a"
    record = {k: v for k, v in vote["record"].items() if k != "completion"}
    chosen_reward, rejected_reward = vote[f"reward_{choice}"], vote[f"reward_{other}"]
    record.update(
        id=f"vote-{vote['vote_id']}",
        split=split,
        chosen=vote[f"completion_{choice}"],
        rejected=vote[f"completion_{other}"],
        chosen_reward=chosen_reward,
        rejected_reward=rejected_reward,
        flipped=chosen_reward < rejected_reward,
        negative_kind=None,
        chosen_first=choice == "a",
        chosen_chain_valid=None,
        rejected_chain_valid=None,
        annotator=vote["annotator"],
        labelled_at=vote["created_at"],
        vote=choice,
        rationale=vote["rationale"],
        run_a=vote["run_a"],
        run_b=vote["run_b"],
        chosen_run=vote[f"run_{choice}"],
        rejected_run=vote[f"run_{other}"],
        gold_agrees=gold_agrees(choice, vote["reward_a"], vote["reward_b"]),
        battle_id=vote["battle_id"],
        vote_id=vote["vote_id"],
        puzzle_id=vote["puzzle_id"],
        temperature=vote["temperature"],
    )
    return record


def preference_records(
    store: Store, validation_fraction: float = 0.0, counts: Counter | None = None
) -> Iterator[dict[str, Any]]:
    """Every A or B vote of `store` as a preference record, oldest first; `counts` (if given)
    is filled with the votes by choice, the annotators' and the runs' vote counts."""
    for vote in store.voted_battles():
        if counts is not None:
            counts["choice/" + vote["choice"]] += 1
            counts["annotator/" + vote["annotator"]] += 1
            counts["run/" + vote["run_a"]] += 1
            counts["run/" + vote["run_b"]] += 1
            locale = (vote["source"].get("config") or {}).get("locale") or "en_US"
            counts["locale/" + str(locale)] += 1
        record = preference_record(vote, split_of(vote["puzzle_id"], validation_fraction))
        if record is not None:
            missing = [f for f in PREFERENCE.fields if f not in record]
            if missing:  # a stored puzzle that is not a kinship record: nothing to train on
                raise ValueError(f"vote {vote['vote_id']}'s puzzle lacks {', '.join(missing)}")
            yield record


def _schema() -> Any:
    import pyarrow as pa

    from tasks.kinship.dataset import parquet_schema

    schema = parquet_schema("preference")
    string = pa.string()
    for name, kind in [("annotator", string), ("labelled_at", string), ("vote", string),
                       ("rationale", string), ("run_a", string), ("run_b", string),
                       ("chosen_run", string), ("rejected_run", string),
                       ("gold_agrees", pa.bool_()), ("battle_id", string),
                       ("vote_id", pa.int64()), ("puzzle_id", string),
                       ("temperature", pa.float64())]:  # fmt: skip
        schema = schema.append(pa.field(name, kind))
    return schema


def export_labels(
    db: str | Path,
    out: str | Path,
    *,
    fmt: str = "jsonl",
    validation_fraction: float = 0.1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the preference dataset folder of the votes in `db` to `out`; its config.json."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"--validation-fraction must be in [0, 1) (got {validation_fraction})")
    if not Path(db).is_file():
        raise ValueError(f"--db {db} does not exist")
    store = Store(db)
    out = Path(out)
    tmp = prepare_output(out, overwrite)
    try:
        writers = SplitWriters(tmp, fmt, _schema() if fmt == "parquet" else None)
        counts: Counter = Counter()
        buffers: dict[str, list[dict[str, Any]]] = {}
        try:
            for record in preference_records(store, validation_fraction, counts):
                split = buffers.setdefault(record["split"], [])
                split.append(record)
                if len(split) >= CHUNK:
                    _flush(writers, record["split"], split)
            for name, split in buffers.items():
                _flush(writers, name, split)
        finally:
            writers.close()
            store.close()
        if not writers.counts:
            raise NoVotes(f"--db {db} holds no A or B vote to export (ties and both-bad votes "
                          "state no preference)")  # fmt: skip
        summary = {
            "kind": PREFERENCE.name,
            "source": "human votes (kinrl serve)",
            "db": str(Path(db).resolve()),
            "schema_version": SCHEMA_VERSION,
            "exported_at": now(),
            "format": fmt,
            "validation_fraction": validation_fraction,
            # The locales of the puzzles' names: what a fresh model's tokenizer is built for.
            "config": {"locale": ",".join(_names(counts, "locale")) or "en_US"},
            "counts": dict(writers.counts),
            "votes": {c: counts["choice/" + c] for c in ("a", "b", "tie", "both_bad")},
            "annotators": _names(counts, "annotator"),
            "runs": _names(counts, "run"),
            "fields": {"example": [f for f in EXAMPLES.fields if f != "completion"],
                       "preference": list(PREFERENCE.fields), "human": list(HUMAN_FIELDS)},
        }  # fmt: skip
        (tmp / "config.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(card(summary), encoding="utf-8")
        commit_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _names(counts: Counter, prefix: str) -> dict[str, int]:
    return {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith(prefix + "/")}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _flush(writers: SplitWriters, split: str, records: list[dict[str, Any]]) -> None:
    if records:
        lines = [json_line(r) for r in records]
        writers.write(Chunk(split, lines, list(records), [], _NoStats()))
        records.clear()


class _NoStats:
    """The writer's chunks carry statistics for generated data; votes have none."""

    def add(self, record: dict[str, Any]) -> None:
        pass

    def merge(self, other: Any) -> None:
        pass


def card(summary: dict[str, Any]) -> str:
    """The dataset card of an export."""
    fmt = summary["format"]
    votes = summary["votes"]
    lines = [
        "# Kinship preferences from human votes (kinrl)",
        "",
        "Blind A/B votes collected with `kinrl serve` on kinship puzzles (the kinship spec, "
        "`docs/spec/kinship.md` in the kinrl repository), exported with `kinrl labels export`. "
        "Train on it with `kinrl train dpo --data DIR` or `kinrl train rm --data DIR`.",
        "",
        "```python",
        "import datasets",
        f'ds = datasets.load_dataset("{"json" if fmt == "jsonl" else "parquet"}", data_files={{',
    ]
    lines += [f'    "{name}": "{name}.{fmt}",' for name in summary["counts"]]
    lines += ["})", "```", "", "## Contents", "", "| split | records |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in summary["counts"].items()]
    lines += [
        "",
        f"Votes: A {votes['a']}, B {votes['b']}, tie {votes['tie']}, both bad "
        f"{votes['both_bad']} (ties and both-bad votes make no record). Exported "
        f"{summary['exported_at']} from schema version {summary['schema_version']}.",
        "",
        "Columns: `prompt`/`chosen`/`rejected` (TRL's preference columns), every example field "
        "of the puzzle but `completion`, `chosen_reward`/`rejected_reward` (gold rewards), "
        "`flipped` (the annotator chose the side with the lower gold reward), `chosen_first` "
        "(the chosen side was shown as A), and " + ", ".join(f"`{f}`" for f in HUMAN_FIELDS) + ".",
        "",
        "## Annotators",
        "",
        "| annotator | votes |",
        "|---|---|",
    ]
    lines += [f"| {_cell(name)} | {count} |" for name, count in summary["annotators"].items()]
    lines += ["", "## Runs", "", "| run | battles voted |", "|---|---|"]
    lines += [f"| {_cell(name)} | {count} |" for name, count in summary["runs"].items()]
    return "\n".join(lines) + "\n"
