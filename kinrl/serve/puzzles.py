"""Puzzles for the page: generated with the knobs of `kinrl generate`, or read from a dataset
folder (`kinrl serve --data DIR`).

`generate(difficulty, knobs, seed, index)` is `make_example(KinshipConfig.for_level(difficulty,
**knobs), seed, index)`, the knobs checked against the config's fields and types first (a
ValueError naming the knob). `DataSource` reads one record of a split by index without loading
the split: JSONL lines are found through an index of byte offsets built on first use, Parquet
rows by slicing the table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import typing
from pathlib import Path
from typing import Any

from tasks.io import json_line
from tasks.kinship.config import MAX_LEVEL, KinshipConfig
from tasks.registry import RECORD_FIELDS, dataset_kinds

# The fields of feedback records that are not the puzzle's (spec section 5).
_FEEDBACK_FIELDS = (
    "chosen", "rejected", "chosen_reward", "rejected_reward", "flipped", "negative_kind",
    "chosen_first", "chosen_chain_valid", "rejected_chain_valid", "label", "gold_reward",
)  # fmt: skip


def puzzle_id(record: dict[str, Any]) -> str:
    """A puzzle's id: a hash of the record, so the same puzzle is stored once."""
    return "p" + hashlib.sha256(json_line(record).encode()).hexdigest()[:20]


def knob_fields() -> list[dict[str, Any]]:
    """The task knobs the page offers (every `KinshipConfig` field but difficulty), with their
    type, help and level-independent default."""
    hints = typing.get_type_hints(KinshipConfig)
    out = []
    for f in dataclasses.fields(KinshipConfig):
        if f.name == "difficulty":
            continue
        kind = hints[f.name]
        args = typing.get_args(kind)
        if kind in (bool, int, float, str):
            type_name = kind.__name__
        elif args and all(a is float for a in args):
            type_name = f"float[{len(args)}]"
        else:
            type_name = "str[]"
        out.append({"name": f.name, "type": type_name, "help": f.metadata.get("help", "")})
    return out


def _coerce(name: str, value: Any, kind: Any) -> Any:
    args = typing.get_args(kind)

    def bad(allowed: str) -> ValueError:
        return ValueError(f"knob {name} must be {allowed} (got {json.dumps(value)[:60]})")

    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str) or len(value) > 200:
            raise bad("a string of at most 200 characters")
        return value
    if args and all(a is float for a in args):
        if (
            not isinstance(value, list)
            or len(value) != len(args)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise bad(f"a list of {len(args)} numbers")
        return tuple(float(v) for v in value)
    if not isinstance(value, list) or len(value) > 50 or not all(isinstance(v, str) for v in value):
        raise bad("a list of strings")
    return tuple(value)


def config_for(difficulty: int, knobs: dict[str, Any]) -> KinshipConfig:
    """The level preset with `knobs` overridden; ValueError naming a bad knob."""
    if isinstance(difficulty, bool) or not isinstance(difficulty, int):
        raise ValueError(f"difficulty must be an integer in 1..{MAX_LEVEL}")
    hints = typing.get_type_hints(KinshipConfig)
    fields = {f.name for f in dataclasses.fields(KinshipConfig)} - {"difficulty"}
    unknown = sorted(set(knobs) - fields)
    if unknown:
        raise ValueError(f"unknown knob(s) {', '.join(unknown)[:200]}; the knobs are "
                         f"{', '.join(sorted(fields))}")  # fmt: skip
    values = {name: _coerce(name, value, hints[name]) for name, value in knobs.items()}
    return KinshipConfig.for_level(difficulty, **values)


def generate(difficulty: int, knobs: dict[str, Any], seed: int, index: int) -> tuple[dict, dict]:
    """(source, record) of a generated puzzle; ValueError for bad knobs or a config that
    admits no puzzle."""
    from tasks.kinship import GenerationError, make_example

    config = config_for(difficulty, knobs)
    try:
        record = make_example(config, seed, index, "train")
    except GenerationError as error:
        raise ValueError(str(error)) from None
    source = {"kind": "generate", "difficulty": difficulty, "seed": seed, "index": index,
              "config": config.to_dict()}  # fmt: skip
    return source, record


def as_puzzle(record: dict[str, Any]) -> dict[str, Any]:
    """A dataset record as a puzzle: the example's fields (a feedback record's own fields and
    judged completion dropped; a preference record has no reference completion)."""
    out = {k: v for k, v in record.items() if k not in _FEEDBACK_FIELDS}
    if "label" in record:  # binary feedback: `completion` is the judged one, not the reference
        out.pop("completion", None)
    return out


class DataSource:
    """The records of a dataset folder of any kinship kind, one at a time."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        try:
            config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ValueError(f"--data {folder} is not a dataset folder (no readable "
                             "config.json)") from None  # fmt: skip
        if not isinstance(config, dict) or config.get("kind") not in dataset_kinds():
            raise ValueError(f"--data {folder} is not a kinrl dataset (its kind is not one of "
                             f"{', '.join(dataset_kinds())})")  # fmt: skip
        self.kind: str = config["kind"]
        self.config = config
        self.files = {
            p.stem: p for p in sorted(self.folder.iterdir()) if p.suffix in (".jsonl", ".parquet")
        }
        if not self.files:
            raise ValueError(f"--data {folder} has no split (no .jsonl or .parquet file)")
        self._offsets: dict[str, list[int]] = {}
        self._tables: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _index(self, split: str) -> list[int] | Any:
        with self._lock:
            path = self.files[split]
            if path.suffix == ".parquet":
                if split not in self._tables:
                    import pyarrow.parquet as pq

                    self._tables[split] = pq.read_table(path)
                return self._tables[split]
            if split not in self._offsets:
                offsets, position = [], 0
                with path.open("rb") as f:
                    for line in f:
                        if line.strip():
                            offsets.append(position)
                        position += len(line)
                self._offsets[split] = offsets
            return self._offsets[split]

    def count(self, split: str) -> int:
        index = self._index(split)
        return index.num_rows if hasattr(index, "num_rows") else len(index)

    def splits(self) -> dict[str, int]:
        return {split: self.count(split) for split in self.files}

    def get(self, split: str, index: int) -> tuple[dict, dict]:
        """(source, puzzle) of record `index` of `split`; KeyError / IndexError / ValueError."""
        if split not in self.files:
            raise KeyError(split)
        rows = self._index(split)
        total = self.count(split)
        if not 0 <= index < total:
            raise IndexError(f"index must be in 0..{total - 1} for split {split!r} (got {index})")
        if hasattr(rows, "num_rows"):
            record = rows.slice(index, 1).to_pylist()[0]
        else:
            with self.files[split].open("rb") as f:
                f.seek(rows[index])
                try:
                    record = json.loads(f.readline())
                except ValueError:
                    raise ValueError(f"{self.files[split]}: record {index} is not JSON") from None
        if not isinstance(record, dict) or any(f not in record for f in RECORD_FIELDS[self.kind]):
            raise ValueError(f"{self.files[split]}: record {index} is not a {self.kind} record")
        source = {"kind": "data", "data": str(self.folder), "split": split, "index": index,
                  "config": self.config.get("config") or {}}  # fmt: skip
        return source, as_puzzle(record)
