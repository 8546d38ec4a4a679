"""Log-probabilities of completions under a model, and the cached reference log-probs.

* `token_losses`: next-token cross-entropy, unreduced (the negative token log-probs).
* `sequence_logps`: summed log-probs of the masked (completion) tokens of each sequence.
* `pair_logps`: both sequences of each pair through the model in one (2B, T) call.
* `packed_pair_logps`: the same sums from packed rows (`PackedPairBatch`: the shared prompt
  once, then both completions, kept apart by `packed_attention`), which the reward model and
  the DPO family train on; `micro_pair_logps` takes either layout.
* Reference log-probs are computed ONCE before training with the initial policy (which is the
  reference) and cached in the run folder (`RUN/reference_logps.npz`, keyed on the sequences
  and the reference weights), so no second model sits in memory while training and a resumed
  run reuses them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from trainers.data import TokenizedSplit, fixed_size_chunks, make_batch
from trainers.model import GPT, pure_jit
from trainers.preference_data import (
    PAD_SEGMENT,
    PackedPairBatch,
    PairBatch,
    SequencePairs,
    packed_chunks,
)


def token_losses(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """Next-token cross-entropy: logits (B, T, V) float32, tokens (B, T) -> (B, T - 1), the
    loss of predicting tokens[:, t + 1] from position t. Unreduced: masks at the call site."""
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])


def sequence_logps(
    model: GPT, tokens: jax.Array, attention_mask: jax.Array, loss_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Summed log-probs of the masked tokens: (N, T) inputs -> sums (N,), token counts (N,)."""
    logits = model(tokens, attention_mask)  # (N, T, V)
    mask = loss_mask[:, 1:]  # token t + 1 is predicted at position t
    token_logps = -token_losses(logits, tokens)  # (N, T - 1)
    return jnp.sum(token_logps * mask, axis=-1), jnp.sum(mask, axis=-1)


def pair_logps(
    model: GPT, tokens: jax.Array, attention_mask: jax.Array, loss_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(2, B, T) first/second sequences -> sums (2, B) and counts (2, B), from ONE forward
    over the concatenated (2B, T) batch."""
    two, B, T = tokens.shape
    flat = (two * B, T)
    sums, counts = sequence_logps(
        model, tokens.reshape(flat), attention_mask.reshape(flat), loss_mask.reshape(flat)
    )
    return sums.reshape(two, B), counts.reshape(two, B)


def packed_attention(segments: jax.Array) -> jax.Array:
    """(R, W) segment ids of packed rows (`PackedPairBatch`: `3 k + part`) -> (R, W, W) bool:
    slot i sees slot j when j <= i, both belong to the same example, and j is in its prompt
    or in i's own completion. Padding sees only itself (its outputs are never read, but stay
    finite)."""
    T = segments.shape[-1]
    slots = jnp.arange(T)
    causal = slots[None, :] <= slots[:, None]  # (T, T): key j <= query i
    query, key = segments[:, :, None], segments[:, None, :]
    same_example = (query // 3 == key // 3) & (key != PAD_SEGMENT)
    visible = same_example & ((key % 3 == 0) | (key == query))
    return (causal[None] & visible) | (slots[None, :] == slots[:, None])[None]


def packed_hidden(
    model: GPT, tokens: jax.Array, positions: jax.Array, segments: jax.Array
) -> jax.Array:
    """(R, W) packed rows -> final hidden states (R, W, C): each slot's state is exactly the
    one it has in its own unpacked sequence."""
    return model.hidden_states(tokens, positions=positions, attend=packed_attention(segments))


def packed_pair_logps(
    model: GPT,
    tokens: jax.Array,
    positions: jax.Array,
    segments: jax.Array,
    sources: jax.Array,
    targets: jax.Array,
    examples: int,
) -> tuple[jax.Array, jax.Array]:
    """(R, W) packed rows of `examples` pairs (see `PackedPairBatch`) -> summed completion
    log-probs (2, B) and token counts (2, B) of the first and second sequences: `pair_logps`
    of the same pairs, from one forward that runs each prompt once."""
    logits = model.lm_head(packed_hidden(model, tokens, positions, segments))  # (R, W, V)
    rows = jnp.arange(tokens.shape[0])[:, None]  # (R, 1)
    lse = jax.nn.logsumexp(logits, axis=-1)  # (R, W)
    token_logps = logits[rows, sources, tokens] - lse[rows, sources]  # (R, W)
    owner = jax.nn.one_hot(targets, 2 * examples, dtype=token_logps.dtype)  # (R, W, 2B)
    sums = jnp.einsum("rwk,rw->k", owner, token_logps)
    return sums.reshape(2, examples), jnp.sum(owner, axis=(0, 1)).reshape(2, examples)


def micro_pair_logps(model: GPT, micro: PairBatch | PackedPairBatch) -> tuple[jax.Array, ...]:
    """Summed log-probs (2, B) and counts (2, B) of one micro-batch in either layout."""
    if isinstance(micro, PackedPairBatch):
        return packed_pair_logps(model, micro.tokens, micro.positions, micro.segments,
                                 micro.sources, micro.targets, micro.labels.shape[-1])  # fmt: skip
    return pair_logps(model, micro.tokens, micro.attention_mask, micro.loss_mask)


def _sums(model: GPT, tokens: jax.Array, attention: jax.Array, mask: jax.Array) -> jax.Array:
    return sequence_logps(model, tokens, attention, mask)[0]


_reference_forward = pure_jit(_sums)


def reference_logps(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    data: TokenizedSplit,
    *,
    batch_size: int,
    pad_id: int,
    max_length: int,
    progress: bool = False,
) -> np.ndarray:
    """(len(data),) float32 summed completion log-probs of every sequence under `state`.

    Sequences go sorted by length in fixed-size, bucket-padded batches (the last one filled
    with copies), so only a handful of shapes compile. `progress`: a bar over the sequences."""
    out = np.zeros(len(data), np.float32)
    pending = []
    for chunk, padded in fixed_size_chunks(np.argsort(data.lengths, kind="stable"), batch_size):
        batch = make_batch(data, padded, grad_accum=1, pad_id=pad_id, max_length=max_length)
        sums = _reference_forward(
            graphdef, state, batch.tokens[0], batch.attention_mask[0], batch.loss_mask[0]
        )
        pending.append((chunk, sums))
    bar = tqdm(total=len(data), unit="seq", desc="reference log-probs", disable=not progress)
    for chunk, sums in pending:  # results come back as the queued batches finish
        out[chunk] = np.asarray(sums)[: len(chunk)]
        bar.update(len(chunk))
    bar.close()
    _reference_forward.clear()  # a one-off pass: free its programs' scratch memory
    return out


def _packed_sums(model: GPT, batch: PackedPairBatch) -> jax.Array:
    micro = jax.tree.map(lambda x: x[0], batch)
    return micro_pair_logps(model, micro)[0]


_packed_reference_forward = pure_jit(_packed_sums)


def packed_reference_logps(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    data: TokenizedSplit,
    *,
    batch_size: int,
    pad_id: int,
    progress: bool = False,
) -> np.ndarray:
    """`reference_logps` of a split of pairs (`SequencePairs.sequences`: sequence i and i + N
    share a prompt), computed on packed rows of `batch_size` examples (`packed_chunks`: one
    shape, one compilation): (len(data),) float32 in the same order. `progress`: a bar."""
    pairs = SequencePairs(data, np.ones(len(data) // 2, bool))
    n = len(pairs)
    out = np.zeros(len(data), np.float32)
    pending = []
    for batch, chunk in packed_chunks(pairs, None, batch_size, pad_id):
        pending.append((chunk, _packed_reference_forward(graphdef, state, batch)))
    bar = tqdm(total=n, unit="pair", desc="reference log-probs", disable=not progress)
    for chunk, sums in pending:  # results come back as the queued batches finish
        sums = np.asarray(sums)
        out[chunk], out[chunk + n] = sums[0, : len(chunk)], sums[1, : len(chunk)]
        bar.update(len(chunk))
    bar.close()
    _packed_reference_forward.clear()  # a one-off pass: free its programs' scratch memory
    return out


def fingerprint(data: TokenizedSplit) -> str:
    """A digest of the token sequences and prompt lengths (what reference log-probs are of)."""
    digest = hashlib.sha256()
    for tokens, prompt_length in zip(data.tokens, data.prompt_lengths, strict=True):
        digest.update(np.int64(prompt_length).tobytes() + tokens.tobytes() + b"|")
    return digest.hexdigest()


def state_fingerprint(state: nnx.State) -> str:
    """A digest of a model state's leaves: names, dtypes, shapes and bytes (what reference
    log-probs are computed with)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        value = np.asarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{value.dtype}|{value.shape}|".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def cached_reference_logps(
    path: Path,
    splits: dict[str, TokenizedSplit],
    compute: Callable[[TokenizedSplit], np.ndarray],
    model: str = "",
) -> dict[str, np.ndarray]:
    """Reference log-probs per split, read from `path` (an .npz) when it holds those very
    sequences under the same reference model (`model`: its `state_fingerprint`), else
    computed with `compute` and written there atomically."""
    prints = {name: fingerprint(data) for name, data in splits.items()}
    if path.exists():
        with np.load(path) as stored:
            same_model = str(stored.get("model_fingerprint", "")) == model
            if same_model and all(str(stored.get(f"{n}_fingerprint")) == prints[n] for n in splits):
                return {name: stored[name] for name in splits}
    values = {name: compute(data) for name, data in splits.items()}
    if jax.process_index() == 0:
        tmp = path.with_name(path.name + ".tmp.npz")
        fields = {f"{n}_fingerprint": np.array(p) for n, p in prints.items()}
        np.savez(tmp, **values, **fields, model_fingerprint=np.array(model))
        os.replace(tmp, path)
    return values
