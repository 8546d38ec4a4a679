"""The gold reward: parse a completion's final answer and score it against a record.

`score(record, completion)` is in [0, 1] and is 1 exactly when the final answer is correct by
the spec. Near misses earn documented partial credit, always strictly below 1:

| question | near miss | credit |
|---|---|---|
| relation | a general word that holds (grandparent for grandmother) | 0.5 |
| relation | a correct term with the wrong gender (grandfather for grandmother) | 0.5 |
| relation | another term of a correct relation family (second cousin for first cousin) | 0.25 |
| entity | the wrong set of names | 0.5 x Jaccard overlap with the right set (< 0.5) |
| count | off by one | 0.5 |

Everything else, including a completion without an `Answer:` line, scores 0. Names in entity
answers may come in any order, separated by commas and/or "and".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tasks.kinship.terms import family_of, gender_swap, normalize

ANSWER_PREFIX = "answer:"
GENERAL_WORD_CREDIT = 0.5
WRONG_GENDER_CREDIT = 0.5
SAME_FAMILY_CREDIT = 0.25
ENTITY_OVERLAP_CREDIT = 0.5
COUNT_OFF_BY_ONE_CREDIT = 0.5

_NAME_SEPARATORS = re.compile(r"\s*,\s*|\s+and\s+|\s*;\s*")


def parse_answer(completion: str) -> str | None:
    """The text after the last `Answer:` (any case) up to the end of its line, or None."""
    position = completion.lower().rfind(ANSWER_PREFIX)
    if position < 0:
        return None
    return completion[position + len(ANSWER_PREFIX) :].split("\n", 1)[0].strip()


def score_answer(record: Mapping[str, Any], answer: str | None) -> float:
    """Score a parsed final answer (see the module docstring for partial credit)."""
    if answer is None:
        return 0.0
    qtype = record["question_type"]
    given = normalize(answer)
    if qtype == "relation":
        return _relation_credit(given, record["answers"])
    if qtype == "entity":
        return _entity_credit(given, record["answer"])
    if qtype == "count":
        try:
            difference = abs(int(given) - int(record["answer"]))
        except ValueError:
            return 0.0
        return 1.0 if difference == 0 else COUNT_OFF_BY_ONE_CREDIT if difference == 1 else 0.0
    return 1.0 if given == normalize(record["answer"]) else 0.0


def score(record: Mapping[str, Any], completion: str) -> float:
    """Gold reward in [0, 1] of a completion for a kinship record; 1 iff its final answer is
    correct by the spec."""
    return score_answer(record, parse_answer(completion))


def _relation_credit(given: str, answers: list[str]) -> float:
    correct = {normalize(t) for t in answers}
    if given in correct:
        return 1.0
    families = set()
    for term in answers:
        family = family_of(term)
        families.add(family)
        swapped = gender_swap(term)
        if swapped and given == normalize(swapped):
            return WRONG_GENDER_CREDIT
    try:
        given_family = family_of(_rehyphenate(given))
    except ValueError:
        return 0.0
    if given_family not in families:
        return 0.0
    return GENERAL_WORD_CREDIT if _is_general(given) else SAME_FAMILY_CREDIT


def _rehyphenate(text: str) -> str:
    """Undo normalisation's hyphens-to-spaces where a term needs them to be recognised."""
    text = text.replace("great ", "great-").replace("half ", "half-")
    return text.replace(" in law", "-in-law")


_GENERAL_WORDS = {
    "parent",
    "child",
    "sibling",
    "half sibling",
    "grandparent",
    "grandchild",
    "spouse",
    "parent in law",
    "child in law",
    "sibling in law",
    "stepparent",
    "stepchild",
    "stepsibling",
}


def _is_general(given: str) -> bool:
    base = given
    while base.startswith("great "):
        base = base[len("great ") :]
    return base in _GENERAL_WORDS


def _entity_credit(given: str, answer: str) -> float:
    want = {normalize(n) for n in answer.split(", ") if n}
    got = {n for n in _NAME_SEPARATORS.split(given) if n}
    if got == want:
        return 1.0
    union = want | got
    return ENTITY_OVERLAP_CREDIT * len(want & got) / len(union) if union else 0.0
