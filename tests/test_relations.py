"""The relation engine against a hand-built family, and its invariants on random families."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.kinship.graph import FamilyShape, KinGraph, NameDrawer, generate_family
from tasks.kinship.names import name_pool
from tasks.kinship.relations import relation, relatives, specific_terms
from tasks.kinship.terms import FAMILIES, FEMALE, MALE, family_of, inverse_term

PEOPLE = {
    "Ada": FEMALE, "Bert": MALE, "Gus": MALE, "Hilda": FEMALE, "Ezra": MALE, "Wanda": FEMALE,
    "Carl": MALE, "Dora": FEMALE, "Fay": FEMALE, "Gina": FEMALE, "Mark": MALE, "Nate": MALE,
    "Quinn": MALE, "Rosa": FEMALE, "Paul": MALE, "Ivy": FEMALE, "Jon": MALE, "Kurt": MALE,
    "Lena": FEMALE, "Olga": FEMALE, "Sam": MALE, "Uri": MALE, "Tina": FEMALE, "Vera": FEMALE,
}  # fmt: skip
PARENTS = {
    "Bert": ("Gus", "Hilda"), "Ezra": ("Gus", "Hilda"),
    "Carl": ("Ada", "Bert"), "Dora": ("Ada", "Bert"),
    "Fay": ("Quinn", "Rosa"), "Paul": ("Quinn", "Rosa"),
    "Ivy": ("Carl", "Fay"), "Jon": ("Carl", "Fay"), "Kurt": ("Carl", "Gina"),
    "Lena": ("Gina", "Mark"), "Olga": ("Dora", "Nate"),
    "Tina": ("Ivy", "Sam"), "Vera": ("Olga", "Uri"),
}  # fmt: skip
SPOUSES = [
    ("Ada", "Bert"), ("Gus", "Hilda"), ("Ezra", "Wanda"), ("Carl", "Fay"), ("Carl", "Gina"),
    ("Gina", "Mark"), ("Dora", "Nate"), ("Quinn", "Rosa"), ("Ivy", "Sam"), ("Olga", "Uri"),
]  # fmt: skip

# "A is B's T" for T the canonical term, written out by hand from the spec's table.
EXPECTED = [
    ("Carl", "Ivy", "father"), ("Ivy", "Carl", "daughter"),  # 1, 2
    ("Jon", "Ivy", "brother"), ("Ivy", "Jon", "sister"),  # 3
    ("Kurt", "Ivy", "half-brother"), ("Lena", "Kurt", "half-sister"),  # 4
    ("Ada", "Ivy", "grandmother"), ("Ivy", "Ada", "granddaughter"),  # 5, 6
    ("Gus", "Ivy", "great-grandfather"), ("Gus", "Tina", "great-great-grandfather"),  # 7
    ("Tina", "Gus", "great-great-granddaughter"), ("Jon", "Hilda", "great-grandson"),  # 8
    ("Dora", "Ivy", "aunt"), ("Nate", "Ivy", "uncle"),  # 9 (blood and by marriage)
    ("Ivy", "Dora", "niece"), ("Jon", "Nate", "nephew"),  # 10
    ("Ezra", "Ivy", "great-uncle"), ("Wanda", "Ivy", "great-aunt"),  # 11, k = 2
    ("Ezra", "Tina", "great-great-uncle"),  # 11, k = 3
    ("Ivy", "Ezra", "grandniece"), ("Jon", "Wanda", "grandnephew"),  # 12, k = 2
    ("Tina", "Ezra", "great-grandniece"),  # 12, k = 3
    ("Olga", "Ivy", "first cousin"), ("Olga", "Tina", "first cousin once removed"),  # 13
    ("Tina", "Olga", "first cousin once removed"), ("Vera", "Tina", "second cousin"),
    ("Sam", "Ivy", "husband"), ("Ivy", "Sam", "wife"),  # 14
    ("Carl", "Sam", "father-in-law"), ("Fay", "Sam", "mother-in-law"),  # 15
    ("Sam", "Carl", "son-in-law"), ("Sam", "Fay", "son-in-law"),  # 16
    ("Paul", "Carl", "brother-in-law"), ("Nate", "Carl", "brother-in-law"),  # 17, both clauses
    ("Fay", "Dora", "sister-in-law"), ("Carl", "Paul", "brother-in-law"),
    ("Gina", "Ivy", "stepmother"), ("Carl", "Lena", "stepfather"), ("Fay", "Kurt", "stepmother"),
    ("Ivy", "Gina", "stepdaughter"), ("Lena", "Carl", "stepdaughter"),  # 19
    ("Lena", "Ivy", "stepsister"), ("Jon", "Lena", "stepbrother"),  # 20
]  # fmt: skip
UNRELATED = [("Mark", "Ivy"), ("Uri", "Tina"), ("Wanda", "Quinn"), ("Paul", "Nate")]


def hand_built() -> tuple[KinGraph, dict[str, int]]:
    g = KinGraph()
    ids = {name: g.add_person(name, gender) for name, gender in PEOPLE.items()}
    for child, parents in PARENTS.items():
        for parent in parents:
            g.add_parent(ids[parent], ids[child])
    for a, b in SPOUSES:
        g.marry(ids[a], ids[b])
    return g, ids


@pytest.mark.parametrize(("a", "b", "term"), EXPECTED)
def test_hand_built_family_canonical_terms(a: str, b: str, term: str) -> None:
    g, ids = hand_built()
    terms = specific_terms(relation(g, ids[a], ids[b]))
    assert terms and terms[0] == term, (a, b, terms)


def test_hand_built_family_covers_all_twenty_rows() -> None:
    assert {family_of(term) for _, _, term in EXPECTED} == set(FAMILIES)


@pytest.mark.parametrize(("a", "b"), UNRELATED)
def test_hand_built_family_unrelated_pairs(a: str, b: str) -> None:
    g, ids = hand_built()
    assert relation(g, ids[a], ids[b]) == []


def test_first_cousin_has_synonym_and_general_words() -> None:
    g, ids = hand_built()
    assert specific_terms(relation(g, ids["Olga"], ids["Ivy"])) == ["first cousin", "cousin"]
    ada = relation(g, ids["Ada"], ids["Ivy"])
    assert [general for _, _, general in ada] == ["grandparent"]


def random_family(seed: int, generations: int, remarriage: float) -> KinGraph:
    rng = random.Random(seed)
    pool = name_pool()
    shape = FamilyShape(generations, 1, 3, 0.8, remarriage, 0.6, 40)
    return generate_family(rng, shape, NameDrawer(rng, pool.female, pool.male))


families = st.builds(
    random_family,
    seed=st.integers(0, 10**9),
    generations=st.integers(2, 5),
    remarriage=st.sampled_from([0.0, 0.3, 0.8]),
)


@settings(max_examples=40, deadline=None)
@given(families)
def test_inverse_consistency(g: KinGraph) -> None:
    """A is B's T iff B is A's inverse(T): mother <-> daughter/son, aunt <-> niece, ..."""
    table = {b: relatives(g, b) for b in range(len(g))}
    for b, rel in table.items():
        for a, terms in rel.items():
            back = specific_terms(table[a].get(b, []))
            for _, specific, _ in terms:
                assert inverse_term(specific, g.genders[b]) in back, (a, b, specific, back)


SYMMETRIC = {"sibling", "half-sibling", "cousin", "spouse", "sibling-in-law", "step-sibling"}


@settings(max_examples=40, deadline=None)
@given(families)
def test_symmetric_families_and_cousin_degree(g: KinGraph) -> None:
    for b in range(len(g)):
        for a, terms in relatives(g, b).items():
            back = relation(g, b, a)
            for row, specific, _ in terms:
                if family_of(specific) in SYMMETRIC:
                    assert row in {r for r, _, _ in back}
                if family_of(specific) == "cousin":  # same degree and removal both ways
                    assert specific in {s for _, s, _ in back}


@settings(max_examples=40, deadline=None)
@given(families)
def test_composition_of_parents(g: KinGraph) -> None:
    """Parent of parent is grandparent; one more generation adds one great-."""
    for x in range(len(g)):
        for p in g.parents[x]:
            for gp in g.parents[p]:
                assert any(r == 5 for r, _, _ in relation(g, gp, x))
                for ggp in g.parents[gp]:
                    terms = relation(g, ggp, x)
                    assert any(s.startswith("great-grand") for _, s, _ in terms)


@settings(max_examples=40, deadline=None)
@given(families)
def test_family_graph_invariants(g: KinGraph) -> None:
    assert len(set(g.names)) == len(g)
    assert all(len(ps) <= 2 for ps in g.parents)

    def ancestors(x: int) -> set[int]:
        out, todo = {x}, [x]
        while todo:
            for p in g.parents[todo.pop()]:
                if p not in out:
                    out.add(p)
                    todo.append(p)
        return out

    for a, b in g.spouse_pairs():  # never a marriage between relatives
        assert not ancestors(a) & ancestors(b)
        assert g.genders[a] != g.genders[b]
