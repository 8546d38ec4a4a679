"""Kinship examples: a family, the facts that describe it, a question and its exact answer.

`make_example(config, seed, index)` is a pure function of its arguments: all randomness comes
from one generator seeded by (seed, index) jointly, so any item can be made alone, in any order
and in any process, with the same result. An attempt that cannot meet the config (no relative
at the wanted distance, or a description that would not determine the answer) is redrawn from
the same stream, so the output stays deterministic.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.kinship.config import QUESTION_TYPES, KinshipConfig
from tasks.kinship.graph import UNKNOWN, FamilyShape, KinGraph, NameDrawer, generate_family
from tasks.kinship.names import name_pool
from tasks.kinship.relations import Term, any_siblings, holds, relatives, specific_terms
from tasks.kinship.render import Fact, describe, plain_fact, question_text
from tasks.kinship.terms import GENDER_NAMES, family_of, gender_swap, generation_shifts, plural

MAX_ATTEMPTS = 200
QUESTIONS_PER_FAMILY = 4  # question draws on one family before a new family is drawn
_DISCONNECTED_SHAPE = dict(min_children=1, max_children=3, marriage_prob=0.7)


class GenerationError(RuntimeError):
    """The config admits no example (e.g. hops that its families cannot reach)."""


def item_rng(seed: int, index: int) -> random.Random:
    """The generator of item `index` under `seed`: seeded by the pair, hashed (SHA-512) by
    Python's string seeding, so streams of different (seed, index) pairs never coincide."""
    return random.Random(f"kinrl/kinship/{seed}/{index}")


@dataclass(slots=True)
class _Question:
    qtype: str
    b: int
    a: int | None  # relation / yesno subject
    term: str | None  # entity / count / yesno query term
    targets: list[int]  # people whose path to B is stated


def make_example(
    config: KinshipConfig, seed: int, index: int, split: str = "train"
) -> dict[str, Any]:
    """One record satisfying `shared/spec/kinship.md`, as a JSON-ready dict."""
    rng = item_rng(seed, index)
    pool = name_pool(config.locale, config.name_pool)
    weights = config.question_weights
    for _ in range(MAX_ATTEMPTS // QUESTIONS_PER_FAMILY):
        names = NameDrawer(rng, pool.female, pool.male)
        g = generate_family(rng, config.shape, names)
        main_size = len(g)
        if config.disconnected_facts:
            generate_family(rng, _disconnected_shape(config), names, graph=g)
        for _ in range(QUESTIONS_PER_FAMILY):
            qtype = rng.choices(QUESTION_TYPES, weights)[0]
            record = _try_question(config, rng, g, main_size, qtype)
            if record is not None:
                record.update(
                    id=f"kinship-d{config.difficulty}-s{seed}-{index}",
                    split=split,
                    difficulty=config.difficulty,
                    seed=seed,
                )
                return _ordered(record)
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
        **_DISCONNECTED_SHAPE,
    )


def _fact_graph(g: KinGraph, limit: int) -> list[list[int]]:
    """Neighbours along parent and spouse edges (what a chain of facts can follow)."""
    return [g.parents[x] + g.children[x] + g.spouses[x] for x in range(limit)]


def _distances(
    adjacency: Sequence[list[int]] | Mapping[int, list[int]], source: int
) -> dict[int, int]:
    """Breadth-first distances from `source` (every node must be a key of `adjacency`)."""
    dist = {source: 0}
    queue = deque([source])
    while queue:
        x = queue.popleft()
        for y in adjacency[x]:
            if y not in dist:
                dist[y] = dist[x] + 1
                queue.append(y)
    return dist


def _try_question(
    config: KinshipConfig, rng: random.Random, g: KinGraph, main_size: int, qtype: str
) -> dict[str, Any] | None:
    adjacency = _fact_graph(g, main_size)
    for _ in range(4):  # a B with someone far enough away, before the costly relatives()
        b = rng.randrange(main_size)
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
        rng.shuffle(stated)
    description, stated = describe(g, stated, rng, config.phrasings)
    text = question_text(g, question.qtype, question.a, question.b, question.term)
    completion = f"Answer: {answer}"
    if config.reasoning:
        completion = _reasoning(g, stated, question, answer, answer_people, rel) + completion
    names = g.names
    return {
        "people": [{"name": names[x], "gender": GENDER_NAMES[g.genders[x]]} for x in range(len(g))],
        "parents": [[names[p], names[c]] for p, c in g.parent_pairs()],
        "spouses": [[names[a], names[s]] for a, s in g.spouse_pairs()],
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


_FIELD_ORDER = (
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


def _ordered(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in _FIELD_ORDER}


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
    by_family: dict[str, list[int]] = {}
    for a, terms in rel.items():
        d = dist.get(a)
        if d is not None and lo <= d <= hi + slack:
            by_family.setdefault(family_of(terms[0][1]), []).append(a)
    allowed = config.relation_families
    families = [f for f in by_family if not allowed or f in allowed]
    if qtype == "yesno" and rng.random() < 0.5:
        return _no_question(rng, b, rel, dist, lo, hi + slack)
    if not families:
        return None
    a = rng.choice(by_family[rng.choice(sorted(families))])
    terms = rel[a]
    if qtype in ("relation", "yesno"):
        term = None if qtype == "relation" else _pick_term(rng, terms)
        return _Question(qtype, b, a, term, [a])
    term = _pick_term(rng, terms)
    others = [
        x for x, ts in rel.items() if x != a and dist.get(x, hi + 9) <= hi and holds(ts, term)
    ]
    extra = rng.sample(others, min(len(others), rng.randrange(config.max_answers)))
    return _Question(qtype, b, None, term, [a, *extra])


def _pick_term(rng: random.Random, terms: list[Term]) -> str:
    _row, specific, general = rng.choice(terms)
    return general if general and rng.random() < 0.3 else specific


def _no_question(
    rng: random.Random, b: int, rel: dict[int, list[Term]], dist: dict[int, int], lo: int, hi: int
) -> _Question | None:
    """A yes/no question whose answer is no: a near-miss term for a relative, or any term for
    someone with no relation term."""
    candidates = [a for a, d in dist.items() if lo <= d <= hi]
    if not candidates:
        return None
    a = rng.choice(candidates)
    terms = rel.get(a, [])
    options: list[str] = []
    for _, specific, _ in terms:
        swapped = gender_swap(specific)
        options += ([swapped] if swapped else []) + generation_shifts(specific)
    if not options or rng.random() < 0.3:
        options += rng.sample(_COMMON_TERMS, 3)
    options = [t for t in options if not holds(terms, t)]
    if not options:
        return None
    return _Question("yesno", b, a, rng.choice(options), [a])


_COMMON_TERMS = [
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
        x = rng.choice([y for y in adjacency[x] if dist.get(y) == dist[x] - 1])
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
    facts: list[Fact] = [("parent", p, c) for p, c in g.parent_pairs() if lo <= c < hi]
    facts += [("spouse", a, b) for a, b in g.spouse_pairs() if lo <= a < hi]
    facts += [("sibling", a, b) for a, b in g.full_sibling_pairs() if lo <= a < hi]
    return facts


def _facts_around(g: KinGraph, people: list[int]) -> dict[tuple, Fact]:
    """Every true fact naming at least one of `people`, keyed as in `_fact_key`."""
    out: dict[tuple, Fact] = {}
    for x in people:
        for p in g.parents[x]:
            out[("parent", p, x)] = ("parent", p, x)
        for c in g.children[x]:
            out[("parent", x, c)] = ("parent", x, c)
        for s in g.spouses[x]:
            out[("spouse", min(x, s), max(x, s))] = ("spouse", x, s)
        for y, full in any_siblings(g, x):
            if full:
                out[("sibling", min(x, y), max(x, y))] = ("sibling", x, y)
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
    for wanted, touching in ((config.supporting_facts, 2), (config.irrelevant_facts, 1)):
        for _ in range(wanted):
            mentioned = _mentioned(facts.values())
            candidates = [
                fact
                for key, fact in _facts_around(g, sorted(mentioned)).items()
                if key not in facts and (fact[1] in mentioned) + (fact[2] in mentioned) == touching
            ]
            rng.shuffle(candidates)
            for fact in candidates[:4]:  # a supporting fact must not shortcut the path
                key = _fact_key(fact)
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
        start = rng.choice(other)
        chain = [start]
        people = {start[1], start[2]}
        rest = [f for f in other if f is not start]
        while len(chain) < config.disconnected_facts:
            joined = [f for f in rest if f[1] in people or f[2] in people]
            if not joined:
                break
            fact = rng.choice(joined)
            rest.remove(fact)
            chain.append(fact)
            people.update(fact[1:])
        for fact in chain:
            facts[_fact_key(fact)] = fact


def stated_graph(g: KinGraph, facts: list[Fact]) -> KinGraph:
    """The solvability graph of spec section 4: mentioned people with their genders, parent and
    spouse edges from the facts, and each group joined by sibling facts given the union of its
    stated parents padded to exactly two with anonymous placeholders. People of `g` keep their
    ids (unmentioned ones stay isolated); placeholders get new ids with gender UNKNOWN."""
    n = len(g)
    s = KinGraph(
        names=list(g.names),
        genders=list(g.genders),
        parents=[[] for _ in range(n)],
        children=[[] for _ in range(n)],
        spouses=[[] for _ in range(n)],
    )
    group = list(range(n))  # union-find over sibling facts

    def find(x: int) -> int:
        while group[x] != x:
            group[x] = group[group[x]]
            x = group[x]
        return x

    for kind, a, b in facts:
        if kind == "parent":
            s.add_parent(a, b)
        elif kind == "spouse":
            s.marry(a, b)
        else:
            group[find(a)] = find(b)
    members: dict[int, list[int]] = {}
    for kind, a, b in facts:
        if kind == "sibling":
            for x in (a, b):
                members.setdefault(find(x), [])
                if x not in members[find(x)]:
                    members[find(x)].append(x)
    for people in members.values():
        shared = list(dict.fromkeys(p for x in people for p in s.parents[x]))
        if len(shared) > 2:
            raise ValueError("sibling facts give a child more than two parents")
        while len(shared) < 2:
            shared.append(s.add_person(None, UNKNOWN))
        for x in people:
            for p in shared:
                if p not in s.parents[x]:
                    s.add_parent(p, x)
    return s


def _mentioned(facts: Iterable[Fact]) -> set[int]:
    return {x for _, a, b in facts for x in (a, b)}


def _gold(
    question: _Question, rel: dict[int, list[Term]], mentioned: set[int]
) -> tuple[str, list[str], list[int], set[str]] | None:
    """(answer, answers, answer people, involved families) on one graph's relatives of B."""
    qtype, a, term = question.qtype, question.a, question.term
    if qtype == "relation":
        terms = rel.get(a)
        if not terms:
            return None
        answers = specific_terms(terms)
        return answers[0], answers, [a], {family_of(t) for t in answers}
    if qtype == "yesno":
        terms = rel.get(a, [])
        answer = "yes" if holds(terms, term) else "no"
        involved = {family_of(term)} | {family_of(t) for t in specific_terms(terms)}
        return answer, [answer], [a], involved
    people = sorted(x for x in mentioned if x in rel and holds(rel[x], term))
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
        answer = ", ".join(sorted(g.names[x] for x in people))
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
    if any(t not in dist for t in targets):
        return None
    return max(dist[t] for t in targets)


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
    b_name = g.names[question.b]
    term = question.term
    if question.qtype == "relation":
        lines.append(f"So {g.names[question.a]} is {b_name}'s {answer}.")
    elif question.qtype == "yesno":
        name = g.names[question.a]
        terms = rel.get(question.a, [])
        if answer == "yes":
            lines.append(f"So {name} is {b_name}'s {term}.")
        elif terms:
            lines.append(f"So {name} is {b_name}'s {terms[0][1]}, not {b_name}'s {term}.")
        else:
            lines.append(f"So {name} is not {b_name}'s {term}.")
    else:
        lines += [f"So {g.names[x]} is {b_name}'s {term}." for x in people]
        if question.qtype == "count":
            lines.append(f"So {b_name} has {answer} {term if answer == '1' else plural(term)}.")
    return "\n".join(lines) + "\n"


def _fact_path(adjacency: dict[int, list[tuple[int, Fact]]], start: int, goal: int) -> list[Fact]:
    previous: dict[int, tuple[int, Fact] | None] = {start: None}
    queue = deque([start])
    while queue:
        x = queue.popleft()
        if x == goal:
            break
        for y, fact in adjacency.get(x, ()):
            if y not in previous:
                previous[y] = (x, fact)
                queue.append(y)
    path: list[Fact] = []
    x = goal
    while previous.get(x) is not None:
        x, fact = previous[x]
        path.append(fact)
    return path[::-1]
