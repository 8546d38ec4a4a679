"""Pinned output of the kinship generator: records are a pure function of (config, seed, index),
and speed work on `tasks/kinship` must not change a byte of them (the random stream has to be
consumed exactly as before). The digests were taken before the generator was optimised; a
deliberate change of the output updates them (print `_digest(config)` for each case)."""

from __future__ import annotations

import hashlib
import json

import faker
import pytest

from tasks.kinship import KinshipConfig, make_example
from tasks.kinship.generator import _FIELD_ORDER

F = KinshipConfig.for_level
CASES: dict[str, tuple[KinshipConfig, str]] = {
    "level-1": (F(1), "f2a2a134bee99ae8023b1f086c02c24d"),
    "level-3": (F(3), "6f55b16d143992254bcb9accd40c791c"),
    "level-5": (F(5), "8335bcecf7fd2e0f16d5e6c68c060b52"),
    "level-8": (F(8), "18b2ba72b696e9e9d709d7070074187e"),
    "level-10": (F(10), "3fba4bffa026e04df463b54a6d6046c1"),
    "noise": (
        F(6, supporting_facts=5, irrelevant_facts=4, disconnected_facts=6),
        "d455d93936b8524330cf7d0998d68611",
    ),
    "entity-count": (
        F(4, question_weights=(0, 1, 1, 0), max_answers=6),
        "90af239b84c6435a6c167042db6ddf51",
    ),
    "yes-no": (F(4, question_weights=(0, 0, 0, 1)), "8084a97b61fb16fabd9291b775a36ca1"),
    "families": (
        F(6, relation_families=("cousin", "step-sibling", "great-aunt/uncle")),
        "9a103e9da4f2fc3399ac142c505097b1",
    ),
    "no-reasoning-one-phrasing": (
        F(7, reasoning=False, phrasings=1, sibling_fact_prob=1.0),
        "5c1541dda0eb1534045667a456f3a34c",
    ),
}
# The names come from Faker's locale data, so the digests hold for this Faker release only.
FAKER_VERSION = "40.54.0"


def _digest(config: KinshipConfig, seed: int = 5, n: int = 40) -> str:
    h = hashlib.sha256()
    for index in range(n):
        record = make_example(config, seed, index)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        h.update(line.encode() + b"\n")
    return h.hexdigest()[:32]


@pytest.mark.skipif(faker.VERSION != FAKER_VERSION, reason="digests pinned with another Faker")
@pytest.mark.parametrize("case", sorted(CASES))
def test_records_are_byte_identical_to_the_pinned_ones(case: str) -> None:
    config, expected = CASES[case]
    assert _digest(config) == expected


def test_record_fields_come_in_field_order() -> None:
    for level in (1, 6):
        assert tuple(make_example(F(level), 0, 3)) == _FIELD_ORDER
