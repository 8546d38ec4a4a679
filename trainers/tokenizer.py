"""Tokenizers: a word-level one built from the kinship task's vocabulary, and GPT-2's BPE.

The word-level tokenizer is a `tokenizers` model saved as `tokenizer.json` and used through
`transformers.PreTrainedTokenizerFast`. Its pre-tokenizer keeps newlines as tokens, drops other
white space, and splits off ". , ? : ;" and the possessive "'s" (names keep inner apostrophes
and hyphens: "D'Arcy's" -> "D'Arcy" + "'s"). `detokenize` undoes the spacing that a word-level
decode inserts, so decoded completions read (and score) like the originals.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, EOS, UNK)

_PRE_TOKENIZER = pre_tokenizers.Sequence(
    [
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"[ \t\r]+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"'s(?![\w'-])|[.,?:;]"), behavior="isolated"),
    ]
)
_SPACE_BEFORE = re.compile(r" (?=[.,?:;]|'s(?![\w'-]))")
_AROUND_NEWLINE = re.compile(r" ?\n ?")


def word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` (ids: specials first, then words in order)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    model = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    model.pre_tokenizer = _PRE_TOKENIZER
    return PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token=PAD, eos_token=EOS, bos_token=EOS, unk_token=UNK
    )


def kinship_tokenizer(locales: str = "en_US") -> PreTrainedTokenizerFast:
    """The word-level tokenizer of the kinship task for names of `locales`."""
    from tasks.kinship.vocab import vocabulary

    return word_tokenizer(vocabulary(locales))


def detokenize(text: str) -> str:
    """Undo word-level decoding's spaces: 'Bob 's mother .' -> "Bob's mother."."""
    return _AROUND_NEWLINE.sub("\n", _SPACE_BEFORE.sub("", text))


def decode(tokenizer: PreTrainedTokenizerBase, ids: Iterable[int]) -> str:
    """Token ids -> text, without special tokens, spaced as the task writes it."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    return detokenize(text) if is_word_level(tokenizer) else text


def is_word_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and isinstance(backend.model, models.WordLevel)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: str | os.PathLike[str]) -> None:
    """Write `tokenizer.json` (and its config) into `folder`."""
    tokenizer.save_pretrained(str(folder))


def load_tokenizer(path_or_name: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """A saved tokenizer from a local folder (ours, or GPT-2's BPE files), or from the hub by
    name when one is reachable. Never runs remote code."""
    folder = Path(path_or_name)
    if folder.is_dir() and (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(path_or_name), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has none; padding is masked anyway
    return tokenizer
