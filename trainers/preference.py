"""What the methods on preference pairs and binary feedback (reward model, DPO family, KTO)
share: `prepare_pairs`, which turns a dataset folder into their `Prepared` data.

It tokenises the train split (and the first `eval_examples` of validation) with the method's
`tokenize`, computes the reference log-probs once with the initial model (or reads them from
the run folder's cache; `trainers/logprobs.py`), and builds the endless `PairIterator` and the
held-out batches, packed (`PackedPairBatch`: each pair's prompt once, then both completions)
or as two padded sequences (`PairBatch`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from trainers.data import has_split, load_records, require_step_examples
from trainers.engine import Prepared, Setup
from trainers.logprobs import (
    cached_reference_logps,
    packed_reference_logps,
    reference_logps,
    state_fingerprint,
)
from trainers.preference_data import (
    PackedPairBatch,
    PairBatch,
    PairIterator,
    SequencePairs,
    eval_pair_batches,
    tokenize_pairs,
)
from trainers.runtime import release_host_memory
from trainers.sharding import BATCH_AXES, batch_divisor


def pair_batch_sharding(mesh: Mesh, packed: bool = False) -> PairBatch | PackedPairBatch:
    """Shardings of a `PairBatch` (or `PackedPairBatch`): the example axis B (and the packed
    row axis R) split over every device."""
    spec = functools.partial(NamedSharding, mesh)
    if packed:
        rows = spec(PartitionSpec(None, BATCH_AXES, None))  # (A, R, W): rows split
        examples = spec(PartitionSpec(None, None, BATCH_AXES))  # (A, 2, B)
        return PackedPairBatch(
            tokens=rows, positions=rows, segments=rows, sources=rows, targets=rows,
            last=examples, ref_logps=examples, labels=spec(PartitionSpec(None, BATCH_AXES)),
        )  # fmt: skip
    return PairBatch(
        tokens=spec(PartitionSpec(None, None, BATCH_AXES, None)),
        attention_mask=spec(PartitionSpec(None, None, BATCH_AXES, None)),
        loss_mask=spec(PartitionSpec(None, None, BATCH_AXES, None)),
        ref_logps=spec(PartitionSpec(None, None, BATCH_AXES)),
        labels=spec(PartitionSpec(None, BATCH_AXES)),
    )


def _references(setup: Setup, splits: dict[str, SequencePairs], packed: bool) -> dict:
    """Reference log-probs of every sequence of `splits` under the initial model, computed
    once and cached in `RUN/reference_logps.npz` (keyed on the sequences and the weights: a
    run resumed after its --init run was retrained recomputes them)."""
    config, tokenizer = setup.config, setup.tokenizer
    graphdef, state = nnx.split(setup.model)
    if packed:  # reference_batch_size counts sequences: half as many pairs
        compute = functools.partial(
            packed_reference_logps, graphdef, state,
            batch_size=max(config.reference_batch_size // 2, 1), pad_id=tokenizer.pad_token_id,
            progress=setup.progress,
        )  # fmt: skip
    else:
        compute = functools.partial(
            reference_logps, graphdef, state, batch_size=config.reference_batch_size,
            pad_id=tokenizer.pad_token_id, max_length=setup.model_cfg.n_positions,
            progress=setup.progress,
        )  # fmt: skip
    sequences = {name: pairs.sequences for name, pairs in splits.items()}
    path = setup.run_dir / "reference_logps.npz"
    references = cached_reference_logps(path, sequences, compute, model=state_fingerprint(state))
    release_host_memory()  # the reference programs are done with: lower the training peak
    return references


def prepare_pairs(
    setup: Setup,
    *,
    data_kind: str,
    needs_reference: bool,
    packed: bool,
    tokenize: Callable[..., SequencePairs] = tokenize_pairs,
) -> Prepared:
    """The `Prepared` data of a pair method: `tokenize(records, tokenizer, max_length)` of
    each split, reference log-probs if `needs_reference`, and its batches."""
    config, tokenizer = setup.config, setup.tokenizer
    pad_id, max_length = tokenizer.pad_token_id, setup.model_cfg.n_positions
    records = load_records(setup.data_dir, "train", data_kind)
    splits = {"train": tokenize(records, tokenizer, max_length)}
    require_step_examples(len(splits["train"]), config.batch_size * config.grad_accum)
    if has_split(setup.data_dir, "validation"):
        records = load_records(setup.data_dir, "validation", data_kind)[: config.eval_examples]
        splits["validation"] = tokenize(records, tokenizer, max_length)
    references: dict[str, Any] = {}
    if needs_reference:
        references = _references(setup, splits, packed)
    train, row_multiple = splits["train"], batch_divisor(setup.mesh)
    held_out = []
    validation = splits.get("validation")
    if validation is not None and len(validation):
        held_out = eval_pair_batches(validation, references.get("validation"), config.batch_size,
                                     pad_id, max_length, packed=packed,
                                     row_multiple=row_multiple)  # fmt: skip

    def batches(position: int) -> PairIterator:
        return PairIterator(
            train, references.get("train"), batch_size=config.batch_size,
            grad_accum=config.grad_accum, seed=config.seed, pad_id=pad_id, max_length=max_length,
            length_grouping=config.length_grouping, position=position, packed=packed,
            steps=config.steps, row_multiple=row_multiple,
        )  # fmt: skip

    return Prepared(batches, pair_batch_sharding(setup.mesh, packed), held_out, len(train),
                    dropped=train.dropped, data={**splits, "references": references})  # fmt: skip
