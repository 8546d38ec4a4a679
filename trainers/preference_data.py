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
* `PackedPairBatch` (A, R, W): each example is its shared prompt once, then the first
  completion, then the second (whose positions continue the prompt's, as in its own
  sequence), and several examples share a row (first-fit decreasing), with an attention
  mask that keeps the examples, and the two completions of one, from seeing each other
  (prefix sharing). The log-probs are those of the two separate sequences, but the prompt
  goes through the model once and nothing is padded to another sequence's length. The
  reward model and the DPO family use it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from trainers.data import (
    BUCKET,
    TokenizedSplit,
    deal_by_length,
    epoch_order,
    fixed_size_chunks,
    make_batch,
    pack_rows,
    require_step_examples,
    round_up,
)

# Micro-batches over which a packed run deals its examples by length (`PairIterator`): 32 of
# 16 level-1 pairs all pack into the average row count.
DEAL_WINDOW = 32


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

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """(N,) the longer of each example's two sequences (what its padding costs)."""
        lengths = self.sequences.lengths
        return np.maximum(lengths[: len(self)], lengths[len(self) :])

    @functools.cached_property
    def packed_lengths(self) -> np.ndarray:
        """(N,) each example's length packed: both sequences minus one copy of the prompt."""
        lengths, n = self.sequences.lengths, len(self)
        return lengths[:n] + lengths[n:] - self.sequences.prompt_lengths[:n]


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
    """One optimizer step of examples packed several to a row: A micro-batches of B examples
    in R rows of W slots. Each example is its prompt once, then its first completion (with its
    EOS), then its second (with its EOS); examples follow each other in a row, padding ends it.

    tokens:    (A, R, W) int32, the pad id on padding
    positions: (A, R, W) int32 position ids: each completion continues its prompt's numbering,
               exactly as in its own unpacked sequence
    segments:  (A, R, W) int32 `3 k + part` for the row's k-th example (part 0 prompt, 1 first
               completion, 2 second), `PAD_SEGMENT` on padding
    sources:   (A, R, W) int32 the slot whose logits predict this slot's token: t - 1, except
               a second completion's first token, predicted from its prompt's last slot
    targets:   (A, R, W) int32 `s B + b` where the slot's token counts toward sequence s (0
               first, 1 second) of example b (its completion and EOS), -1 elsewhere
    last:      (A, 2, B) int32 flat slot (r W + t) of each sequence's last token (the EOS)
    ref_logps: (A, 2, B) float32 reference summed log-probs (zeros when unused)
    labels:    (A, B) bool, as in `PairBatch`
    """

    tokens: np.ndarray
    positions: np.ndarray
    segments: np.ndarray
    sources: np.ndarray
    targets: np.ndarray
    last: np.ndarray
    ref_logps: np.ndarray
    labels: np.ndarray


PAD_SEGMENT = -1


ROW_ALIGN = 8


def packed_width(pairs: SequencePairs, align: int = ROW_ALIGN) -> int:
    """The row width that holds every example of `pairs`: the longest packed example rounded
    up to `align` slots (shorter examples share rows). Runs use one width throughout, so
    there is no need to round it further: every slot costs compute, attention's per row."""
    return round_up(int(max(pairs.packed_lengths, default=1)), align)


def packed_rows(
    pairs: SequencePairs, indices: np.ndarray, *, grad_accum: int, width: int
) -> list[list[list[int]]]:
    """Per micro-batch, its examples (positions within the micro-batch) grouped into rows of
    `width` slots by first-fit decreasing (`trainers.data.pack_rows`)."""
    indices = np.asarray(indices)
    if len(indices) % grad_accum:
        raise ValueError(f"{len(indices)} examples do not split into {grad_accum} micro-batches")
    lengths = pairs.packed_lengths[indices].reshape(grad_accum, -1)
    return [pack_rows(micro.tolist(), width) for micro in lengths]


def make_packed_pair_batch(
    pairs: SequencePairs,
    indices: np.ndarray,
    ref_logps: np.ndarray | None,
    *,
    grad_accum: int,
    pad_id: int,
    width: int | None = None,
    rows: int | None = None,
    row_multiple: int = 1,
) -> PackedPairBatch:
    """Pack examples `indices` ((A * B,), in order) into a `PackedPairBatch`; `ref_logps` is
    (2N,). Rows are `width` slots (default: the longest of these examples rounded up to
    `BUCKET`; runs pass `packed_width` of the whole split); every
    micro-batch gets `rows` rows (default: as many as the fullest needs, rounded up to
    `row_multiple`, the devices the row axis is split over). Positions stay within each
    sequence's own length, so the model's context bounds the sequences, not the row."""
    data, n = pairs.sequences, len(pairs)
    indices = np.asarray(indices)
    if width is None:
        width = round_up(int(max(pairs.packed_lengths[indices])), BUCKET)
    groups = packed_rows(pairs, indices, grad_accum=grad_accum, width=width)
    needed = round_up(max(len(g) for g in groups), row_multiple)
    if rows is None:
        rows = needed
    elif rows < needed:
        raise ValueError(f"these examples need {needed} rows of {width}, not {rows}")
    A, B = grad_accum, len(indices) // grad_accum
    tokens = np.full((A, rows, width), pad_id, np.int32)
    positions = np.zeros((A, rows, width), np.int32)
    segments = np.full((A, rows, width), PAD_SEGMENT, np.int32)
    sources = np.broadcast_to(np.maximum(np.arange(width, dtype=np.int32) - 1, 0),
                              (A, rows, width)).copy()  # fmt: skip
    targets = np.full((A, rows, width), -1, np.int32)
    last = np.zeros((A, 2, B), np.int32)
    for a, group in enumerate(groups):
        for r, members in enumerate(group):
            start = 0
            for k, b in enumerate(members):
                i = int(indices[a * B + b])
                first, second = data.tokens[i], data.tokens[i + n]
                prompt = int(data.prompt_lengths[i])
                if prompt < 1 or int(data.prompt_lengths[i + n]) != prompt:
                    raise ValueError(f"example {i}: packing needs one shared, non-empty prompt")
                mid, end = start + len(first), start + len(first) + len(second) - prompt
                tokens[a, r, start:mid], tokens[a, r, mid:end] = first, second[prompt:]
                positions[a, r, start:mid] = np.arange(len(first))
                positions[a, r, mid:end] = np.arange(prompt, len(second))
                segments[a, r, start : start + prompt] = 3 * k
                segments[a, r, start + prompt : mid] = 3 * k + 1
                segments[a, r, mid:end] = 3 * k + 2
                sources[a, r, mid] = start + prompt - 1
                targets[a, r, start + prompt : mid] = b
                targets[a, r, mid:end] = B + b
                last[a, :, b] = r * width + mid - 1, r * width + end - 1
                start = end
    grid = indices.reshape(A, B)
    refs = np.zeros((A, 2, B), np.float32)
    if ref_logps is not None:
        refs = np.stack([ref_logps[grid], ref_logps[grid + n]], axis=1).astype(np.float32)
    return PackedPairBatch(tokens, positions, segments, sources, targets, last, refs,
                           pairs.labels[grid])  # fmt: skip


class PairIterator:
    """Endless deterministic step batches; `position` (steps taken) is the whole state.

    The order is `trainers.data.epoch_order` over the examples' pair lengths, so batch k of a
    run is a pure function of (seed, k), exactly as for SFT. `packed` yields
    `PackedPairBatch`es instead of `PairBatch`es, all of one shape so the step compiles once:
    rows of `packed_width(pairs)` slots, as many per micro-batch as the fullest micro-batch of
    the run's `steps` needs (of the current epoch when `steps` is None), rounded up to
    `row_multiple`. To keep that count low, packed micro-batches are dealt a like mix of
    lengths (`trainers.data.deal_by_length` over windows of `DEAL_WINDOW` micro-batches of
    the epoch order): the same examples per window, each micro-batch needing about the
    average row count instead of the largest of a random draw."""

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
        steps: int | None = None,
        row_multiple: int = 1,
    ) -> None:
        self.pairs, self.ref_logps, self.packed = pairs, ref_logps, packed
        self.examples = batch_size * grad_accum
        self.grad_accum, self.seed, self.pad_id = grad_accum, seed, pad_id
        # Packed rows pack tightest when every step mixes long and short pairs, and the row
        # count is set by the run's fullest step: length-sorted windows would make it B.
        length_grouping = 1 if packed else length_grouping
        self.max_length, self.length_grouping, self.position = max_length, length_grouping, position
        require_step_examples(len(pairs), self.examples)
        self.steps_per_epoch = len(pairs) // self.examples
        self._lengths = pairs.lengths  # both layouts: the same examples at every step
        self._epoch, self._order = -1, np.empty((0, 0), np.int64)
        self.row_multiple, self._rows_by_epoch = row_multiple, {}
        self.width, self.rows = 0, 0
        if packed:
            self.width = packed_width(pairs)
            if steps is not None:
                epochs = range(max(-(-steps // self.steps_per_epoch), 1))
                self.rows = max(self._epoch_rows(epoch) for epoch in epochs)

    def _order_of(self, epoch: int) -> np.ndarray:
        order = epoch_order(self._lengths, self.examples, self.seed, epoch, self.length_grouping)
        if not self.packed:
            return order
        micro = order.reshape(-1, self.examples // self.grad_accum)
        rng = np.random.default_rng([self.seed, epoch, 0x4445])  # 'DE'al
        dealt = deal_by_length(micro, self.pairs.packed_lengths, DEAL_WINDOW, rng)
        return dealt.reshape(order.shape)

    def _epoch_rows(self, epoch: int) -> int:
        """Rows the fullest micro-batch of `epoch` needs, rounded up to `row_multiple`."""
        if epoch not in self._rows_by_epoch:
            lengths = self.pairs.packed_lengths[self._order_of(epoch)]
            per_micro = self.examples // self.grad_accum
            most = 0
            for micro in lengths.reshape(-1, per_micro).tolist():
                most = max(most, len(pack_rows(micro, self.width)))
                if most == per_micro:  # one pair per row: no micro-batch can need more
                    break
            self._rows_by_epoch[epoch] = round_up(most, self.row_multiple)
        return self._rows_by_epoch[epoch]

    def indices(self, step: int) -> np.ndarray:
        """(batch_size * grad_accum,) example indices of step `step` of the run."""
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order, self._epoch = self._order_of(epoch), epoch
        return self._order[within]

    def __next__(self) -> PairBatch | PackedPairBatch:
        indices = self.indices(self.position)
        if self.packed:
            rows = max(self.rows, self._epoch_rows(self._epoch))
            batch: PairBatch | PackedPairBatch = make_packed_pair_batch(
                self.pairs, indices, self.ref_logps, grad_accum=self.grad_accum,
                pad_id=self.pad_id, width=self.width, rows=rows,
            )  # fmt: skip
        else:
            batch = make_pair_batch(
                self.pairs, indices, self.ref_logps, grad_accum=self.grad_accum,
                pad_id=self.pad_id, max_length=self.max_length,
            )  # fmt: skip
        self.position += 1
        return batch


def packed_chunks(
    pairs: SequencePairs, ref_logps: np.ndarray | None, batch_size: int, pad_id: int,
    row_multiple: int = 1,
) -> list[tuple[PackedPairBatch, np.ndarray]]:  # fmt: skip
    """Every example once, in `PackedPairBatch`es of `batch_size` examples (one micro-batch)
    and one shape, each with its example indices (the last batch is filled up with copies of
    its first example). Examples go in a fixed shuffled order, dealt by length
    (`deal_by_length`), so every batch mixes long and short ones and needs about the average
    row count."""
    if len(pairs) == 0:
        return []
    order = np.random.default_rng(0).permutation(len(pairs))
    chunks = len(order) // batch_size  # the full chunks get a like mix of lengths
    full = order[: chunks * batch_size].reshape(chunks, batch_size)
    dealt = deal_by_length(full, pairs.packed_lengths, chunks, np.random.default_rng(1))
    order = np.concatenate([dealt.reshape(-1), order[chunks * batch_size :]])
    chunks = list(fixed_size_chunks(order, batch_size))
    width = packed_width(pairs)
    rows = max(
        len(packed_rows(pairs, filled, grad_accum=1, width=width)[0]) for _, filled in chunks
    )
    rows = round_up(rows, row_multiple)
    pack = functools.partial(make_packed_pair_batch, pairs, ref_logps=ref_logps, grad_accum=1,
                             pad_id=pad_id, width=width, rows=rows)  # fmt: skip
    return [(pack(filled), chunk) for chunk, filled in chunks]


def eval_pair_batches(
    pairs: SequencePairs, ref_logps: np.ndarray | None, batch_size: int, pad_id: int,
    max_length: int, packed: bool = False, row_multiple: int = 1,
) -> list[tuple[PairBatch | PackedPairBatch, int]]:  # fmt: skip
    """Every example once, as (1, 2, batch_size, T) batches sorted by length (`packed`: the
    `packed_chunks`), each with its count of real examples (the last batch is filled up with
    copies of its first example)."""
    if packed:
        chunks = packed_chunks(pairs, ref_logps, batch_size, pad_id, row_multiple)
        return [(batch, len(chunk)) for batch, chunk in chunks]
    out: list[tuple[PairBatch | PackedPairBatch, int]] = []
    for chunk, filled in fixed_size_chunks(np.argsort(pairs.lengths, kind="stable"), batch_size):
        batch = make_pair_batch(pairs, filled, ref_logps, grad_accum=1, pad_id=pad_id,
                                max_length=max_length)  # fmt: skip
        out.append((batch, len(chunk)))
    return out
