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
    Anyone whose gender no chosen phrasing conveys gets it from the two-sided phrasing of the
    first fact naming them.
    """
    oriented: list[Fact] = []
    chosen: list[tuple[str, str]] = []
    conveyed: set[int] = set()
    for kind, a, b in facts:
        if kind != "parent" and rng.random() < 0.5:
            a, b = b, a
        template, conveys = TEMPLATES[kind][rng.randrange(phrasings)]
        oriented.append((kind, a, b))
        chosen.append((template, conveys))
        if conveys:
            conveyed.add(a if conveys == "a" else b)
    for position, (kind, a, b) in enumerate(oriented):
        if a not in conveyed or b not in conveyed:
            chosen[position] = (BOTH[kind], "ab")
            conveyed.update((a, b))
    sentences = [render_fact(g, f, t) for f, (t, _) in zip(oriented, chosen, strict=True)]
    return " ".join(sentences), oriented


def question_text(g: KinGraph, qtype: str, a: int | None, b: int, term: str | None) -> str:
    name_b = g.names[b]
    if qtype == "relation":
        return f"How is {g.names[a]} related to {name_b}?"
    if qtype == "entity":
        return f"Who is {name_b}'s {term}?"
    if qtype == "count":
        return f"How many {plural(term)} does {name_b} have?"
    return f"Is {g.names[a]} {name_b}'s {term}?"
