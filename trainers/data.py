"""Supervised data: a `kinrl generate` folder -> token sequences -> padded, bucketed batches.

A sequence is `prompt + completion + EOS`; the loss mask is 1 on completion tokens and the EOS
(the tokens the model must learn to produce), 0 on the prompt and padding. Batches are padded
on the right to a length bucket (the next multiple of `bucket`, capped at `max_length`), so a
whole run compiles the train step for a handful of shapes only.

Order: epoch `e` is a permutation drawn from `(seed, e)`; inside windows of `length_grouping`
batches, examples are sorted by length before being cut into batches (less padding) and the
batches of a window are shuffled again. Batch `k` of a run is thus a pure function of
`(seed, k)`: the iterator's whole state is its position, which goes into every checkpoint.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# The dataset kinds and their record fields are the registry's ("X as X" re-exports the two
# kinds this module does not use itself, for the trainers that import them from here).
from tasks.registry import EXAMPLES_KIND, RECORD_FIELDS, reads
from tasks.registry import FEEDBACK_KIND as FEEDBACK_KIND
from tasks.registry import PREFERENCE_KIND as PREFERENCE_KIND

BUCKET = 32


def read_data_config(
    data_dir: str | Path, kind: str = EXAMPLES_KIND, *, exact: bool = False
) -> dict[str, Any]:
    """The `config.json` of a dataset folder, checked to be of `kind` or of a text kind of the
    same shape (`tasks.registry.reads`: TL;DR examples for SFT); of `kind` itself when
    `exact`. ValueError otherwise."""
    path = Path(data_dir) / "config.json"
    if not Path(data_dir).is_dir():
        raise ValueError(f"data folder {data_dir} does not exist")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"{data_dir} is not a dataset folder (no readable config.json)") from None
    accepted = (kind,) if exact else reads(kind)
    if not isinstance(config, dict) or config.get("kind") not in accepted:
        found = config.get("kind") if isinstance(config, dict) else None
        expected = " or ".join(repr(k) for k in accepted)
        raise ValueError(f"{data_dir} holds {found!r} data, expected {expected}")
    return config


def split_path(data_dir: str | Path, split: str) -> Path:
    """The file of `split` (`.jsonl` or `.parquet`); ValueError naming the splits there are."""
    for suffix in (".jsonl", ".parquet"):
        path = Path(data_dir) / f"{split}{suffix}"
        if path.is_file():
            return path
    have = sorted(
        {p.stem for p in Path(data_dir).glob("*.jsonl")}
        | {p.stem for p in Path(data_dir).glob("*.parquet")}
    )
    raise ValueError(f"{data_dir} has no split {split!r} (it has: {', '.join(have) or 'none'})")


def has_split(data_dir: str | Path, split: str) -> bool:
    return any((Path(data_dir) / f"{split}{suffix}").is_file() for suffix in (".jsonl", ".parquet"))


def load_records(
    data_dir: str | Path,
    split: str,
    kind: str = EXAMPLES_KIND,
    limit: int | None = None,
    *,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """All records of one split of a dataset folder of `kind` (the first `limit` only, read
    no further, when given). ValueError for another kind (a text kind of the same shape is
    read too unless `exact`), a file that does not parse, or a record without one of the
    folder kind's `RECORD_FIELDS`, naming the file and the line."""
    kind = read_data_config(data_dir, kind, exact=exact)["kind"]  # the folder's own kind
    path = split_path(data_dir, split)
    fields = RECORD_FIELDS.get(kind, ())
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as error:
            raise ValueError(f"{path} is not a readable parquet file ({error})") from None
        missing = [f for f in fields if f not in table.column_names]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} of {kind}")
        return table.slice(0, limit).to_pylist()
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if limit is not None and len(records) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number} is not valid JSON ({error})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {number} is not a JSON object")
            missing = [f for f in fields if f not in record]
            if missing:
                raise ValueError(f"{path} line {number} lacks {', '.join(missing)} ({kind})")
            records.append(record)
    return records


@dataclass(frozen=True)
class TokenizedSplit:
    """Token sequences of one split. `tokens[i]` is (L_i,) int32: prompt, completion, EOS.

    `prompt_lengths[i]` counts the prompt tokens; `dropped` is how many records were longer
    than the model's context and left out.
    """

    tokens: tuple[np.ndarray, ...]
    prompt_lengths: np.ndarray
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.tokens)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """(len,) int64 sequence lengths (computed once; do not modify)."""
        return np.array([len(t) for t in self.tokens], dtype=np.int64)


def tokenize_examples(
    records: Sequence[dict[str, Any]], tokenizer, max_length: int
) -> TokenizedSplit:
    """Tokenise `prompt` and `completion` separately (so the mask boundary is exact) and join
    them with a final EOS; sequences longer than `max_length` are dropped and counted."""
    prompts = tokenizer([r["prompt"] for r in records], add_special_tokens=False)["input_ids"]
    completions = tokenizer([r["completion"] for r in records], add_special_tokens=False)[
        "input_ids"
    ]
    eos = tokenizer.eos_token_id
    tokens, prompt_lengths = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        if len(prompt) + len(completion) + 1 > max_length:
            continue
        tokens.append(np.array([*prompt, *completion, eos], dtype=np.int32))
        prompt_lengths.append(len(prompt))
    return TokenizedSplit(
        tuple(tokens), np.array(prompt_lengths, np.int64), dropped=len(records) - len(tokens)
    )


def require_step_examples(available: int, step_examples: int) -> None:
    """ValueError unless `available` training examples (those that fit the context) fill one
    step of `step_examples` (batch_size * grad_accum)."""
    if available < step_examples:
        raise ValueError(f"batch_size * grad_accum = {step_examples} exceeds the {available} "
                         "training examples that fit the context")  # fmt: skip


def round_up(n: int, multiple: int) -> int:
    """The least multiple of `multiple` that is >= `n`."""
    return -(-n // multiple) * multiple


def bucket_length(length: int, max_length: int, bucket: int = BUCKET) -> int:
    """The padded length for a batch whose longest sequence has `length` tokens."""
    return min(round_up(length, bucket), max_length)


class Batch(NamedTuple):
    """One optimizer step of data, split into `A` micro-batches of `B` sequences of `T` slots.

    tokens:         (A, B, T) int32, right-padded with the pad id
    attention_mask: (A, B, T) int32, 0 on padding, else the segment id of the sequence the
                    token belongs to: 1 when a row holds one sequence; 1, 2, ... when several
                    are packed in a row (`make_packed_batch`; see `model.segment_attention`)
    loss_mask:      (A, B, T) float32, weight of each token's loss: 1 on the completion and EOS,
                    `prompt_weight` on the prompt (0 by default), 0 on padding and on the first
                    token of each sequence (nothing predicts it)
    """

    tokens: np.ndarray
    attention_mask: np.ndarray
    loss_mask: np.ndarray


def make_batch(
    data: TokenizedSplit,
    indices: np.ndarray,
    *,
    grad_accum: int,
    pad_id: int,
    max_length: int,
    bucket: int = BUCKET,
    prompt_weight: float = 0.0,
) -> Batch:
    """Pad the sequences `indices` (A * B of them, in order) into one `Batch`; prompt tokens
    get loss weight `prompt_weight` (0: completion-only loss)."""
    n = len(indices)
    if n % grad_accum:
        raise ValueError(f"{n} sequences do not split into {grad_accum} micro-batches")
    width = bucket_length(max(len(data.tokens[i]) for i in indices), max_length, bucket)
    tokens = np.full((n, width), pad_id, np.int32)
    attention = np.zeros((n, width), np.int32)
    loss = np.zeros((n, width), np.float32)
    for row, i in enumerate(indices):
        seq = data.tokens[i]
        tokens[row, : len(seq)] = seq
        attention[row, : len(seq)] = 1
        loss[row, : data.prompt_lengths[i]] = prompt_weight
        loss[row, data.prompt_lengths[i] : len(seq)] = 1.0
    shape = (grad_accum, n // grad_accum, width)
    return Batch(tokens.reshape(shape), attention.reshape(shape), loss.reshape(shape))


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """First-fit decreasing: the positions of `lengths` grouped into rows of at most `width`
    tokens (longest first, ties in order; each row keeps its sequences in that order). A pure
    function of its input, so packed batches are as deterministic as plain ones."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if lengths[i] > width:
            raise ValueError(f"a sequence of {lengths[i]} tokens does not fit rows of {width}")
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


def make_packed_batch(
    data: TokenizedSplit,
    indices: np.ndarray,
    *,
    grad_accum: int,
    pad_id: int,
    width: int,
    row_multiple: int = 1,
    bucket: int = BUCKET,
    prompt_weight: float = 0.0,
) -> Batch:
    """The sequences `indices` (A * B of them, in order) packed several to a row: each
    micro-batch's B sequences go into rows of `width` tokens (wider, rounded up to `bucket`,
    if one is longer) by `pack_rows`; every micro-batch gets the same number of rows, rounded
    up to `row_multiple` (the devices a row axis is split over). Segment ids in
    `attention_mask` keep the sequences apart, and each sequence's first token gets no loss,
    so the summed loss and its token count equal `make_batch`'s on the same sequences."""
    n = len(indices)
    if n % grad_accum:
        raise ValueError(f"{n} sequences do not split into {grad_accum} micro-batches")
    lengths = [len(data.tokens[i]) for i in indices]
    width = max(width, round_up(max(lengths), bucket))
    per_micro = n // grad_accum
    groups = [
        pack_rows(lengths[a * per_micro : (a + 1) * per_micro], width) for a in range(grad_accum)
    ]
    rows = round_up(max(len(g) for g in groups), row_multiple)
    tokens = np.full((grad_accum, rows, width), pad_id, np.int32)
    segments = np.zeros((grad_accum, rows, width), np.int32)
    loss = np.zeros((grad_accum, rows, width), np.float32)
    for a, group in enumerate(groups):
        for r, members in enumerate(group):
            start = 0
            for k, j in enumerate(members, start=1):
                i = indices[a * per_micro + j]
                seq, prompt = data.tokens[i], int(data.prompt_lengths[i])
                end = start + len(seq)
                tokens[a, r, start:end] = seq
                segments[a, r, start:end] = k
                loss[a, r, start : start + prompt] = prompt_weight
                loss[a, r, start + prompt : end] = 1.0
                loss[a, r, start] = 0.0  # predicted by nothing (another sequence precedes it)
                start = end
    return Batch(tokens, segments, loss)


def fixed_size_chunks(order: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`order` cut into consecutive chunks of `size`, each as (chunk, filled): `filled` is the
    chunk topped up to `size` with copies of its first index, so every batch made from it has
    one shape (only the first `len(chunk)` results are real)."""
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        yield chunk, np.concatenate([chunk, np.repeat(chunk[:1], size - len(chunk))])


def epoch_order(
    lengths: np.ndarray, batch_examples: int, seed: int, epoch: int, length_grouping: int
) -> np.ndarray:
    """(steps_per_epoch, batch_examples) example indices of epoch `epoch`; a pure function.

    The last partial batch of an epoch is dropped (the next epoch reshuffles everything).
    """
    n = len(lengths)
    steps = n // batch_examples
    if steps == 0:
        raise ValueError(f"a batch needs {batch_examples} examples but the split has only {n}")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)[: steps * batch_examples]
    window = max(length_grouping, 1) * batch_examples
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        group = chunk.reshape(-1, batch_examples)
        batches.append(group[rng.permutation(len(group))])
    return np.concatenate(batches)


def deal_by_length(
    groups: np.ndarray, lengths: np.ndarray, window: int, rng: np.random.Generator
) -> np.ndarray:
    """(G, n) example indices -> the same examples regrouped so that every group holds a like
    mix of lengths. Within each run of `window` consecutive groups the examples are ranked
    longest first (ties in their given order) and dealt in rounds of one per group: each pair
    of rounds in snake order (the longest of the first round goes with the shortest of the
    second), the pairs tied to the groups by a random permutation from `rng`, so which
    examples share a group changes with `rng` even when every length differs. Every group
    keeps n examples and every example stays in its window; the groups' total lengths differ
    by at most the window's range of lengths.

    For packed batches of one shape: the row count is set by the fullest batch of a run, and
    randomly drawn groups vary (16 level-1 pairs need 8 to 12 rows of their longest pair's
    width); dealt groups all need about the average, so the shape is smaller. It is stratified
    sampling: each group draws one example from each stratum of `window` neighbours in
    length."""
    groups = np.asarray(groups)
    G, n = groups.shape
    out = np.empty_like(groups)
    for start in range(0, G, max(window, 1)):
        block = groups[start : start + window]
        w = len(block)
        flat = block.reshape(-1)
        flat = flat[np.argsort(-lengths[flat], kind="stable")]
        rounds, seat = np.divmod(np.arange(w * n), w)
        seat = np.where(rounds % 2 == 0, seat, w - 1 - seat)  # snake within a pair of rounds
        pairs = np.argsort(rng.random(((n + 1) // 2, w)), axis=1)  # a permutation per pair
        target = pairs[rounds // 2, seat]
        out[start : start + w] = flat[np.lexsort((rounds, target))].reshape(w, n)
    return out


class BatchIterator(Iterator[Batch]):
    """Endless deterministic batches of one split; `position` (steps taken) is its state."""

    def __init__(
        self,
        data: TokenizedSplit,
        *,
        batch_size: int,
        grad_accum: int,
        seed: int,
        pad_id: int,
        max_length: int,
        length_grouping: int = 1,
        bucket: int = BUCKET,
        prompt_weight: float = 0.0,
        position: int = 0,
        pack_width: int = 0,
        row_multiple: int = 1,
    ) -> None:
        self.pack_width, self.row_multiple = pack_width, row_multiple
        self.data = data
        self.batch_examples = batch_size * grad_accum
        self.grad_accum = grad_accum
        self.seed = seed
        self.pad_id = pad_id
        self.max_length = max_length
        self.length_grouping = length_grouping
        self.bucket = bucket
        self.prompt_weight = prompt_weight
        self.position = position
        self._lengths = data.lengths
        require_step_examples(len(data), self.batch_examples)
        self.steps_per_epoch = len(data) // self.batch_examples
        self._epoch, self._order = -1, np.empty((0, 0), np.int64)

    def indices(self, step: int) -> np.ndarray:
        """(batch_size * grad_accum,) example indices of step `step` of the run."""
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order = epoch_order(
                self._lengths, self.batch_examples, self.seed, epoch, self.length_grouping
            )
            self._epoch = epoch
        return self._order[within]

    def __next__(self) -> Batch:
        indices = self.indices(self.position)
        if self.pack_width:
            batch = make_packed_batch(
                self.data, indices, grad_accum=self.grad_accum, pad_id=self.pad_id,
                width=self.pack_width, row_multiple=self.row_multiple, bucket=self.bucket,
                prompt_weight=self.prompt_weight,
            )  # fmt: skip
        else:
            batch = make_batch(
                self.data, indices, grad_accum=self.grad_accum, pad_id=self.pad_id,
                max_length=self.max_length, bucket=self.bucket, prompt_weight=self.prompt_weight,
            )  # fmt: skip
        self.position += 1
        return batch
