"""A family graph laid out for drawing: one row per generation, spouses side by side.

`layout(record)` gives every person a column `x` (a float; 1.0 apart at least within a row)
and a row `y` (the generation: founders and their spouses 0, children one below their lower
parent). Each connected family (the main one, and the disconnected second family of high
levels) is laid out on its own and placed to the right of the previous one. Within a row,
people are ordered by the mean column of their parents, and a spouse married into the family
stands beside their partner, so parent lines rarely cross. The page only scales and draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _generations(names: list[str], parents_of: dict[str, list[str]],
                 spouses_of: dict[str, list[str]]) -> dict[str, int]:  # fmt: skip
    """Generation of each person: 1 + the largest of their parents' (0 without parents); a
    person without parents (married into the family) in the row of their spouses."""
    generation = dict.fromkeys(names, 0)
    for _ in range(len(names) + 1):  # a fixpoint within len(names) rounds (no cycles)
        changed = False
        for name in names:
            if parents_of[name]:
                value = 1 + max(generation[p] for p in parents_of[name])
            else:
                value = max([generation[name], *(generation[s] for s in spouses_of[name])])
            if value != generation[name] and value <= len(names):
                generation[name], changed = value, True
        if not changed:
            break
    return generation


def _components(names: list[str], neighbours: dict[str, set[str]]) -> list[list[str]]:
    seen: set[str] = set()
    out = []
    for name in names:
        if name in seen:
            continue
        stack, part = [name], []
        seen.add(name)
        while stack:
            person = stack.pop()
            part.append(person)
            for other in sorted(neighbours[person]):
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        order = {n: i for i, n in enumerate(names)}
        out.append(sorted(part, key=order.__getitem__))
    return out


def layout(record: Mapping[str, Any]) -> dict[str, Any]:
    """{"nodes": [{name, gender, x, y, mentioned}], "parents": [[p, c]], "spouses": [[a, b]],
    "width", "height"} of a record's family graph (unknown names in edges are dropped)."""
    people = [p for p in record.get("people", []) if isinstance(p, Mapping) and "name" in p]
    names = list(dict.fromkeys(str(p["name"]) for p in people))
    gender = {str(p["name"]): str(p.get("gender", "")) for p in people}
    known = set(names)
    parents = [[str(a), str(b)] for a, b in record.get("parents", []) if {a, b} <= known]
    spouses = [[str(a), str(b)] for a, b in record.get("spouses", []) if {a, b} <= known]
    parents_of: dict[str, list[str]] = {n: [] for n in names}
    spouses_of: dict[str, list[str]] = {n: [] for n in names}
    neighbours: dict[str, set[str]] = {n: set() for n in names}
    for parent, child in parents:
        if parent != child and parent not in parents_of[child]:
            parents_of[child].append(parent)
    for a, b in spouses:
        if a != b:
            spouses_of[a].append(b)
            spouses_of[b].append(a)
    for a, b in parents + spouses:
        neighbours[a].add(b)
        neighbours[b].add(a)
    generation = _generations(names, parents_of, spouses_of)
    mentioned = {str(f.get(k)) for f in record.get("facts", []) for k in ("a", "b")}
    x: dict[str, float] = {}
    offset = 0.0
    for part in _components(names, neighbours):
        rows: dict[int, list[str]] = {}
        for name in part:
            rows.setdefault(generation[name], []).append(name)
        right = offset
        for row in sorted(rows):
            placed: list[str] = []
            # Born members first, ordered by their parents' mean column; each one's spouses
            # without parents of their own follow right after.
            born = [n for n in rows[row] if parents_of[n] or not spouses_of[n]]
            born.sort(key=lambda n: sum(x.get(p, offset) for p in parents_of[n])
                      / max(len(parents_of[n]), 1))  # fmt: skip
            for name in born:
                if name in placed:
                    continue
                chain = [name]  # the spouses who married in, and theirs (a remarriage)
                while chain:
                    person = chain.pop(0)
                    placed.append(person)
                    for spouse in spouses_of[person]:
                        married_in = not parents_of[spouse] and spouse in rows[row]
                        if married_in and spouse not in placed and spouse not in chain:
                            chain.append(spouse)
            placed += [n for n in rows[row] if n not in placed]
            # Centre the row under the parents' mean column, never left of the family's start.
            centres = [x[p] for n in placed for p in parents_of[n] if p in x]
            start = offset
            if centres:
                start = max(offset, sum(centres) / len(centres) - (len(placed) - 1) / 2)
            for i, name in enumerate(placed):
                x[name] = start + i
            right = max(right, start + len(placed))
        offset = right + 1.0  # a gap between families
    nodes = [
        {"name": n, "gender": gender[n], "x": x[n], "y": generation[n], "mentioned": n in mentioned}
        for n in names
    ]
    return {
        "nodes": nodes,
        "parents": parents,
        "spouses": spouses,
        "width": max(offset - 1.0, 1.0),
        "height": max((generation[n] for n in names), default=0) + 1,
    }
