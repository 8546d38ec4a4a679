"""Wrong completions for a kinship record, of controlled kinds (the rejected side of pairs).

Each kind makes candidate wrong final answers (or, for `broken_chain`, the right answer after a
false reasoning step), and `make_negative` picks one whose gold-reward gap to the reference is
at least a margin. Completions keep the record's reasoning facts and restate the conclusion for
the wrong answer, so only the answer (or one chain step) differs from the reference.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from tasks.kinship.scoring import score_answer
from tasks.kinship.terms import (
    all_terms,
    gender_swap,
    generation_shifts,
    inverse_term,
    normalize,
    plural,
)

NEGATIVE_KINDS = (
    "gender_swap",
    "generation_shift",
    "inverse",
    "random_term",
    "wrong_person",
    "missing_person",
    "extra_person",
    "count_off",
    "yesno_flip",
    "broken_chain",
)
KINDS_BY_QUESTION = {
    "relation": ("gender_swap", "generation_shift", "inverse", "random_term", "broken_chain"),
    "entity": ("wrong_person", "missing_person", "extra_person", "broken_chain"),
    "count": ("count_off", "broken_chain"),
    "yesno": ("yesno_flip", "broken_chain"),
}
# The kind that always has a candidate with gold reward 0 for each question type.
FALLBACK = {
    "relation": "random_term",
    "entity": "wrong_person",
    "count": "count_off",
    "yesno": "yesno_flip",
}
_VOCABULARY = all_terms(5)
_STATEMENT = re.compile(r"^(?P<a>.+?) is (?P<b>.+?)'s (?P<term>[a-z -]+)\.$")


def _people(record: Mapping[str, Any]) -> dict[str, str]:
    return {p["name"]: p["gender"] for p in record["people"]}


def _mentioned(record: Mapping[str, Any]) -> list[str]:
    return sorted({name for f in record["facts"] for name in (f["a"], f["b"])})


def wrong_answers(record: Mapping[str, Any], kind: str, rng: random.Random) -> list[str]:
    """Candidate wrong final answers of one kind (may be empty)."""
    qtype, answer = record["question_type"], record["answer"]
    correct = {normalize(a) for a in record["answers"]}
    out: list[str] = []
    if kind == "gender_swap":
        out = [t for t in map(gender_swap, record["answers"]) if t]
    elif kind == "generation_shift":
        out = [s for t in record["answers"] for s in generation_shifts(t)]
    elif kind == "inverse":
        gender = _people(record)[record["query"]["subject"]] == "male"
        out = [inverse_term(t, int(gender)) for t in record["answers"] if t != "cousin"]
    elif kind == "random_term":
        out = rng.sample(_VOCABULARY, 8)
    elif kind in ("wrong_person", "missing_person", "extra_person"):
        out = _entity_variants(record, kind, rng)
    elif kind == "count_off":
        n = int(answer)
        out = [str(n + d) for d in (1, -1, 2, -2, 3) if n + d >= 0]
    elif kind == "yesno_flip":
        out = ["no" if answer == "yes" else "yes"]
    if qtype != "entity":
        out = [t for t in dict.fromkeys(out) if normalize(t) not in correct]
    return out


def _entity_variants(record: Mapping[str, Any], kind: str, rng: random.Random) -> list[str]:
    right = record["answer"].split(", ")
    others = [n for n in _mentioned(record) if n not in right]
    variants: list[list[str]] = []
    if kind == "wrong_person" and others:
        variants.append([*right[:-1], rng.choice(others)])  # one name wrong
        variants.append(rng.sample(others, min(len(others), len(right))))  # all wrong
    elif kind == "missing_person" and len(right) > 1:
        variants.append([n for n in right if n != rng.choice(right)])
    elif kind == "extra_person" and others:
        variants.append([*right, rng.choice(others)])
    return [", ".join(sorted(v)) for v in variants if v and sorted(v) != sorted(right)]


def _fact_lines(completion: str) -> list[str]:
    lines = completion.splitlines()[:-1]  # drop the Answer line
    return [line for line in lines if not line.startswith("So ")]


def completion_for(record: Mapping[str, Any], answer: str, facts: list[str]) -> str:
    """A completion with the given reasoning fact lines, a conclusion matching `answer`, and the
    answer line. Without reasoning in the reference, just the answer line."""
    if not facts:
        return f"Answer: {answer}"
    query, qtype = record["query"], record["question_type"]
    a, b, term = query["subject"], query["object"], query["term"]
    if qtype == "relation":
        conclusion = [f"So {a} is {b}'s {answer}."]
    elif qtype == "yesno":
        conclusion = [
            f"So {a} is {b}'s {term}." if answer == "yes" else f"So {a} is not {b}'s {term}."
        ]
    else:
        names = [n for n in answer.split(", ") if n] if qtype == "entity" else []
        conclusion = [f"So {n} is {b}'s {term}." for n in names]
        if qtype == "count":
            conclusion.append(f"So {b} has {answer} {term if answer == '1' else plural(term)}.")
    return "\n".join([*facts, *conclusion, f"Answer: {answer}"])


def _break_chain(
    record: Mapping[str, Any], facts: list[str], rng: random.Random
) -> list[str] | None:
    """The fact lines with one statement made false (its relation word gender-swapped or
    shifted a generation, or its two names exchanged)."""
    order = list(range(len(facts)))
    rng.shuffle(order)
    for i in order:
        match = _STATEMENT.match(facts[i])
        if not match:
            continue
        a, b, term = match["a"], match["b"], match["term"]
        options = [t for t in (gender_swap(term), *generation_shifts(term)) if t]
        broken = f"{a} is {b}'s {rng.choice(options)}." if options else f"{b} is {a}'s {term}."
        return [*facts[:i], broken, *facts[i + 1 :]]
    return None


def make_negative(
    record: Mapping[str, Any],
    rng: random.Random,
    weights: Mapping[str, float],
    min_margin: float = 0.0,
) -> tuple[str, str, float]:
    """(kind, completion, gold reward) of a worse completion for `record`.

    Kinds applicable to the question type are tried in an order drawn by `weights`; a candidate
    is kept when its reward is below 1 by at least `min_margin` (`broken_chain` keeps reward 1,
    so it only qualifies at margin 0). If no weighted kind qualifies, the question type's
    fallback kind, which can always reach reward 0, is used.
    """
    qtype = record["question_type"]
    facts = _fact_lines(record["completion"])
    kinds = [k for k in KINDS_BY_QUESTION[qtype] if weights.get(k, 0) > 0]
    order: list[str] = []
    while kinds:
        kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
        kinds.remove(kind)
        order.append(kind)
    if FALLBACK[qtype] not in order:
        order.append(FALLBACK[qtype])
    for kind in order:
        if kind == "broken_chain":
            if min_margin > 0 or not facts:
                continue
            broken = _break_chain(record, facts, rng)
            if broken is not None:
                return kind, completion_for(record, record["answer"], broken), 1.0
            continue
        candidates = wrong_answers(record, kind, rng)
        rng.shuffle(candidates)
        for answer in candidates:
            reward = score_answer(record, answer)
            if 1.0 - reward >= min_margin and reward < 1.0:
                return kind, completion_for(record, answer, facts), reward
    raise ValueError(f"no negative with margin {min_margin} for record {record['id']}")
