"""Pinned output of the kinship generator: records are a pure function of (config, seed, index),
and speed work on `tasks/kinship` must not change a byte of them (the random stream has to be
consumed exactly as before). A deliberate change of the output updates the digests (print
`_digest(config)` for each case under the `synthetic_names` fixture).

The names come from a fixed synthetic list (`SYNTHETIC_NAMES`) instead of Faker's locale data,
so the digests do not depend on the Faker release a fresh install picks up. They were taken on
2026-12-01 from the code that, with Faker 40.54.0's names, still gave the digests pinned before
the generator was optimised."""

from __future__ import annotations

import hashlib
import json

import pytest

from tasks.kinship import KinshipConfig, make_example, names
from tasks.kinship.generator import _FIELD_ORDER

F = KinshipConfig.for_level
CASES: dict[str, tuple[KinshipConfig, str]] = {
    "level-1": (F(1), "e15730a06008e32c815d41986b63cc48"),
    "level-3": (F(3), "55c0f06f11bfe5a43c975c0ca13d913b"),
    "level-5": (F(5), "6929e24ec2f7fa3ba640f834a6b3f3d6"),
    "level-8": (F(8), "6c26cdf69062fb2afb5d296356e9b53a"),
    "level-10": (F(10), "b69b59b839a9145d53b1ba481fd120fe"),
    "noise": (
        F(6, supporting_facts=5, irrelevant_facts=4, disconnected_facts=6),
        "8b558e38b60a4b84105de86c1ff9fb21",
    ),
    "entity-count": (
        F(4, question_weights=(0, 1, 1, 0), max_answers=6),
        "36a283beaf7c59cdc75a47c646dd4e62",
    ),
    "yes-no": (F(4, question_weights=(0, 0, 0, 1)), "600fcf5926bcabb499cec6a66d28c1e8"),
    "families": (
        F(6, relation_families=("cousin", "step-sibling", "great-aunt/uncle")),
        "dc9bdc3aa51785ccb965c212e1010b2d",
    ),
    "no-reasoning-one-phrasing": (
        F(7, reasoning=False, phrasings=1, sibling_fact_prob=1.0),
        "81f8809ca49c17256986da08c100bb3b",
    ),
}
# Gendered first names standing in for Faker's: 100 of each, and a few with an apostrophe or a
# hyphen (the generator must handle both), none a reserved word of the task.
SYNTHETIC_NAMES = (
    [a + b for a in ("Ada", "Bea", "Cora", "Dina", "Eva", "Fay", "Gina", "Hana", "Ida", "Jo")
     for b in ("belle", "lyn", "mae", "rose", "nette", "line", "ra", "sa", "na", "ty")]
    + ["O'Dara", "Anne-Lise", "Mary-Jo"],
    [a + b for a in ("Al", "Bo", "Cy", "Dan", "Ed", "Finn", "Gus", "Hal", "Ike", "Jon")
     for b in ("bert", "don", "ford", "ley", "mond", "rick", "ton", "win", "ric", "son")]
    + ["D'Arcy", "Jean-Luc"],
)  # fmt: skip


@pytest.fixture
def synthetic_names(monkeypatch):
    monkeypatch.setattr(names, "_provider_names", lambda locale: SYNTHETIC_NAMES)
    names.name_pool.cache_clear()
    yield
    names.name_pool.cache_clear()


def _digest(config: KinshipConfig, seed: int = 5, n: int = 40) -> str:
    h = hashlib.sha256()
    for index in range(n):
        record = make_example(config, seed, index)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        h.update(line.encode() + b"\n")
    return h.hexdigest()[:32]


@pytest.mark.parametrize("case", sorted(CASES))
def test_records_are_byte_identical_to_the_pinned_ones(case: str, synthetic_names) -> None:
    config, expected = CASES[case]
    assert _digest(config) == expected


def test_record_fields_come_in_field_order() -> None:
    for level in (1, 6):
        assert tuple(make_example(F(level), 0, 3)) == _FIELD_ORDER
