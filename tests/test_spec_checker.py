"""Tests of the independent spec checker (`tests/kinship_spec.py`) and, through it, of the
kinship generator's records against the contract in `docs/spec/kinship.md`."""

from __future__ import annotations

import copy
import re
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.kinship.config import KinshipConfig
from tasks.kinship.generator import GenerationError, make_example
from tests.kinship_spec import (
    SpecError,
    SpecFamily,
    answer_matches,
    check_dataset,
    check_record,
    gold,
    is_known_term,
    normalise_answer,
    read_sentence,
    stated_family,
    terms,
)

F, M = "female", "male"

# --------------------------------------------------------------------------------------------
# A hand-built family, written out explicitly.
#
#   G0  Abe (m) = Ada (f)
#   G1  their children Bert (m), Bella (f);            Bert = Cora (f)
#   G2  Bert+Cora's children Dan (m), Dora (f);         Dan = Eve (f), Dora = Ed (m)
#   G3  Dan+Eve's children Finn (m), Frank (m);         Dora+Ed's child Flo (f)
#       Finn married Rita (f) first, then Gina (f);     Gina married Leo (m) first, then Finn
#       Frank = Kate (f), Flo = Glen (m)
#   G4  Finn+Gina: Hal (m), Hope (f);  Finn+Rita: Sam (m);  Gina+Leo: Lily (f);
#       Flo+Glen: Ivy (f);  Sam = Una (f)
#   G5  Sam+Una: Tom (m)
# --------------------------------------------------------------------------------------------
PEOPLE = {
    "Abe": M,
    "Ada": F,
    "Bert": M,
    "Bella": F,
    "Cora": F,
    "Dan": M,
    "Dora": F,
    "Eve": F,
    "Ed": M,
    "Finn": M,
    "Frank": M,
    "Flo": F,
    "Rita": F,
    "Gina": F,
    "Leo": M,
    "Kate": F,
    "Glen": M,
    "Hal": M,
    "Hope": F,
    "Sam": M,
    "Lily": F,
    "Ivy": F,
    "Una": F,
    "Tom": M,
}
PARENTS = [
    ("Abe", "Bert"),
    ("Ada", "Bert"),
    ("Abe", "Bella"),
    ("Ada", "Bella"),
    ("Bert", "Dan"),
    ("Cora", "Dan"),
    ("Bert", "Dora"),
    ("Cora", "Dora"),
    ("Dan", "Finn"),
    ("Eve", "Finn"),
    ("Dan", "Frank"),
    ("Eve", "Frank"),
    ("Dora", "Flo"),
    ("Ed", "Flo"),
    ("Finn", "Hal"),
    ("Gina", "Hal"),
    ("Finn", "Hope"),
    ("Gina", "Hope"),
    ("Finn", "Sam"),
    ("Rita", "Sam"),
    ("Gina", "Lily"),
    ("Leo", "Lily"),
    ("Flo", "Ivy"),
    ("Glen", "Ivy"),
    ("Sam", "Tom"),
    ("Una", "Tom"),
]
SPOUSES = [
    ("Abe", "Ada"),
    ("Bert", "Cora"),
    ("Dan", "Eve"),
    ("Dora", "Ed"),
    ("Finn", "Rita"),
    ("Finn", "Gina"),
    ("Gina", "Leo"),
    ("Frank", "Kate"),
    ("Flo", "Glen"),
    ("Sam", "Una"),
]

# (A, B, canonical term of "A is B's T"), worked out by hand from the spec's table.
EXPECTED: list[tuple[str, str, str | None]] = [
    # 1 parent
    ("Finn", "Hal", "father"),
    ("Gina", "Hope", "mother"),
    ("Rita", "Sam", "mother"),
    # 2 child
    ("Hal", "Finn", "son"),
    ("Hope", "Gina", "daughter"),
    ("Lily", "Leo", "daughter"),
    # 3 sibling (full)
    ("Hal", "Hope", "brother"),
    ("Hope", "Hal", "sister"),
    ("Frank", "Finn", "brother"),
    # 4 half-sibling (remarriage: Finn+Rita -> Sam, Gina+Leo -> Lily)
    ("Lily", "Hal", "half-sister"),
    ("Sam", "Hope", "half-brother"),
    ("Hal", "Sam", "half-brother"),
    # 5 grandparent
    ("Dan", "Hal", "grandfather"),
    ("Eve", "Hope", "grandmother"),
    ("Finn", "Tom", "grandfather"),
    # 6 grandchild
    ("Hal", "Dan", "grandson"),
    ("Ivy", "Dora", "granddaughter"),
    # 7 great-grandparent (k = 3, 4, 5)
    ("Bert", "Hal", "great-grandfather"),
    ("Cora", "Hope", "great-grandmother"),
    ("Abe", "Hal", "great-great-grandfather"),
    ("Ada", "Ivy", "great-great-grandmother"),
    ("Abe", "Tom", "great-great-great-grandfather"),
    # 8 great-grandchild
    ("Hal", "Bert", "great-grandson"),
    ("Hope", "Abe", "great-great-granddaughter"),
    ("Tom", "Dan", "great-grandson"),
    # 9 aunt/uncle: by blood, by marriage (Kate, Ed), through a half-sibling (Hal of Tom)
    ("Frank", "Hal", "uncle"),
    ("Kate", "Hal", "aunt"),
    ("Dora", "Finn", "aunt"),
    ("Ed", "Finn", "uncle"),
    ("Bella", "Dan", "aunt"),
    ("Hal", "Tom", "uncle"),
    ("Hope", "Tom", "aunt"),
    # 10 niece/nephew
    ("Hal", "Frank", "nephew"),
    ("Hope", "Kate", "niece"),
    ("Finn", "Ed", "nephew"),
    ("Dan", "Bella", "nephew"),
    ("Tom", "Hope", "nephew"),
    # 11 great-aunt/uncle: k = 2 (great-aunt), k = 3 (great-great-aunt), k = 4
    ("Dora", "Hal", "great-aunt"),
    ("Ed", "Hope", "great-uncle"),
    ("Bella", "Finn", "great-aunt"),
    ("Frank", "Tom", "great-uncle"),
    ("Kate", "Tom", "great-aunt"),
    ("Bella", "Hal", "great-great-aunt"),
    ("Bella", "Tom", "great-great-great-aunt"),
    # 12 grandniece/nephew: k = 2 grandniece, k = 3 great-grandniece, k = 4
    ("Hal", "Dora", "grandnephew"),
    ("Hope", "Ed", "grandniece"),
    ("Finn", "Bella", "grandnephew"),
    ("Tom", "Frank", "grandnephew"),
    ("Hope", "Bella", "great-grandniece"),
    ("Hal", "Bella", "great-grandnephew"),
    ("Tom", "Bella", "great-great-grandnephew"),
    # 13 cousins: (2,2) first, (2,3) first once removed, (3,3) second, (2,4) first twice
    # removed, (4,3) second once removed
    ("Finn", "Flo", "first cousin"),
    ("Flo", "Frank", "first cousin"),
    ("Flo", "Hal", "first cousin once removed"),
    ("Hal", "Flo", "first cousin once removed"),
    ("Finn", "Ivy", "first cousin once removed"),
    ("Hal", "Ivy", "second cousin"),
    ("Ivy", "Hope", "second cousin"),
    ("Flo", "Tom", "first cousin twice removed"),
    ("Tom", "Ivy", "second cousin once removed"),
    # 14 spouse (Finn and Gina both married twice)
    ("Finn", "Gina", "husband"),
    ("Gina", "Finn", "wife"),
    ("Rita", "Finn", "wife"),
    ("Leo", "Gina", "husband"),
    # 15 parent-in-law
    ("Dan", "Kate", "father-in-law"),
    ("Eve", "Gina", "mother-in-law"),
    ("Finn", "Una", "father-in-law"),
    ("Dora", "Glen", "mother-in-law"),
    # 16 child-in-law
    ("Gina", "Dan", "daughter-in-law"),
    ("Kate", "Eve", "daughter-in-law"),
    ("Glen", "Ed", "son-in-law"),
    ("Una", "Finn", "daughter-in-law"),
    # 17 sibling-in-law, first clause (A in AnySib(s), s in S(B)) ...
    ("Frank", "Gina", "brother-in-law"),
    ("Hal", "Una", "brother-in-law"),  # through the half-brother Sam
    # ... and second clause (A in S(t), t in AnySib(B))
    ("Kate", "Finn", "sister-in-law"),
    ("Gina", "Frank", "sister-in-law"),
    ("Una", "Hal", "sister-in-law"),  # through the half-brother Sam
    # 18 step-parent. Leo and Rita count too: the spec keeps every marriage as an edge, and
    # row 18 only asks "A in S(p) for some p in P(B), and A not in P(B)".
    ("Gina", "Sam", "stepmother"),
    ("Finn", "Lily", "stepfather"),
    ("Leo", "Hal", "stepfather"),
    ("Rita", "Hope", "stepmother"),
    # 19 stepchild
    ("Sam", "Gina", "stepson"),
    ("Lily", "Finn", "stepdaughter"),
    ("Hal", "Leo", "stepson"),
    # 20 step-sibling: P(Lily) & P(Sam) empty, Gina in P(Lily) is in S(Finn), Finn in P(Sam)
    ("Lily", "Sam", "stepsister"),
    ("Sam", "Lily", "stepbrother"),
    # no relation of the table
    ("Glen", "Hal", None),  # a cousin's spouse
    ("Gina", "Tom", None),  # a step-grandparent
    ("Lily", "Tom", None),  # a step-aunt
    ("Leo", "Finn", None),  # two husbands of one wife
    ("Rita", "Lily", None),
]


@pytest.fixture(scope="module")
def family() -> SpecFamily:
    return SpecFamily(PEOPLE, PARENTS, SPOUSES)


def test_hand_family_covers_all_20_rows(family):
    from tests.kinship_spec import row_hits

    rows = {row for a, b, _ in EXPECTED for row, _, _ in row_hits(family, a, b)}
    assert rows == set(range(1, 21))


@pytest.mark.parametrize(("a", "b", "canonical"), EXPECTED, ids=lambda v: str(v))
def test_hand_family_canonical_terms(family, a, b, canonical):
    specific, _, got = terms(family, a, b)
    assert got == canonical, (a, b, specific)
    if canonical is not None:
        assert canonical in specific


def test_hand_family_full_term_sets(family):
    # Whole specific/general sets for a few pairs: synonyms, general words, rows without one.
    assert terms(family, "Finn", "Flo") == ({"first cousin", "cousin"}, set(), "first cousin")
    assert terms(family, "Flo", "Hal")[0] == {"first cousin once removed"}  # no synonym
    assert terms(family, "Abe", "Hal") == (
        {"great-great-grandfather"},
        {"great-great-grandparent"},
        "great-great-grandfather",
    )
    assert terms(family, "Kate", "Hal") == ({"aunt"}, set(), "aunt")
    assert terms(family, "Lily", "Sam") == ({"stepsister"}, {"stepsibling"}, "stepsister")
    assert terms(family, "Una", "Hal") == (
        {"sister-in-law"},
        {"sibling-in-law"},
        "sister-in-law",
    )
    assert terms(family, "Hal", "Hal") == (set(), set(), None)
    # Gendered words take A's gender.
    assert terms(family, "Hope", "Gina")[1] == {"child"}
    assert terms(family, "Gina", "Hope")[1] == {"parent"}


def test_sibling_sets(family):
    assert family.Sib("Hal") == {"Hope"}
    assert family.Half("Hal") == {"Sam", "Lily"}
    assert family.AnySib("Sam") == {"Hal", "Hope"}
    assert family.Half("Sam") == {"Hal", "Hope"}
    assert family.Sib("Bella") == {"Bert"}
    assert family.anc("Tom", 5) == {"Abe", "Ada"}
    assert family.desc("Abe", 2) == {"Dan", "Dora"}
    # Two people with one (the same) recorded parent are half-siblings: |P(x) & P(y)| == 1,
    # and not full siblings, since Sib needs |P(x)| == 2.
    lone = SpecFamily({"P": F, "X": M, "Y": F}, [("P", "X"), ("P", "Y")])
    assert lone.Sib("X") == set()
    assert lone.Half("X") == {"Y"}


_NEUTRAL = [
    ("mother", "parent"),
    ("father", "parent"),
    ("daughter", "child"),
    ("son", "child"),
    ("sister", "sibling"),
    ("brother", "sibling"),
    ("wife", "spouse"),
    ("husband", "spouse"),
    ("aunt", "auncle"),
    ("uncle", "auncle"),
    ("niece", "nibling"),
    ("nephew", "nibling"),
]


def _neutral(term: str) -> str:
    words = dict(_NEUTRAL)
    return re.sub("|".join(words), lambda m: words[m.group()], term)


def _inverse(neutral: str) -> str:
    """The term of (B, A) for a gender-free term of (A, B), from the table's paired rows."""
    if "parent" in neutral:  # rows 1, 5, 7, 15, 18 <-> 2, 6, 8, 16, 19
        return neutral.replace("parent", "child")
    if "child" in neutral:
        return neutral.replace("child", "parent")
    if neutral.endswith("auncle"):  # row 9 <-> 10, row 11 with k <-> row 12 with k
        greats = neutral.count("great-")
        return "nibling" if greats == 0 else "great-" * (greats - 1) + "grandnibling"
    if neutral.endswith("nibling"):
        greats = neutral.count("great-") + (1 if neutral.endswith("grandnibling") else 0)
        return "great-" * greats + "auncle"
    return neutral  # siblings, half, cousins, spouse, sibling-in-law, step-sibling


def test_inverse_pairs(family):
    for a, b in permutations(family.people, 2):
        forward = {_inverse(_neutral(t)) for t in terms(family, a, b)[0]}
        backward = {_neutral(t) for t in terms(family, b, a)[0]}
        assert forward == backward, (a, b)
        # A is B's mother iff B is A's daughter or son.
        is_mother = "mother" in terms(family, a, b)[0]
        assert is_mother == (PEOPLE[a] == F and bool({"daughter", "son"} & terms(family, b, a)[0]))


def test_pedigree_collapse_gives_several_terms():
    # First cousins Xan and Zoe marry; their son Kid.
    fam = SpecFamily(
        {"Old": M, "Olga": F, "Ulf": M, "Vera": F, "Wanda": F, "Yuri": M, "Xan": M, "Zoe": F}
        | {"Kid": M},
        [
            ("Old", "Ulf"),
            ("Olga", "Ulf"),
            ("Old", "Vera"),
            ("Olga", "Vera"),
            ("Ulf", "Xan"),
            ("Wanda", "Xan"),
            ("Vera", "Zoe"),
            ("Yuri", "Zoe"),
            ("Xan", "Kid"),
            ("Zoe", "Kid"),
        ],
        [("Old", "Olga"), ("Ulf", "Wanda"), ("Vera", "Yuri"), ("Xan", "Zoe")],
    )
    assert terms(fam, "Ulf", "Kid") == (
        {"grandfather", "great-uncle"},
        {"grandparent"},
        "grandfather",
    )
    assert terms(fam, "Zoe", "Xan") == (
        {"wife", "first cousin", "cousin"},
        {"spouse"},
        "first cousin",  # row 13 comes before row 14
    )
    # Xan is an ancestor of Kid, so the common ancestor at distance 0 wins: no cousin term.
    assert terms(fam, "Xan", "Kid")[0] == {"father"}
    assert terms(fam, "Old", "Kid")[0] == {"great-grandfather"}


def test_known_terms():
    for term in ["stepsibling", "great-great-grandniece", "third cousin twice removed", "cousin"]:
        assert is_known_term(term)
    for term in ["step-mother", "great grandmother", "eleventh cousin", "cousin once removed"]:
        assert not is_known_term(term)


def test_normaliser():
    assert normalise_answer("  Great Grandmother. ") == normalise_answer("great-grandmother")
    assert normalise_answer("Half -  brother") == "half brother"
    assert normalise_answer("Alice, Bob.") == "alice, bob"
    assert normalise_answer("mother..") == "mother."
    assert answer_matches("Sister-In-Law", ["sister-in-law"])
    assert not answer_matches("stepmother", ["step mother"])


# --------------------------------------------------------------------------------------------
# Hand-made records: a valid one, and the stated-facts graph.
# --------------------------------------------------------------------------------------------

_WORDS = {  # kind: (a's word, b's word), female first
    "parent": (("mother", "father"), ("daughter", "son")),
    "spouse": (("wife", "husband"), ("wife", "husband")),
    "sibling": (("sister", "brother"), ("sister", "brother")),
}


def hand_record(people, parents, spouses, facts, qtype, query, answer, answers, hops):
    """A record built by hand; each fact is one sentence conveying both people's genders."""
    female = {name: gender == F for name, gender in people}
    sentences = []
    for kind, a, b in facts:
        (wa, wb), pa = _WORDS[kind], ("her" if female[a] else "his")
        word_a, word_b = wa[0 if female[a] else 1], wb[0 if female[b] else 1]
        sentences.append(f"{a} is {b}'s {word_a}, and {b} is {pa} {word_b}.")
    s, o, t = query["subject"], query["object"], query["term"]
    question = {
        "relation": f"How is {s} related to {o}?",
        "entity": f"Who is {o}'s {t}?",
        "yesno": f"Is {s} {o}'s {t}?",
        "count": f"How many {t}s does {o} have?",
    }[qtype]
    description = " ".join(sentences)
    return {
        "id": "hand-0",
        "split": "test",
        "difficulty": 1,
        "seed": 0,
        "people": [{"name": n, "gender": g} for n, g in people],
        "parents": [list(p) for p in parents],
        "spouses": [list(p) for p in spouses],
        "facts": [{"kind": k, "a": a, "b": b} for k, a, b in facts],
        "description": description,
        "question": question,
        "question_type": qtype,
        "query": query,
        "answer": answer,
        "answers": answers,
        "hops": hops,
        "prompt": f"{description}\nQuestion: {question}\n",
        "completion": f"Some reasoning.\nAnswer: {answer}",
    }


SMALL_PEOPLE = [("Ann", F), ("Dan", M), ("Bob", M), ("Cid", M), ("Eva", F)]
SMALL_PARENTS = [("Ann", "Bob"), ("Dan", "Bob"), ("Ann", "Cid"), ("Dan", "Cid")]
SMALL_SPOUSES = [("Ann", "Dan"), ("Cid", "Eva")]


def test_valid_hand_record_passes():
    record = hand_record(
        SMALL_PEOPLE,
        SMALL_PARENTS,
        SMALL_SPOUSES,
        [("parent", "Ann", "Bob"), ("parent", "Dan", "Bob"), ("sibling", "Bob", "Cid")],
        "relation",
        {"subject": "Dan", "object": "Cid", "term": None},
        "father",
        ["father"],
        2,
    )
    assert check_record(record) == []


def test_entity_and_count_range_over_mentioned_people():
    facts = [("parent", "Ann", "Bob"), ("parent", "Ann", "Cid"), ("parent", "Dan", "Cid")]
    args = (SMALL_PEOPLE, SMALL_PARENTS, SMALL_SPOUSES, facts)
    query = {"subject": None, "object": "Ann", "term": "son"}
    assert check_record(hand_record(*args, "entity", query, "Bob, Cid", ["Bob, Cid"], 1)) == []
    assert check_record(hand_record(*args, "count", query, "2", ["2"], 1)) == []
    # Unsorted names are wrong.
    assert check_record(hand_record(*args, "entity", query, "Cid, Bob", ["Cid, Bob"], 1))
    # Dan's children: Bob is not mentioned as Dan's, but Dan is his parent in the whole graph,
    # and the stated graph only knows Cid -> unsolvable.
    query = {"subject": None, "object": "Dan", "term": "child"}
    violations = check_record(hand_record(*args, "count", query, "2", ["2"], 2))
    assert any("unsolvable" in v for v in violations), violations


def test_shared_mother_only_is_unsolvable():
    # "a description that names only a shared mother leaves full vs half siblings open"
    record = hand_record(
        SMALL_PEOPLE,
        SMALL_PARENTS,
        SMALL_SPOUSES,
        [("parent", "Ann", "Bob"), ("parent", "Ann", "Cid")],
        "relation",
        {"subject": "Bob", "object": "Cid", "term": None},
        "brother",
        ["brother"],
        2,
    )
    assert stated_family(record).Half("Bob") == {"Cid"}
    violations = check_record(record)
    assert any("unsolvable" in v for v in violations), violations


def test_sibling_group_padding():
    record = hand_record(
        SMALL_PEOPLE,
        SMALL_PARENTS,
        SMALL_SPOUSES,
        [("parent", "Ann", "Bob"), ("sibling", "Bob", "Cid")],
        "relation",
        {"subject": "Ann", "object": "Cid", "term": None},
        "mother",
        ["mother"],
        2,
    )
    stated = stated_family(record)
    assert stated.P("Cid") == stated.P("Bob")
    assert len(stated.P("Cid")) == 2 and "Ann" in stated.P("Cid")
    assert stated.Sib("Bob") == {"Cid"}
    assert gold(stated, record) == ("mother", ["mother"])
    assert check_record(record) == []
    # More than two stated parents in a sibling group is a contradiction.
    record["facts"].append({"kind": "parent", "a": "Eva", "b": "Cid"})
    record["facts"].append({"kind": "parent", "a": "Dan", "b": "Cid"})
    with pytest.raises(SpecError):
        stated_family(record)


def test_read_sentence():
    names = ["Omar", "Amanda", "Jo Ann"]
    assert read_sentence("Omar is Amanda's brother, and Amanda is his sister", names) == (
        [("Omar", "Amanda", "brother"), ("Amanda", "Omar", "sister")],
        [("Omar", "male")],
    )
    assert read_sentence("Jo Ann has a son, Omar", names) == ([("Omar", "Jo Ann", "son")], [])
    assert read_sentence("Omar likes Amanda", names) is None


# --------------------------------------------------------------------------------------------
# Sanity: corrupted generated records are caught.
# --------------------------------------------------------------------------------------------


def _find(predicate, level: int = 5):
    for index in range(500):
        record = make_example(KinshipConfig.for_level(level), 11, index)
        if predicate(record):
            return record
    raise AssertionError("no such record")


def _gendered_relation(record) -> bool:
    return record["question_type"] == "relation" and "cousin" not in record["answer"]


@pytest.fixture(scope="module")
def relation_record():
    record = _find(_gendered_relation)
    assert check_record(record) == []
    return record


def _set_answer(record, answer):
    record["answer"] = answer
    record["answers"] = [answer]
    lines = record["completion"].split("\n")
    record["completion"] = "\n".join([*lines[:-1], f"Answer: {answer}"])


def test_corrupt_wrong_answer(relation_record):
    record = copy.deepcopy(relation_record)
    _set_answer(record, "stepsibling" if record["answer"] != "stepsibling" else "mother")
    assert any(v.startswith("answer ") for v in check_record(record))


def test_corrupt_wrong_entity_and_count():
    record = copy.deepcopy(_find(lambda r: r["question_type"] == "entity"))
    _set_answer(record, record["answer"] + ", Zzz")
    assert any(v.startswith("answer ") for v in check_record(record))
    record = copy.deepcopy(_find(lambda r: r["question_type"] == "count"))
    _set_answer(record, str(int(record["answer"]) + 1))
    assert any(v.startswith("answer ") for v in check_record(record))


def test_corrupt_missing_synonym():
    record = copy.deepcopy(
        _find(lambda r: r["question_type"] == "relation" and r["answer"] == "first cousin", 8)
    )
    record["answers"] = ["first cousin"]
    assert any(v.startswith("answers ") for v in check_record(record))


def test_corrupt_wrong_hops(relation_record):
    record = copy.deepcopy(relation_record)
    record["hops"] += 1
    assert any(v.startswith("hops ") for v in check_record(record))


def test_corrupt_false_fact(relation_record):
    record = copy.deepcopy(relation_record)
    fact = next(f for f in record["facts"] if f["kind"] == "parent")
    fact["a"], fact["b"] = fact["b"], fact["a"]
    assert any("is false in the whole graph" in v for v in check_record(record))


def test_corrupt_half_siblings_stated_as_full():
    def has_half_siblings(record) -> bool:
        fam = SpecFamily.from_record(record)
        return any(fam.Half(x) for x in fam.people)

    record = copy.deepcopy(_find(has_half_siblings))
    fam = SpecFamily.from_record(record)
    x, y = next((x, y) for x in fam.people for y in fam.Half(x))
    record["facts"].append({"kind": "sibling", "a": x, "b": y})
    assert any("is false in the whole graph" in v for v in check_record(record))


def test_corrupt_duplicated_name(relation_record):
    record = copy.deepcopy(relation_record)
    record["people"][1]["name"] = record["people"][0]["name"]
    assert any("is used by 2 people" in v for v in check_record(record))


def test_corrupt_missing_answer_line(relation_record):
    record = copy.deepcopy(relation_record)
    record["completion"] = record["completion"].rsplit("\n", 1)[0]
    assert any("last line" in v for v in check_record(record))
    record["completion"] = relation_record["completion"] + "\n"
    assert any("last line" in v for v in check_record(record))


def test_corrupt_gender_flip_of_subject(relation_record):
    record = copy.deepcopy(relation_record)
    subject = record["query"]["subject"]
    person = next(p for p in record["people"] if p["name"] == subject)
    person["gender"] = "male" if person["gender"] == "female" else "female"
    violations = check_record(record)
    assert any(v.startswith("answer ") for v in violations), violations


def test_corrupt_description(relation_record):
    record = copy.deepcopy(relation_record)
    record["facts"].append(dict(record["facts"][0]))
    assert any("sentences for" in v for v in check_record(record))
    record = copy.deepcopy(relation_record)
    # Swap a gendered word of the description for its opposite.
    swap = {"mother": "father", "father": "mother", "son": "daughter", "daughter": "son"}
    swap |= {"sister": "brother", "brother": "sister", "wife": "husband", "husband": "wife"}
    word = next(w for w in re.findall(r"[a-z]+", record["description"]) if w in swap)
    record["description"] = re.sub(rf"\b{word}\b", swap[word], record["description"], count=1)
    assert any("false in the whole graph" in v for v in check_record(record))


def test_corrupt_question_and_prompt(relation_record):
    record = copy.deepcopy(relation_record)
    record["question"] = "How are they related?"
    violations = check_record(record)
    assert any("does not name" in v for v in violations)
    assert any("prompt does not contain the question" in v for v in violations)


def test_corrupt_types_and_missing_fields(relation_record):
    record = copy.deepcopy(relation_record)
    record["hops"] = "2"
    assert check_record(record) == ["field 'hops' has type str"]
    del record["answers"]
    assert "missing field 'answers'" in check_record(record)


def test_check_dataset_duplicate_ids(relation_record):
    assert check_dataset([relation_record, copy.deepcopy(relation_record)]) == [
        f"id {relation_record['id']!r} is used by 2 records"
    ]


# --------------------------------------------------------------------------------------------
# The real thing: generated records satisfy the contract.
# --------------------------------------------------------------------------------------------

PER_LEVEL = 60


@pytest.mark.parametrize("level", range(1, 11))
def test_generated_records_satisfy_the_spec(level):
    config = KinshipConfig.for_level(level)
    records = [make_example(config, level, index) for index in range(PER_LEVEL)]
    violations = {
        (level, level, index): v
        for index, record in enumerate(records)
        if (v := check_record(record))
    }
    assert violations == {}, "(level, seed, index) -> violations"
    assert check_dataset(records) == []
    assert all(r["difficulty"] == level and r["seed"] == level for r in records)
    # The description reader understood every sentence, so its checks were exercised.
    for record in records:
        names = [p["name"] for p in record["people"]]
        for sentence in record["description"].split(".")[:-1]:
            assert read_sentence(sentence.strip(), names) is not None, sentence


@settings(max_examples=40, deadline=None)
@given(
    level=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1),
    index=st.integers(0, 10_000),
    generations=st.integers(2, 5),
    max_people=st.integers(3, 60),
    hops=st.tuples(st.integers(1, 8), st.integers(0, 4)),
    noise=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
    phrasings=st.integers(1, 4),
    shuffle_facts=st.booleans(),
    sibling_fact_prob=st.floats(0, 1),
    remarriage_prob=st.floats(0, 1),
)
def test_generated_records_satisfy_the_spec_random_configs(
    level,
    seed,
    index,
    generations,
    max_people,
    hops,
    noise,
    phrasings,
    shuffle_facts,
    sibling_fact_prob,
    remarriage_prob,
):
    config = KinshipConfig.for_level(
        level,
        generations=generations,
        max_people=max_people,
        min_hops=hops[0],
        max_hops=min(hops[0] + hops[1], 12),
        supporting_facts=noise[0],
        irrelevant_facts=noise[1],
        disconnected_facts=noise[2],
        phrasings=phrasings,
        shuffle_facts=shuffle_facts,
        sibling_fact_prob=sibling_fact_prob,
        remarriage_prob=remarriage_prob,
    )
    try:
        record = make_example(config, seed, index)
    except GenerationError:
        return
    assert check_record(record) == [], (config, seed, index)


def test_genders_must_be_conveyed():
    record = hand_record(
        SMALL_PEOPLE,
        SMALL_PARENTS,
        SMALL_SPOUSES,
        [("spouse", "Eva", "Cid")],
        "relation",
        {"subject": "Eva", "object": "Cid", "term": None},
        "wife",
        ["wife"],
        1,
    )
    assert check_record(record) == []
    record["description"] = "Eva is married to Cid."
    record["prompt"] = f"{record['description']}\nQuestion: {record['question']}\n"
    violations = check_record(record)
    assert "the description never conveys Cid's gender" in violations
    assert "the description never conveys Eva's gender" in violations
