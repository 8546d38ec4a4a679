"""Completion statistics (evaluators/completions.py) and a run's log-prob trend
(evaluators/training.py): the reference completions of several levels all come out with valid
chains and no repetition, corrupted steps are caught, degenerate repetition is caught and
normal chains are not, lengths/truncation/unparseable answers are counted as defined, and the
trend's slope is the least-squares one."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from evaluators.completions import (
    ChainChecker,
    chain_steps,
    completion_stats,
    is_repetitive,
    record_graph,
    words,
)
from evaluators.training import logprob_trend
from tasks.kinship import KinshipConfig, KinshipTask
from trainers.tokenizer import kinship_tokenizer

# A level-2 record (seed 0, item 0), the family only.
RECORD = {
    "people": [
        {"name": n, "gender": g}
        for n, g in [("Collin", "male"), ("Donna", "female"), ("Angie", "female"),
                     ("Latoya", "female"), ("Caleb", "male"), ("Ray", "male"), ("Ryan", "male"),
                     ("Kurt", "male"), ("Morgan", "female"), ("Krystal", "female")]
    ],
    "parents": [["Collin", "Angie"], ["Donna", "Angie"], ["Collin", "Caleb"], ["Latoya", "Caleb"],
                ["Angie", "Ryan"], ["Ray", "Ryan"], ["Angie", "Kurt"], ["Ray", "Kurt"],
                ["Caleb", "Krystal"], ["Morgan", "Krystal"]],
    "spouses": [["Collin", "Donna"], ["Collin", "Latoya"], ["Angie", "Ray"], ["Caleb", "Morgan"]],
}  # fmt: skip
REFERENCE = (
    "Collin is Angie's father.\nCollin is Latoya's husband.\n"
    "So Angie is Latoya's stepdaughter.\nAnswer: stepdaughter"
)
LEVELS = (1, 2, 5, 9)
GENDER_SWAP = {"father": "mother", "mother": "father", "husband": "wife", "wife": "husband",
               "brother": "sister", "sister": "brother"}  # fmt: skip


def records(level: int, size: int = 120) -> list[dict]:
    task = KinshipTask(KinshipConfig.for_level(level), seed=11, size=size)
    return [task[i] for i in range(size)]


@pytest.fixture(scope="module")
def tokenizer():
    return kinship_tokenizer()


# ----------------------------------------------------------------------------- chains


def test_the_example_chain_is_valid():
    assert chain_steps(REFERENCE) == ["Collin is Angie's father.", "Collin is Latoya's husband."]
    checker = ChainChecker(RECORD)
    assert checker.check(REFERENCE) == [True, True]
    # Any term that holds counts, not only the words of the facts; the conclusion is no step.
    assert checker.step_holds("Ryan is Collin's grandson.")
    assert checker.step_holds("Ryan is Collin's grandchild")  # the general word, no period
    assert checker.step_holds("Latoya is Angie's stepmother.")
    assert checker.step_holds("Krystal is Ryan's first cousin.")
    g, ids = record_graph(RECORD)
    assert len(g) == 10 and g.names[ids["Latoya"]] == "Latoya"


@pytest.mark.parametrize(
    ("step", "why"),
    [("Angie is Collin's father.", "names swapped"),
     ("Collin is Angie's mother.", "wrong gender"),
     ("Collin is Angie's uncle.", "wrong term"),
     ("Donna is Latoya's husband.", "not married"),
     ("Bob is Angie's father.", "unknown name"),
     ("Collin is Collin's father.", "self"),
     ("does does does does", "not a step")],
)  # fmt: skip
def test_false_steps(step, why):
    assert not ChainChecker(RECORD).step_holds(step), why


@pytest.mark.parametrize("level", LEVELS)
def test_every_reference_completion_is_valid(level, tokenizer):
    recs = records(level)
    stats = completion_stats(recs, [r["completion"] for r in recs], tokenizer, 256)
    assert stats["chain_valid"] == 1.0
    assert stats["steps_true"] == 1.0
    assert stats["has_steps"] == 1.0
    assert stats["repetition_rate"] == 0.0
    assert stats["unparseable_rate"] == 0.0
    assert stats["truncation_rate"] == 0.0
    assert stats["mean_steps"] >= 1.0


def _corrupt(completion: str, how: str) -> str | None:
    """The completion with its first step that allows it corrupted, or None."""
    lines = completion.split("\n")
    for i, line in enumerate(chain_steps(completion)):
        a, rest = line.split(" is ", 1)
        b, term = rest.split("'s ", 1)
        term = term.rstrip(".")
        if how == "swap" and term in ("father", "mother"):  # a parent is not their child's
            lines[i] = f"{b} is {a}'s {term}."
        elif how == "term":
            lines[i] = f"{a} is {b}'s {GENDER_SWAP[term]}."
        elif how == "name":
            lines[i] = f"Nobodyknown is {b}'s {term}."
        else:
            continue
        return "\n".join(lines)
    return None


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("how", ["swap", "term", "name"])
def test_corrupted_chains_are_invalid(level, how):
    recs, corrupted = [], []
    for record in records(level, 60):
        bad = _corrupt(record["completion"], how)
        if bad is not None:
            recs.append(record)
            corrupted.append(bad)
    assert len(recs) >= 10
    stats = completion_stats(recs, corrupted)
    assert stats["chain_valid"] == 0.0
    assert stats["has_steps"] == 1.0
    assert stats["steps_true"] < 1.0
    assert stats["unparseable_rate"] == 0.0  # the answer line is untouched


def test_a_completion_without_steps_has_no_valid_chain():
    stats = completion_stats([RECORD, RECORD], ["Answer: stepdaughter", REFERENCE])
    assert stats["has_steps"] == 0.5
    assert stats["chain_valid"] == 0.5
    assert stats["steps_true"] == 1.0
    assert stats["mean_steps"] == 1.0
    assert completion_stats([RECORD], ["Answer: x"])["steps_true"] is None


# ----------------------------------------------------------------------------- repetition


@pytest.mark.parametrize(
    "text",
    ["Collin is Angie's does does does does does does",
     "does does does does",
     "Collin is Angie's father is Angie's father is Angie's father.",
     "Collin is Angie's father.\nCollin is Angie's father.\nCollin is Angie's father.\n",
     # a loop over two facts: caught as a repeated line (and a repeated 10-word span)
     "A is B's mother.\nC is B's father.\nA is B's mother.\nC is B's father.\n"
     "A is B's mother.\nC is B's father.\n",
     # the same line three times, apart
     "A is B's mother.\nX\nA is B's mother.\nY\nA is B's mother.\nAnswer: z"],
)  # fmt: skip
def test_degenerate_repetition_is_caught(text):
    assert is_repetitive(text)


@pytest.mark.parametrize(
    "text",
    [REFERENCE, "very very very good", "So Bob is Ann's son.\nSo Tim is Ann's son.\n",
     "A is B's mother.\nA is B's mother.\nAnswer: x"],
)  # fmt: skip
def test_normal_text_is_not_repetitive(text):
    assert not is_repetitive(text)


def test_a_repeated_three_gram_in_a_normal_chain_is_not_repetition():
    """Reference chains of many-answer questions repeat a word 3-gram ("is erin's first")
    three or more times; the 3-gram rule would call them degenerate, `is_repetitive` does not."""
    flagged = []
    for record in records(9, 80):
        w = words(record["completion"])
        if any(v >= 3 for v in Counter(zip(w, w[1:], w[2:], strict=False)).values()):
            flagged.append(record["completion"])
    assert flagged
    assert not any(is_repetitive(c) for c in flagged)


# ----------------------------------------------------------------------------- lengths


def test_lengths_in_words_and_tokens(tokenizer):
    texts = ["a b c", "Answer: x", "one two three four five six"]
    stats = completion_stats([RECORD] * 3, texts)
    assert stats["length_unit"] == "words"
    assert (stats["mean_length"], stats["median_length"], stats["max_length"]) == (11 / 3, 3, 6)
    assert stats["truncation_rate"] is None  # no tokenizer: the cap cannot be checked
    stats = completion_stats([RECORD], [REFERENCE], tokenizer)
    n = len(tokenizer(REFERENCE, add_special_tokens=False)["input_ids"])
    assert stats["length_unit"] == "tokens" and stats["max_length"] == n
    assert n > len(REFERENCE.split())  # "'s" and "." are tokens of their own


def test_truncation_and_unparseable(tokenizer):
    def n_tokens(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    long_no_answer = "Collin is Angie's father.\nCollin is Latoya's husband.\nSo Angie is"
    cap = n_tokens(long_no_answer)
    texts = [long_no_answer, "Collin is Angie's father.", REFERENCE, "Answer:", None]
    stats = completion_stats([RECORD] * 5, texts, tokenizer, max_new_tokens=cap)
    # Unparseable: no Answer: line (the first two and the empty None); "Answer:" parses.
    assert stats["unparseable_rate"] == pytest.approx(3 / 5)
    # Truncated: unanswered and at the cap; the short unanswered one is not, nor REFERENCE
    # (longer than the cap but answered).
    assert n_tokens(REFERENCE) > cap
    assert stats["truncation_rate"] == pytest.approx(1 / 5)
    assert stats["missing"] == 1 and stats["n"] == 5


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="1 records but 2 completions"):
        completion_stats([RECORD], ["a", "b"])


# ----------------------------------------------------------------------------- trend


def _write(run, lines, torn=False):
    run.mkdir(exist_ok=True)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (run / "metrics.jsonl").write_text(text + ('{"step": 9' if torn else ""))


def test_trend_is_the_least_squares_slope_per_100_steps(tmp_path):
    lines = []
    for step, value in [(10, -5.0), (20, -6.0), (30, -6.5), (40, -8.5)]:
        lines.append({"step": step, "train/logps/chosen": value, "train/loss": 0.6})
        lines.append({"step": step, "eval/loss": 0.7})  # lines without the metric
    _write(tmp_path / "run", lines, torn=True)
    trend = logprob_trend(tmp_path / "run")
    # x - mean = -15, -5, 5, 15; y - mean = 1.5, 0.5, 0, -2: sxy = -22.5-2.5-30 = -55,
    # sxx = 500: slope -0.11 per step, -11 per 100 steps.
    assert trend["slope"] == pytest.approx(-11.0)
    assert (trend["first"], trend["last"]) == (-5.0, -8.5)
    assert trend["points"] == [(10, -5.0), (20, -6.0), (30, -6.5), (40, -8.5)]
    eval_trend = logprob_trend(tmp_path / "run", "eval/loss")
    assert eval_trend["slope"] == pytest.approx(0.0)


def test_trend_without_the_metric_or_with_one_step(tmp_path):
    _write(tmp_path / "sft", [{"step": 1, "train/loss": 2.0}])
    assert logprob_trend(tmp_path / "sft") == {"first": None, "last": None, "slope": None,
                                               "points": []}  # fmt: skip
    assert logprob_trend(tmp_path / "absent")["points"] == []
    _write(tmp_path / "one", [{"step": 5, "train/logps/chosen": -3.0},
                              {"step": 5, "train/logps/chosen": -4.0}])  # fmt: skip
    assert logprob_trend(tmp_path / "one") == {"first": -4.0, "last": -4.0, "slope": None,
                                               "points": [(5, -4.0)]}  # fmt: skip
