"""GPT-2's byte-level BPE, read offline from the tiktoken file shipped in `data/tldr/`.

The TL;DR preprocessing measures queries and responses in GPT-2 tokens (the 512-token query
budget, the 53/169-token response caps), whatever model trains on them afterwards. The ranks
file is `data/tldr/gpt2.tiktoken` (MIT, copyright OpenAI; its provenance is in
`data/tldr/README.md`); `KINRL_GPT2_TIKTOKEN` points at another copy. With GPT-2's
pre-tokenisation pattern and `<|endoftext|>` = 50256 it is GPT-2's 50,257-token tokenizer.
"""

from __future__ import annotations

import base64
import functools
import os
from pathlib import Path
from typing import Any

ENDOFTEXT = "<|endoftext|>"
EOT_ID = 50256
# GPT-2's pre-tokenisation pattern (tiktoken's r50k_base / gpt2 `pat_str`).
PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SHIPPED = Path(__file__).resolve().parents[2] / "data" / "tldr" / "gpt2.tiktoken"


def ranks_path() -> Path:
    """The tiktoken ranks file: $KINRL_GPT2_TIKTOKEN, else the copy in data/tldr/."""
    return Path(os.environ.get("KINRL_GPT2_TIKTOKEN") or SHIPPED)


def read_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """`base64(token) rank` lines -> {token bytes: rank}; ValueError naming a bad line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
            except ValueError:
                raise ValueError(f"{path} line {number} is not 'base64-token rank'") from None
    return ranks


@functools.cache
def encoding(path: str | None = None) -> Any:
    """GPT-2's tokenizer as a `tiktoken.Encoding` (cached per path)."""
    import tiktoken

    file = Path(path) if path else ranks_path()
    if not file.is_file():
        raise ValueError(f"GPT-2's BPE ranks file {file} is missing (set KINRL_GPT2_TIKTOKEN)")
    ranks = read_ranks(file)
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT_ID},
        explicit_n_vocab=EOT_ID + 1,
    )


def count(text: str) -> int:
    """GPT-2 tokens of `text` (special tokens read as plain text)."""
    return len(encoding().encode_ordinary(text))


def encode(text: str) -> list[int]:
    return encoding().encode_ordinary(text)


def decode(ids: list[int]) -> str:
    """Token ids -> text; bytes cut mid-character are dropped."""
    return encoding().decode_bytes(ids).decode("utf-8", errors="ignore")
