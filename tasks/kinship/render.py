"""Text for facts, descriptions, questions and reasoning chains.

A fact is `(kind, a, b)` over person ids: `parent` (a is a parent of b), `spouse`, `sibling`
(full siblings). Genders are conveyed only by the words used, so every mentioned person must
appear at least once in a phrasing that names their gender; `describe` guarantees it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tasks.kinship.graph import KinGraph
from tasks.kinship.terms import plural

Fact = tuple[str, int, int]

# Per fact kind: templates in order of use (the `phrasings` knob takes a prefix), each with the
# participant whose gender it conveys ("a", "b" or "" for none), then one conveying both.
# {ra}: a's word for the relation (mother, wife, sister); {rb}: b's word (son, husband, brother);
# {pa}: a's possessive pronoun.
TEMPLATES: dict[str, list[tuple[str, str]]] = {
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
BOTH = {
    "parent": "{a} is {b}'s {ra}, and {b} is {pa} {rb}.",
    "spouse": "{a} and {b} are {ra} and {rb}.",
    "sibling": "{a} is {b}'s {ra}, and {b} is {pa} {rb}.",
}
_WORDS = {
    # kind: (a's word by a's gender, b's word by b's gender)
    "parent": (("mother", "father"), ("daughter", "son")),
    "spouse": (("wife", "husband"), ("wife", "husband")),
    "sibling": (("sister", "brother"), ("sister", "brother")),
}
_POSSESSIVE = ("her", "his")


def render_fact(g: KinGraph, fact: Fact, template: str) -> str:
    kind, a, b = fact
    words_a, words_b = _WORDS[kind]
    ga, gb = g.genders[a], g.genders[b]
    return template.format(
        a=g.names[a], b=g.names[b], ra=words_a[ga], rb=words_b[gb], pa=_POSSESSIVE[ga]
    )


def plain_fact(g: KinGraph, fact: Fact) -> str:
    """The fixed phrasing used in reasoning chains."""
    return render_fact(g, fact, TEMPLATES[fact[0]][0][0])


def describe(
    g: KinGraph, facts: Sequence[Fact], rng: random.Random, phrasings: int
) -> tuple[str, list[Fact]]:
    """Render facts with phrasings drawn from the first `phrasings` templates per kind.

    Returns the description and the facts as stated (symmetric facts may be re-oriented).
    Anyone whose gender no chosen phrasing conveys gets a phrasing that does: another allowed
    template of one of their facts where that loses no one else's gender, else the two-sided
    phrasing ("Ann is Bob's mother, and Bob is her son.").
    """
    oriented = [
        (kind, b, a) if kind != "parent" and rng.random() < 0.5 else (kind, a, b)
        for kind, a, b in facts
    ]
    chosen = [rng.randrange(phrasings) for _ in oriented]  # template index, -1 = BOTH
    count: dict[int, int] = {}

    def conveyed_by(position: int) -> tuple[int, ...]:
        kind, a, b = oriented[position]
        if chosen[position] < 0:
            return (a, b)
        role = TEMPLATES[kind][chosen[position]][1]
        return (a,) if role == "a" else (b,) if role == "b" else ()

    for position in range(len(oriented)):
        for x in conveyed_by(position):
            count[x] = count.get(x, 0) + 1
    for _, a0, b0 in list(oriented):
        for x in (a0, b0):
            if not count.get(x):
                _convey(oriented, chosen, count, conveyed_by, x, phrasings, rng)
    sentences = [
        render_fact(g, fact, BOTH[fact[0]] if index < 0 else TEMPLATES[fact[0]][index][0])
        for fact, index in zip(oriented, chosen, strict=True)
    ]
    return " ".join(sentences), oriented


def _convey(oriented, chosen, count, conveyed_by, x, phrasings, rng) -> None:
    """Re-phrase one fact naming x so that it conveys x's gender."""
    first = None
    for position, (kind, a, b) in enumerate(oriented):
        if x not in (a, b):
            continue
        first = position if first is None else first
        flipped = (kind, b, a) if kind != "parent" and x != a else oriented[position]
        role = "a" if flipped[1] == x else "b"
        options = [i for i in range(phrasings) if TEMPLATES[kind][i][1] == role]
        losing = conveyed_by(position)
        if options and all(count[y] > 1 for y in losing):
            for y in losing:
                count[y] -= 1
            oriented[position], chosen[position] = flipped, rng.choice(options)
            count[x] = count.get(x, 0) + 1
            return
    for y in conveyed_by(first):
        count[y] -= 1
    chosen[first] = -1
    for y in conveyed_by(first):
        count[y] = count.get(y, 0) + 1


def question_text(g: KinGraph, qtype: str, a: int | None, b: int, term: str | None) -> str:
    name_b = g.names[b]
    if qtype == "relation":
        return f"How is {g.names[a]} related to {name_b}?"
    if qtype == "entity":
        return f"Who is {name_b}'s {term}?"
    if qtype == "count":
        return f"How many {plural(term)} does {name_b} have?"
    return f"Is {g.names[a]} {name_b}'s {term}?"
