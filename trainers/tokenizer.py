"""Tokenizers: a word-level one built from the kinship task's vocabulary, and GPT-2's BPE.

The word-level tokenizer is a `tokenizers` model used through `FastTokenizer`, a thin wrapper
with the few `transformers` tokenizer methods this code base calls (`tokenizer(texts,
add_special_tokens=False)["input_ids"]`, `decode`, the special tokens and their ids,
`save_pretrained`, `len`). It exists so that training and evaluation never import
`transformers`, which imports torch (memory and seconds of start-up in every process).
`save_pretrained` writes `tokenizer.json`, `tokenizer_config.json` (`tokenizer_class:
"PreTrainedTokenizerFast"`) and `special_tokens_map.json`, which
`transformers.AutoTokenizer.from_pretrained` loads with the same ids and special tokens.

`load_tokenizer` reads any folder holding a `tokenizer.json` of a plain fast tokenizer (ours,
folders saved by `PreTrainedTokenizerFast.save_pretrained`, GPT-2's BPE) into `FastTokenizer`,
taking the special tokens from `tokenizer_config.json` / `special_tokens_map.json`; other folders
and hub names go to `transformers.AutoTokenizer`, imported only then.

The word-level pre-tokenizer keeps newlines as tokens, drops other white space, and splits off
". , ? : ;" and the possessive "'s" (names keep inner apostrophes and hyphens: "D'Arcy's" ->
"D'Arcy" + "'s"). Its decoder, saved in tokenizer.json, writes the text back with one space
between tokens except before ". , ? : ; 's", and none around newlines, "<|endoftext|>" and
"<|pad|>", so `tokenizers`, `transformers` and TRL decode completions exactly as the task wrote
them (text with other spacing, e.g. two spaces or " ." or "a,b", comes back normalised to
that). tokenizer.json files saved before the decoder existed get it when loaded by
`load_tokenizer` (their ids are unchanged); `detokenize` still fixes decoded text of such a file
loaded by other means.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, EOS, UNK)

_PRE_TOKENIZER = pre_tokenizers.Sequence(
    [
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"[ \t\r]+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"'s(?![\w'-])|[.,?:;]"), behavior="isolated"),
    ]
)
# Token ids -> text: the inverse of _PRE_TOKENIZER on the text the task writes. WordPiece (with a
# continuation prefix no token has: the pre-tokenizer drops spaces) puts " " before every token
# but the first; Replace removes it again from a token that is exactly a punctuation mark, "'s",
# a newline, EOS or PAD (a per-token regex anchored with \A and \z: "^" and "$" also match at
# newlines in Oniguruma), and, once Fuse has joined the tokens, after a newline, EOS or PAD.
_GLUED_LEFT = "|".join([r"[.,?:;\n]", "'s", re.escape(EOS), re.escape(PAD)])
_GLUED_RIGHT = ("\n", EOS, PAD)
_DECODER = decoders.Sequence(
    [
        decoders.WordPiece(prefix=" ", cleanup=False),
        decoders.Replace(Regex(rf"\A (?=(?:{_GLUED_LEFT})\z)"), ""),
        decoders.Fuse(),
        *(decoders.Replace(token + " ", token) for token in _GLUED_RIGHT),
    ]
)
# detokenize(): the same spacing rules for text decoded without _DECODER (tokenizer.json saved
# before it existed, loaded other than through load_tokenizer).
_SPACE_BEFORE = re.compile(r" (?=[.,?:;]|'s(?![\w'-]))")
_AROUND_NEWLINE = re.compile(r" ?\n ?")

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
# tokenizer_class values whose tokenizer is fully described by tokenizer.json plus the special
# tokens (other classes may add behaviour in Python, so they load through transformers).
_PLAIN_CLASSES = {None, "PreTrainedTokenizerFast", "TokenizersBackend", "GPT2Tokenizer",
                  "GPT2TokenizerFast"}  # fmt: skip
_GPT2_CLASSES = {"GPT2Tokenizer", "GPT2TokenizerFast"}
# transformers' `clean_up_tokenization`, applied by decode when the config asks for it.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip


class FastTokenizer:
    """A `tokenizers.Tokenizer` with the part of the `transformers` tokenizer interface that
    kinrl uses, and no `transformers` (hence no torch) import."""

    def __init__(
        self,
        backend: Tokenizer,
        *,
        eos_token: str,
        pad_token: str | None = None,
        unk_token: str | None = None,
        bos_token: str | None = None,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self.backend_tokenizer = backend
        self.eos_token = eos_token
        self.pad_token = pad_token if pad_token is not None else eos_token
        self.unk_token = unk_token
        self.bos_token = bos_token
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        for token in {eos_token, self.pad_token, unk_token, bos_token} - {None}:
            if backend.token_to_id(token) is None:
                raise ValueError(f"special token {token!r} is not in the vocabulary")
        # Special tokens are skipped by decode(skip_special_tokens=True) and never split.
        backend.add_special_tokens([t for t in (pad_token, eos_token, unk_token, bos_token) if t])

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend_tokenizer.token_to_id(token)

    @property
    def eos_token_id(self) -> int:
        return self.backend_tokenizer.token_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int:
        return self.backend_tokenizer.token_to_id(self.pad_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._id(self.unk_token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def vocab_size(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    @overload
    def __call__(self, texts: str, add_special_tokens: bool = ...) -> dict[str, list[int]]: ...
    @overload
    def __call__(
        self, texts: Sequence[str], add_special_tokens: bool = ...
    ) -> dict[str, list[list[int]]]: ...
    def __call__(self, texts: str | Sequence[str], add_special_tokens: bool = True) -> Any:
        """{"input_ids": ids} of one text, or a list of them of a batch (as transformers)."""
        if isinstance(texts, str):
            ids = self.backend_tokenizer.encode(texts, add_special_tokens=add_special_tokens).ids
            return {"input_ids": ids}
        encodings = self.backend_tokenizer.encode_batch(
            list(texts), add_special_tokens=add_special_tokens
        )
        return {"input_ids": [encoding.ids for encoding in encodings]}

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        text = self.backend_tokenizer.decode(
            [int(i) for i in ids], skip_special_tokens=skip_special_tokens
        )
        if self.clean_up_tokenization_spaces:
            for old, new in _CLEAN_UP:
                text = text.replace(old, new)
        return text

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str | None]:
        return [self.backend_tokenizer.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int | None]:
        return [self.backend_tokenizer.token_to_id(token) for token in tokens]

    def special_tokens(self) -> dict[str, str]:
        """{"eos_token": "<|endoftext|>", ...}: the special tokens that are set."""
        return {key: getattr(self, key) for key in _SPECIAL_KEYS if getattr(self, key)}

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`, which
        `transformers.AutoTokenizer.from_pretrained(folder)` loads as this tokenizer."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.backend_tokenizer.save(str(out / "tokenizer.json"))
        special = self.special_tokens()
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "model_max_length": int(1e30),  # transformers' "no limit"
        }
        for name, content in (
            ("tokenizer_config.json", config),
            ("special_tokens_map.json", special),
        ):
            (out / name).write_text(json.dumps(content, indent=2) + "\n")


def word_tokenizer(words: Iterable[str]) -> FastTokenizer:
    """A word-level tokenizer over `words` (ids: specials first, then words in order)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    model = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    model.pre_tokenizer = _PRE_TOKENIZER
    model.decoder = _DECODER
    return FastTokenizer(model, pad_token=PAD, eos_token=EOS, bos_token=EOS, unk_token=UNK)


def kinship_tokenizer(locales: str = "en_US") -> FastTokenizer:
    """The word-level tokenizer of the kinship task for names of `locales`."""
    from tasks.kinship.vocab import vocabulary

    return word_tokenizer(vocabulary(locales))


def detokenize(text: str) -> str:
    """Undo word-level decoding's spaces: 'Bob 's mother .' -> "Bob's mother."."""
    return _AROUND_NEWLINE.sub("\n", _SPACE_BEFORE.sub("", text))


def decode(tokenizer: FastTokenizer | PreTrainedTokenizerBase, ids: Iterable[int]) -> str:
    """Token ids -> text, without special tokens, spaced as the task writes it."""
    text = tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
    if is_word_level(tokenizer) and tokenizer.backend_tokenizer.decoder is None:
        return detokenize(text)  # a tokenizer.json saved before _DECODER, loaded by transformers
    return text


def unknown_words(tokenizer: FastTokenizer | PreTrainedTokenizerBase, text: str) -> list[str]:
    """The pieces of `text` the tokenizer reads as its unknown token, in order, without
    repeats; [] for a tokenizer without one, or that never falls back to it (GPT-2's
    byte-level BPE, whose unknown token is <|endoftext|> written out)."""
    unk = tokenizer.unk_token_id
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if unk is None or backend is None:
        return []
    encoding = backend.encode(text, add_special_tokens=False)
    pieces = [
        text[start:end]
        for i, (start, end) in zip(encoding.ids, encoding.offsets, strict=True)
        if i == unk and text[start:end] != tokenizer.unk_token  # the token itself, written out
    ]
    return list(dict.fromkeys(pieces))


def is_word_level(tokenizer: FastTokenizer | PreTrainedTokenizerBase) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and isinstance(backend.model, models.WordLevel)


def _add_missing_decoder(backend: Tokenizer) -> None:
    """Give a word-level tokenizer.json saved before _DECODER existed (our pre-tokenizer, no
    decoder) the decoder, so it decodes exactly and saves with it. Its ids do not change."""
    if backend.decoder is None and isinstance(backend.model, models.WordLevel):
        pre_tokenizer = backend.pre_tokenizer
        if pre_tokenizer is not None and (
            pre_tokenizer.__getstate__() == _PRE_TOKENIZER.__getstate__()
        ):
            backend.decoder = _DECODER


def save_tokenizer(
    tokenizer: FastTokenizer | PreTrainedTokenizerBase, folder: str | os.PathLike[str]
) -> None:
    """Write `tokenizer.json` (and its config) into `folder`."""
    tokenizer.save_pretrained(str(folder))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    content = json.loads(path.read_text())
    return content if isinstance(content, dict) else {}


def _token(value: Any) -> str | None:
    """A special token as saved by transformers: a string, or an AddedToken as a dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _load_fast(folder: Path) -> FastTokenizer | None:
    """`folder`'s tokenizer.json as a FastTokenizer, or None when the folder needs transformers
    (a tokenizer class with Python-side behaviour, or no end-of-sequence token)."""
    config = _read_json(folder / "tokenizer_config.json")
    tokenizer_class = config.get("tokenizer_class")
    if tokenizer_class not in _PLAIN_CLASSES or config.get("auto_map"):
        return None
    special = {key: _token(config.get(key)) for key in _SPECIAL_KEYS}
    for key, value in _read_json(folder / "special_tokens_map.json").items():
        if key in special and _token(value):
            special[key] = _token(value)
    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    _add_missing_decoder(backend)
    if tokenizer_class in _GPT2_CLASSES:  # GPT-2's defaults, as its tokenizer class sets them
        for key in ("bos_token", "eos_token", "unk_token"):
            special[key] = special[key] or EOS
    if special["eos_token"] is None or any(
        token is not None and backend.token_to_id(token) is None for token in special.values()
    ):
        return None
    return FastTokenizer(
        backend,
        eos_token=special["eos_token"],
        pad_token=special["pad_token"],  # None -> eos (GPT-2 has none; padding is masked)
        unk_token=special["unk_token"],
        bos_token=special["bos_token"],
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
    )


def load_tokenizer(
    path_or_name: str | os.PathLike[str],
) -> FastTokenizer | PreTrainedTokenizerBase:
    """A saved tokenizer from a local folder (ours, or GPT-2's BPE files), or from the hub by
    name when one is reachable. Never runs remote code. A folder with a plain `tokenizer.json`
    loads without `transformers`; anything else loads through `transformers.AutoTokenizer`."""
    folder = Path(path_or_name)
    if folder.is_dir() and (folder / "tokenizer.json").exists():
        fast = _load_fast(folder)
        if fast is not None:
            return fast
    # transformers says on stderr that it found no torch: not news to a command line
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import AutoTokenizer  # imports torch: only for folders that need it

    tokenizer = AutoTokenizer.from_pretrained(str(path_or_name), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has none; padding is masked anyway
    return tokenizer
