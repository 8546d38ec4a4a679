"""Offline feedback data for the preference trainers: pairs of token sequences per example.

Every example holds two sequences, both `prompt + completion + EOS` with the loss mask on the
completion and the EOS (as in `trainers/data.py`, whose padding and bucketing are reused):

* preference pairs (reward model, DPO family): the chosen and the rejected completion;
* binary feedback (KTO): the judged completion, and a *mismatched* sequence (this prompt with
  another example's completion) for the KL reference point. As in the KTO paper and TRL's
  `KTOTrainer`, the examples are cut into groups of `batch_size` (a seeded permutation) and the
  completions are shifted by one inside each group; the pairing is fixed when the data is
  prepared, so the reference log-probs of the mismatched sequences are computed once too.

`sequences.tokens[i]` is example i's first sequence and `sequences.tokens[i + N]` its second.
Two step-batch layouts:

* `PairBatch` (A, 2, B, T): A micro-batches, first/second sequence, B examples; the trainers
  reshape (2, B, T) -> (2B, T) so both sequences go through the model in one call (KTO).
* `PackedPairBatch` (A, B, T): each row is the shared prompt once, then the first completion,
  then the second, with positions restarting after the prompt and an attention mask that
  keeps the two completions from seeing each other (prefix sharing). The log-probs are those
  of the two separate sequences, but the prompt goes through the model once and neither
  completion is padded to the other's length: about half the token slots of `PairBatch` on
  kinship pairs. The reward model and the DPO family use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trainers.data import (
    BUCKET,
    TokenizedSplit,
    epoch_order,
    fixed_size_chunks,
    make_batch,
    read_data_config,
    split_path,
)

PREFERENCE_KIND = "kinship/preference"
FEEDBACK_KIND = "kinship/feedback"


def load_feedback_records(data_dir: str | Path, split: str, kind: str) -> list[dict[str, Any]]:
    """All records of one split of a dataset folder of `kind` (ValueError for another kind)."""
    read_data_config(data_dir, kind)
    path = split_path(data_dir, split)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass(frozen=True)
class SequencePairs:
    """N examples of two sequences each (see the module docstring).

    sequences: 2N tokenised sequences; [i] and [i + N] belong to example i.
    labels:    (N,) bool: True for every preference pair; KTO's desirable flag.
    dropped:   records left out because a sequence exceeded the context.
    """

    sequences: TokenizedSplit
    labels: np.ndarray
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) the longer of each example's two sequences (what its padding costs)."""
        lengths = self.sequences.lengths
        return np.maximum(lengths[: len(self)], lengths[len(self) :])


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _split_of(
    prompts: list[list[int]], first: list[list[int]], second: list[list[int]], eos: int
) -> TokenizedSplit:
    pieces = zip(prompts * 2, first + second, strict=True)
    tokens = [np.array([*prompt, *completion, eos], np.int32) for prompt, completion in pieces]
    prompt_lengths = np.array([len(p) for p in prompts * 2], np.int64)
    return TokenizedSplit(tuple(tokens), prompt_lengths)


def tokenize_pairs(
    records: Sequence[dict[str, Any]], tokenizer: Any, max_length: int
) -> SequencePairs:
    """Preference records (prompt/chosen/rejected) -> chosen sequences, then rejected ones.

    A pair is dropped when either of its sequences exceeds `max_length` tokens."""
    prompts = _ids(tokenizer, [r["prompt"] for r in records])
    chosen = _ids(tokenizer, [r["chosen"] for r in records])
    rejected = _ids(tokenizer, [r["rejected"] for r in records])
    keep = [
        i
        for i in range(len(records))
        if len(prompts[i]) + max(len(chosen[i]), len(rejected[i])) + 1 <= max_length
    ]
    prompts, chosen, rejected = ([x[i] for i in keep] for x in (prompts, chosen, rejected))
    sequences = _split_of(prompts, chosen, rejected, tokenizer.eos_token_id)
    return SequencePairs(sequences, np.ones(len(keep), bool), len(records) - len(keep))


def kl_partners(n: int, group_size: int, seed: int) -> np.ndarray:
    """(n,) index of the example whose completion example i is mismatched with: a seeded
    permutation cut into groups of `group_size` (the last takes the remainder), completions
    shifted by one inside each group. Never i itself when n >= 2."""
    if n < 2:
        raise ValueError(f"the KL estimate needs at least 2 examples (got {n})")
    order = np.random.default_rng([seed, 0x4B4C]).permutation(n)
    partners = np.empty(n, np.int64)
    for group in np.array_split(order, max(n // max(group_size, 2), 1)):
        partners[group] = np.roll(group, 1)
    return partners


def tokenize_feedback(
    records: Sequence[dict[str, Any]],
    tokenizer: Any,
    max_length: int,
    *,
    group_size: int,
    seed: int,
) -> SequencePairs:
    """Binary feedback records (prompt/completion/label) -> judged sequences, then mismatched
    ones (prompt i + completion of `kl_partners`(i), cut to `max_length`)."""
    prompts = _ids(tokenizer, [r["prompt"] for r in records])
    completions = _ids(tokenizer, [r["completion"] for r in records])
    keep = [i for i in range(len(records)) if len(prompts[i]) + len(completions[i]) < max_length]
    prompts, completions = [prompts[i] for i in keep], [completions[i] for i in keep]
    labels = np.array([bool(records[i]["label"]) for i in keep], bool)
    partners = kl_partners(len(keep), group_size, seed)
    mismatched = [completions[j] for j in partners]
    split = _split_of(prompts, completions, mismatched, tokenizer.eos_token_id)
    tokens = tuple(t[:max_length] for t in split.tokens)
    split = TokenizedSplit(tokens, split.prompt_lengths)
    return SequencePairs(split, labels, len(records) - len(keep))


class PairBatch(NamedTuple):
    """One optimizer step of examples: A micro-batches of B examples, two sequences each.

    tokens:         (A, 2, B, T) int32, right-padded
    attention_mask: (A, 2, B, T) int32, 1 on real tokens
    loss_mask:      (A, 2, B, T) float32, 1 on completion tokens and the EOS
    ref_logps:      (A, 2, B) float32 reference summed log-probs (zeros when unused)
    labels:         (A, B) bool (preference: all True; KTO: desirable)
    """

    tokens: np.ndarray
    attention_mask: np.ndarray
    loss_mask: np.ndarray
    ref_logps: np.ndarray
    labels: np.ndarray


def make_pair_batch(
    pairs: SequencePairs,
    indices: np.ndarray,
    ref_logps: np.ndarray | None,
    *,
    grad_accum: int,
    pad_id: int,
    max_length: int,
) -> PairBatch:
    """Pad examples `indices` ((A * B,), in order) into a `PairBatch`; `ref_logps` is (2N,)."""
    n = len(pairs)
    if len(indices) % grad_accum:
        raise ValueError(f"{len(indices)} examples do not split into {grad_accum} micro-batches")
    grid = np.asarray(indices).reshape(grad_accum, 1, -1)  # (A, 1, B)
    rows = np.concatenate([grid, grid + n], axis=1)  # (A, 2, B) sequence indices
    flat = make_batch(pairs.sequences, rows.reshape(-1), grad_accum=1, pad_id=pad_id,
                      max_length=max_length)  # fmt: skip
    shape = (*rows.shape, flat.tokens.shape[-1])
    refs = np.zeros(rows.shape, np.float32) if ref_logps is None else ref_logps[rows]
    return PairBatch(
        flat.tokens.reshape(shape),
        flat.attention_mask.reshape(shape),
        flat.loss_mask.reshape(shape),
        refs.astype(np.float32),
        pairs.labels[grid[:, 0]],
    )


class PackedPairBatch(NamedTuple):
    """One optimizer step of examples packed one per row: prompt, first completion (with its
    EOS), second completion (with its EOS), then padding. A micro-batches of B rows.

    tokens:    (A, B, T) int32, right-padded with the pad id
    positions: (A, B, T) int32 position ids: the second completion continues the prompt's
               numbering exactly as in its own unpacked sequence
    segments:  (A, B, T) int32: 0 prompt, 1 first completion, 2 second, 3 padding
    sources:   (A, B, T) int32 the slot whose logits predict this slot's token: t - 1, except
               the second completion's first token, predicted from the prompt's last slot
    loss_mask: (A, 2, B, T) float32, 1 on the first (resp. second) completion and its EOS
    ref_logps: (A, 2, B) float32 reference summed log-probs (zeros when unused)
    labels:    (A, B) bool, as in `PairBatch`
    """

    tokens: np.ndarray
    positions: np.ndarray
    segments: np.ndarray
    sources: np.ndarray
    loss_mask: np.ndarray
    ref_logps: np.ndarray
    labels: np.ndarray


PAD_SEGMENT = 3


def packed_lengths(pairs: SequencePairs) -> np.ndarray:
    """(N,) length of each example packed: both sequences minus one copy of the prompt."""
    lengths, prompts, n = pairs.sequences.lengths, pairs.sequences.prompt_lengths, len(pairs)
    return lengths[:n] + lengths[n:] - prompts[:n]


def make_packed_pair_batch(
    pairs: SequencePairs,
    indices: np.ndarray,
    ref_logps: np.ndarray | None,
    *,
    grad_accum: int,
    pad_id: int,
    bucket: int = BUCKET,
) -> PackedPairBatch:
    """Pack examples `indices` ((A * B,), in order) into a `PackedPairBatch`; `ref_logps` is
    (2N,). The width is the longest packed row rounded up to `bucket`; positions stay within
    each sequence's own length, so the model's context bounds the sequences, not the row."""
    data, n = pairs.sequences, len(pairs)
    indices = np.asarray(indices)
    if len(indices) % grad_accum:
        raise ValueError(f"{len(indices)} examples do not split into {grad_accum} micro-batches")
    rows = len(indices)
    width = -(-int(max(packed_lengths(pairs)[indices])) // bucket) * bucket
    tokens = np.full((rows, width), pad_id, np.int32)
    positions = np.zeros((rows, width), np.int32)
    segments = np.full((rows, width), PAD_SEGMENT, np.int32)
    sources = np.maximum(np.arange(width, dtype=np.int32) - 1, 0)[None].repeat(rows, axis=0)
    loss = np.zeros((rows, 2, width), np.float32)
    for row, i in enumerate(indices):
        first, second = data.tokens[i], data.tokens[i + n]
        prompt = int(data.prompt_lengths[i])
        if prompt < 1 or int(data.prompt_lengths[i + n]) != prompt:
            raise ValueError(f"example {i}: packing needs one shared, non-empty prompt")
        end = len(first) + len(second) - prompt
        tokens[row, : len(first)] = first
        tokens[row, len(first) : end] = second[prompt:]
        positions[row, : len(first)] = np.arange(len(first))
        positions[row, len(first) : end] = np.arange(prompt, len(second))
        segments[row, :prompt] = 0
        segments[row, prompt : len(first)] = 1
        segments[row, len(first) : end] = 2
        sources[row, len(first)] = prompt - 1
        loss[row, 0, prompt : len(first)] = 1.0
        loss[row, 1, len(first) : end] = 1.0
    shape = (grad_accum, rows // grad_accum, width)
    grid = indices.reshape(grad_accum, -1)  # (A, B)
    refs = np.zeros((grad_accum, 2, shape[1]), np.float32)
    if ref_logps is not None:
        refs = np.stack([ref_logps[grid], ref_logps[grid + n]], axis=1).astype(np.float32)
    return PackedPairBatch(
        tokens.reshape(shape),
        positions.reshape(shape),
        segments.reshape(shape),
        sources.reshape(shape),
        loss.reshape(grad_accum, -1, 2, width).transpose(0, 2, 1, 3),
        refs,
        pairs.labels[grid],
    )


class PairIterator:
    """Endless deterministic step batches; `position` (steps taken) is the whole state.

    The order is `trainers.data.epoch_order` over the examples' pair lengths, so batch k of a
    run is a pure function of (seed, k), exactly as for SFT. `packed` yields
    `PackedPairBatch`es (the same examples in the same order) instead of `PairBatch`es."""

    def __init__(
        self,
        pairs: SequencePairs,
        ref_logps: np.ndarray | None,
        *,
        batch_size: int,
        grad_accum: int,
        seed: int,
        pad_id: int,
        max_length: int,
        length_grouping: int = 1,
        position: int = 0,
        packed: bool = False,
    ) -> None:
        self.pairs, self.ref_logps, self.packed = pairs, ref_logps, packed
        self.examples = batch_size * grad_accum
        self.grad_accum, self.seed, self.pad_id = grad_accum, seed, pad_id
        self.max_length, self.length_grouping, self.position = max_length, length_grouping, position
        self.steps_per_epoch = len(pairs) // self.examples
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size * grad_accum = {self.examples} exceeds the {len(pairs)} training "
                "examples"
            )
        self._lengths = pairs.lengths  # both layouts: the same examples at every step
        self._epoch, self._order = -1, np.empty((0, 0), np.int64)

    def indices(self, step: int) -> np.ndarray:
        """(batch_size * grad_accum,) example indices of step `step` of the run."""
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order = epoch_order(
                self._lengths, self.examples, self.seed, epoch, self.length_grouping
            )
            self._epoch = epoch
        return self._order[within]

    def __next__(self) -> PairBatch | PackedPairBatch:
        indices = self.indices(self.position)
        if self.packed:
            batch: PairBatch | PackedPairBatch = make_packed_pair_batch(
                self.pairs, indices, self.ref_logps, grad_accum=self.grad_accum,
                pad_id=self.pad_id,
            )  # fmt: skip
        else:
            batch = make_pair_batch(
                self.pairs, indices, self.ref_logps, grad_accum=self.grad_accum,
                pad_id=self.pad_id, max_length=self.max_length,
            )  # fmt: skip
        self.position += 1
        return batch


def eval_pair_batches(
    pairs: SequencePairs, ref_logps: np.ndarray | None, batch_size: int, pad_id: int,
    max_length: int, packed: bool = False,
) -> list[tuple[PairBatch | PackedPairBatch, int]]:  # fmt: skip
    """Every example once, as (1, 2, batch_size, T) batches (`packed`: (1, batch_size, T)
    `PackedPairBatch`es) sorted by length, each with its count of real examples (the last
    batch is filled up with copies of its first example)."""
    order = np.argsort(packed_lengths(pairs) if packed else pairs.lengths, kind="stable")
    out: list[tuple[PairBatch | PackedPairBatch, int]] = []
    for chunk, filled in fixed_size_chunks(order, batch_size):
        if packed:
            batch: PairBatch | PackedPairBatch = make_packed_pair_batch(
                pairs, filled, ref_logps, grad_accum=1, pad_id=pad_id
            )
        else:
            batch = make_pair_batch(pairs, filled, ref_logps, grad_accum=1, pad_id=pad_id,
                                    max_length=max_length)  # fmt: skip
        out.append((batch, len(chunk)))
    return out
