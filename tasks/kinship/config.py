"""The kinship task's configuration and its ten difficulty levels.

A level is nothing but a preset of explicit knobs; any knob can be overridden one by one
(`KinshipConfig.for_level(5, max_hops=8)`). Mean people and mean hops never decrease with level
(a test measures it on generated data).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tasks.fields import documented
from tasks.kinship.graph import FamilyShape
from tasks.kinship.names import POOLS, name_pool
from tasks.kinship.terms import FAMILIES

QUESTION_TYPES = ("relation", "entity", "count", "yesno")
MAX_LEVEL = 10


class GenerationError(RuntimeError):
    """The config admits no example (e.g. hops that its families cannot reach)."""


@dataclass(frozen=True)
class KinshipConfig:
    """Knobs of the kinship task. `for_level(d)` gives the preset of difficulty d."""

    difficulty: int = documented(
        "difficulty level 1..10 the other knobs were preset from", default=3
    )
    generations: int = documented("generations in the family tree, 2..8", default=3)
    min_children: int = documented("fewest children per couple, 0..6", default=1)
    max_children: int = documented("most children per couple, min_children..6", default=3)
    marriage_prob: float = documented("chance a born family member marries, 0..1", default=0.8)
    remarriage_prob: float = documented("chance a married member marries again, 0..1", default=0.2)
    stepchild_prob: float = documented("chance a second spouse brings a child, 0..1", default=0.5)
    max_people: int = documented("cap on the people of the main family, 3..200", default=14)
    min_hops: int = documented("fewest facts between the question's people, 1..12", default=1)
    max_hops: int = documented("most facts between the question's people, min_hops..12", default=3)
    sibling_fact_prob: float = documented(
        "chance a parent-child-parent step is stated as one sibling fact, 0..1", default=0.3
    )
    supporting_facts: int = documented(
        "noise: redundant true facts among mentioned people, 0..50", default=0
    )
    irrelevant_facts: int = documented(
        "noise: true facts hanging off the question's path, 0..50", default=0
    )
    disconnected_facts: int = documented(
        "noise: facts about a second, unrelated family, 0..50", default=0
    )
    phrasings: int = documented(
        "phrasings in use per fact kind, 1..4 (1 = one fixed template)", default=2
    )
    shuffle_facts: bool = documented("shuffle the facts (else they follow the path)", default=False)
    reasoning: bool = documented(
        "reference completions give the path's facts before the answer", default=True
    )
    question_weights: tuple[float, float, float, float] = documented(
        "weights of the relation, entity, count and yes/no questions", default=(1, 1, 1, 1)
    )
    max_answers: int = documented(
        "most people an entity or count question is built around, 1..10", default=3
    )
    relation_families: tuple[str, ...] = documented(
        "relation families questions may be about (empty = all 20)", default=()
    )
    locale: str = documented("Faker locale(s) of the names, comma-separated", default="en_US")
    name_pool: str = documented(
        "names from the 'all', 'train' or 'heldout' part of the pool", default="all"
    )

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {allowed} (got {getattr(self, name)!r})")

        check("difficulty", 1 <= self.difficulty <= MAX_LEVEL, f"an integer in 1..{MAX_LEVEL}")
        check("generations", 2 <= self.generations <= 8, "an integer in 2..8")
        check("min_children", 0 <= self.min_children <= 6, "an integer in 0..6")
        check("max_children", self.min_children <= self.max_children <= 6, "in min_children..6")
        check("max_children", self.max_children >= 1, "at least 1")
        for name in ("marriage_prob", "remarriage_prob", "stepchild_prob", "sibling_fact_prob"):
            check(name, 0.0 <= getattr(self, name) <= 1.0, "a probability in 0..1")
        check("max_people", 3 <= self.max_people <= 200, "an integer in 3..200")
        check("min_hops", 1 <= self.min_hops <= 12, "an integer in 1..12")
        check("max_hops", self.min_hops <= self.max_hops <= 12, "an integer in min_hops..12")
        for name in ("supporting_facts", "irrelevant_facts", "disconnected_facts"):
            check(name, 0 <= getattr(self, name) <= 50, "an integer in 0..50")
        check("phrasings", 1 <= self.phrasings <= 4, "an integer in 1..4")
        check(
            "question_weights",
            len(self.question_weights) == 4
            and all(w >= 0 for w in self.question_weights)
            and sum(self.question_weights) > 0,
            "four non-negative weights (relation, entity, count, yesno), not all zero",
        )
        check("max_answers", 1 <= self.max_answers <= 10, "an integer in 1..10")
        unknown = [f for f in self.relation_families if f not in FAMILIES]
        check("relation_families", not unknown, f"relation families from: {', '.join(FAMILIES)}")
        check("name_pool", self.name_pool in POOLS, f"one of {', '.join(POOLS)}")
        pool = name_pool(self.locale, self.name_pool)  # raises "locale must be ..." if bad
        # Worst case every person has one gender: the main family (its cap plus one forced
        # child per generation) and the disconnected one must fit in either gendered pool.
        needed = self.max_people + self.generations + max(4, self.disconnected_facts + 2)
        check(
            "max_people",
            min(len(pool.female), len(pool.male)) >= needed,
            f"small enough for the {self.name_pool!r} name pool of {self.locale} "
            f"({len(pool.female)} female, {len(pool.male)} male names; "
            f"{needed} needed per gender)",
        )

    @classmethod
    def for_level(cls, difficulty: int, **overrides: object) -> KinshipConfig:
        """The preset of a difficulty level, with knobs overridden one by one."""
        if not isinstance(difficulty, int) or not 1 <= difficulty <= MAX_LEVEL:
            raise ValueError(
                f"difficulty must be an integer in 1..{MAX_LEVEL} (got {difficulty!r})"
            )
        return dataclasses.replace(LEVELS[difficulty], **overrides)

    @property
    def shape(self) -> FamilyShape:
        return FamilyShape(
            generations=self.generations,
            min_children=self.min_children,
            max_children=self.max_children,
            marriage_prob=self.marriage_prob,
            remarriage_prob=self.remarriage_prob,
            stepchild_prob=self.stepchild_prob,
            max_people=self.max_people,
        )

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


_BASE = KinshipConfig()
# Columns: generations, children, max people, hops, (supporting, irrelevant, disconnected)
# noise facts, phrasings, shuffled order. See the README's difficulty table.
LEVELS: dict[int, KinshipConfig] = {
    level: dataclasses.replace(
        _BASE,
        difficulty=level,
        generations=gens,
        min_children=kids[0],
        max_children=kids[1],
        max_people=people,
        min_hops=hops[0],
        max_hops=hops[1],
        supporting_facts=noise[0],
        irrelevant_facts=noise[1],
        disconnected_facts=noise[2],
        phrasings=phrasings,
        shuffle_facts=shuffled,
        remarriage_prob=remarry,
    )
    for level, gens, kids, people, hops, noise, phrasings, shuffled, remarry in [
        (1, 2, (1, 2), 6, (1, 2), (0, 0, 0), 1, False, 0.25),
        (2, 3, (1, 2), 10, (1, 2), (0, 1, 0), 2, False, 0.2),
        (3, 3, (1, 3), 14, (2, 3), (0, 1, 0), 2, False, 0.2),
        (4, 3, (2, 3), 18, (2, 4), (1, 1, 0), 3, True, 0.2),
        (5, 4, (1, 3), 22, (3, 4), (1, 2, 0), 4, True, 0.2),
        (6, 4, (2, 3), 26, (3, 5), (1, 2, 2), 4, True, 0.2),
        (7, 4, (2, 3), 30, (4, 5), (2, 2, 2), 4, True, 0.2),
        (8, 5, (1, 3), 34, (4, 6), (2, 3, 3), 4, True, 0.15),
        (9, 5, (2, 3), 38, (5, 7), (2, 3, 3), 4, True, 0.15),
        (10, 5, (2, 3), 42, (6, 8), (2, 4, 4), 4, True, 0.15),
    ]
}
