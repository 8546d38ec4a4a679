"""Kinship examples: a family, the facts that describe it, a question and its exact answer.

`make_example(config, seed, index)` is a pure function of its arguments: all randomness comes
from one generator seeded by (seed, index) jointly, so any item can be made alone, in any order
and in any process, with the same result. An attempt that cannot meet the config (no relative
at the wanted distance, or a description that would not determine the answer) is redrawn from
the same stream, so the output stays deterministic.
"""

from __future__ import annotations

import functools
import random
from bisect import bisect
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Any, Final, cast

from tasks.kinship.config import QUESTION_TYPES, GenerationError, KinshipConfig
from tasks.kinship.draws import below, choice, sample, shuffle
from tasks.kinship.graph import UNKNOWN, FamilyShape, KinGraph, NameDrawer, generate_family
from tasks.kinship.names import name_pool
from tasks.kinship.relations import Term, holds, relatives, specific_terms
from tasks.kinship.render import Fact, describe, plain_fact, question_text
from tasks.kinship.terms import GENDER_NAMES, family_of, gender_swap, generation_shifts, plural

MAX_ATTEMPTS: Final = 200
QUESTIONS_PER_FAMILY: Final = 4  # question draws on one family before a new family is drawn


def item_rng(seed: int, index: int) -> random.Random:
    """The generator of item `index` under `seed`: seeded by the pair, hashed (SHA-512) by
    Python's string seeding, so streams of different (seed, index) pairs never coincide."""
    return random.Random(f"kinrl/kinship/{seed}/{index}")


class _Question:
    __slots__ = ("a", "b", "qtype", "targets", "term")

    def __init__(
        self, qtype: str, b: int, a: int | None, term: str | None, targets: list[int]
    ) -> None:
        self.qtype = qtype
        self.b = b
        self.a = a  # relation / yesno subject
        self.term = term  # entity / count / yesno query term
        self.targets = targets  # people whose path to B is stated


def make_example(
    config: KinshipConfig, seed: int, index: int, split: str = "train"
) -> dict[str, Any]:
    """One record satisfying `docs/spec/kinship.md`, as a JSON-ready dict."""
    rng = item_rng(seed, index)
    pool = name_pool(config.locale, config.name_pool)
    shape = config.shape
    disconnected = _disconnected_shape(config) if config.disconnected_facts else None
    # rng.choices(QUESTION_TYPES, weights)[0] without re-validating the weights per draw: the
    # same one random() call and the same bisection.
    cum_weights = list(accumulate(config.question_weights))
    total = cum_weights[-1] + 0.0
    last = len(cum_weights) - 1
    for _ in range(MAX_ATTEMPTS // QUESTIONS_PER_FAMILY):
        names = NameDrawer(rng, pool.female, pool.male)
        g = generate_family(rng, shape, names)
        main_size = len(g)
        if disconnected is not None:
            generate_family(rng, disconnected, names, graph=g)
        adjacency = _fact_graph(g, main_size)
        for _ in range(QUESTIONS_PER_FAMILY):
            qtype = QUESTION_TYPES[bisect(cum_weights, rng.random() * total, 0, last)]
            record = _try_question(config, rng, g, main_size, adjacency, qtype)
            if record is not None:
                # The record's keys follow in _FIELD_ORDER.
                return {
                    "id": f"kinship-d{config.difficulty}-s{seed}-{index}",
                    "split": split,
                    "difficulty": config.difficulty,
                    "seed": seed,
                    **record,
                }
    raise GenerationError(
        f"no example after {MAX_ATTEMPTS} attempts (seed {seed}, index {index}): the config's "
        f"families cannot give {config.min_hops}..{config.max_hops} hops for its question types"
    )


def _disconnected_shape(config: KinshipConfig) -> FamilyShape:
    return FamilyShape(
        generations=3,
        remarriage_prob=0.0,
        stepchild_prob=0.0,
        max_people=max(4, config.disconnected_facts + 2),
        min_children=1,
        max_children=3,
        marriage_prob=0.7,
    )


def _fact_graph(g: KinGraph, limit: int) -> list[list[int]]:
    """Neighbours along parent and spouse edges (what a chain of facts can follow)."""
    return [g.parents[x] + g.children[x] + g.spouses[x] for x in range(limit)]


def _distances(
    adjacency: Sequence[list[int]] | Mapping[int, list[int]], source: int
) -> dict[int, int]:
    """Breadth-first distances from `source` (every node must be a key of `adjacency`), in the
    order a FIFO queue reaches them."""
    dist = {source: 0}
    frontier = [source]
    d = 0
    while frontier:
        d += 1
        following = []
        for x in frontier:
            for y in adjacency[x]:
                if y not in dist:
                    dist[y] = d
                    following.append(y)
        frontier = following
    return dist


def _try_question(
    config: KinshipConfig,
    rng: random.Random,
    g: KinGraph,
    main_size: int,
    adjacency: list[list[int]],
    qtype: str,
) -> dict[str, Any] | None:
    """One question on family `g` (`adjacency` is its `_fact_graph`), or None if it fails."""
    for _ in range(4):  # a B with someone far enough away, before the costly relatives()
        b = below(rng, main_size)
        dist = _distances(adjacency, b)
        if max(dist.values()) >= config.min_hops:
            break
    else:
        return None
    rel = relatives(g, b)
    question = _choose_question(config, rng, qtype, b, rel, dist)
    if question is None:
        return None
    facts: dict[tuple, Fact] = {}
    for target in question.targets:
        path = _random_shortest_path(rng, adjacency, dist, target)
        for fact in _path_facts(rng, g, path, config.sibling_fact_prob, config.min_hops):
            facts.setdefault(_fact_key(fact), fact)
    _add_noise(config, rng, g, main_size, facts, question.b, question.targets)
    stated = list(facts.values())
    outcome = _solve(config, g, rel, question, stated)
    if outcome is None:
        stated = _complete_parents(g, stated)
        outcome = _solve(config, g, rel, question, stated)
        if outcome is None:
            return None
    answer, answers, answer_people, hops, involved = outcome
    if not config.min_hops <= hops <= config.max_hops:
        return None
    if config.relation_families and not involved <= set(config.relation_families):
        return None
    if config.shuffle_facts:
        shuffle(rng, stated)
    description, stated = describe(g, stated, rng, config.phrasings)
    text = question_text(g, question.qtype, question.a, question.b, question.term)
    completion = f"Answer: {answer}"
    if config.reasoning:
        completion = _reasoning(g, stated, question, answer, answer_people, rel) + completion
    names = g.names
    return {  # in _FIELD_ORDER after id, split, difficulty and seed
        "people": [
            {"name": name, "gender": GENDER_NAMES[gender]}
            for name, gender in zip(names, g.genders, strict=True)
        ],
        "parents": [[names[p], names[c]] for c, ps in enumerate(g.parents) for p in ps],
        "spouses": [[names[a], names[s]] for a, ss in enumerate(g.spouses) for s in ss if a < s],
        "facts": [{"kind": k, "a": names[x], "b": names[y]} for k, x, y in stated],
        "description": description,
        "question": text,
        "question_type": question.qtype,
        "query": {
            "subject": names[question.a] if question.a is not None else None,
            "object": names[question.b],
            "term": question.term,
        },
        "answer": answer,
        "answers": answers,
        "hops": hops,
        "prompt": f"{description}\nQuestion: {text}\n",
        "completion": completion,
    }


_FIELD_ORDER: Final = (
    "id",
    "split",
    "difficulty",
    "seed",
    "people",
    "parents",
    "spouses",
    "facts",
    "description",
    "question",
    "question_type",
    "query",
    "answer",
    "answers",
    "hops",
    "prompt",
    "completion",
)


def _choose_question(
    config: KinshipConfig,
    rng: random.Random,
    qtype: str,
    b: int,
    rel: dict[int, list[Term]],
    dist: dict[int, int],
) -> _Question | None:
    """Pick the question's people and term; relation families are drawn uniformly first so
    rare families (step-siblings, great-grandnieces) are as common as parents."""
    lo, hi = config.min_hops, config.max_hops
    # The path may shrink by one per sibling fact, so allow some slack above max_hops.
    slack = 2 if config.sibling_fact_prob > 0 else 0
    if qtype == "yesno" and rng.random() < 0.5:
        return _no_question(rng, b, rel, dist, lo, hi + slack)
    by_family: dict[str, list[int]] = {}
    for a, terms in rel.items():
        d = dist.get(a)
        if d is not None and lo <= d <= hi + slack:
            family = family_of(terms[0][1])
            people = by_family.get(family)
            if people is None:
                by_family[family] = [a]
            else:
                people.append(a)
    allowed = config.relation_families
    families = [f for f in by_family if not allowed or f in allowed]
    if not families:
        return None
    a = choice(rng, by_family[choice(rng, sorted(families))])
    terms = rel[a]
    if qtype in ("relation", "yesno"):
        term = None if qtype == "relation" else _pick_term(rng, terms)
        return _Question(qtype, b, a, term, [a])
    term = _pick_term(rng, terms)
    others = [
        x for x, ts in rel.items() if x != a and dist.get(x, hi + 9) <= hi and holds(ts, term)
    ]
    extra = sample(rng, others, min(len(others), below(rng, config.max_answers)))
    return _Question(qtype, b, None, term, [a, *extra])


def _pick_term(rng: random.Random, terms: list[Term]) -> str:
    _row, specific, general = choice(rng, terms)
    return general if general and rng.random() < 0.3 else specific


def _no_question(
    rng: random.Random, b: int, rel: dict[int, list[Term]], dist: dict[int, int], lo: int, hi: int
) -> _Question | None:
    """A yes/no question whose answer is no: a near-miss term for a relative, or any term for
    someone with no relation term."""
    candidates = [a for a, d in dist.items() if lo <= d <= hi]
    if not candidates:
        return None
    a = choice(rng, candidates)
    terms = rel.get(a, [])
    options: list[str] = []
    for _, specific, _ in terms:
        options += _near_misses(specific)
    if not options or rng.random() < 0.3:
        options += sample(rng, _COMMON_TERMS, 3)
    options = [t for t in options if not holds(terms, t)]
    if not options:
        return None
    return _Question("yesno", b, a, choice(rng, options), [a])


@functools.cache
def _near_misses(term: str) -> tuple[str, ...]:
    """The gender swap (if any) and the generation shifts of a term, in that order. Cached:
    there are only as many terms as generations allow."""
    swapped = gender_swap(term)
    return ((swapped,) if swapped else ()) + tuple(generation_shifts(term))


_COMMON_TERMS: Final = [
    "mother", "father", "daughter", "son", "sister", "brother", "half-sister", "grandmother",
    "grandson", "aunt", "uncle", "niece", "nephew", "first cousin", "wife", "husband",
    "mother-in-law", "son-in-law", "sister-in-law", "stepfather", "stepdaughter", "stepbrother",
    "great-aunt", "grandnephew", "great-grandfather", "spouse", "parent", "sibling",
]  # fmt: skip


def _random_shortest_path(
    rng: random.Random, adjacency: list[list[int]], dist: dict[int, int], target: int
) -> list[int]:
    """A uniformly chosen step at each hop of a shortest path from `target` back to the source."""
    path = [target]
    x = target
    while dist[x] > 0:
        x = choice(rng, [y for y in adjacency[x] if dist.get(y) == dist[x] - 1])
        path.append(x)
    return path


def _path_facts(
    rng: random.Random, g: KinGraph, path: list[int], sibling_prob: float, min_hops: int
) -> list[Fact]:
    """Facts along a path; a child-parent-child step between full siblings may become one
    `sibling` fact, as long as the path keeps at least `min_hops` facts."""
    facts: list[Fact] = []
    spare = len(path) - 1 - min_hops  # steps the path can lose to sibling facts
    i = 0
    while i < len(path) - 1:
        u, v = path[i], path[i + 1]
        if spare > 0 and i + 2 < len(path) and v in g.parents[u] and rng.random() < sibling_prob:
            w = path[i + 2]
            pu, pw = g.parents[u], g.parents[w]
            if v in pw and len(pu) == 2 and len(pw) == 2 and set(pu) == set(pw):
                facts.append(("sibling", u, w))
                spare -= 1
                i += 2
                continue
        if v in g.parents[u]:
            facts.append(("parent", v, u))
        elif u in g.parents[v]:
            facts.append(("parent", u, v))
        else:
            facts.append(("spouse", u, v))
        i += 1
    return facts


def _fact_key(fact: Fact) -> tuple:
    kind, a, b = fact
    return (kind, a, b) if kind == "parent" else (kind, min(a, b), max(a, b))


def _true_facts(g: KinGraph, lo: int, hi: int) -> list[Fact]:
    """Every fact the description could state about people lo..hi-1."""
    facts: list[Fact] = [("parent", p, c) for c in range(lo, hi) for p in g.parents[c]]
    facts += [("spouse", a, b) for a in range(lo, hi) for b in g.spouses[a] if a < b]
    facts += [("sibling", a, b) for a, b in g.full_sibling_pairs(lo, hi)]
    return facts


# (the other person, key as in `_fact_key`, the fact as seen from x)
_Link = tuple[int, tuple, Fact]


def _links(g: KinGraph, x: int) -> list[_Link]:
    """Every true fact naming x: its parents, children, spouses, then full siblings."""
    out: list[_Link] = []
    for p in g.parents[x]:
        fact = ("parent", p, x)
        out.append((p, fact, fact))
    for c in g.children[x]:
        fact = ("parent", x, c)
        out.append((c, fact, fact))
    for s in g.spouses[x]:
        out.append((s, ("spouse", x, s) if x < s else ("spouse", s, x), ("spouse", x, s)))
    parents = g.parents
    if len(parents[x]) == 2:  # full siblings, in `any_siblings` order: children of parent 0
        p0, p1 = parents[x]
        for y in g.children[p0]:
            if y != x and len(parents[y]) == 2 and p1 in parents[y]:
                key = ("sibling", x, y) if x < y else ("sibling", y, x)
                out.append((y, key, ("sibling", x, y)))
    return out


def _supporting_candidates(
    g: KinGraph,
    facts: dict[tuple, Fact],
    mentioned: set[int],
    links: dict[int, list[_Link]],
) -> list[tuple[tuple, Fact]]:
    """(key, fact) for the unstated true facts between two mentioned people. Their order and
    orientation are those of one dict filled with every fact around each mentioned person in
    id order (`_links`): a fact sits where the smaller one put it, seen from the larger one,
    which wrote it last. `links` keeps `_links` per person across calls on the same graph."""
    out: list[tuple[tuple, Fact]] = []
    for x in sorted(mentioned):
        mine = links.get(x)
        if mine is None:
            mine = links[x] = _links(g, x)
        for other, key, fact in mine:
            if other in mentioned and x < other and key not in facts:
                kind = fact[0]
                out.append((key, fact if kind == "parent" else (kind, other, x)))
    return out


def _irrelevant_candidates(
    g: KinGraph, facts: dict[tuple, Fact], mentioned: set[int]
) -> list[tuple[tuple, Fact]]:
    """(key, fact) for the unstated true facts between a mentioned and an unmentioned person,
    in `_links` order per mentioned person in id order (built here without the other links)."""
    parents, children, spouses = g.parents, g.children, g.spouses
    out: list[tuple[tuple, Fact]] = []
    for x in sorted(mentioned):
        for p in parents[x]:
            if p not in mentioned:
                fact: Fact = ("parent", p, x)
                if fact not in facts:
                    out.append((fact, fact))
        for c in children[x]:
            if c not in mentioned:
                fact = ("parent", x, c)
                if fact not in facts:
                    out.append((fact, fact))
        for s in spouses[x]:
            if s not in mentioned:
                key: Fact = ("spouse", x, s) if x < s else ("spouse", s, x)
                if key not in facts:
                    out.append((key, ("spouse", x, s)))
        px = parents[x]
        if len(px) == 2:  # full siblings, as in `_links`
            p0, p1 = px
            for y in children[p0]:
                if y != x and y not in mentioned and len(parents[y]) == 2 and p1 in parents[y]:
                    key = ("sibling", x, y) if x < y else ("sibling", y, x)
                    if key not in facts:
                        out.append((key, ("sibling", x, y)))
    return out


def _add_noise(
    config: KinshipConfig,
    rng: random.Random,
    g: KinGraph,
    main_size: int,
    facts: dict,
    b: int,
    targets: list[int],
) -> None:
    """CLUTRR's noise: supporting facts (true facts among people already mentioned),
    irrelevant facts (true facts hanging off them) and disconnected facts (about the second,
    unrelated family). All are true of the whole graph."""
    links: dict[int, list[_Link]] = {}
    for wanted, touching in ((config.supporting_facts, 2), (config.irrelevant_facts, 1)):
        for _ in range(wanted):
            mentioned = _mentioned(facts.values())
            candidates = (
                _supporting_candidates(g, facts, mentioned, links)
                if touching == 2
                else _irrelevant_candidates(g, facts, mentioned)
            )
            shuffle(rng, candidates)
            for key, fact in candidates[:4]:  # a supporting fact must not shortcut the path
                facts[key] = fact
                if (
                    touching == 1
                    or (_stated_hops(facts.values(), b, targets) or 0) >= config.min_hops
                ):
                    break
                del facts[key]
    if config.disconnected_facts:
        other = _true_facts(g, main_size, len(g))
        if not other:
            return
        start = choice(rng, other)
        chain = [start]
        people = {start[1], start[2]}
        rest = [f for f in other if f != start]  # facts are distinct; `is` breaks compiled
        while len(chain) < config.disconnected_facts:
            joined = [f for f in rest if f[1] in people or f[2] in people]
            if not joined:
                break
            fact = choice(rng, joined)
            rest.remove(fact)
            chain.append(fact)
            people.update(fact[1:])
        for fact in chain:
            facts[_fact_key(fact)] = fact


def stated_graph(g: KinGraph, facts: list[Fact]) -> KinGraph:
    """The solvability graph of spec section 4: mentioned people with their genders, parent and
    spouse edges from the facts, and each group joined by sibling facts given the union of its
    stated parents padded to exactly two with anonymous placeholders. People of `g` keep their
    ids (unmentioned ones stay isolated); placeholders get new ids with gender UNKNOWN.

    The result is read-only: people no fact names share one empty list per relation, and
    without sibling facts the names and genders are `g`'s own lists."""
    n = len(g)
    none: list[int] = []  # everyone's edges until a fact names them; never appended to
    parents, children, spouses = [none] * n, [none] * n, [none] * n
    s = KinGraph(g.names, g.genders, parents, children, spouses)
    siblings = False
    for kind, a, b in facts:
        if kind == "parent":
            _own(parents, b, none)
            _own(children, a, none)
            s.add_parent(a, b)
        elif kind == "spouse":
            _own(spouses, a, none)
            _own(spouses, b, none)
            s.marry(a, b)
        else:
            siblings = True
    if not siblings:
        return s
    s.names, s.genders = list(g.names), list(g.genders)  # placeholders will be added
    group = list(range(n))  # union-find over sibling facts

    def find(x: int) -> int:
        while group[x] != x:
            group[x] = group[group[x]]
            x = group[x]
        return x

    for kind, a, b in facts:
        if kind == "sibling":
            group[find(a)] = find(b)
    members: dict[int, list[int]] = {}
    for kind, a, b in facts:
        if kind == "sibling":
            for x in (a, b):
                members.setdefault(find(x), [])
                if x not in members[find(x)]:
                    members[find(x)].append(x)
    for people in members.values():
        shared = list(dict.fromkeys(p for x in people for p in parents[x]))
        if len(shared) > 2:
            raise ValueError("sibling facts give a child more than two parents")
        while len(shared) < 2:
            shared.append(s.add_person(None, UNKNOWN))
        for x in people:
            _own(parents, x, none)
            for p in shared:  # children[p] is p's own: stated as a parent, or a placeholder
                if p not in parents[x]:
                    s.add_parent(p, x)
    return s


def _own(lists: list[list[int]], x: int, none: list[int]) -> None:
    """Give x a list of its own in place of the shared empty `none` (stated_graph)."""
    if lists[x] is none:
        lists[x] = []


def _mentioned(facts: Iterable[Fact]) -> set[int]:
    return {x for _, a, b in facts for x in (a, b)}


def _gold(
    question: _Question, rel: dict[int, list[Term]], mentioned: set[int]
) -> tuple[str, list[str], list[int], set[str]] | None:
    """(answer, answers, answer people, involved families) on one graph's relatives of B."""
    qtype, a, term = question.qtype, question.a, question.term
    if qtype == "relation":
        assert a is not None
        terms = rel.get(a)
        if not terms:
            return None
        answers = specific_terms(terms)
        return answers[0], answers, [a], {family_of(t) for t in answers}
    if qtype == "yesno":
        assert a is not None and term is not None
        terms = rel.get(a, [])
        answer = "yes" if holds(terms, term) else "no"
        involved = {family_of(term)} | {family_of(t) for t in specific_terms(terms)}
        return answer, [answer], [a], involved
    assert term is not None
    people = sorted([x for x in mentioned if x in rel and holds(rel[x], term)])
    if not people:
        return None
    answer = str(len(people)) if qtype == "count" else ""
    return answer, [answer], people, {family_of(term)}


def _solve(
    config: KinshipConfig,
    g: KinGraph,
    rel: dict[int, list[Term]],
    question: _Question,
    facts: list[Fact],
) -> tuple[str, list[str], list[int], int, set[str]] | None:
    """The gold answer if the stated facts alone determine it (the same answer, and for
    relation and yes/no questions the same terms, as on the whole graph), with the hops."""
    mentioned = _mentioned(facts)
    whole = _gold(question, rel, mentioned)
    if whole is None:
        return None
    s = stated_graph(g, facts)
    stated_rel = relatives(s, question.b)
    alone = _gold(question, stated_rel, mentioned)
    if alone is None or alone[2] != whole[2]:
        return None
    if question.a is not None and stated_rel.get(question.a, []) != rel.get(question.a, []):
        return None
    answer, answers, people, involved = whole
    if question.qtype == "entity":
        answer = ", ".join(sorted([cast(str, g.names[x]) for x in people]))
        answers = [answer]
    hops = _stated_hops(facts, question.b, people if question.a is None else [question.a])
    if hops is None:
        return None
    return answer, answers, people, hops, involved


def _stated_hops(facts: Iterable[Fact], b: int, targets: list[int]) -> int | None:
    adjacency: dict[int, list[int]] = {}
    for _, x, y in facts:
        adjacency.setdefault(x, []).append(y)
        adjacency.setdefault(y, []).append(x)
    dist = _distances(adjacency, b)
    try:
        return max([dist[t] for t in targets])
    except KeyError:  # a target the facts do not connect to B
        return None


def _complete_parents(g: KinGraph, facts: list[Fact]) -> list[Fact]:
    """Add the unstated parent of everyone whose other parent is stated: this settles full vs
    half siblings and parent vs step-parent, the usual reasons a path alone is ambiguous."""
    keys = {_fact_key(f) for f in facts}
    stated_parents: dict[int, set[int]] = {}
    for kind, a, b in facts:
        if kind == "parent":
            stated_parents.setdefault(b, set()).add(a)
    out = list(facts)
    for child, known in stated_parents.items():
        for p in g.parents[child]:
            if p not in known and ("parent", p, child) not in keys:
                out.append(("parent", p, child))
    return out


def _reasoning(
    g: KinGraph,
    facts: list[Fact],
    question: _Question,
    answer: str,
    people: list[int],
    rel: dict[int, list[Term]],
) -> str:
    """The stated facts on a shortest path from each answer (or the subject) to B, then the
    conclusion, one sentence per line."""
    adjacency: dict[int, list[tuple[int, Fact]]] = {}
    for fact in facts:
        _, x, y = fact
        adjacency.setdefault(x, []).append((y, fact))
        adjacency.setdefault(y, []).append((x, fact))
    lines: list[str] = []
    for target in people:
        for fact in _fact_path(adjacency, target, question.b):
            line = plain_fact(g, fact)
            if line not in lines:
                lines.append(line)
    b_name, a, term = g.names[question.b], question.a, question.term
    if question.qtype == "relation":
        assert a is not None
        lines.append(f"So {g.names[a]} is {b_name}'s {answer}.")
    elif question.qtype == "yesno":
        assert a is not None
        name = g.names[a]
        terms = rel.get(a, [])
        if answer == "yes":
            lines.append(f"So {name} is {b_name}'s {term}.")
        elif terms:
            lines.append(f"So {name} is {b_name}'s {terms[0][1]}, not {b_name}'s {term}.")
        else:
            lines.append(f"So {name} is not {b_name}'s {term}.")
    else:
        lines += [f"So {g.names[x]} is {b_name}'s {term}." for x in people]
        if question.qtype == "count":
            assert term is not None
            lines.append(f"So {b_name} has {answer} {term if answer == '1' else plural(term)}.")
    return "\n".join(lines) + "\n"


def _fact_path(adjacency: dict[int, list[tuple[int, Fact]]], start: int, goal: int) -> list[Fact]:
    """The facts of the breadth-first (FIFO) path from start to goal, or [] if there is none.
    The search stops once goal is reached: its predecessor is fixed from then on."""
    previous: dict[int, tuple[int, Fact] | None] = {start: None}
    frontier = [start]
    while frontier and goal not in previous:
        following = []
        for x in frontier:
            for y, fact in adjacency.get(x, ()):
                if y not in previous:
                    previous[y] = (x, fact)
                    following.append(y)
        frontier = following
    path: list[Fact] = []
    step = previous.get(goal)
    while step is not None:
        x, fact = step
        path.append(fact)
        step = previous.get(x)
    return path[::-1]
