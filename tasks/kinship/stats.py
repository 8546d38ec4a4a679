"""The statistics of a kinship dataset (config.json's "statistics", the dataset card's tables).

`DatasetStats` is the per-record accumulator `tasks.io`'s chunks take: each chunk fills one,
record by record (the generator's hot path, so `add` is kept lean), and the writer merges them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tasks.kinship.terms import family_of


@dataclass
class LevelStats:
    """Running statistics of the records of one difficulty level."""

    records: int = 0
    people: int = 0
    mentioned: int = 0
    facts: int = 0
    hops: Counter = field(default_factory=Counter)
    question_types: Counter = field(default_factory=Counter)
    relation_families: Counter = field(default_factory=Counter)
    flipped: int = 0
    negative_kinds: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)

    def merge(self, other: LevelStats) -> None:
        self.records += other.records
        self.people += other.people
        self.mentioned += other.mentioned
        self.facts += other.facts
        self.hops.update(other.hops)
        self.question_types.update(other.question_types)
        self.relation_families.update(other.relation_families)
        self.flipped += other.flipped
        self.negative_kinds.update(other.negative_kinds)
        self.labels.update(other.labels)

    def to_dict(self) -> dict[str, Any]:
        n = max(self.records, 1)
        out = {
            "records": self.records,
            "mean_people": round(self.people / n, 2),
            "mean_mentioned": round(self.mentioned / n, 2),
            "mean_facts": round(self.facts / n, 2),
            "mean_hops": round(sum(h * c for h, c in self.hops.items()) / n, 2),
            "hops": dict(sorted(self.hops.items())),
            "question_types": dict(sorted(self.question_types.items())),
            "relation_families": dict(sorted(self.relation_families.items())),
        }
        if self.negative_kinds:  # feedback records
            out["flipped_fraction"] = round(self.flipped / n, 4)
            out["negative_kinds"] = dict(sorted(self.negative_kinds.items()))
        if self.labels:
            out["labels"] = {str(k).lower(): v for k, v in sorted(self.labels.items())}
        return out


class DatasetStats:
    """`LevelStats` per difficulty level, filled one record at a time."""

    __slots__ = ("levels",)

    def __init__(self) -> None:
        self.levels: dict[int, LevelStats] = {}

    def add(self, record: dict[str, Any]) -> None:
        level = record["difficulty"]
        s = self.levels.get(level)
        if s is None:  # (not setdefault: that would build a LevelStats per record)
            s = self.levels[level] = LevelStats()
        facts = record["facts"]
        qtype = record["question_type"]
        s.records += 1
        s.people += len(record["people"])
        s.mentioned += len({name for fact in facts for name in (fact["a"], fact["b"])})
        s.facts += len(facts)
        s.hops[record["hops"]] += 1
        s.question_types[qtype] += 1
        # the relation family of the query term, or of the answer when the question asks it
        s.relation_families[
            family_of(record["answer"] if qtype == "relation" else record["query"]["term"])
        ] += 1
        if "flipped" in record:  # feedback records
            s.flipped += record["flipped"]
            s.negative_kinds[record["negative_kind"] or "none"] += 1
        if "label" in record:
            s.labels[record["label"]] += 1

    def merge(self, other: DatasetStats) -> None:
        for level, s in other.levels.items():
            mine = self.levels.get(level)
            if mine is None:
                mine = self.levels[level] = LevelStats()
            mine.merge(s)

    def to_dict(self) -> dict[str, Any]:
        """{level (as a string): its statistics}, by level."""
        return {str(level): s.to_dict() for level, s in sorted(self.levels.items())}
