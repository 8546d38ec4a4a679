"""Word-level kinship tokenizer: covers the task's text, round-trips it (also through the saved
tokenizer.json's own decoder, in `tokenizers` and `transformers`), saves and loads (also files
saved before that decoder), and keeps torch and transformers out of the training processes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tasks.kinship import KinshipConfig, make_example, score
from tasks.kinship.vocab import vocabulary
from trainers.tokenizer import (
    EOS,
    PAD,
    UNK,
    FastTokenizer,
    decode,
    detokenize,
    kinship_tokenizer,
    load_tokenizer,
    save_tokenizer,
    unknown_words,
    word_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer() -> FastTokenizer:
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


def _kinship_texts() -> list[str]:
    records = [make_example(KinshipConfig.for_level(level), 5, i) for level in (1, 6, 10)
               for i in range(4)]  # fmt: skip
    return [r["prompt"] + r["completion"] for r in records]


def test_save_and_load(tmp_path: Path, tokenizer) -> None:
    save_tokenizer(tokenizer, tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, FastTokenizer)
    text = "Ann is Bob's mother.\nAnswer: 3"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.pad_token, loaded.eos_token, loaded.unk_token) == (PAD, EOS, UNK)
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tokenizer.pad_token_id, 1)
    assert len(loaded) == len(tokenizer) == loaded.vocab_size


@pytest.mark.parametrize("loader", [PreTrainedTokenizerFast, AutoTokenizer])
def test_saved_folder_loads_in_transformers_with_identical_ids(tmp_path, tokenizer, loader):
    save_tokenizer(tokenizer, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    hf = loader.from_pretrained(str(tmp_path))
    assert (hf.pad_token, hf.eos_token, hf.unk_token) == (PAD, EOS, UNK)
    assert (hf.pad_token_id, hf.eos_token_id, len(hf)) == (
        tokenizer.pad_token_id, tokenizer.eos_token_id, len(tokenizer)
    )  # fmt: skip
    texts = _kinship_texts()
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert hf(texts, add_special_tokens=False)["input_ids"] == ids
    assert hf(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    for text, row in zip(texts, ids, strict=True):
        row = [*row, tokenizer.eos_token_id, tokenizer.pad_token_id]
        assert hf.decode(row) == tokenizer.decode(row)
        assert hf.decode(row, skip_special_tokens=True) == tokenizer.decode(row, True)
        assert decode(hf, row) == decode(tokenizer, row) == text


def test_folder_saved_by_transformers_loads_without_it(tmp_path, tokenizer) -> None:
    """Run folders written before FastTokenizer (by PreTrainedTokenizerFast.save_pretrained,
    special tokens possibly as AddedToken dicts in special_tokens_map.json) still load."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # HF may modify it
    hf = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS,
        bos_token=EOS, unk_token=UNK,
    )  # fmt: skip
    hf.save_pretrained(str(tmp_path))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({
        "pad_token": {"content": PAD, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False},
        "eos_token": EOS, "unk_token": UNK,
    }))  # fmt: skip
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, FastTokenizer)
    assert (loaded.pad_token, loaded.eos_token, loaded.unk_token) == (PAD, EOS, UNK)
    texts = _kinship_texts()
    assert loaded(texts)["input_ids"] == hf(texts)["input_ids"]
    assert [decode(loaded, row) for row in hf(texts)["input_ids"]] == texts


def test_training_and_evaluation_never_import_torch_or_transformers(tmp_path: Path) -> None:
    script = f"""
        import sys
        import trainers.checkpoint, trainers.sft, trainers.dpo, trainers.kto
        import trainers.reward_model, evaluators.accuracy, kinrl.cli
        from trainers.tokenizer import FastTokenizer, decode, kinship_tokenizer, load_tokenizer

        tokenizer = kinship_tokenizer()
        tokenizer.save_pretrained({str(tmp_path)!r})
        loaded = load_tokenizer({str(tmp_path)!r})
        assert isinstance(loaded, FastTokenizer)
        text = "Ann is Bob's mother.\\nQuestion: Who is Bob's mother?\\nAnswer: Ann"
        ids = loaded([text], add_special_tokens=False)["input_ids"][0]
        assert decode(loaded, ids) == text and ids == tokenizer(text)["input_ids"]
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
    """
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-c", textwrap.dedent(script)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_detokenize() -> None:
    assert detokenize("Bob 's mother is Ann .\nAnswer : Ann , Bob") == (
        "Bob's mother is Ann.\nAnswer: Ann, Bob"
    )


# Decoding through the saved tokenizer.json alone (tokenizers, transformers, TRL): exact text.


def _records(levels=(1, 3, 5, 7, 10), per_level=60) -> list[dict]:
    records = [make_example(KinshipConfig.for_level(level), 3, i) for level in levels
               for i in range(per_level)]  # fmt: skip
    plain = KinshipConfig.for_level(6, reasoning=False, phrasings=4, supporting_facts=2)
    return records + [make_example(plain, 4, i) for i in range(40)]


def _legacy_folder(tokenizer: FastTokenizer, folder: Path) -> Path:
    """`tokenizer` saved as kinrl did before the decoder: tokenizer.json with "decoder": null."""
    save_tokenizer(tokenizer, folder)
    content = json.loads((folder / "tokenizer.json").read_text())
    assert content["decoder"] is not None
    content["decoder"] = None
    (folder / "tokenizer.json").write_text(json.dumps(content))
    return folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(tokenizer, folder)
    return folder


def test_saved_tokenizer_json_decodes_task_text_exactly(saved, tokenizer) -> None:
    records = _records()
    texts = [r["prompt"] + r["completion"] for r in records]
    raw = Tokenizer.from_file(str(saved / "tokenizer.json"))
    loaders = (PreTrainedTokenizerFast.from_pretrained, AutoTokenizer.from_pretrained)
    hfs = [load(str(saved)) for load in loaders]
    hfs.append(PreTrainedTokenizerFast(tokenizer_file=str(saved / "tokenizer.json")))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows = [e.ids for e in raw.encode_batch(texts)]
    assert rows == tokenizer(texts)["input_ids"]
    for text, row in zip(texts, rows, strict=True):
        assert tokenizer.unk_token_id not in row
        assert raw.decode(row) == text
        assert raw.decode([eos, *row, eos, pad]) == text  # skips special tokens by default
        assert raw.decode([*row, eos, pad], skip_special_tokens=False) == text + EOS + PAD
    for hf in hfs:
        assert hf.batch_decode(rows) == texts
        padded = [[*row, eos, pad, pad] for row in rows]
        assert hf.batch_decode(padded, skip_special_tokens=True) == texts
        assert hf.decode(padded[0]) == texts[0] + EOS + PAD + PAD
        assert hf.decode(rows[0], clean_up_tokenization_spaces=True) == texts[0]
    for record in records:  # the gold reward of a completion decoded by transformers
        ids = hfs[0](record["completion"], add_special_tokens=False)["input_ids"]
        completion = hfs[0].decode([*ids, eos], skip_special_tokens=True)
        assert completion == record["completion"] and score(record, completion) == 1.0


def test_streaming_decode_is_exact(saved) -> None:
    raw = Tokenizer.from_file(str(saved / "tokenizer.json"))
    for record in _records(levels=(2, 9), per_level=5):
        text = record["prompt"] + record["completion"]
        stream = DecodeStream(skip_special_tokens=True)
        chunks = [stream.step(raw, i) for i in raw.encode(text).ids]
        assert "".join(chunk for chunk in chunks if chunk is not None) == text


def test_decoder_leaves_ids_unchanged(tmp_path, saved, tokenizer) -> None:
    """The ids of the tokenizer.json with the decoder are those of the one without it."""
    legacy = Tokenizer.from_file(str(_legacy_folder(tokenizer, tmp_path) / "tokenizer.json"))
    current = Tokenizer.from_file(str(saved / "tokenizer.json"))
    assert legacy.decoder is None and current.decoder is not None
    texts = [r["prompt"] + r["completion"] for r in _records(per_level=30)]
    texts += ["Ann is Bob's mother.\nAnswer: 3" + EOS + PAD, "D'Arcy  is\tO'Brien 's ?"]
    assert [e.ids for e in current.encode_batch(texts)] == [
        e.ids for e in legacy.encode_batch(texts)
    ]
    assert current.get_vocab(with_added_tokens=True) == legacy.get_vocab(with_added_tokens=True)


def test_tokenizer_saved_without_decoder_still_decodes_exactly(tmp_path, tokenizer) -> None:
    folder = _legacy_folder(tokenizer, tmp_path / "old")
    texts = _kinship_texts()
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    loaded = load_tokenizer(folder)  # gains the decoder: exact, and saved with it from now on
    assert isinstance(loaded, FastTokenizer) and loaded.backend_tokenizer.decoder is not None
    assert loaded(texts, add_special_tokens=False)["input_ids"] == ids
    assert [loaded.decode(row) for row in ids] == [decode(loaded, row) for row in ids] == texts
    save_tokenizer(loaded, tmp_path / "new")
    raw = Tokenizer.from_file(str(tmp_path / "new" / "tokenizer.json"))
    assert [raw.decode(row) for row in ids] == texts
    hf = AutoTokenizer.from_pretrained(str(folder))  # no decoder: word-level spacing ...
    assert hf(texts, add_special_tokens=False)["input_ids"] == ids
    assert hf.decode(ids[0]) != texts[0]
    assert [decode(hf, row) for row in ids] == texts  # ... which kinrl's decode still undoes


def test_other_word_level_tokenizers_get_no_decoder(tmp_path) -> None:
    """Only our pre-tokenizer's files gain the decoder: it is the inverse of that one alone."""
    backend = Tokenizer.from_str(word_tokenizer(["a", "b"]).backend_tokenizer.to_str())
    backend.pre_tokenizer = None
    backend.decoder = None
    backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS}))
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, FastTokenizer) and loaded.backend_tokenizer.decoder is None


_PUNCTUATION = (".", ",", "?", ":", "'s")
_GLUED_BOTH_SIDES = ("\n", EOS, PAD)


def _written(tokens: list[str]) -> str:
    """Tokens written as the task writes text: one space between words, none before
    punctuation and the possessive, none around newlines, EOS and PAD."""
    text = tokens[0] if tokens else ""
    for previous, token in itertools.pairwise(tokens):
        glued = token in _PUNCTUATION + _GLUED_BOTH_SIDES or previous in _GLUED_BOTH_SIDES
        text += token if glued else " " + token
    return text


_WORDS = vocabulary("en_US,en_IE,de_DE,fr_FR,it_IT")
_WORD_SET = frozenset(_WORDS)


@pytest.fixture(scope="module")
def wide_tokenizer() -> FastTokenizer:
    return word_tokenizer(_WORDS)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*_WORDS, EOS, PAD, UNK, "'s", "\n", "."]), max_size=30))
def test_any_token_sequence_written_as_the_task_writes_round_trips(wide_tokenizer, tokens):
    # The task writes the possessive only right after a name ("Ann's"); "'s's" splits
    # differently, and no record holds it.
    assume(
        all(
            t != "'s" or (i and tokens[i - 1] in _WORD_SET and tokens[i - 1] != "'s")
            for i, t in enumerate(tokens)
        )
    )
    text = _written(tokens)
    ids = wide_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert wide_tokenizer.convert_ids_to_tokens(ids) == tokens
    assert wide_tokenizer.decode(ids) == text
    assert wide_tokenizer.decode(ids, skip_special_tokens=True) == _written(
        [t for t in tokens if t not in (EOS, PAD, UNK)]
    )


def test_unknown_words_names_what_reads_as_unk(tokenizer: FastTokenizer) -> None:
    text = "Zqxv is Wrrzl's mother. Zqxv has a son, <|unk|>."
    assert unknown_words(tokenizer, text) == ["Zqxv", "Wrrzl"]  # in order, once each
    assert unknown_words(tokenizer, "Question: Who is the mother?") == []
