"""What the offline preference trainers (reward model, DPO family, KTO) share.

* `OfflineConfig`: the optimisation and run fields every method has (each method's config
  subclasses it and adds its own); its optimizer is `trainers.sft.make_optimizer`.
* Log-probs: `sequence_logps` (masked sums over completion tokens), `pair_logps`, which puts
  both sequences of each example through the model in one (2B, T) call, and
  `packed_pair_logps`, the same sums from packed rows (`PackedPairBatch`: the shared prompt
  once, then both completions), which the reward model and the DPO family train on.
* Reference log-probs, computed ONCE before training with the initial policy (which is the
  reference) and cached in the run folder (`RUN/reference_logps.npz`), so no second model sits
  in memory while training and a resumed run reuses them.
* `accumulate_gradients`: the micro-batch scan inside each method's jitted `*_step`; the loss
  of a step is the mean over all of its examples, so batch 8 x accumulation 1 and batch 1 x
  accumulation 8 take the same step.

The run loop (folders, checkpoints, metrics, resume) is in `trainers/offline_run.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from tasks.fields import documented
from trainers.data import TokenizedSplit, fixed_size_chunks, make_batch
from trainers.model import GPT, PRESETS, GPTConfig, pure_jit
from trainers.preference_data import (
    PAD_SEGMENT,
    PackedPairBatch,
    PairBatch,
    SequencePairs,
    packed_chunks,
)
from trainers.sft import token_losses

Metrics = dict[str, jax.Array]
ExampleLoss = Callable[[GPT, Any], tuple[jax.Array, Metrics]]  # PairBatch or packed


def require(ok: bool, name: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed} (got {value!r})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_int(config: Any, name: str, low: int) -> None:
    value = getattr(config, name)
    require(_is_int(value) and value >= low, name, f"an integer >= {low}", value)


def require_number(config: Any, name: str, ok: Callable[[float], bool], allowed: str) -> None:
    value = getattr(config, name)
    require(_is_number(value) and ok(value), name, allowed, value)


PACK_PAIRS_HELP = (
    "pack each pair as its prompt once, then both completions (one forward, no padding "
    "of one completion to the other's length); false: two padded sequences"
)

_INT_MINIMUM = {
    "steps": 1, "batch_size": 1, "grad_accum": 1, "seed": 0, "log_interval": 1,
    "eval_interval": 0, "eval_examples": 1, "save_interval": 1, "keep_checkpoints": 1,
    "length_grouping": 1, "reference_batch_size": 1, "fsdp_devices": 1,
}  # fmt: skip


@dataclass(frozen=True)
class OfflineConfig:
    """Optimisation and run fields shared by `kinrl train rm|dpo|kto` (see each method)."""

    preset: str = documented("model size without --init: nano, small or gpt2", default="nano")
    steps: int = documented("optimizer steps, >= 1", default=300)
    batch_size: int = documented("examples (pairs) per micro-batch, >= 1", default=32)
    grad_accum: int = documented("micro-batches per optimizer step, >= 1", default=1)
    learning_rate: float = documented("peak learning rate, > 0", default=1e-4)
    warmup_steps: int = documented("linear warm-up steps, 0..steps-1", default=10)
    min_lr_ratio: float = documented("final / peak learning rate (cosine), 0..1", default=0.1)
    weight_decay: float = documented("AdamW weight decay on matrices, >= 0", default=0.0)
    clip_norm: float = documented("clip gradients to this global norm, > 0", default=1.0)
    bf16: bool = documented("compute in bfloat16 (weights stay float32)", default=False)
    remat: bool = documented(
        "recompute block activations in the backward pass (GPU/TPU; no effect on XLA:CPU)",
        default=False,
    )
    seed: int = documented("seed of new weights and of the data order, >= 0", default=0)
    log_interval: int = documented("steps between metric fetches, >= 1", default=10)
    eval_interval: int = documented("steps between held-out evaluations (0 = end)", default=100)
    eval_examples: int = documented("held-out examples evaluated, >= 1", default=512)
    save_interval: int = documented("steps between checkpoints (and the last)", default=500)
    keep_checkpoints: int = documented("checkpoints kept on disk, >= 1", default=2)
    length_grouping: int = documented(
        "batches per length-sorted window, >= 1 (unpacked layouts only; packed pairs are "
        "instead dealt to micro-batches by length, which packs their rows tighter)",
        default=8,
    )
    reference_batch_size: int = documented("sequences per reference forward, >= 1", default=64)
    fsdp_devices: int = documented("devices on the mesh's fsdp axis, >= 1", default=1)
    shard_params: bool = documented("FSDP: shard parameters and optimizer state", default=False)

    def __post_init__(self) -> None:
        require(self.preset in PRESETS, "preset", f"one of {', '.join(PRESETS)}", self.preset)
        for name, low in _INT_MINIMUM.items():
            require_int(self, name, low)
        warmup = self.warmup_steps
        require(_is_int(warmup) and 0 <= warmup < self.steps, "warmup_steps", "in 0..steps-1",
                 warmup)  # fmt: skip
        require_number(self, "learning_rate", lambda v: v > 0, "a number > 0")
        require_number(self, "min_lr_ratio", lambda v: 0 <= v <= 1, "a number in 0..1")
        require_number(self, "weight_decay", lambda v: v >= 0, "a number >= 0")
        require_number(self, "clip_norm", lambda v: v > 0, "a number > 0")
        for name in ("bf16", "remat", "shard_params"):
            require(isinstance(getattr(self, name), bool), name, "true or false",
                     getattr(self, name))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self, vocab_size: int, base: GPTConfig | None = None) -> GPTConfig:
        """The preset (or `base`, an initial checkpoint's config) with this run's vocabulary
        (fresh models only), compute dtype and remat (the interface `trainers.sft.init_from`
        reads)."""
        if base is None:
            base = dataclasses.replace(PRESETS[self.preset], vocab_size=vocab_size)
        dtype = "bfloat16" if self.bf16 else "float32"
        return dataclasses.replace(base, dtype=dtype, remat=self.remat)


# ----------------------------------------------------------------------------- log-probs


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


# ----------------------------------------------------------------------------- the step


def accumulate_gradients(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    batch: PairBatch | PackedPairBatch,
    example_loss: ExampleLoss,
) -> tuple[nnx.State, Metrics]:
    """Gradient of the mean per-example loss over the whole (A, ., B, .) step batch, scanning
    the A micro-batches. Metrics: `loss`, `grad_norm` (before clipping) and the mean over the
    step of every per-example metric `example_loss` returns."""
    A, B = batch.labels.shape
    total = A * B

    def scaled_loss(state: nnx.State, micro: Any) -> tuple[jax.Array, Metrics]:
        loss, metrics = example_loss(nnx.merge(graphdef, state), micro)  # (B,), (B,) each
        return jnp.sum(loss) / total, metrics

    def body(grads: nnx.State, micro: Any) -> tuple[nnx.State, tuple[jax.Array, Metrics]]:
        (loss, metrics), micro_grads = jax.value_and_grad(scaled_loss, has_aux=True)(state, micro)
        sums = {k: jnp.sum(v) for k, v in metrics.items()}
        return jax.tree.map(jnp.add, grads, micro_grads), (loss, sums)

    zeros = jax.tree.map(jnp.zeros_like, state)
    grads, (losses, sums) = jax.lax.scan(body, zeros, batch)
    metrics = {k: jnp.sum(v) / total for k, v in sums.items()}
    metrics.update(loss=jnp.sum(losses), grad_norm=optax.global_norm(grads))
    return grads, metrics


def apply_gradients(
    state: nnx.State,
    opt_state: optax.OptState,
    grads: nnx.State,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState]:
    updates, opt_state = optimizer.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state
