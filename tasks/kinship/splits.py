"""Dataset splits: i.i.d. train/validation/test plus generalisation test splits, and the leak
check that proves no family appears in two splits.

Every split is a range of item indices generated under one seed with its own config, so no
two records share an item stream (and hence a family). Generalisation holdouts restrict the
i.i.d. splits and add one test split each that breaks exactly that restriction:

| holdout | train / validation / test | extra split |
|---|---|---|
| hops K | hops <= K | `test_hops`: hops > K |
| relation families | questions never involve them | `test_relations`: only them |
| names | the training name pool | `test_names`: the held-out pool |
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tasks.kinship.config import KinshipConfig
from tasks.kinship.terms import FAMILIES


@dataclass(frozen=True)
class SplitPlan:
    """One split: its name, config, size and first global item index."""

    name: str
    config: KinshipConfig
    size: int
    start: int


@dataclass(frozen=True)
class Holdouts:
    """Generalisation holdouts (all off by default)."""

    hops: int | None = None
    relations: tuple[str, ...] = ()
    names: bool = False

    def __post_init__(self) -> None:
        unknown = [f for f in self.relations if f not in FAMILIES]
        if unknown:
            raise ValueError(
                f"holdout_relations must be relation families from: {', '.join(FAMILIES)} "
                f"(got {', '.join(unknown)})"
            )
        if self.hops is not None and not 1 <= self.hops <= 11:
            raise ValueError(f"holdout_hops must be an integer in 1..11 (got {self.hops})")


def plan_splits(
    config: KinshipConfig,
    n: int,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    holdouts: Holdouts | None = None,
) -> list[SplitPlan]:
    """Sizes and configs of every split for `n` i.i.d. examples; each generalisation split has
    the test split's size."""
    if n < 1:
        raise ValueError(f"n must be a positive integer (got {n})")
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1) (got {value})")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError("validation_fraction + test_fraction must be below 1")
    holdouts = holdouts or Holdouts()
    n_val, n_test = round(n * validation_fraction), round(n * test_fraction)
    base = config
    extra: list[tuple[str, KinshipConfig]] = []
    if holdouts.hops is not None:
        k = holdouts.hops
        if k < config.min_hops:
            raise ValueError(f"holdout_hops must be at least min_hops={config.min_hops} (got {k})")
        base = dataclasses.replace(base, max_hops=min(base.max_hops, k))
        extra.append(
            (
                "test_hops",
                dataclasses.replace(config, min_hops=k + 1, max_hops=max(config.max_hops, k + 1)),
            )
        )
    if holdouts.relations:
        kept = tuple(
            f for f in (config.relation_families or FAMILIES) if f not in holdouts.relations
        )
        base = dataclasses.replace(base, relation_families=kept)
        extra.append(
            ("test_relations", dataclasses.replace(config, relation_families=holdouts.relations))
        )
    if holdouts.names:
        base = dataclasses.replace(base, name_pool="train")
        extra.append(("test_names", dataclasses.replace(config, name_pool="heldout")))
    if extra and n_test == 0:  # a generalisation split has the test split's size
        raise ValueError(
            f"test_fraction * n must come to at least one example when a holdout split is "
            f"asked for, which has the test split's size (got n={n}, test_fraction="
            f"{test_fraction})"
        )
    sizes = [
        ("train", base, n - n_val - n_test),
        ("validation", base, n_val),
        ("test", base, n_test),
    ]
    sizes += [(name, cfg, n_test) for name, cfg in extra]
    plans, start = [], 0
    for name, cfg, size in sizes:
        if size > 0:
            plans.append(SplitPlan(name, cfg, size, start))
            start += size
    return plans


def family_fingerprint(record: Mapping[str, Any]) -> int:
    """A 64-bit hash of a record's whole family graph (names, genders, edges), independent of
    the order the lists are written in."""
    people = sorted([f"{p['name']}:{p['gender']}" for p in record["people"]])
    parents = sorted([f"{p}>{c}" for p, c in record["parents"]])
    spouses = sorted([f"{a}={b}" if a <= b else f"{b}={a}" for a, b in record["spouses"]])
    text = "|".join(people) + "#" + "|".join(parents) + "#" + "|".join(spouses)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class LeakCheck:
    """Streams (split, fingerprint) pairs and reports families seen in more than one split."""

    def __init__(self) -> None:
        self._split_of: dict[int, str] = {}
        self.leaks: list[tuple[int, str, str]] = []

    @property
    def families(self) -> int:
        """Distinct families seen."""
        return len(self._split_of)

    def add(self, split: str, fingerprints: Iterable[int]) -> None:
        for fingerprint in fingerprints:
            seen = self._split_of.setdefault(fingerprint, split)
            if seen != split:
                self.leaks.append((fingerprint, seen, split))


def find_leaks(records: Iterable[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
    """Families (by fingerprint) that occur in two different splits."""
    check = LeakCheck()
    for record in records:
        check.add(record["split"], [family_fingerprint(record)])
    return check.leaks
