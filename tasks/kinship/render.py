"""Text for facts, descriptions, questions and reasoning chains.

A fact is `(kind, a, b)` over person ids: `parent` (a is a parent of b), `spouse`, `sibling`
(full siblings). Genders are conveyed only by the words used, so every mentioned person must
appear at least once in a phrasing that names their gender; `describe` guarantees it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

from tasks.kinship.draws import below, choice
from tasks.kinship.graph import KinGraph
from tasks.kinship.terms import plural

Fact = tuple[str, int, int]

# Per fact kind: templates in order of use (the `phrasings` knob takes a prefix), each with the
# participant whose gender it conveys ("a", "b" or "" for none), then one conveying both.
# {ra}: a's word for the relation (mother, wife, sister); {rb}: b's word (son, husband, brother);
# {pa}: a's possessive pronoun.
TEMPLATES: Final[dict[str, list[tuple[str, str]]]] = {
    "parent": [
        ("{a} is {b}'s {ra}.", "a"),
        ("{a} has a {rb}, {b}.", "b"),
        ("{b}'s {ra} is {a}.", "a"),
        ("{b} is {a}'s {rb}.", "b"),
    ],
    "spouse": [
        ("{a} is {b}'s {ra}.", "a"),
        ("{a} is married to {b}.", ""),
        ("{b}'s {ra} is {a}.", "a"),
        ("{a} and {b} are married.", ""),
    ],
    "sibling": [
        ("{a} is {b}'s {ra}.", "a"),
        ("{a} and {b} are full siblings.", ""),
        ("{b}'s {ra} is {a}.", "a"),
        ("{b} is {a}'s {rb}.", "b"),
    ],
}
BOTH: Final = {
    "parent": "{a} is {b}'s {ra}, and {b} is {pa} {rb}.",
    "spouse": "{a} and {b} are {ra} and {rb}.",
    "sibling": "{a} is {b}'s {ra}, and {b} is {pa} {rb}.",
}
_WORDS: Final = {
    # kind: (a's word by a's gender, b's word by b's gender)
    "parent": (("mother", "father"), ("daughter", "son")),
    "spouse": (("wife", "husband"), ("wife", "husband")),
    "sibling": (("sister", "brother"), ("sister", "brother")),
}
_POSSESSIVE: Final = ("her", "his")


def render_fact(g: KinGraph, fact: Fact, template: str) -> str:
    kind, a, b = fact
    words_a, words_b = _WORDS[kind]
    ga, gb = g.genders[a], g.genders[b]
    return template.format(
        a=g.names[a], b=g.names[b], ra=words_a[ga], rb=words_b[gb], pa=_POSSESSIVE[ga]
    )


def _fill(template: str, kind: str, ga: int, gb: int) -> str:
    """The template with the relation words for genders ga, gb written in and the names made
    positional ({0} = a, {1} = b; the words hold no braces, so the result formats the same)."""
    words_a, words_b = _WORDS[kind]
    return (
        template.replace("{ra}", words_a[ga])
        .replace("{rb}", words_b[gb])
        .replace("{pa}", _POSSESSIVE[ga])
        .replace("{a}", "{0}")
        .replace("{b}", "{1}")
    )


# _FILLED[kind][index][ga][gb]: template `index` of `kind` (-1 = BOTH) filled by `_fill`.
_FILLED: Final[dict[str, tuple[tuple[tuple[str, str], tuple[str, str]], ...]]] = {
    kind: tuple(
        tuple(
            tuple(_fill(template, kind, ga, gb) for gb in (0, 1))  # type: ignore[misc]
            for ga in (0, 1)
        )
        for template in [t for t, _ in options] + [BOTH[kind]]
    )
    for kind, options in TEMPLATES.items()
}
# _CONVEYS[kind][index]: whose gender template `index` of `kind` conveys (-1 = BOTH: both).
_CONVEYS: Final[dict[str, tuple[str, ...]]] = {
    kind: (*(role for _, role in options), "ab") for kind, options in TEMPLATES.items()
}
# _OPTIONS[kind, role, phrasings]: the templates among the first `phrasings` conveying `role`.
_OPTIONS: Final[dict[tuple[str, str, int], list[int]]] = {
    (kind, role, phrasings): [i for i in range(phrasings) if options[i][1] == role]
    for kind, options in TEMPLATES.items()
    for role in ("a", "b")
    for phrasings in range(1, len(options) + 1)
}


def _render(g: KinGraph, fact: Fact, index: int) -> str:
    """`render_fact` with template `index` of the fact's kind (-1 = BOTH)."""
    kind, a, b = fact
    names, genders = g.names, g.genders
    return _FILLED[kind][index][genders[a]][genders[b]].format(names[a], names[b])


def plain_fact(g: KinGraph, fact: Fact) -> str:
    """The fixed phrasing used in reasoning chains."""
    return _render(g, fact, 0)


def describe(
    g: KinGraph, facts: Sequence[Fact], rng: random.Random, phrasings: int
) -> tuple[str, list[Fact]]:
    """Render facts with phrasings drawn from the first `phrasings` templates per kind.

    Returns the description and the facts as stated (symmetric facts may be re-oriented).
    Anyone whose gender no chosen phrasing conveys gets a phrasing that does: another allowed
    template of one of their facts where that loses no one else's gender, else the two-sided
    phrasing ("Ann is Bob's mother, and Bob is her son.").
    """
    rand = rng.random
    oriented = [
        (kind, b, a) if kind != "parent" and rand() < 0.5 else (kind, a, b) for kind, a, b in facts
    ]
    if phrasings < 1:
        raise ValueError(f"phrasings must be at least 1 (got {phrasings})")
    chosen = [below(rng, phrasings) for _ in oriented]  # template index, -1 = BOTH
    count: dict[int, int] = {}
    for (kind, a, b), index in zip(oriented, chosen, strict=True):
        role = _CONVEYS[kind][index]
        if role:
            for x in (a, b) if role == "ab" else (a,) if role == "a" else (b,):
                count[x] = count.get(x, 0) + 1
    for _, a0, b0 in list(oriented):
        for x in (a0, b0):
            if not count.get(x):
                _convey(oriented, chosen, count, x, phrasings, rng)
    sentences = [_render(g, fact, index) for fact, index in zip(oriented, chosen, strict=True)]
    return " ".join(sentences), oriented


def _conveyed_by(fact: Fact, index: int) -> tuple[int, ...]:
    """Whose gender the fact conveys in template `index` (-1 = BOTH)."""
    kind, a, b = fact
    role = _CONVEYS[kind][index]
    return (a,) if role == "a" else (b,) if role == "b" else (a, b) if role else ()


def _convey(
    oriented: list[Fact],
    chosen: list[int],
    count: dict[int, int],
    x: int,
    phrasings: int,
    rng: random.Random,
) -> None:
    """Re-phrase one fact naming x so that it conveys x's gender."""
    first = None
    for position, fact in enumerate(oriented):
        kind, a, b = fact
        if x != a and x != b:
            continue
        if first is None:
            first = position
        flipped = (kind, b, a) if kind != "parent" and x != a else fact
        options = _OPTIONS[kind, "a" if flipped[1] == x else "b", phrasings]
        if not options:
            continue
        losing = _conveyed_by(fact, chosen[position])
        for y in losing:
            if count[y] <= 1:
                break  # y's gender would go unconveyed
        else:
            for y in losing:
                count[y] -= 1
            oriented[position], chosen[position] = flipped, choice(rng, options)
            count[x] = count.get(x, 0) + 1
            return
    assert first is not None  # x comes from one of the facts
    for y in _conveyed_by(oriented[first], chosen[first]):
        count[y] -= 1
    chosen[first] = -1
    for y in _conveyed_by(oriented[first], -1):
        count[y] = count.get(y, 0) + 1


def question_text(g: KinGraph, qtype: str, a: int | None, b: int, term: str | None) -> str:
    name_b = g.names[b]
    if qtype == "entity":
        return f"Who is {name_b}'s {term}?"
    if qtype == "count":
        assert term is not None
        return f"How many {plural(term)} does {name_b} have?"
    assert a is not None
    if qtype == "relation":
        return f"How is {g.names[a]} related to {name_b}?"
    return f"Is {g.names[a]} {name_b}'s {term}?"
