"""Relation terms of the kinship spec (section 2): spelling, families, plurals, normalisation.

Every term the generator writes or the scorer accepts is built here, so spelling rules live in
one place. Genders are encoded as 0 = female, 1 = male (gendered words list female first).
"""

from __future__ import annotations

import functools
import re

FEMALE, MALE = 0, 1
GENDER_NAMES = ("female", "male")

# The 20 relation families in the spec's row order (row = index + 1).
FAMILIES: tuple[str, ...] = (
    "parent",
    "child",
    "sibling",
    "half-sibling",
    "grandparent",
    "grandchild",
    "great-grandparent",
    "great-grandchild",
    "aunt/uncle",
    "niece/nephew",
    "great-aunt/uncle",
    "grandniece/nephew",
    "cousin",
    "spouse",
    "parent-in-law",
    "child-in-law",
    "sibling-in-law",
    "step-parent",
    "stepchild",
    "step-sibling",
)
ROW = {family: index + 1 for index, family in enumerate(FAMILIES)}

# (female, male, general) words for the rows whose terms carry no count of generations.
_SIMPLE: dict[int, tuple[str, str, str | None]] = {
    1: ("mother", "father", "parent"),
    2: ("daughter", "son", "child"),
    3: ("sister", "brother", "sibling"),
    4: ("half-sister", "half-brother", "half-sibling"),
    5: ("grandmother", "grandfather", "grandparent"),
    6: ("granddaughter", "grandson", "grandchild"),
    9: ("aunt", "uncle", None),
    10: ("niece", "nephew", None),
    14: ("wife", "husband", "spouse"),
    15: ("mother-in-law", "father-in-law", "parent-in-law"),
    16: ("daughter-in-law", "son-in-law", "child-in-law"),
    17: ("sister-in-law", "brother-in-law", "sibling-in-law"),
    18: ("stepmother", "stepfather", "stepparent"),
    19: ("stepdaughter", "stepson", "stepchild"),
    20: ("stepsister", "stepbrother", "stepsibling"),
}

ORDINALS = (
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
)
_TIMES = {1: "once", 2: "twice"} | {
    n: f"{word} times"
    for n, word in enumerate(
        ("three", "four", "five", "six", "seven", "eight", "nine", "ten"), start=3
    )
}
MAX_COUSIN_DEGREE = len(ORDINALS)
MAX_REMOVAL = 10


def simple_term(row: int, gender: int) -> str:
    """Specific term of a row without generation count (rows 1-6, 9, 10, 14-20)."""
    return _SIMPLE[row][gender]


def simple_general(row: int) -> str | None:
    """General word of a row without generation count, or None where the row has none."""
    return _SIMPLE[row][2]


def ancestor_term(k: int, gender: int) -> tuple[int, str, str]:
    """(row, specific, general) for an ancestor k >= 1 generations up."""
    if k == 1:
        return 1, _SIMPLE[1][gender], "parent"
    greats = "great-" * (k - 2)
    return (5 if k == 2 else 7), greats + _SIMPLE[5][gender], greats + "grandparent"


def descendant_term(k: int, gender: int) -> tuple[int, str, str]:
    """(row, specific, general) for a descendant k >= 1 generations down."""
    if k == 1:
        return 2, _SIMPLE[2][gender], "child"
    greats = "great-" * (k - 2)
    return (6 if k == 2 else 8), greats + _SIMPLE[6][gender], greats + "grandchild"


def great_aunt_term(k: int, gender: int) -> str:
    """Row 11: sibling (or sibling's spouse) of an ancestor k >= 2 up."""
    return "great-" * (k - 1) + _SIMPLE[9][gender]


def grandniece_term(k: int, gender: int) -> str:
    """Row 12: inverse of row 11 with the same k >= 2."""
    return "great-" * (k - 2) + ("grandniece", "grandnephew")[gender]


def cousin_term(i: int, j: int) -> str:
    """Row 13: A and B at distances i, j >= 2 below their nearest common ancestor."""
    degree, removal = min(i, j) - 1, abs(i - j)
    if degree > MAX_COUSIN_DEGREE or removal > MAX_REMOVAL:
        raise ValueError(f"cousin distance ({i}, {j}) is beyond tenth cousin ten times removed")
    term = f"{ORDINALS[degree - 1]} cousin"
    return f"{term} {_TIMES[removal]} removed" if removal else term


SYNONYMS: dict[str, tuple[str, ...]] = {"first cousin": ("cousin",)}


def synonyms(term: str) -> tuple[str, ...]:
    """Other spellings with full credit (the spec's only synonym: cousin = first cousin)."""
    return SYNONYMS.get(term, ())


_IRREGULAR_PLURAL = {"child": "children"}


def plural(term: str) -> str:
    """English plural of a term: sisters-in-law, grandchildren, first cousins once removed."""
    if term.endswith("-in-law"):
        head = term[: -len("-in-law")]
        return plural(head) + "-in-law"
    if " cousin" in term or term == "cousin":
        return term.replace("cousin", "cousins", 1)
    for singular, many in _IRREGULAR_PLURAL.items():
        if term.endswith(singular):
            return term[: -len(singular)] + many
    return term + "s"


_SPACES = re.compile(r"\s+")


def normalize(answer: str) -> str:
    """Answer matching per the spec: lower case, trim, drop one trailing '.', collapse white
    space, and treat '-' and ' ' alike."""
    text = answer.strip().lower()
    if text.endswith("."):
        text = text[:-1].rstrip()
    text = text.replace("-", " ")
    return _SPACES.sub(" ", text).strip()


@functools.cache
def family_of(term: str) -> str:
    """The relation family (spec row name) of a canonical term, specific or general."""
    t = term.lower()
    if "cousin" in t:
        return "cousin"
    if t.startswith("step"):
        if "sibling" in t or "sister" in t or "brother" in t:
            return "step-sibling"
        if t in ("stepparent", "stepmother", "stepfather"):
            return "step-parent"
        return "stepchild"
    if t.endswith("-in-law"):
        head = t[: -len("-in-law")]
        return {
            "mother": "parent-in-law",
            "father": "parent-in-law",
            "parent": "parent-in-law",
            "daughter": "child-in-law",
            "son": "child-in-law",
            "child": "child-in-law",
        }.get(head, "sibling-in-law")
    if t.startswith("half-"):
        return "half-sibling"
    if t.endswith(("niece", "nephew")):
        return "grandniece/nephew" if "grand" in t else "niece/nephew"
    if t.endswith(("aunt", "uncle")):
        return "great-aunt/uncle" if t.startswith("great-") else "aunt/uncle"
    base = t.removeprefix("great-")
    while base.startswith("great-"):
        base = base.removeprefix("great-")
    greats = t.count("great-")
    if base in ("grandmother", "grandfather", "grandparent"):
        return "great-grandparent" if greats else "grandparent"
    if base in ("granddaughter", "grandson", "grandchild"):
        return "great-grandchild" if greats else "grandchild"
    for row, (female, male, general) in _SIMPLE.items():
        if t in (female, male, general):
            return FAMILIES[row - 1]
    raise ValueError(f"not a relation term: {term!r}")


def gender_of_term(term: str) -> int | None:
    """FEMALE or MALE for a gendered specific term, None for a general word or an ungendered one."""
    t = term.lower()
    if "cousin" in t:
        return None
    for female, male, _ in _SIMPLE.values():
        if t.endswith(female) and not t.endswith(male):
            return FEMALE
        if t.endswith(male):
            return MALE
    if t.endswith(("niece",)):
        return FEMALE
    if t.endswith(("nephew",)):
        return MALE
    return None


def all_terms(max_generations: int = 8) -> list[str]:
    """Every specific and general term up to `max_generations` (for vocabularies and tests)."""
    terms: list[str] = []
    for row in sorted(_SIMPLE):
        female, male, general = _SIMPLE[row]
        terms += [female, male] + ([general] if general else [])
    for k in range(3, max_generations + 1):
        for gender in (FEMALE, MALE):
            terms += [ancestor_term(k, gender)[1], descendant_term(k, gender)[1]]
        terms += [ancestor_term(k, 0)[2], descendant_term(k, 0)[2]]
    for k in range(2, max_generations + 1):
        for gender in (FEMALE, MALE):
            terms += [great_aunt_term(k, gender), grandniece_term(k, gender)]
    for i in range(2, max_generations + 1):
        for j in range(2, max_generations + 1):
            terms.append(cousin_term(i, j))
    terms.append("cousin")
    return sorted(set(terms))


_GENDER_PAIRS = (
    ("mother", "father"),
    ("daughter", "son"),
    ("sister", "brother"),
    ("aunt", "uncle"),
    ("niece", "nephew"),
    ("wife", "husband"),
)


def _split_in_law(term: str) -> tuple[str, str]:
    return (term[: -len("-in-law")], "-in-law") if term.endswith("-in-law") else (term, "")


def gender_swap(term: str) -> str | None:
    """The same relation with the other gender (grandfather for grandmother), or None for a
    word without gender (cousins, general words)."""
    head, tail = _split_in_law(term)
    for female, male in _GENDER_PAIRS:
        if head.endswith(female):
            return head[: -len(female)] + male + tail
        if head.endswith(male):
            return head[: -len(male)] + female + tail
    return None


_INVERSE_WORD = {
    "mother": ("daughter", "son"),
    "father": ("daughter", "son"),
    "parent": ("child", "child"),
    "daughter": ("mother", "father"),
    "son": ("mother", "father"),
    "child": ("parent", "parent"),
    "sister": ("sister", "brother"),
    "brother": ("sister", "brother"),
    "sibling": ("sibling", "sibling"),
    "wife": ("wife", "husband"),
    "husband": ("wife", "husband"),
    "spouse": ("spouse", "spouse"),
}


def inverse_term(term: str, gender: int) -> str:
    """The term for the other direction ("B is A's ?" given "A is B's term"), spelled for
    B's `gender`: mother -> son, mother-in-law -> daughter-in-law, great-aunt -> grandnephew."""
    if "cousin" in term:
        return "first cousin" if term == "cousin" else term
    head, tail = _split_in_law(term)
    prefix = ""
    for p in ("step", "half-"):
        if head.startswith(p):
            prefix, head = p, head[len(p) :]
    greats = 0
    while head.startswith("great-"):
        greats, head = greats + 1, head[len("great-") :]
    if head.startswith("grand"):
        base = head[len("grand") :]
        if base in ("niece", "nephew"):  # (greats)grandniece -> (greats+1)great-aunt
            return "great-" * (greats + 1) + ("aunt", "uncle")[gender]
        word = _INVERSE_WORD[base][gender]
        return "great-" * greats + "grand" + word
    if head in ("aunt", "uncle"):  # (greats)aunt -> grandniece with one fewer great
        if greats == 0:
            return ("niece", "nephew")[gender]
        return "great-" * (greats - 1) + ("grandniece", "grandnephew")[gender]
    if head in ("niece", "nephew"):
        return ("aunt", "uncle")[gender]
    if prefix == "step" and head in ("parent", "child"):
        return "step" + ("child" if head == "parent" else "parent")
    if tail and head in ("mother", "father", "parent", "daughter", "son", "child"):
        return _INVERSE_WORD[head][gender] + tail
    return prefix + _INVERSE_WORD[head][gender] + tail


def generation_shifts(term: str) -> list[str]:
    """Terms one generation (or cousin degree or removal) away: grandmother for
    great-grandmother, great-aunt for aunt, second cousin for first cousin."""
    head, tail = _split_in_law(term)
    if tail or head.startswith(("step", "half-")):
        return []
    if "cousin" in head:
        t = "first cousin" if head == "cousin" else head
        words = t.split()
        degree = ORDINALS.index(words[0]) + 1
        removal = 0 if len(words) == 2 else {v: k for k, v in _TIMES.items()}[" ".join(words[2:-1])]
        out = []
        for d, r in ((degree + 1, removal), (degree - 1, removal), (degree, removal + 1)):
            if 1 <= d <= MAX_COUSIN_DEGREE and 0 <= r <= MAX_REMOVAL:
                out.append(cousin_term(d + 1, d + 1 + r))
        if removal:
            out.append(cousin_term(degree + 1, degree + removal))
        return out
    greats = 0
    while head.startswith("great-"):
        greats, head = greats + 1, head[len("great-") :]
    if head.startswith("grand"):
        base = head[len("grand") :]
        return ["great-" * (greats + 1) + head] + (
            ["great-" * (greats - 1) + head] if greats else [base]
        )
    if head in ("aunt", "uncle"):
        return ["great-" * (greats + 1) + head] + (
            ["great-" * (greats - 1) + head] if greats else []
        )
    if head in ("niece", "nephew"):
        return ["grand" + head]
    if head in ("mother", "father", "parent", "daughter", "son", "child"):
        return ["grand" + head]
    return []
