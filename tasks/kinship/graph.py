"""Family graphs (spec section 1) and their random generation.

People are integer ids into parallel lists; this keeps generation and the relation engine fast
(tens of microseconds per family), and `to_networkx` gives the same graph to anyone who wants
networkx's algorithms. The same class holds the *stated-facts graph* of the solvability rule,
where anonymous placeholder parents have gender UNKNOWN and no name.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tasks.kinship.draws import below, randint
from tasks.kinship.terms import FEMALE, GENDER_NAMES, MALE

if TYPE_CHECKING:
    import networkx as nx

UNKNOWN: Final = -1


@dataclass(slots=True, init=False)  # a written-out __init__ compiles; a generated one would not
class KinGraph:
    """People with genders, at most two parents each, and marriages."""

    names: list[str | None]
    genders: list[int]
    parents: list[list[int]]
    children: list[list[int]]
    spouses: list[list[int]]

    def __init__(
        self,
        names: list[str | None] | None = None,
        genders: list[int] | None = None,
        parents: list[list[int]] | None = None,
        children: list[list[int]] | None = None,
        spouses: list[list[int]] | None = None,
    ) -> None:
        self.names = [] if names is None else names
        self.genders = [] if genders is None else genders
        self.parents = [] if parents is None else parents
        self.children = [] if children is None else children
        self.spouses = [] if spouses is None else spouses

    def __len__(self) -> int:
        return len(self.genders)

    def add_person(self, name: str | None, gender: int) -> int:
        self.names.append(name)
        self.genders.append(gender)
        self.parents.append([])
        self.children.append([])
        self.spouses.append([])
        return len(self.genders) - 1

    def add_parent(self, parent: int, child: int) -> None:
        if parent == child or parent in self.parents[child]:
            raise ValueError(f"bad parent edge {parent} -> {child}")
        if len(self.parents[child]) >= 2:
            raise ValueError(f"person {child} would have more than two parents")
        self.parents[child].append(parent)
        self.children[parent].append(child)

    def marry(self, a: int, b: int) -> None:
        if a == b or b in self.spouses[a]:
            raise ValueError(f"bad marriage {a} - {b}")
        self.spouses[a].append(b)
        self.spouses[b].append(a)

    def parent_pairs(self) -> list[tuple[int, int]]:
        """All [parent, child] edges, in child order."""
        return [(p, c) for c, ps in enumerate(self.parents) for p in ps]

    def spouse_pairs(self) -> list[tuple[int, int]]:
        """All marriages once each, as (smaller id, larger id)."""
        return [(a, b) for a, ss in enumerate(self.spouses) for b in ss if a < b]

    def full_sibling_pairs(self, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
        """Pairs (a < b) with the same two parents: what a `sibling` fact may state (with
        lo <= a < hi, if given)."""
        pairs = []
        parents = self.parents
        for a in range(lo, len(parents) if hi is None else hi):
            ps = parents[a]
            if len(ps) == 2:
                for b in self.children[ps[0]]:
                    if b > a and len(self.parents[b]) == 2 and ps[1] in self.parents[b]:
                        pairs.append((a, b))
        return pairs

    def to_networkx(self) -> nx.MultiDiGraph:
        """The graph as networkx: nodes carry `name`/`gender`; edges have `kind` parent
        (parent -> child) or spouse (both directions)."""
        import networkx as nx

        graph = nx.MultiDiGraph()
        for person, (name, gender) in enumerate(zip(self.names, self.genders, strict=True)):
            graph.add_node(person, name=name, gender=GENDER_NAMES[gender] if gender >= 0 else None)
        for parent, child in self.parent_pairs():
            graph.add_edge(parent, child, kind="parent")
        for a, b in self.spouse_pairs():
            graph.add_edge(a, b, kind="spouse")
            graph.add_edge(b, a, kind="spouse")
        return graph


@dataclass(frozen=True, slots=True)
class FamilyShape:
    """The knobs of family generation (a subset of the task config)."""

    generations: int
    min_children: int
    max_children: int
    marriage_prob: float
    remarriage_prob: float
    stepchild_prob: float
    max_people: int


class NameDrawer:
    """Draws names unique within one record from gendered pools."""

    __slots__ = ("_rng", "pools", "used")

    def __init__(self, rng: random.Random, female: tuple[str, ...], male: tuple[str, ...]):
        self._rng = rng
        self.pools = (female, male)
        self.used: set[str] = set()

    def draw(self, gender: int) -> str:
        return _draw(self._rng, self.pools[gender], self.used)


def _draw(rng: random.Random, pool: tuple[str, ...], used: set[str]) -> str:
    """A name of `pool` not in `used` (then added to it): `choice(rng, pool)` until one is new."""
    size = len(pool)
    if len(used) >= size:
        raise ValueError("name pool too small for the family size")
    name = pool[below(rng, size)]
    while name in used:
        name = pool[below(rng, size)]
    used.add(name)
    return name


def generate_family(
    rng: random.Random, shape: FamilyShape, names: NameDrawer, graph: KinGraph | None = None
) -> KinGraph:
    """Grow a family breadth first from a founding couple.

    Every person born into the family may marry someone from outside (so no one ever marries a
    relative: spouses from outside have no ancestors in the graph and marry exactly one
    family member), have children with them, and remarry (half-siblings); a second spouse may
    bring a child of their own, with or without that child's other parent (step-relations).
    In each generation the first person always marries and has a child, so the family reaches
    `generations` generations even under the `max_people` cap. Passing `graph` adds the family
    to it as a separate, unconnected component.
    """
    g = graph if graph is not None else KinGraph()
    grow = _Grower(g, names, len(g) + shape.max_people, rng.random)
    rand = grow.rand
    founder = grow.person(MALE if rand() < 0.5 else FEMALE)
    current = [founder]
    for _generation in range(shape.generations - 1):
        following: list[int] = []
        for position, x in enumerate(current):
            forced = position == 0
            if grow.full(2) and not forced:
                break
            if not forced and rand() >= shape.marriage_prob:
                continue
            first = grow.spouse_for(x)
            low = max(1, shape.min_children) if forced else shape.min_children
            grow.have_children(x, first, randint(rng, low, shape.max_children), following, forced)
            if rand() < shape.remarriage_prob and not grow.full(2):
                second = grow.spouse_for(x)
                count = randint(rng, 0, max(1, shape.max_children - 1))
                grow.have_children(x, second, count, following, False)
                if rand() < shape.stepchild_prob and not grow.full(2):
                    ex = grow.spouse_for(second) if rand() < 0.5 else -1
                    grow.have_children(second, ex, 1, following, False)
        current = following
        if not current:
            break
    return g


class _Grower:
    """`generate_family`'s helpers: KinGraph.add_person/add_parent/marry and NameDrawer.draw,
    inlined, since every edge made here is new and valid. A class of its own, not closures:
    closures that call each other form a reference cycle with their shared environment, and
    that cycle kept every finished family's lists (and its random generator) alive until the
    garbage collector's next pass."""

    def __init__(self, g: KinGraph, names: NameDrawer, cap: int, rand: Callable[[], float]) -> None:
        self.names = g.names
        self.genders = g.genders
        self.parents = g.parents
        self.children = g.children
        self.spouses = g.spouses
        self.pools = names.pools
        self.used = names.used
        self.name_rng = names._rng
        self.cap = cap
        self.rand = rand

    def full(self, more: int) -> bool:
        """Whether `more` people would take the family past its cap."""
        return len(self.genders) + more > self.cap

    def person(self, gender: int) -> int:
        self.names.append(_draw(self.name_rng, self.pools[gender], self.used))
        self.genders.append(gender)
        self.parents.append([])
        self.children.append([])
        self.spouses.append([])
        return len(self.genders) - 1

    def spouse_for(self, x: int) -> int:
        s = self.person(1 - self.genders[x])
        self.spouses[x].append(s)
        self.spouses[s].append(x)
        return s

    def have_children(self, a: int, b: int, count: int, out: list[int], forced: bool) -> None:
        """Up to `count` children of a (and of b, unless b is -1) appended to `out`; the cap
        stops them, except a forced first child."""
        for number in range(count):
            if len(self.genders) >= self.cap and not (forced and number == 0):
                return
            child = self.person(MALE if self.rand() < 0.5 else FEMALE)
            self.children[a].append(child)
            if b < 0:
                self.parents[child].append(a)
            else:
                self.parents[child] += (a, b)
                self.children[b].append(child)
            out.append(child)
