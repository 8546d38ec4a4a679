"""Word-level kinship tokenizer: covers the task's text, round-trips it, saves and loads (also
through transformers), and keeps torch and transformers out of the training processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tasks.kinship import KinshipConfig, make_example
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
