"""Word-level kinship tokenizer: covers the task's text, round-trips it, saves and loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from tasks.kinship import KinshipConfig, make_example
from trainers.tokenizer import (
    EOS,
    PAD,
    decode,
    detokenize,
    kinship_tokenizer,
    load_tokenizer,
    save_tokenizer,
    word_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return kinship_tokenizer()


@pytest.mark.parametrize("level", [1, 4, 7, 10])
def test_task_text_has_no_unknown_tokens_and_round_trips(tokenizer, level: int) -> None:
    for index in range(60):
        record = make_example(KinshipConfig.for_level(level), 9, index)
        text = record["prompt"] + record["completion"]
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert decode(tokenizer, ids) == text


def test_hyphenated_locale_names(tmp_path: Path) -> None:
    tokenizer = kinship_tokenizer("en_IE,de_DE")
    config = KinshipConfig.for_level(5, locale="en_IE,de_DE")
    for index in range(40):
        record = make_example(config, 1, index)
        text = record["prompt"] + record["completion"]
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids and decode(tokenizer, ids) == text


def test_apostrophe_names_keep_their_apostrophe() -> None:
    tokenizer = word_tokenizer(["D'Arcy", "Anne-Marie", "is", "mother", "'s", "."])
    text = "D'Arcy is Anne-Marie's mother."
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert tokens == ["D'Arcy", "is", "Anne-Marie", "'s", "mother", "."]
    assert decode(tokenizer, tokenizer(text)["input_ids"]) == text


def test_save_and_load_through_transformers(tmp_path: Path, tokenizer) -> None:
    save_tokenizer(tokenizer, tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    loaded = load_tokenizer(tmp_path)
    text = "Ann is Bob's mother.\nAnswer: 3"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.pad_token == PAD and loaded.eos_token == EOS
    again = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    assert again.convert_tokens_to_ids(EOS) == tokenizer.eos_token_id


def test_detokenize() -> None:
    assert detokenize("Bob 's mother is Ann .\nAnswer : Ann , Bob") == (
        "Bob's mother is Ann.\nAnswer: Ann, Bob"
    )
