"""An independent checker of the kinship data contract (`docs/spec/kinship.md`).

Written from the spec alone, without reading the generator's relation code, so that the two
implementations can catch each other's mistakes. It favours a literal transcription of every
definition over speed: each relation row is evaluated exactly as the spec's table states it,
pairwise, and the comments quote the spec where it decided a case.

Entry points:

- `SpecFamily`: the family graph of section 1 (P, C, S, gender, Sib, Half, AnySib, anc_k, desc_k).
- `terms(fam, a, b)`: the specific terms, general words and canonical term of "a is b's T".
- `stated_family(record)`: the solvability graph of section 4.
- `gold(fam, record)`: the gold `(answer, answers)` of a record's question on a family graph.
- `check_record(record)`: every violation of the contract found in one record ([] = valid).
- `check_dataset(records)`: dataset-level checks (unique ids), optionally every record too.
- `normalise_answer` / `answer_matches`: the spec's answer matching.

Choices where the spec is silent (documented where they are made):

- Within one row several terms may hold (row 7, 11 or 12 with several k under pedigree
  collapse); the canonical term then takes the smallest k (the nearest relation).
- `terms(fam, a, a)` is empty: the spec defines terms only for A != B, so a person is never in
  their own entity answer set.
- A parent graph with a cycle, a self-loop or a self-marriage is reported as a violation.
- "sorted alphabetically" is Python's `sorted` (code point order) of the names.
- An entity question needs a non-empty answer set ("..., non-empty"); a count may be 0.
- The query's people must be mentioned (otherwise the stated graph cannot answer it), and a
  yes/no or entity/count term must be spelled as a term or general word of section 2.
- The description is also read back in the phrasings this checker knows (`read_sentence`);
  sentences in other wordings are allowed ("any wording") and only skipped by that check.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx

FEMALE, MALE = "female", "male"
GENDERS = (FEMALE, MALE)
FACT_KINDS = ("parent", "spouse", "sibling")
QUESTION_TYPES = ("relation", "entity", "count", "yesno")
MAX_LEVEL = 10

# "ORD = ordinal(min(i, j) - 1) (first, second, third, ... tenth)"
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
# "` once removed`, ` twice removed`, or ` N times removed` (N in words: three ... ten)"
REMOVALS = {1: "once", 2: "twice"} | {
    n: f"{word} times"
    for n, word in enumerate(("three", "four", "five", "six", "seven", "eight", "nine", "ten"), 3)
}
# "**Synonyms.** "cousin" means "first cousin". No other synonyms."
SYNONYMS = {"first cousin": ("cousin",)}

# Row numbers of the table in section 2, for reporting.
ROW_NAMES = {
    1: "parent",
    2: "child",
    3: "sibling",
    4: "half-sibling",
    5: "grandparent",
    6: "grandchild",
    7: "great-grandparent",
    8: "great-grandchild",
    9: "aunt/uncle",
    10: "niece/nephew",
    11: "great-aunt/uncle",
    12: "grandniece/nephew",
    13: "cousin",
    14: "spouse",
    15: "parent-in-law",
    16: "child-in-law",
    17: "sibling-in-law",
    18: "step-parent",
    19: "stepchild",
    20: "step-sibling",
}


class SpecError(ValueError):
    """A record or family that the spec cannot evaluate (e.g. a contradiction)."""


# --------------------------------------------------------------------------------------------
# Section 1: the family graph
# --------------------------------------------------------------------------------------------


class SpecFamily:
    """People with genders, `parents` ([parent, child]) and `spouses` (unordered) edges.

    `people` is a mapping name -> gender, or an iterable of `{"name", "gender"}` dicts or
    `(name, gender)` pairs. A gender of None is allowed for anonymous placeholders of the
    stated graph (they are never the A of a term). Nothing is validated here: `check_record`
    reports malformed graphs; this class only evaluates the definitions.
    """

    def __init__(
        self,
        people: Mapping[str, str | None] | Iterable[Mapping[str, Any] | tuple[str, str | None]],
        parents: Iterable[Iterable[str]] = (),
        spouses: Iterable[Iterable[str]] = (),
    ) -> None:
        self.gender: dict[str, str | None] = {}
        if isinstance(people, Mapping):
            self.gender.update(people)
        else:
            for person in people:
                if isinstance(person, Mapping):
                    self.gender[person["name"]] = person["gender"]
                else:
                    name, gender = person
                    self.gender[name] = gender
        self._p: dict[str, set[str]] = {x: set() for x in self.gender}
        self._c: dict[str, set[str]] = {x: set() for x in self.gender}
        self._s: dict[str, set[str]] = {x: set() for x in self.gender}
        for parent, child in parents:
            for x in (parent, child):
                self._ensure(x)
            self._p[child].add(parent)
            self._c[parent].add(child)
        for a, b in spouses:
            for x in (a, b):
                self._ensure(x)
            self._s[a].add(b)
            self._s[b].add(a)
        self._cache: dict[tuple, Any] = {}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SpecFamily:
        return cls(record["people"], record["parents"], record["spouses"])

    def _ensure(self, x: str) -> None:
        if x not in self.gender:
            self.gender[x] = None
            self._p[x], self._c[x], self._s[x] = set(), set(), set()

    @property
    def people(self) -> list[str]:
        return list(self.gender)

    # P(x), C(x), S(x)
    def P(self, x: str) -> frozenset[str]:
        return frozenset(self._p.get(x, ()))

    def C(self, x: str) -> frozenset[str]:
        return frozenset(self._c.get(x, ()))

    def S(self, x: str) -> frozenset[str]:
        return frozenset(self._s.get(x, ()))

    def S_of(self, xs: Iterable[str]) -> frozenset[str]:
        """S applied to a set: the union of the members' spouses."""
        return frozenset(s for x in xs for s in self.S(x))

    def Sib(self, x: str) -> frozenset[str]:
        # "`Sib(x)` = people y != x with `P(y) == P(x)` and `|P(x)| == 2` (full siblings)."
        key = ("Sib", x)
        if key not in self._cache:
            px = self.P(x)
            self._cache[key] = frozenset(
                y for y in self.people if y != x and self.P(y) == px and len(px) == 2
            )
        return self._cache[key]

    def Half(self, x: str) -> frozenset[str]:
        # "`Half(x)` = people y != x with `|P(x) & P(y)| == 1`."
        key = ("Half", x)
        if key not in self._cache:
            px = self.P(x)
            self._cache[key] = frozenset(
                y for y in self.people if y != x and len(px & self.P(y)) == 1
            )
        return self._cache[key]

    def AnySib(self, x: str) -> frozenset[str]:
        # "`AnySib(x) = Sib(x) | Half(x)`."
        return self.Sib(x) | self.Half(x)

    def anc(self, x: str, k: int) -> frozenset[str]:
        """anc_k(x): ancestors exactly k generations up (anc_0 = {x}, anc_1 = P)."""
        key = ("anc", x, k)
        if key not in self._cache:
            if k == 0:
                level = frozenset([x])
            else:
                level = frozenset(p for y in self.anc(x, k - 1) for p in self.P(y))
            self._cache[key] = level
        return self._cache[key]

    def desc(self, x: str, k: int) -> frozenset[str]:
        """desc_k(x): descendants exactly k generations down (desc_1 = C)."""
        key = ("desc", x, k)
        if key not in self._cache:
            if k == 0:
                level = frozenset([x])
            else:
                level = frozenset(c for y in self.desc(x, k - 1) for c in self.C(y))
            self._cache[key] = level
        return self._cache[key]

    def generations_up(self, x: str) -> range:
        """The k >= 1 for which anc_k(x) may be non-empty (capped, in case of a cycle)."""
        k = 0
        while k <= len(self.gender) and self.anc(x, k + 1):
            k += 1
        return range(1, k + 1)

    def generations_down(self, x: str) -> range:
        k = 0
        while k <= len(self.gender) and self.desc(x, k + 1):
            k += 1
        return range(1, k + 1)

    def ancestor_distances(self, x: str) -> dict[str, set[int]]:
        """Every ancestor c of x (x itself at 0) with every k such that c in anc_k(x)."""
        out: dict[str, set[int]] = {x: {0}}
        for k in self.generations_up(x):
            for c in self.anc(x, k):
                out.setdefault(c, set()).add(k)
        return out


# --------------------------------------------------------------------------------------------
# Section 2: relation terms
# --------------------------------------------------------------------------------------------


def _word(fam: SpecFamily, a: str, female: str, male: str) -> str:
    # "Gendered words take A's gender (female first, male second)."
    gender = fam.gender.get(a)
    if gender == FEMALE:
        return female
    if gender == MALE:
        return male
    raise SpecError(f"{a!r} has no gender ({gender!r}); gendered terms need one")


def _aunt_set(fam: SpecFamily, g: str) -> frozenset[str]:
    """AnySib(g) | S(AnySib(g)): the people rows 9 and 11 call aunts/uncles through g."""
    sibs = fam.AnySib(g)
    return sibs | fam.S_of(sibs)


def is_aunt(fam: SpecFamily, a: str, b: str) -> bool:
    # Row 9: "A in AnySib(p) or A in S(AnySib(p)) for some p in P(B)"
    return any(a in _aunt_set(fam, p) for p in fam.P(b))


def great_aunt_ks(fam: SpecFamily, a: str, b: str) -> list[int]:
    # Row 11: "A in AnySib(g) or A in S(AnySib(g)) for some g in anc_k(B), k >= 2"
    return [
        k
        for k in fam.generations_up(b)
        if k >= 2 and any(a in _aunt_set(fam, g) for g in fam.anc(b, k))
    ]


def is_step_parent(fam: SpecFamily, a: str, b: str) -> bool:
    # Row 18: "A in S(p) for some p in P(B), and A not in P(B)"
    return any(a in fam.S(p) for p in fam.P(b)) and a not in fam.P(b)


def cousin_term(fam: SpecFamily, a: str, b: str) -> str | None:
    """Row 13 by the nearest-common-ancestor rule, or None when it gives no cousin."""
    # "Over all common ancestors c of A and B (counting A itself at distance 0 when A is an
    # ancestor of B, and likewise B), take the distances (i, j) of A and B below c that
    # minimise i + j (ties: smaller |i - j|, then smaller i)."
    da = fam.ancestor_distances(a)  # contains a at 0; common with db only if a is b's ancestor
    db = fam.ancestor_distances(b)
    candidates = [(i, j) for c in da.keys() & db.keys() for i in da[c] for j in db[c]]
    if not candidates:
        return None
    i, j = min(candidates, key=lambda ij: (ij[0] + ij[1], abs(ij[0] - ij[1]), ij[0]))
    # "If i >= 2 and j >= 2, A is B's `ORD cousin` with ORD = ordinal(min(i, j) - 1)"
    if i < 2 or j < 2:
        return None
    degree = min(i, j) - 1
    removal = abs(i - j)
    if degree > len(ORDINALS) or removal > max(REMOVALS):
        raise SpecError(f"cousin ({i}, {j}) is beyond the spec's words (tenth / ten times)")
    term = f"{ORDINALS[degree - 1]} cousin"
    if removal:
        term += f" {REMOVALS[removal]} removed"
    return term


def row_hits(fam: SpecFamily, a: str, b: str) -> list[tuple[int, str, str | None]]:
    """Every (row, specific term, general word or None) that holds for "a is b's T".

    In row order; within a row, by increasing k (the canonical choice when several k hold).
    """
    if a == b:
        return []  # "A is B's T" (A != B)
    hits: list[tuple[int, str, str | None]] = []
    P, S, C = fam.P, fam.S, fam.C

    def add(row: int, female: str, male: str, general: str | None) -> None:
        hits.append((row, _word(fam, a, female, male), general))

    # 1 parent: A in P(B)
    if a in P(b):
        add(1, "mother", "father", "parent")
    # 2 child: B in P(A)
    if b in P(a):
        add(2, "daughter", "son", "child")
    # 3 sibling: A in Sib(B)
    if a in fam.Sib(b):
        add(3, "sister", "brother", "sibling")
    # 4 half-sibling: A in Half(B)
    if a in fam.Half(b):
        add(4, "half-sister", "half-brother", "half-sibling")
    # 5 grandparent: A in anc_2(B)
    if a in fam.anc(b, 2):
        add(5, "grandmother", "grandfather", "grandparent")
    # 6 grandchild: A in desc_2(B)
    if a in fam.desc(b, 2):
        add(6, "granddaughter", "grandson", "grandchild")
    # 7 great-grandparent: A in anc_k(B), k >= 3 -> ("great-" * (k-2)) + grandmother/grandfather
    for k in fam.generations_up(b):
        if k >= 3 and a in fam.anc(b, k):
            g = "great-" * (k - 2)
            add(7, g + "grandmother", g + "grandfather", g + "grandparent")
    # 8 great-grandchild: A in desc_k(B), k >= 3
    for k in fam.generations_down(b):
        if k >= 3 and a in fam.desc(b, k):
            g = "great-" * (k - 2)
            add(8, g + "granddaughter", g + "grandson", g + "grandchild")
    # 9 aunt/uncle
    if is_aunt(fam, a, b):
        add(9, "aunt", "uncle", None)
    # 10 niece/nephew: "B is A's aunt/uncle by row 9"
    if is_aunt(fam, b, a):
        add(10, "niece", "nephew", None)
    # 11 great-aunt/uncle: ("great-" * (k-1)) + aunt / uncle
    for k in great_aunt_ks(fam, a, b):
        g = "great-" * (k - 1)
        add(11, g + "aunt", g + "uncle", None)
    # 12 grandniece/nephew: "B is A's great-aunt/uncle by row 11 with that k"
    #    -> ("great-" * (k-2)) + grandniece / grandnephew
    for k in great_aunt_ks(fam, b, a):
        g = "great-" * (k - 2)
        add(12, g + "grandniece", g + "grandnephew", None)
    # 13 cousin (not gendered)
    cousin = cousin_term(fam, a, b)
    if cousin is not None:
        hits.append((13, cousin, None))
    # 14 spouse: A in S(B)
    if a in S(b):
        add(14, "wife", "husband", "spouse")
    # 15 parent-in-law: A in P(s) for some s in S(B)
    if any(a in P(s) for s in S(b)):
        add(15, "mother-in-law", "father-in-law", "parent-in-law")
    # 16 child-in-law: A in S(c) for some c in C(B)
    if any(a in S(c) for c in C(b)):
        add(16, "daughter-in-law", "son-in-law", "child-in-law")
    # 17 sibling-in-law: A in AnySib(s) for some s in S(B), or A in S(t) for some t in AnySib(B)
    if any(a in fam.AnySib(s) for s in S(b)) or any(a in S(t) for t in fam.AnySib(b)):
        add(17, "sister-in-law", "brother-in-law", "sibling-in-law")
    # 18 step-parent
    if is_step_parent(fam, a, b):
        add(18, "stepmother", "stepfather", "stepparent")
    # 19 stepchild: "B is A's step-parent by row 18"
    if is_step_parent(fam, b, a):
        add(19, "stepdaughter", "stepson", "stepchild")
    # 20 step-sibling: P(A) & P(B) is empty, and some q in P(A) is in S(p) for some p in P(B)
    if not (P(a) & P(b)) and any(q in S(p) for q in P(a) for p in P(b)):
        add(20, "stepsister", "stepbrother", "stepsibling")
    return hits


def terms(fam: SpecFamily, a: str, b: str) -> tuple[set[str], set[str], str | None]:
    """(specific(A, B) with synonyms, general(A, B), canonical term or None) for "A is B's T"."""
    hits = row_hits(fam, a, b)
    specific = {term for _, term, _ in hits}
    for term in list(specific):
        specific.update(SYNONYMS.get(term, ()))
    general = {word for _, _, word in hits if word is not None}
    # "Row order is the precedence: the canonical term of a pair is the first specific term by
    # row order."
    canonical = hits[0][1] if hits else None
    return specific, general, canonical


_GREATS = r"(?:great-)"
_TERM_RE = re.compile(
    "|".join(
        [
            r"(?:mother|father|parent|daughter|son|child|sister|brother|sibling)",
            r"half-(?:sister|brother|sibling)",
            r"(?:wife|husband|spouse|aunt|uncle|niece|nephew|cousin)",
            r"(?:mother|father|parent|daughter|son|child|sister|brother|sibling)-in-law",
            r"step(?:mother|father|parent|daughter|son|child|sister|brother|sibling)",
            _GREATS + r"*grand(?:mother|father|parent|daughter|son|child|niece|nephew)",
            _GREATS + r"+(?:aunt|uncle)",
            rf"(?:{'|'.join(ORDINALS)}) cousin"
            rf"(?: (?:{'|'.join(REMOVALS.values())}) removed)?",
        ]
    )
)


def is_known_term(term: str) -> bool:
    """Whether `term` is spelled as some specific term, synonym or general word of section 2."""
    return isinstance(term, str) and _TERM_RE.fullmatch(term) is not None


def normalise_answer(text: str) -> str:
    """ "Answer matching normalises: lower case, trim, drop one trailing ".", collapse runs of
    white space, and treat "-" and " " alike." ("-" becomes " " before collapsing, and the
    collapse also trims what dropping the "." exposed.)"""
    s = text.lower().strip()
    if s.endswith("."):
        s = s[:-1]
    s = s.replace("-", " ")
    return " ".join(s.split())


def answer_matches(prediction: str, answers: Iterable[str]) -> bool:
    return normalise_answer(prediction) in {normalise_answer(a) for a in answers}


# --------------------------------------------------------------------------------------------
# Section 4: the stated-facts graph, mentioned people, hops
# --------------------------------------------------------------------------------------------


def mentioned(record: Mapping[str, Any]) -> set[str]:
    # "**Mentioned people** are those named in at least one fact."
    return {name for fact in record["facts"] for name in (fact["a"], fact["b"])}


def placeholder(group: int, slot: int) -> str:
    """An anonymous parent; contains "." so it can never clash with a name."""
    return f"?.placeholder.{group}.{slot}"


def stated_family(record: Mapping[str, Any]) -> SpecFamily:
    """The solvability graph of section 4, built from the record's facts only.

    "mentioned people with their genders; parent edges from `parent` facts; spouse edges from
    `spouse` facts; for each group of people joined by `sibling` facts, every member gets the
    union of the group's stated parents, padded with anonymous placeholder parents up to exactly
    two (more than two is a contradiction)."
    """
    genders = {p["name"]: p["gender"] for p in record["people"]}
    people = {name: genders[name] for name in sorted(mentioned(record))}
    parent_facts = [(f["a"], f["b"]) for f in record["facts"] if f["kind"] == "parent"]
    spouse_facts = [(f["a"], f["b"]) for f in record["facts"] if f["kind"] == "spouse"]
    stated_parents: dict[str, set[str]] = {name: set() for name in people}
    for parent, child in parent_facts:
        stated_parents[child].add(parent)

    sibling_graph = nx.Graph()
    sibling_graph.add_edges_from(
        (f["a"], f["b"]) for f in record["facts"] if f["kind"] == "sibling"
    )
    parents: set[tuple[str, str]] = set(parent_facts)
    components = sorted(sorted(c) for c in nx.connected_components(sibling_graph))
    for index, group in enumerate(components):
        union = set().union(*(stated_parents[x] for x in group))
        if len(union) > 2:
            raise SpecError(
                f"sibling group {group} has {len(union)} stated parents {sorted(union)} "
                "(more than two is a contradiction)"
            )
        padded = sorted(union) + [placeholder(index, slot) for slot in range(2 - len(union))]
        for member in group:
            parents.update((p, member) for p in padded)
    for name in people:
        count = len({p for p, c in parents if c == name})
        if count > 2:
            raise SpecError(f"{name} has {count} stated parents (a child has at most two)")
    return SpecFamily(people, sorted(parents), spouse_facts)


def fact_graph(record: Mapping[str, Any]) -> nx.Graph:
    """ "the graph of stated facts (each fact an undirected edge)" """
    g = nx.Graph()
    g.add_edges_from((f["a"], f["b"]) for f in record["facts"])
    return g


def hop_distance(record: Mapping[str, Any], x: str, y: str) -> int:
    g = fact_graph(record)
    try:
        return nx.shortest_path_length(g, x, y)
    except (nx.NetworkXNoPath, nx.NodeNotFound) as error:
        raise SpecError(f"no path of stated facts between {x!r} and {y!r}") from error


# --------------------------------------------------------------------------------------------
# Section 3: gold answers
# --------------------------------------------------------------------------------------------


def holds(fam: SpecFamily, x: str, b: str, term: str) -> bool:
    """T in specific(X, B) or general(X, B)."""
    specific, general, _ = terms(fam, x, b)
    return term in specific or term in general


def answer_set(fam: SpecFamily, record: Mapping[str, Any]) -> set[str]:
    # "the set of mentioned people X with T in specific(X, B) or general(X, B)"
    query = record["query"]
    b, term = query["object"], query["term"]
    return {x for x in mentioned(record) if x != b and holds(fam, x, b, term)}


def gold(fam: SpecFamily, record: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The gold (answer, answers) of the record's question computed on `fam` (sorted answers)."""
    qtype, query = record["question_type"], record["query"]
    if qtype == "relation":
        a, b = query["subject"], query["object"]
        specific, _, canonical = terms(fam, a, b)
        if canonical is None:
            raise SpecError(f"no relation term holds for {a!r} -> {b!r}")
        # "any term in specific(A, B); the record's `answer` is the canonical term"
        return canonical, sorted(specific)
    if qtype == "entity":
        people = answer_set(fam, record)
        # "the set of mentioned people X with ..., non-empty"
        if not people:
            raise SpecError(f"entity answer set of {query['term']!r} of {query['object']!r} empty")
        # "`answer` lists the names sorted alphabetically, joined by ", ""
        answer = ", ".join(sorted(people))
        return answer, [answer]
    if qtype == "count":
        # "that set's size, in digits"
        answer = str(len(answer_set(fam, record)))
        return answer, [answer]
    if qtype == "yesno":
        a, b, term = query["subject"], query["object"], query["term"]
        answer = "yes" if holds(fam, a, b, term) else "no"
        return answer, [answer]
    raise SpecError(f"unknown question_type {qtype!r}")


def expected_hops(fam: SpecFamily, record: Mapping[str, Any]) -> int:
    """ "length of the shortest path between the query's people in the graph of stated facts
    (each fact an undirected edge); for entity/count the largest such length over the answer
    set, 0 when empty" (the answer set of the whole graph)."""
    query = record["query"]
    if record["question_type"] in ("relation", "yesno"):
        return hop_distance(record, query["subject"], query["object"])
    people = answer_set(fam, record)
    return max((hop_distance(record, x, query["object"]) for x in people), default=0)


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------

# Section 4's table; `query` is a dict of subject / object / term (section 3).
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "split": str,
    "difficulty": int,
    "seed": int,
    "people": list,
    "parents": list,
    "spouses": list,
    "facts": list,
    "description": str,
    "question": str,
    "question_type": str,
    "query": dict,
    "answer": str,
    "answers": list,
    "hops": int,
    "prompt": str,
    "completion": str,
}


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and kind is int:
        return False  # bool is an int in Python, not in JSON
    return isinstance(value, kind)


def _name_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")


def _pairs(record: Mapping[str, Any], field: str, names: set[str], out: list[str]) -> bool:
    ok = True
    for index, pair in enumerate(record[field]):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            out.append(f"{field}[{index}] is not a pair: {pair!r}")
            ok = False
        elif not all(isinstance(x, str) and x in names for x in pair):
            out.append(f"{field}[{index}] names someone not in people: {pair!r}")
            ok = False
        elif pair[0] == pair[1]:
            out.append(f"{field}[{index}] joins {pair[0]!r} to themselves")
            ok = False
    return ok


def _check_structure(record: Mapping[str, Any]) -> list[str]:
    """Fields, types, people, edges, facts and query shape. [] when the rest can be evaluated."""
    out: list[str] = []
    if not isinstance(record, Mapping):
        return [f"record is not a JSON object: {type(record).__name__}"]
    for field, kind in REQUIRED_FIELDS.items():
        if field not in record:
            out.append(f"missing field {field!r}")
        elif not _is(record[field], kind):
            out.append(f"field {field!r} has type {type(record[field]).__name__}")
    if out:
        return out
    if not record["id"]:
        out.append("empty id")
    if not 1 <= record["difficulty"] <= MAX_LEVEL:
        out.append(f"difficulty {record['difficulty']} not in 1..{MAX_LEVEL}")

    names: list[str] = []
    for index, person in enumerate(record["people"]):
        if not (isinstance(person, Mapping) and {"name", "gender"} <= set(person)):
            out.append(f"people[{index}] is not a {{name, gender}} object: {person!r}")
            continue
        name, gender = person["name"], person["gender"]
        if not (isinstance(name, str) and name.strip()):
            out.append(f"people[{index}] has an invalid name {name!r}")
            continue
        if "." in name:
            # "sentences end with "." and names never contain "."" (the brief's rule)
            out.append(f"name {name!r} contains '.'")
        if gender not in GENDERS:
            out.append(f"{name!r} has gender {gender!r}, not female/male")
        names.append(name)
    for name, count in Counter(names).items():
        if count > 1:
            # "each with a unique `name`"
            out.append(f"name {name!r} is used by {count} people")
    name_set = set(names)

    if _pairs(record, "parents", name_set, out):
        children = Counter(child for _, child in {tuple(p) for p in record["parents"]})
        for child, count in children.items():
            if count > 2:
                # "A child has at most two parents."
                out.append(f"{child!r} has {count} parents (at most two)")
        dag = nx.DiGraph([tuple(p) for p in record["parents"]])
        if not nx.is_directed_acyclic_graph(dag):
            out.append("the parent edges contain a cycle (someone is their own ancestor)")
    _pairs(record, "spouses", name_set, out)

    for index, fact in enumerate(record["facts"]):
        if not (isinstance(fact, Mapping) and {"kind", "a", "b"} <= set(fact)):
            out.append(f"facts[{index}] is not a {{kind, a, b}} object: {fact!r}")
        elif fact["kind"] not in FACT_KINDS:
            out.append(f"facts[{index}] has unknown kind {fact['kind']!r}")
        elif fact["a"] not in name_set or fact["b"] not in name_set:
            out.append(f"facts[{index}] names someone not in people: {fact!r}")
        elif fact["a"] == fact["b"]:
            out.append(f"facts[{index}] relates {fact['a']!r} to themselves")
    if not record["facts"]:
        out.append("no facts")

    qtype, query = record["question_type"], record["query"]
    if qtype not in QUESTION_TYPES:
        out.append(f"unknown question_type {qtype!r}")
        return out
    if set(query) != {"subject", "object", "term"}:
        out.append(f"query keys {sorted(query)} are not subject/object/term")
        return out
    if out:
        return out
    people_mentioned = mentioned(record)
    subject, obj, term = query["subject"], query["object"], query["term"]
    if qtype in ("relation", "yesno"):
        if subject not in name_set:
            out.append(f"query subject {subject!r} is not a person")
        elif subject not in people_mentioned:
            out.append(f"query subject {subject!r} is not mentioned in any fact")
        if subject == obj:
            out.append("query subject and object are the same person (terms need A != B)")
    elif subject is not None:
        out.append(f"{qtype} query has subject {subject!r} (must be null)")
    if obj not in name_set:
        out.append(f"query object {obj!r} is not a person")
    elif obj not in people_mentioned:
        out.append(f"query object {obj!r} is not mentioned in any fact")
    if qtype == "relation":
        if term is not None:
            out.append(f"relation query has term {term!r} (must be null)")
    elif not is_known_term(term):
        out.append(f"query term {term!r} is not a term of section 2")
    answers = record["answers"]
    if not all(isinstance(x, str) for x in answers):
        out.append(f"answers are not all strings: {answers!r}")
    elif len(set(answers)) != len(answers):
        out.append(f"answers has duplicates: {answers!r}")
    return out


def _fact_is_true(fam: SpecFamily, fact: Mapping[str, str]) -> bool:
    # "Every stated fact is true in the whole graph." parent: a is a parent of b; spouse: a and b
    # are married; sibling: a and b are full siblings (Sib).
    kind, a, b = fact["kind"], fact["a"], fact["b"]
    if kind == "parent":
        return a in fam.P(b)
    if kind == "spouse":
        return a in fam.S(b)
    return a in fam.Sib(b)


def _check_text(record: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    description, question = record["description"], record["question"]
    facts, query = record["facts"], record["query"]
    # "A completion's last line is `Answer: <answer>`"
    last_line = record["completion"].split("\n")[-1]
    if last_line != f"Answer: {record['answer']}":
        out.append(f"completion's last line is {last_line!r}, not 'Answer: {record['answer']}'")
    if description not in record["prompt"]:
        out.append("prompt does not contain the description")
    if question not in record["prompt"]:
        out.append("prompt does not contain the question")

    # "the text stating exactly the facts": one sentence per fact, each ending with "."
    pieces = description.split(".")
    sentences = [s.strip() for s in pieces[:-1]]
    if pieces[-1].strip():
        out.append(f"description does not end with '.': ...{description[-30:]!r}")
    if any(not s for s in sentences):
        out.append("description has an empty sentence")
    if len(sentences) != len(facts):
        out.append(f"description has {len(sentences)} sentences for {len(facts)} facts")
    for index, fact in enumerate(facts):
        for name in (fact["a"], fact["b"]):
            if not _name_re(name).search(description):
                out.append(f"facts[{index}]: {name!r} is not named in the description")
    # Each fact must have its own sentence naming both its people (a perfect matching).
    match_graph = nx.Graph()
    fact_nodes = [("fact", i) for i in range(len(facts))]
    match_graph.add_nodes_from(fact_nodes)
    match_graph.add_nodes_from(("sentence", i) for i in range(len(sentences)))
    for i, fact in enumerate(facts):
        for j, sentence in enumerate(sentences):
            if _name_re(fact["a"]).search(sentence) and _name_re(fact["b"]).search(sentence):
                match_graph.add_edge(("fact", i), ("sentence", j))
    matching = nx.bipartite.hopcroft_karp_matching(match_graph, top_nodes=fact_nodes)
    unmatched = [i for node, i in fact_nodes if (node, i) not in matching]
    if unmatched:
        out.append(f"facts {unmatched} have no sentence of their own naming both their people")

    # "question text names the query people", in the forms of section 3's table.
    qtype = record["question_type"]
    a, b, term = query["subject"], query["object"], query["term"]
    for name in (a, b):
        if name is not None and not _name_re(name).search(question):
            out.append(f"question {question!r} does not name {name!r}")
    expected = {
        "relation": f"How is {a} related to {b}?",
        "entity": f"Who is {b}'s {term}?",
        "yesno": f"Is {a} {b}'s {term}?",
    }.get(qtype)
    if expected is not None and question != expected:
        out.append(f"question {question!r} is not of the form {expected!r}")
    if qtype == "count" and not (
        question.startswith("How many ") and question.endswith(f" does {b} have?")
    ):
        out.append(f"question {question!r} is not of the form 'How many Ts does {b} have?'")
    return out


# Reading the description back. Wording is free ("any wording, order, templates"), so this only
# checks the sentences it can read; in those, every relation word must hold in the whole graph
# (a true description), the sentence must state one of the record's facts, and when every
# sentence is read, the facts stated must be exactly the record's and every mentioned person's
# gender must be conveyed (the stated-facts graph has "mentioned people with their genders").
# Word -> (fact kind, gender it conveys of the person it describes, whether it names the child).
FACT_WORDS: dict[str, tuple[str, str | None, bool]] = {
    "mother": ("parent", FEMALE, False),
    "father": ("parent", MALE, False),
    "parent": ("parent", None, False),
    "daughter": ("parent", FEMALE, True),
    "son": ("parent", MALE, True),
    "child": ("parent", None, True),
    "wife": ("spouse", FEMALE, False),
    "husband": ("spouse", MALE, False),
    "spouse": ("spouse", None, False),
    "sister": ("sibling", FEMALE, False),
    "brother": ("sibling", MALE, False),
    "sibling": ("sibling", None, False),
}
PRONOUNS = {"her": FEMALE, "his": MALE}

Claim = tuple[str, str, str]  # (x, y, word): "x is y's word"


_N = r"(.+?)"  # a name; checked against the record's names after matching
_W = r"([a-z-]+)"
_SENTENCES: list[tuple[re.Pattern[str], Any]] = [
    # "{a} is {b}'s {ra}, and {b} is {pa} {rb}": the pronoun is the first person's.
    (
        re.compile(rf"{_N} is {_N}'s {_W}, and {_N} is (her|his) {_W}"),
        lambda x, y, w1, z, pronoun, w2: ([(x, y, w1), (z, x, w2)], [(x, PRONOUNS[pronoun])]),
    ),
    (re.compile(rf"{_N} is {_N}'s {_W}"), lambda x, y, word: ([(x, y, word)], [])),
    (re.compile(rf"{_N}'s {_W} is {_N}"), lambda y, word, x: ([(x, y, word)], [])),
    (re.compile(rf"{_N} has an? {_W}, {_N}"), lambda y, word, x: ([(x, y, word)], [])),
    (
        re.compile(rf"{_N} and {_N} are {_W} and {_W}"),
        lambda x, y, w1, w2: ([(x, y, w1), (y, x, w2)], []),
    ),
    (re.compile(rf"{_N} is married to {_N}"), lambda x, y: ([(x, y, "spouse")], [])),
    (re.compile(rf"{_N} and {_N} are married"), lambda x, y: ([(x, y, "spouse")], [])),
    (re.compile(rf"{_N} and {_N} are full siblings"), lambda x, y: ([(x, y, "sibling")], [])),
]


def read_sentence(sentence: str, names: Iterable[str]) -> tuple[list[Claim], list] | None:
    """The claims of one sentence (without its "."), and (person, gender) pronoun claims, in the
    phrasings this checker knows; None for any other wording (or if a name would have to
    contain one of the phrasings' own words)."""
    names = set(names)
    for pattern, read in _SENTENCES:
        match = pattern.fullmatch(sentence)
        if match is None:
            continue
        claims, pronouns = read(*match.groups())
        if all(x in names and y in names for x, y, _ in claims):
            return claims, pronouns
    return None


def _claim_fact(claim: Claim) -> tuple | None:
    x, y, word = claim
    if word not in FACT_WORDS:
        return None
    kind, _, names_child = FACT_WORDS[word]
    if kind == "parent":
        return ("parent", y, x) if names_child else ("parent", x, y)
    return (kind, frozenset((x, y)))


def _record_fact(fact: Mapping[str, str]) -> tuple:
    if fact["kind"] == "parent":
        return ("parent", fact["a"], fact["b"])
    return (fact["kind"], frozenset((fact["a"], fact["b"])))


def _check_sentences(record: Mapping[str, Any], fam: SpecFamily) -> list[str]:
    out: list[str] = []
    names = [p["name"] for p in record["people"]]
    sentences = [s.strip() for s in record["description"].split(".")[:-1]]
    record_facts = Counter(_record_fact(f) for f in record["facts"])
    stated: Counter = Counter()
    conveyed: set[str] = set()
    all_read = True
    for sentence in sentences:
        read = read_sentence(sentence, names)
        if read is None:
            all_read = False
            continue
        claims, pronouns = read
        facts = set()
        for x, y, word in claims:
            specific, general, _ = terms(fam, x, y)
            if word not in specific and word not in general:
                out.append(f"description says {x} is {y}'s {word}, false in the whole graph")
            facts.add(_claim_fact((x, y, word)))
            gender = FACT_WORDS.get(word, (None, None))[1]
            if gender is not None:
                conveyed.add(x)
        for person, gender in pronouns:
            if fam.gender.get(person) != gender:
                out.append(f"description uses a {gender} pronoun for {person}")
            conveyed.add(person)
        if None in facts or len(facts) != 1:
            out.append(f"sentence {sentence!r} does not state exactly one parent/spouse/sibling")
            continue
        (fact,) = facts
        stated[fact] += 1
        if fact not in record_facts:
            out.append(f"sentence {sentence!r} states a fact not in `facts`")
    if all_read:
        if stated != record_facts:
            out.append("the description's sentences do not state exactly the record's facts")
        for person in sorted(mentioned(record) - conveyed):
            out.append(f"the description never conveys {person}'s gender")
    return out


def check_record(record: Mapping[str, Any]) -> list[str]:
    """Every violation of the contract found in `record` ([] when it is valid)."""
    out = _check_structure(record)
    if out:
        return out
    fam = SpecFamily.from_record(record)

    for index, fact in enumerate(record["facts"]):
        if not _fact_is_true(fam, fact):
            out.append(f"facts[{index}] is false in the whole graph: {dict(fact)}")

    # Gold on the whole graph.
    whole: tuple[str, list[str]] | None = None
    try:
        whole = gold(fam, record)
    except SpecError as error:
        out.append(f"no gold answer on the whole graph: {error}")
    if whole is not None:
        answer, answers = whole
        if record["answer"] != answer:
            out.append(f"answer {record['answer']!r} != gold {answer!r}")
        if set(record["answers"]) != set(answers):
            out.append(f"answers {sorted(record['answers'])} != gold {answers}")

    # Solvability: "Computed on that graph, the gold answer must be the same as on the whole
    # graph."
    try:
        stated = gold(stated_family(record), record)
    except SpecError as error:
        out.append(f"unsolvable from the stated facts: {error}")
    else:
        if whole is not None and (stated[0], set(stated[1])) != (whole[0], set(whole[1])):
            out.append(
                f"unsolvable: gold on the stated facts {stated} != on the whole graph {whole}"
            )

    try:
        hops = expected_hops(fam, record)
    except SpecError as error:
        out.append(f"hops undefined: {error}")
    else:
        if record["hops"] != hops:
            out.append(f"hops {record['hops']} != {hops}")

    out.extend(_check_text(record))
    out.extend(_check_sentences(record, fam))
    return out


def check_dataset(records: Iterable[Mapping[str, Any]], each: bool = False) -> list[str]:
    """Dataset-level violations: ids unique ("unique within the dataset"); with `each`, also
    every record's violations, prefixed by its id."""
    out: list[str] = []
    records = list(records)
    ids = Counter(r.get("id") for r in records)
    out.extend(f"id {i!r} is used by {n} records" for i, n in ids.items() if n > 1)
    if each:
        for r in records:
            out.extend(f"{r.get('id')}: {v}" for v in check_record(r))
    return out
