"""GPT-2 in Flax NNX, written to match Hugging Face's `GPT2LMHeadModel` exactly.

Architecture (Radford et al. 2019, as implemented by HF / nanoGPT):
    tokens + learned positions
    -> n_layer x [x + attn(ln_1(x)); x + mlp(ln_2(x))]   (pre-LayerNorm blocks)
    -> ln_f -> logits = h @ wte.T                          (LM head tied to the embedding)
No dropout anywhere: RLHF needs deterministic log-probs for the same parameters.

Parameter layout: every `nnx.Linear` kernel is (in, out), which is also how GPT-2's `Conv1D`
stores its weight, so HF checkpoints load without any transposition (see `trainers/hf.py`).

Hot loops should not call the module eagerly or through `nnx.jit` (per-call Python overhead
matters at this size); split once with `graphdef, state = nnx.split(model)` and use
`pure_jit` / `forward`, which `nnx.merge` inside `jax.jit`.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from trainers.config import PRESETS as PRESETS  # the model's shapes, re-exported
from trainers.config import GPTConfig


class KVCache(NamedTuple):
    """Per-layer buffers for incremental decoding: keys and values, each (B, H, S, D).

    S is fixed while a decoding loop runs (`grown` makes a longer copy between loops). All rows
    share one write index: prompts are left-padded, so slot t is step t for every row. Slot
    major, each step's new key and value are one contiguous row per head.
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]

    def grown(self, length: int) -> KVCache:
        """The same cache with room for `length` slots (the new ones zero): one copy."""
        extra = length - self.values[0].shape[2]
        if extra < 0:
            raise ValueError(f"cannot shrink a cache of {self.values[0].shape[2]} slots")
        widths = ((0, 0), (0, 0), (0, extra), (0, 0))
        return KVCache(
            tuple(jnp.pad(k, widths) for k in self.keys),
            tuple(jnp.pad(v, widths) for v in self.values),
        )


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """(B, T) 0/1 mask -> (B, T) int32 positions, so a left-padded row starts at position 0.

    Pad slots get position 0 (clipped); their outputs are never used.
    """
    mask = attention_mask.astype(jnp.int32)
    return jnp.clip(jnp.cumsum(mask, axis=-1) - 1, 0, None)


def segment_attention(segments: jax.Array) -> jax.Array:
    """(B, T) segment ids (0 = padding, 1, 2, ... = the sequences packed in a row; not the
    prompt/completion ids of `trainers.preference_data.PackedPairBatch`) -> (B, T, T)
    bool: slot i sees slot j when j <= i and both hold the same sequence. A row holding one
    right-padded sequence (ids 1 then 0) gets the usual causal mask over its real tokens."""
    T = segments.shape[-1]
    causal = jnp.arange(T)[None, :] <= jnp.arange(T)[:, None]  # (T, T): key j <= query i
    same = segments[:, :, None] == segments[:, None, :]
    return causal[None] & same & (segments[:, None, :] > 0)


def segment_positions(segments: jax.Array) -> jax.Array:
    """(B, T) segment ids -> (B, T) int32 position of each slot within its own sequence; 0 on
    padding (a packed row may be wider than the model's context, its sequences never are)."""
    T = segments.shape[-1]
    slots = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), segments.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segments[:, :1], bool), segments[:, 1:] != segments[:, :-1]], axis=1
    )
    positions = slots - jax.lax.cummax(jnp.where(starts, slots, 0), axis=1)
    return jnp.where(segments > 0, positions, 0)


def _normal(std: float) -> nnx.Initializer:
    return nnx.initializers.normal(stddev=std)


def _per_token(layer: nnx.Linear, x: jax.Array) -> jax.Array:
    """Apply `layer` to (..., C) as one (N, C) matmul over all tokens. Same numbers, but
    XLA:CPU computes the weight gradient of a 2-D matmul about twice as fast as of a 3-D one."""
    return layer(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


class CausalSelfAttention(nnx.Module):
    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs) -> None:
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, rngs=rngs)
        # q, k, v for all heads in one matmul; HF's c_attn output is ordered [q | k | v].
        self.c_attn = nnx.Linear(cfg.n_embd, 3 * cfg.n_embd, kernel_init=_normal(0.02), **kw)
        # GPT-2 scales residual projections by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth.
        proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        self.c_proj = nnx.Linear(cfg.n_embd, cfg.n_embd, kernel_init=_normal(proj_std), **kw)
        self.n_head = cfg.n_head
        self.head_dim = cfg.head_dim

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        kv: tuple[jax.Array, jax.Array] | None = None,
        cache_index: jax.Array | int = 0,
        last_only: bool = False,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """x (B, T, C); mask (B, 1, T, S) bool, True = may attend. With `kv` (keys and values
        (B, H, S, D)) the new keys/values are written at slots [cache_index, cache_index + T)
        and the queries attend over the whole cache; otherwise S == T. `last_only`: every
        token's key and value, but the output (B, 1, C) of the last query only."""
        B, T, C = x.shape
        qkv = _per_token(self.c_attn, x)  # (B, T, 3C)
        q, k, v = jnp.split(qkv, 3, axis=-1)  # each (B, T, C)
        heads = (B, T, self.n_head, self.head_dim)
        if last_only:
            q, mask = q[:, -1:], mask[:, :, -1:]
        q = q.reshape(B, -1, self.n_head, self.head_dim).transpose(0, 2, 1, 3)  # (B, H, Tq, D)
        v = v.reshape(heads).transpose(0, 2, 1, 3)  # (B, H, T, D)
        if kv is None:  # training: keys transposed, (B, H, D, T), for a plain batched GEMM
            att = jnp.matmul(q, k.reshape(heads).transpose(0, 2, 3, 1))  # (B, H, Tq, T)
        else:
            # Decoding: keys slot-major like the values, so a step writes one contiguous row
            # per head (a (B, H, D, S) cache took 2.5-5% longer per step); the product then
            # contracts both operands' last axis, which XLA:CPU takes without a copy.
            k = k.reshape(heads).transpose(0, 2, 1, 3)  # (B, H, T, D)
            at = (0, 0, cache_index, 0)
            k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), at)
            v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), at)
            kv = (k, v)  # (B, H, S, D) each
            att = jnp.einsum("bhtd,bhsd->bhts", q, k)  # (B, H, T, S)
        att = att / math.sqrt(self.head_dim)
        # Softmax in float32 even under bf16 compute. A finite "minus infinity" keeps rows with
        # no visible key (pad queries of a left-padded prompt) finite instead of NaN.
        att = att.astype(jnp.float32)
        att = jnp.where(mask, att, jnp.finfo(jnp.float32).min)
        att = jax.nn.softmax(att, axis=-1).astype(v.dtype)
        y = jnp.matmul(att, v)  # (B, H, Tq, D)
        y = y.transpose(0, 2, 1, 3).reshape(B, -1, C)  # (B, Tq, C)
        return _per_token(self.c_proj, y), kv

    def grouped(
        self, xp: jax.Array, xc: jax.Array, prompt_mask: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Shared-prefix attention. xp (P, Tp, C) prompts (left-padded, `prompt_mask` (P, Tp)
        1 on real tokens), xc (P, G, N, C) G continuations of each: a prompt's tokens attend
        causally over its real tokens, a continuation's over its prompt's real tokens and its
        own earlier tokens, never another continuation's. The same numbers as one causal
        sequence per prompt + continuation, but the prompt's keys are computed once and no
        continuation's scores span the others': G N (Tp + N) scores instead of G (Tp + N)^2
        (G copies of the prompt) or (G N)^2 (one packed row). Returns (yp, yc)."""
        P, Tp, C = xp.shape
        G, N = xc.shape[1], xc.shape[2]
        H, D = self.n_head, self.head_dim
        flat = jnp.concatenate([xp.reshape(-1, C), xc.reshape(-1, C)])  # one matmul for both
        qkv = self.c_attn(flat)
        qkv_p, qkv_c = (
            qkv[: P * Tp].reshape(P, Tp, 3, H, D),
            qkv[P * Tp :].reshape(P, G, N, 3, H, D),
        )
        qp, kp, vp = (qkv_p[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (P, H, Tp, D)
        qc, kc, vc = (qkv_c[:, :, :, i].transpose(0, 1, 3, 2, 4) for i in range(3))  # (P,G,H,N,D)
        scale = 1.0 / math.sqrt(D)
        low = jnp.finfo(jnp.float32).min
        real = prompt_mask.astype(bool)
        causal_p = jnp.tril(jnp.ones((Tp, Tp), bool))
        mask_pp = (causal_p[None] & real[:, None, :]) | jnp.eye(Tp, dtype=bool)[None]  # pad: self
        s_pp = jnp.einsum("phtd,phsd->phts", qp, kp).astype(jnp.float32) * scale
        att_p = jax.nn.softmax(jnp.where(mask_pp[:, None], s_pp, low), axis=-1).astype(vp.dtype)
        yp = jnp.einsum("phts,phsd->phtd", att_p, vp)  # (P, H, Tp, D)
        s_cp = jnp.einsum("pghnd,phsd->pghns", qc, kp).astype(jnp.float32) * scale
        s_cc = jnp.einsum("pghnd,pghmd->pghnm", qc, kc).astype(jnp.float32) * scale
        s_cp = jnp.where(real[:, None, None, None, :], s_cp, low)
        s_cc = jnp.where(jnp.tril(jnp.ones((N, N), bool)), s_cc, low)
        att = jax.nn.softmax(jnp.concatenate([s_cp, s_cc], axis=-1), axis=-1).astype(vc.dtype)
        yc = jnp.einsum("pghns,phsd->pghnd", att[..., :Tp], vp) + jnp.einsum(
            "pghnm,pghmd->pghnd", att[..., Tp:], vc
        )  # (P, G, H, N, D)
        y = jnp.concatenate([yp.transpose(0, 2, 1, 3).reshape(-1, C),
                             yc.transpose(0, 1, 3, 2, 4).reshape(-1, C)])  # fmt: skip
        y = self.c_proj(y)
        return y[: P * Tp].reshape(P, Tp, C), y[P * Tp :].reshape(P, G, N, C)


class MLP(nnx.Module):
    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs) -> None:
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, rngs=rngs)
        proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        self.c_fc = nnx.Linear(cfg.n_embd, 4 * cfg.n_embd, kernel_init=_normal(0.02), **kw)
        self.c_proj = nnx.Linear(4 * cfg.n_embd, cfg.n_embd, kernel_init=_normal(proj_std), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        # GPT-2's "gelu_new" is the tanh approximation of GELU.
        hidden = jax.nn.gelu(_per_token(self.c_fc, x), approximate=True)  # (B, T, 4C)
        return _per_token(self.c_proj, hidden)  # (B, T, C)


class Block(nnx.Module):
    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs) -> None:
        # use_fast_variance=False computes var as mean((x - mean)^2), like torch, for parity.
        ln_kw = dict(
            epsilon=cfg.layer_norm_epsilon,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.weight_dtype,
            use_fast_variance=False,
            rngs=rngs,
        )
        self.ln_1 = nnx.LayerNorm(cfg.n_embd, **ln_kw)
        self.attn = CausalSelfAttention(cfg, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(cfg.n_embd, **ln_kw)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        kv: tuple[jax.Array, jax.Array] | None = None,
        cache_index: jax.Array | int = 0,
        last_only: bool = False,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        a, kv = self.attn(self.ln_1(x), mask, kv, cache_index, last_only)
        x = (x[:, -1:] if last_only else x) + a  # (B, T, C), or (B, 1, C) for `last_only`
        x = x + self.mlp(self.ln_2(x))
        return x, kv


def _block_no_cache(block: Block, x: jax.Array, mask: jax.Array) -> jax.Array:
    return block(x, mask)[0]


def _block_grouped(
    block: Block, xp: jax.Array, xc: jax.Array, prompt_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """A block over prompts (P, Tp, C) and their continuations (P, G, N, C): the attention
    shares each prompt's keys (`CausalSelfAttention.grouped`), the per-token layers run on all
    tokens at once."""
    ap, ac = block.attn.grouped(block.ln_1(xp), block.ln_1(xc), prompt_mask)
    xp, xc = xp + ap, xc + ac
    P, Tp, C = xp.shape
    flat = jnp.concatenate([xp.reshape(-1, C), xc.reshape(-1, C)])
    flat = flat + block.mlp(block.ln_2(flat))
    return flat[: P * Tp].reshape(xp.shape), flat[P * Tp :].reshape(xc.shape)


class GPT(nnx.Module):
    """GPT-2 language model (optionally with a scalar value head).

    Call `model(input_ids, attention_mask)` for logits; `hidden_states` + `lm_head` / `value`
    to share one trunk pass between the policy and value outputs; `init_cache` + `decode` for
    incremental decoding.
    """

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        emb_kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, rngs=rngs)
        self.wte = nnx.Embed(cfg.vocab_size, cfg.n_embd, embedding_init=_normal(0.02), **emb_kw)
        self.wpe = nnx.Embed(cfg.n_positions, cfg.n_embd, embedding_init=_normal(0.01), **emb_kw)
        self.h = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layer)])
        self.ln_f = nnx.LayerNorm(
            cfg.n_embd,
            epsilon=cfg.layer_norm_epsilon,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.weight_dtype,
            use_fast_variance=False,
            rngs=rngs,
        )
        # The scalar head computes in float32 even under bf16: rewards and values compared
        # across examples would otherwise be quantised to bf16's ~3 significant digits.
        head_kw = dict(dtype=jnp.float32, param_dtype=cfg.weight_dtype, rngs=rngs)
        self.value_head = (
            nnx.Linear(cfg.n_embd, 1, kernel_init=_normal(0.02), **head_kw)
            if cfg.value_head
            else None
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
    ) -> jax.Array:
        """input_ids (B, T) int32, attention_mask (B, T) 0/1 -> logits (B, T, V) float32.

        Without `positions`, they come from the mask (cumsum - 1), so left padding does not
        change the logits of real tokens. Logits at pad positions are meaningless.
        """
        return self.lm_head(self.hidden_states(input_ids, attention_mask, positions))

    def hidden_states(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        attend: jax.Array | None = None,
    ) -> jax.Array:
        """(B, T) ids -> final hidden states after ln_f, (B, T, C) in the compute dtype.

        `attend` (B, T, T) bool, True where query slot i may see key slot j, replaces the
        causal-and-padding mask (with explicit `positions`): several sequences packed in one
        row, e.g. a shared prompt followed by two completions (`trainers.logprobs`)."""
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((B, T), dtype=bool)
        if positions is None:
            positions = positions_from_mask(attention_mask)
        if attend is not None:
            mask = attend.astype(bool)[:, None]  # (B, 1, T, T)
        else:
            causal = jnp.tril(jnp.ones((T, T), dtype=bool))  # (T, T)
            mask = causal[None, None] & attention_mask.astype(bool)[:, None, None, :]
        x = self._embed(input_ids, positions)  # (B, T, C)
        block_fn = nnx.remat(_block_no_cache) if self.cfg.remat else _block_no_cache
        for block in self.h:
            x = block_fn(block, x, mask)
        return self.ln_f(x)

    def grouped_hidden_states(
        self, prompt_ids: jax.Array, prompt_mask: jax.Array, continuations: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """(P, Tp) left-padded prompts and (P, G, N) continuations of each -> final hidden
        states of the prompts (P, Tp, C) and of the continuations (P, G, N, C), each exactly
        its own in one causal sequence prompt + continuation, with the prompt run once per
        group (`CausalSelfAttention.grouped`). Continuation slots past a sequence's end may
        hold anything: they see only what is before them."""
        N = continuations.shape[2]
        prompt_positions = positions_from_mask(prompt_mask)
        length = jnp.sum(prompt_mask, axis=-1).astype(jnp.int32)  # (P,)
        positions = length[:, None, None] + jnp.arange(N, dtype=jnp.int32)  # (P, 1, N)
        positions = jnp.broadcast_to(positions, continuations.shape)
        xp = self._embed(prompt_ids, prompt_positions)
        xc = self._embed(continuations, jnp.minimum(positions, self.cfg.n_positions - 1))
        block_fn = nnx.remat(_block_grouped) if self.cfg.remat else _block_grouped
        for block in self.h:
            xp, xc = block_fn(block, xp, xc, prompt_mask)
        return self.ln_f(xp), self.ln_f(xc)

    def lm_head(self, hidden: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        """(..., C) hidden states -> (..., V) float32 logits via the tied embedding.

        `weights`: the embedding already laid out as `head_weights()` gives it, for loops
        that apply the head many times (the sampler)."""
        if weights is None:
            return self.wte.attend(hidden).astype(jnp.float32)
        return jnp.matmul(hidden.astype(weights.dtype), weights).astype(jnp.float32)

    def head_weights(self) -> jax.Array:
        """The tied LM head as a (C, V) matrix in the compute dtype, for `lm_head(h, weights)`.
        XLA:CPU multiplies a few rows by a (C, V) matrix faster than by the transpose of the
        (V, C) embedding (the decoding step's head took ~25% less time in an A/B), so a loop
        lays the matrix out once, outside it."""
        # Carried into a loop, the transpose is materialised once before it (a loop's state
        # keeps the default layout); used in place, XLA folds it into the product again.
        return self.wte.embedding[...].astype(self.cfg.compute_dtype).T

    def one_pass_norms(self) -> None:
        """Switch every layer norm of this model object to the one-pass variance (E[x^2] -
        E[x]^2, one fused reduction instead of two passes); the sampler's prefill ran ~13%
        faster with it. Same function to float rounding while a row's features do not share a
        large offset: ~1e-5 absolute after normalising with a 300x outlier feature, but the
        error grows with (mean / std)^2 (5e-4 at a shared offset of 30 std, against 6e-5 for
        the two-pass form; a residual stream that layer norms read rarely carries one). For
        throwaway copies (the sampler's traced model): training keeps torch's two passes."""
        for norm in (self.ln_f, *(n for block in self.h for n in (block.ln_1, block.ln_2))):
            norm.use_fast_variance = True

    def value(self, hidden: jax.Array) -> jax.Array:
        """(B, T, C) hidden states -> (B, T) float32 scalar values. Needs cfg.value_head."""
        if self.value_head is None:
            raise ValueError("this model has no value head (GPTConfig.value_head=False)")
        return self.value_head(hidden.astype(jnp.float32))[..., 0]

    def init_cache(self, batch_size: int, max_len: int) -> KVCache:
        """Zeroed KV cache with room for `max_len` tokens per row (see `KVCache` for layouts)."""
        if max_len > self.cfg.n_positions:
            raise ValueError(f"cache length {max_len} exceeds n_positions={self.cfg.n_positions}")
        shape = (batch_size, self.cfg.n_head, max_len, self.cfg.head_dim)
        dtype = self.cfg.compute_dtype
        keys = tuple(jnp.zeros(shape, dtype) for _ in range(self.cfg.n_layer))
        values = tuple(jnp.zeros(shape, dtype) for _ in range(self.cfg.n_layer))
        return KVCache(keys=keys, values=values)

    def decode(
        self,
        input_ids: jax.Array,
        positions: jax.Array,
        key_mask: jax.Array,
        cache: KVCache,
        cache_index: jax.Array | int,
        last_only: bool = False,
    ) -> tuple[jax.Array, KVCache]:
        """Run T new tokens through the model, reading and extending the KV cache.

        input_ids, positions: (B, T); key_mask: (B, S) bool over all cache slots (False for
        prompt padding); the new tokens occupy slots [cache_index, cache_index + T).
        Prefill is one call with the whole prompt (cache_index 0), then T == 1 per step.
        Returns final hidden states (B, T, C) and the updated cache. `last_only` (a prefill
        that only needs the next token's logits): (B, 1, C) for the last token, and the last
        block spends its attention output and MLP on that token alone (its keys and values
        still come from every token): the same numbers, a fifth fewer products for 4 layers.
        """
        T = input_ids.shape[1]
        S = cache.values[0].shape[2]
        q_slot = cache_index + jnp.arange(T)  # (T,)
        # Causal over cache slots: a query sees written slots up to its own, never the future
        # (still zero) slots.
        causal = jnp.arange(S)[None, :] <= q_slot[:, None]  # (T, S)
        mask = causal[None, None] & key_mask.astype(bool)[:, None, None, :]  # (B, 1, T, S)
        x = self._embed(input_ids, positions)  # (B, T, C)
        keys, values = [], []
        last = len(self.h) - 1
        for layer, (block, k, v) in enumerate(zip(self.h, cache.keys, cache.values, strict=True)):
            x, (k, v) = block(x, mask, (k, v), cache_index, last_only and layer == last)
            keys.append(k)
            values.append(v)
        return self.ln_f(x), KVCache(tuple(keys), tuple(values))

    def _embed(self, input_ids: jax.Array, positions: jax.Array) -> jax.Array:
        return self.wte(input_ids) + self.wpe(positions)  # (B, T, C)


def init_model(cfg: GPTConfig, seed: int = 0) -> GPT:
    """A freshly initialised GPT with GPT-2's init (normal(0.02), scaled residual projections)."""
    return GPT(cfg, rngs=nnx.Rngs(seed))


def abstract_model(cfg: GPTConfig) -> GPT:
    """The model with `jax.ShapeDtypeStruct` leaves: shapes without allocating any weights."""
    return nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))


def count_params(model: GPT) -> int:
    """Number of parameters (works on abstract models). The tied LM head counts once."""
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return sum(math.prod(leaf.shape) for leaf in leaves)


class GraphdefJit:
    """`jax.jit` for pure functions `fn(graphdef, state, *args)`, with `graphdef` static.

    Passing a GraphDef as a plain `jax.jit` static argument hashes it on every call (the whole
    graph is walked, a cost that grows with the layers). Here each
    graphdef object is hashed once: calls look it up by identity, and a new-but-equal graphdef
    (e.g. from a fresh `nnx.split`) reuses the already compiled program.
    `jit_kwargs` go to `jax.jit` of `partial(fn, graphdef)`: positional indices (e.g.
    `donate_argnums`) count `state` as 0.
    """

    _MAX_ENTRIES = 64

    def __init__(self, fn: Callable[..., Any], **jit_kwargs: Any) -> None:
        self._fn = fn
        self._jit_kwargs = jit_kwargs
        self._by_id: OrderedDict[int, tuple[nnx.GraphDef, Callable[..., Any]]] = OrderedDict()
        self._by_value: OrderedDict[nnx.GraphDef, Callable[..., Any]] = OrderedDict()
        functools.update_wrapper(self, fn)

    def __call__(self, graphdef: nnx.GraphDef, state: nnx.State, *args: Any, **kwargs: Any) -> Any:
        entry = self._by_id.get(id(graphdef))
        if entry is None or entry[0] is not graphdef:  # the stored ref keeps ids unique
            entry = (graphdef, self._jitted_for(graphdef))
            self._by_id[id(graphdef)] = entry
            if len(self._by_id) > self._MAX_ENTRIES:
                self._by_id.popitem(last=False)
        return entry[1](state, *args, **kwargs)

    def _jitted_for(self, graphdef: nnx.GraphDef) -> Callable[..., Any]:
        jitted = self._by_value.get(graphdef)  # hash + equality: once per graphdef object
        if jitted is None:
            jitted = jax.jit(functools.partial(self._fn, graphdef), **self._jit_kwargs)
            self._by_value[graphdef] = jitted
            if len(self._by_value) > self._MAX_ENTRIES:
                self._by_value.popitem(last=False)
        return jitted

    def cache_size(self) -> int:
        """Number of compiled programs held (over all graphdefs, shapes and static args)."""
        return sum(jitted._cache_size() for jitted in self._by_value.values())

    def clear(self) -> None:
        """Drop every compiled program. Worth it after a one-off pass: on XLA:CPU each program
        keeps its scratch buffers (its activations) allocated for as long as it lives."""
        for jitted in self._by_value.values():
            jitted.clear_cache()
        self._by_id.clear()
        self._by_value.clear()


def pure_jit(fn: Callable[..., Any], **jit_kwargs: Any) -> GraphdefJit:
    """Turn `fn(model, *args)` into a jitted `f(graphdef, state, *args)`.

    `nnx.merge` runs inside the trace, so a call costs what a plain `jax.jit` call costs;
    this avoids `nnx.jit`'s per-call graph traversal, which dominates small-model hot loops.
    `jit_kwargs` go to `jax.jit` (see `GraphdefJit`: positional indices count `state` as 0).
    """

    def pure(graphdef: nnx.GraphDef, state: nnx.State, *args: Any, **kwargs: Any) -> Any:
        return fn(nnx.merge(graphdef, state), *args, **kwargs)

    pure.__name__ = getattr(fn, "__name__", "pure")
    pure.__doc__ = fn.__doc__
    return GraphdefJit(pure, **jit_kwargs)


def _forward(
    model: GPT, input_ids: jax.Array, attention_mask: jax.Array | None = None
) -> jax.Array:
    """forward(graphdef, state, input_ids (B, T), attention_mask (B, T) | None)
    -> logits (B, T, V) float32. Jitted; positions come from the mask."""
    return model(input_ids, attention_mask)


forward = pure_jit(_forward)
