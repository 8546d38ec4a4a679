"""Statistics of a set of completions of kinship prompts: length, truncation, unparseable
answers, degenerate repetition, and whether the reasoning chain states true facts.

    stats = completion_stats(records, completions, tokenizer, max_new_tokens=64)
    stats["repetition_rate"], stats["chain_valid"]

`records` are the task's records (`people`, `parents`, `spouses` give the family graph) and
`completions[i]` the text completing `records[i]["prompt"]` (None, as `evaluators.accuracy.
complete` returns for a prompt with no room left, counts as an empty completion).

The reference completions state the facts on a path, one per line, then conclude:

    Collin is Angie's father.
    Collin is Latoya's husband.
    So Angie is Latoya's stepdaughter.
    Answer: stepdaughter

The *steps* of a completion are its non-empty lines before the first line that begins with
"So " or "Answer:" (all of its lines when there is neither, as in a truncated completion). A
step is true when it reads "X is Y's T." (the final period optional) with X and Y two people of
the record's family and T a term that holds for them in the full family graph, as the task's
relation engine decides (`tasks.kinship.relations.relation` and `holds`). A step that does
not read so (a garbled line, an unknown name) is not true.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from tasks.kinship.graph import KinGraph
from tasks.kinship.relations import Term, holds, relatives
from tasks.kinship.scoring import parse_answer
from tasks.kinship.terms import GENDER_NAMES

STEP = re.compile(r"(?P<a>.+?) is (?P<b>.+)'s (?P<term>[^']+?)\.?")
_CONCLUSION = re.compile(r"(so\s|answer:)", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_EDGE_PUNCTUATION = '.,;:!?"()'

# Repetition (see `is_repetitive`).
WORD_RUN = 4  # a word this many times in a row
SPAN_REPEATS = 3  # a span of two or more words this many times back to back
MAX_SPAN = 12  # the longest span looked for, in words (two reference lines are ~10)
LINE_REPEATS = 3  # the same line this many times anywhere


def record_graph(record: Mapping[str, Any]) -> tuple[KinGraph, dict[str, int]]:
    """The family graph of a record (its `people`, `parents` and `spouses`) and each name's
    person id."""
    g = KinGraph()
    ids = {}
    for person in record["people"]:
        ids[person["name"]] = g.add_person(person["name"], GENDER_NAMES.index(person["gender"]))
    for parent, child in record["parents"]:
        g.add_parent(ids[parent], ids[child])
    for a, b in record["spouses"]:
        g.marry(ids[a], ids[b])
    return g, ids


def chain_steps(completion: str) -> list[str]:
    """The step lines of a completion (module docstring), stripped."""
    steps = []
    for line in completion.splitlines():
        line = line.strip()
        if _CONCLUSION.match(line):
            break
        if line:
            steps.append(line)
    return steps


class ChainChecker:
    """Checks steps against one record's family graph (the relation sweep of each Y is done
    once)."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.graph, self.ids = record_graph(record)
        self._relatives: dict[int, dict[int, list[Term]]] = {}

    def step_holds(self, step: str) -> bool:
        """Whether the step reads "X is Y's T." with T holding between X and Y."""
        match = STEP.fullmatch(_SPACES.sub(" ", step.strip()))
        if match is None:
            return False
        a, b = self.ids.get(match["a"]), self.ids.get(match["b"])
        if a is None or b is None or a == b:
            return False
        if b not in self._relatives:
            self._relatives[b] = relatives(self.graph, b)
        return holds(self._relatives[b].get(a, []), match["term"].strip().lower())

    def check(self, completion: str) -> list[bool]:
        """Per step of the completion, whether it holds."""
        return [self.step_holds(step) for step in chain_steps(completion)]


def words(text: str) -> list[str]:
    """Lower-cased whitespace-separated words, punctuation at their edges removed."""
    out = [w.strip(_EDGE_PUNCTUATION) for w in text.lower().split()]
    return [w for w in out if w]


def is_repetitive(text: str) -> bool:
    """Degenerate repetition: a word `WORD_RUN` (4) or more times in a row ("does does does
    does"), a span of 2..`MAX_SPAN` words `SPAN_REPEATS` (3) or more times back to back
    ("is Angie's father is Angie's father is Angie's father"), or the same non-empty line
    `LINE_REPEATS` (3) or more times anywhere (a loop over several facts).

    Repeats of a fixed pattern with a changing word are not caught: a reference chain may say
    "So Bob is Ann's grandson. So Tim is Ann's grandson. So Joe is Ann's grandson." (a word
    3-gram, "is ann's grandson", three times), and never repeats a line (it states each fact
    once and concludes once per person)."""
    ws = words(text)
    n = len(ws)
    run = 1
    for i in range(1, n):
        run = run + 1 if ws[i] == ws[i - 1] else 1
        if run >= WORD_RUN:
            return True
    for span in range(2, min(MAX_SPAN, n // SPAN_REPEATS) + 1):
        for start in range(n - span * SPAN_REPEATS + 1):
            unit = ws[start : start + span]
            if all(
                ws[start + k * span : start + (k + 1) * span] == unit
                for k in range(1, SPAN_REPEATS)
            ):
                return True
    lines = Counter(" ".join(words(line)) for line in text.splitlines())
    lines.pop("", None)
    return any(count >= LINE_REPEATS for count in lines.values())


def completion_stats(
    records: Sequence[Mapping[str, Any]],
    completions: Sequence[str | None],
    tokenizer: Any = None,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """Statistics of `completions[i]` completing `records[i]`.

    * `length_unit`: "tokens" when a `tokenizer` is given (each completion re-encoded without
      special tokens), else "words" (whitespace-separated); `mean_length`, `median_length`,
      `max_length` in that unit.
    * `unparseable_rate`: the share with no answer (`tasks.kinship.scoring.parse_answer` is
      None: no `Answer:` anywhere).
    * `truncation_rate`: the share that ran into the token cap without answering: no answer
      (as above) and at least `max_new_tokens` tokens. None unless both `tokenizer` and
      `max_new_tokens` are given (a word count says nothing about the cap).
    * `repetition_rate`: the share that `is_repetitive`.
    * `chain_valid`: the share with at least one step, every step true (module docstring);
      `steps_true`: the share of all steps (pooled over completions) that are true, None when
      there is no step; `has_steps`: the share with at least one step; `mean_steps`.
    * `n`: the number of completions, `missing`: how many were None.
    """
    if len(records) != len(completions):
        raise ValueError(f"{len(records)} records but {len(completions)} completions")
    texts = ["" if c is None else c for c in completions]
    n = len(texts)
    if tokenizer is not None:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        lengths = [len(x) for x in ids]
    else:
        lengths = [len(t.split()) for t in texts]
    unanswered = [parse_answer(t) is None for t in texts]
    truncated = None
    if tokenizer is not None and max_new_tokens is not None:
        truncated = [u and k >= max_new_tokens for u, k in zip(unanswered, lengths, strict=True)]
    steps_per = [ChainChecker(r).check(t) for r, t in zip(records, texts, strict=True)]
    all_steps = [ok for steps in steps_per for ok in steps]

    def share(flags: Sequence[bool] | None) -> float | None:
        if flags is None or not flags:
            return None
        return sum(flags) / len(flags)

    return {
        "n": n,
        "missing": sum(c is None for c in completions),
        "length_unit": "tokens" if tokenizer is not None else "words",
        "mean_length": statistics.fmean(lengths) if lengths else None,
        "median_length": statistics.median(lengths) if lengths else None,
        "max_length": max(lengths) if lengths else None,
        "truncation_rate": share(truncated) if n else None,
        "unparseable_rate": share(unanswered),
        "repetition_rate": share([is_repetitive(t) for t in texts]),
        "chain_valid": share([bool(s) and all(s) for s in steps_per]),
        "steps_true": share(all_steps),
        "has_steps": share([bool(s) for s in steps_per]),
        "mean_steps": statistics.fmean(len(s) for s in steps_per) if n else None,
    }
