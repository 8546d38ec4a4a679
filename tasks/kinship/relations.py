"""The relation engine: every term of spec section 2 that holds between any A and a given B.

One general sweep outward from B evaluates all 20 rows literally as the spec states them
(set membership over parents, children, spouses and siblings), so it is correct on any graph,
including the stated-facts graph with placeholder parents, and never guesses from a sampled
path. `relatives(g, b)` answers "who is B's what" for everyone at once; `relation(g, a, b)`
is the pairwise view.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

from tasks.kinship.graph import KinGraph
from tasks.kinship.terms import (
    SYNONYMS,
    ancestor_term,
    cousin_term,
    descendant_term,
    grandniece_term,
    great_aunt_term,
    simple_general,
    simple_term,
    synonyms,
)

# (row, specific term, general word or None)
Term = tuple[int, str, str | None]


def any_siblings(g: KinGraph, x: int) -> list[tuple[int, bool]]:
    """AnySib(x) as (y, is_full_sibling) pairs: everyone sharing at least one parent with x."""
    px = g.parents[x]
    out: list[tuple[int, bool]] = []
    seen = {x}
    for p in px:
        for y in g.children[p]:
            if y in seen:
                continue
            seen.add(y)
            py = g.parents[y]
            full = len(px) == 2 and len(py) == 2 and py[0] in px and py[1] in px
            out.append((y, full))
    return out


def _levels(start: int, step: list[list[int]]) -> list[list[int]]:
    """Generations reached from `start` along `step` (parents or children): level k holds the
    distinct people exactly k steps away (a person may sit on several levels)."""
    level = [start]
    levels = [level]
    while True:
        seen: set[int] = set()
        nxt = []
        for x in level:
            for y in step[x]:
                if y not in seen:
                    seen.add(y)
                    nxt.append(y)
        if not nxt:
            return levels
        levels.append(nxt)
        level = nxt


@functools.cache
def _ancestor(k: int, gender: int) -> Term:
    return ancestor_term(k, gender)


@functools.cache
def _descendant(k: int, gender: int) -> Term:
    return descendant_term(k, gender)


@functools.cache
def _great_aunt(k: int, gender: int) -> Term:
    return 11, great_aunt_term(k, gender), None


@functools.cache
def _grandniece(k: int, gender: int) -> Term:
    return 12, grandniece_term(k, gender), None


@functools.cache
def _cousin(i: int, j: int) -> Term:
    return 13, cousin_term(i, j), None


# _SIMPLE_TERMS[row][gender]: the Term of a row without generation count. The caches above
# are bounded too: generations never exceed the number of people of a graph.
_SIMPLE_TERMS: Final[dict[int, tuple[Term, Term]]] = {
    row: (
        (row, simple_term(row, 0), simple_general(row)),
        (row, simple_term(row, 1), simple_general(row)),
    )
    for row in (1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 17, 18, 19, 20)
}


def relatives(g: KinGraph, b: int) -> dict[int, list[Term]]:
    """Map every person A != B with a known gender to the terms "A is B's T" that hold.

    Each value is sorted by row (the first entry is the canonical term) without duplicates.
    People of unknown gender (placeholders) are skipped: no term can be spelled for them.
    """
    P, C, S, G = g.parents, g.children, g.spouses, g.genders
    found: dict[int, list[Term]] = {}  # terms in the order found, duplicates dropped at the end
    terms_of = found.setdefault  # terms_of(a, []).append(term) adds a term for a
    sibling_memo: dict[int, list[tuple[int, bool]]] = {}

    def siblings(x: int) -> list[tuple[int, bool]]:
        known = sibling_memo.get(x)
        if known is None:
            known = sibling_memo[x] = any_siblings(g, x)
        return known

    def add_simple(a: int, row: int) -> None:
        if a != b and G[a] >= 0:
            terms_of(a, []).append(_SIMPLE_TERMS[row][G[a]])

    up = _levels(b, P)  # up[k] = anc_k(B)
    down = _levels(b, C)  # down[k] = desc_k(B)
    for k in range(1, len(up)):
        for a in up[k]:
            if G[a] >= 0 and a != b:
                terms_of(a, []).append(_ancestor(k, G[a]))
    for k in range(1, len(down)):
        for a in down[k]:
            if G[a] >= 0 and a != b:
                terms_of(a, []).append(_descendant(k, G[a]))

    own_siblings = siblings(b)
    for y, full in own_siblings:  # rows 3, 4
        add_simple(y, 3 if full else 4)

    for k in range(1, len(up)):  # rows 9 (k = 1) and 11 (k >= 2)
        for ancestor in up[k]:
            for t, _ in siblings(ancestor):
                for a in (t, *S[t]):
                    if G[a] >= 0 and a != b:
                        term = _SIMPLE_TERMS[9][G[a]] if k == 1 else _great_aunt(k, G[a])
                        terms_of(a, []).append(term)

    # Rows 10 and 12: B is A's (great-)aunt/uncle, i.e. A descends from some q with B in
    # AnySib(q), or with B married to someone in AnySib(q).
    siblings_and_in_law = [y for y, _ in own_siblings]
    for s in S[b]:
        siblings_and_in_law += [y for y, _ in siblings(s)]
    for q in dict.fromkeys(siblings_and_in_law):
        below = _levels(q, C)
        for k in range(1, len(below)):
            for a in below[k]:
                if G[a] >= 0 and a != b:
                    term = _SIMPLE_TERMS[10][G[a]] if k == 1 else _grandniece(k, G[a])
                    terms_of(a, []).append(term)

    if len(up) > 2:  # row 13 needs j >= 2: an ancestor two or more generations up
        for a, (i, j) in _nearest_common_ancestor_distances(g, up).items():
            if i >= 2 and j >= 2 and a != b and G[a] >= 0:
                terms_of(a, []).append(_cousin(i, j))

    for s in S[b]:
        add_simple(s, 14)
        for a in P[s]:  # row 15
            add_simple(a, 15)
        for a, _ in siblings(s):  # row 17, first clause
            add_simple(a, 17)
        for a in C[s]:  # row 19: B is A's step-parent
            if b not in P[a]:
                add_simple(a, 19)
    for c in C[b]:
        for a in S[c]:  # row 16
            add_simple(a, 16)
    for t, _ in own_siblings:
        for a in S[t]:  # row 17, second clause
            add_simple(a, 17)
    own_parents = P[b]
    for p in own_parents:
        for q in S[p]:
            if q not in own_parents:  # row 18
                add_simple(q, 18)
            for a in C[q]:  # row 20
                if a != b and not any(x in own_parents for x in P[a]):
                    add_simple(a, 20)
    for terms in found.values():
        if len(terms) > 1:
            terms[:] = sorted(set(terms))
    return found


def _nearest_common_ancestor_distances(
    g: KinGraph, up: list[list[int]]
) -> dict[int, tuple[int, int]]:
    """For every A below some ancestor-or-self c of B: the (i, j) = (A below c, B below c)
    minimising i + j, then |i - j|, then i (spec row 13), in the order the people are first
    met walking down from up[0], up[1], ... level by level.

    A person's descendants are not walked again from a place where every key they would get
    is no smaller than one they already have: from the same j at no smaller depth, or from
    anywhere with a larger i + j (say, from a grandparent down to the parent of B). Everyone
    such a walk would meet has been met before, so the result and its order stay the same."""
    children = g.children
    best: dict[int, tuple[tuple[int, int, int, int], tuple[int, int]]] = {}
    walked: dict[int, tuple[int, int, int]] = {}  # x -> (i + j, j, i) of its first walk down
    for j, level in enumerate(up):
        for c in level:
            done = walked.get(c)
            if done is not None and (done[0] < j or (done[1] == j and done[2] == 0)):
                continue
            below = [c]
            i = 0
            while below:
                key, pair = (i + j, abs(i - j), i, j), (i, j)
                for a in below:
                    old = best.get(a)
                    if old is None or key < old[0]:
                        best[a] = key, pair
                seen: set[int] = set()
                nxt = []
                for x in below:
                    if x not in walked:
                        walked[x] = (i + j, j, i)
                    for y in children[x]:
                        if y not in seen:
                            seen.add(y)
                            done = walked.get(y)
                            if done is None or not (
                                done[0] < i + 1 + j or (done[1] == j and done[2] <= i + 1)
                            ):
                                nxt.append(y)
                below = nxt
                i += 1
    return {a: pair for a, (_, pair) in best.items()}


def relation(g: KinGraph, a: int, b: int) -> list[Term]:
    """Terms T with "A is B's T", sorted by row; empty when no relation term holds."""
    return relatives(g, b).get(a, [])


def specific_terms(terms: Iterable[Term]) -> list[str]:
    """specific(A, B): the specific terms plus synonyms, canonical (first by row) first."""
    out: list[str] = []
    for _, specific, _ in terms:
        for t in (specific, *synonyms(specific)):
            if t not in out:
                out.append(t)
    return out


def general_terms(terms: Iterable[Term]) -> list[str]:
    """general(A, B): the general words that hold."""
    return list(dict.fromkeys(general for _, _, general in terms if general))


def holds(terms: Iterable[Term], term: str) -> bool:
    """Whether `term` is in specific(A, B) or general(A, B)."""
    for _, specific, general in terms:
        if term in (specific, general) or term in SYNONYMS.get(specific, ()):
            return True
    return False
