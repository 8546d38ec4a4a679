"""Batched, jitted autoregressive sampling with a KV cache: the engine of every online method.

One compiled program per (batch, prompt_len, max_new_tokens, top_k, top_p, greedy) combination
(and device mesh); the PRNG key, temperature, eos_id and pad_id are traced, so changing them
never recompiles. Inside it: one prefill call over the whole left-padded prompt, then
`lax.while_loop`s of one-token steps over a KV cache. Each step's attention reads every slot
of the cache, so it grows with the text instead of holding prompt_len + max_new_tokens slots
from the start: up to SEGMENTS loops, each over a cache just long enough for its steps
(one copy between them). Decoding exits early once every row has emitted EOS (checked every
DONE_CHECK_EVERY steps). Rows split over several devices (`shard_rows`) run as independent
per-device loops (`jax.shard_map`): no device waits for another's rows, and no step talks
across devices.

Randomness is per row: row b's draw at step t uses fold_in(split(key, B)[b], t), so the same
key gives the same samples however the rows are split over devices.

Two log-probs are returned per sampled token:
  * `logprobs`: under the distribution actually sampled from (temperature, then top-k, then
    top-p, renormalised). 0 for greedy (a point mass). This is the behaviour policy's log-prob.
  * `raw_logprobs`: log softmax of the raw model logits (temperature 1, no filtering), i.e.
    the log-prob the policy model itself assigns, which the RL losses recompute in training.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from trainers.model import GPT, GraphdefJit, KVCache, positions_from_mask

DONE_CHECK_EVERY = 8  # decoding steps between checks that every row has emitted EOS
SEGMENTS = 2  # most cache sizes per call: each one more loop body to compile
MIN_SEGMENT = 16  # fewest steps worth a cache size of their own (a copy at each growth)
ROWS = "rows"  # the mesh axis `shard_rows` splits the batch over


class SampleOutput(NamedTuple):
    """Result of `generate`. Entries past a row's length hold `pad_id` / 0.0.

    tokens:       (B, N) int32 sampled tokens (EOS included, then pad)
    logprobs:     (B, N) float32 log-prob under the sampling distribution (0 for greedy)
    raw_logprobs: (B, N) float32 log-prob under the untempered, unfiltered model
    lengths:      (B,) int32 number of generated tokens, counting the EOS if one was emitted
    """

    tokens: jax.Array
    logprobs: jax.Array
    raw_logprobs: jax.Array
    lengths: jax.Array


def filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Mask (B, V) logits outside the top-k and then outside the nucleus of mass top_p to -inf.

    top_k=0 and top_p=1.0 disable the filters (static, so disabled filters cost nothing).
    Nucleus: keep the smallest prefix of tokens sorted by probability whose mass reaches
    top_p (the token crossing the threshold is kept, so at least one token always survives).
    Tokens tied with the last kept logit are kept too.
    """
    if 0 < top_k < logits.shape[-1]:  # top_k >= V keeps everything
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # (B, 1)
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # (B, V) descending
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
        keep = mass_before < top_p  # (B, V), always True at index 0
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def _greedy(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, V) -> (B,) int32 index of each row's first largest value, and (B,) its log-softmax
    value. The index is `jnp.argmax` for finite logits, as two plain reductions (max, then the
    least index holding it): XLA:CPU runs the (value, index) pair reduction of `argmax` ~10x
    slower, a measurable part of each decoding step. A row holding a NaN gets index V - 1
    (`argmax` would point at the NaN). The log-prob shares the max: the largest logit's is
    -log(sum(exp(logits - max))), with no gather and no second max."""
    V = logits.shape[-1]
    best = jnp.max(logits, axis=-1, keepdims=True)
    index = jnp.min(jnp.where(logits == best, jnp.arange(V, dtype=jnp.int32), V), axis=-1)
    raw_lp = -jnp.log(jnp.sum(jnp.exp(logits - best), axis=-1))
    return jnp.minimum(index, V - 1), raw_lp


def _pick(
    logits: jax.Array,
    keys: jax.Array,
    temperature: jax.Array,
    *,
    top_k: int,
    top_p: float,
    greedy: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(B, V) float32 logits, (B,) keys (one per row; unused when greedy) -> token (B,),
    sampling log-prob (B,), raw log-prob (B,)."""
    if greedy:
        token, raw_lp = _greedy(logits)
        return token, jnp.zeros(token.shape, jnp.float32), raw_lp
    scaled = filter_logits(logits / temperature, top_k, top_p)
    token = jax.vmap(jax.random.categorical)(keys, scaled)
    sample_lp = jnp.take_along_axis(jax.nn.log_softmax(scaled), token[:, None], axis=-1)[:, 0]
    # log_softmax(logits)[token] without materialising the (B, V) log-softmax.
    picked = jnp.take_along_axis(logits, token[:, None], axis=-1)[:, 0]
    raw_lp = picked - jax.nn.logsumexp(logits, axis=-1)
    return token.astype(jnp.int32), sample_lp, raw_lp


class _Loop(NamedTuple):
    step: jax.Array  # () index of the token about to be sampled
    logits: jax.Array  # (B, V) next-token logits
    cache: KVCache
    done: jax.Array  # (B,) bool, row already emitted EOS
    out: SampleOutput


def _record(loop: _Loop, row_keys: jax.Array, temperature: jax.Array, opts: dict) -> _Loop:
    """Sample token number `loop.step` from `loop.logits` and write it into the outputs."""
    # Greedy decoding draws nothing (no threefry work per token).
    keys = row_keys
    if not opts["greedy"]:
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, loop.step)
    token, lp, raw_lp = _pick(
        loop.logits,
        keys,
        temperature,
        top_k=opts["top_k"],
        top_p=opts["top_p"],
        greedy=opts["greedy"],
    )
    live = ~loop.done  # rows that finished earlier emit pad
    token = jnp.where(live, token, opts["pad_id"])
    col = loop.step
    out = SampleOutput(
        tokens=loop.out.tokens.at[:, col].set(token),
        logprobs=loop.out.logprobs.at[:, col].set(jnp.where(live, lp, 0.0)),
        raw_logprobs=loop.out.raw_logprobs.at[:, col].set(jnp.where(live, raw_lp, 0.0)),
        lengths=loop.out.lengths + live.astype(jnp.int32),
    )
    done = loop.done | (token == opts["eos_id"])
    return loop._replace(done=done, out=out)


def segment_ends(max_new_tokens: int) -> list[int]:
    """The decoding steps at which the cache grows, ending with the last: step s feeds token
    s (slot prompt_len + s), so the loop running up to step e needs prompt_len + e slots.
    Up to SEGMENTS even stretches of at least MIN_SEGMENT steps, a last one shorter than
    half of that joining the one before (no copy and loop body for a few steps); [] when no
    step runs."""
    steps = max_new_tokens - 1
    if steps < 1:
        return []
    stretch = max(MIN_SEGMENT, -(-steps // SEGMENTS))
    ends = [*range(stretch, steps, stretch), steps]
    if len(ends) > 1 and ends[-1] - ends[-2] < MIN_SEGMENT // 2:
        del ends[-2]
    return ends


def _decode_rows(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    row_keys: jax.Array,
    temperature: jax.Array,
    eos_id: jax.Array,
    pad_id: jax.Array,
    *,
    max_new_tokens: int,
    top_k: int,
    top_p: float,
    greedy: bool,
    group: int = 1,
) -> SampleOutput:
    """Prefill and decoding loop over the rows given (all of them, or one device's share):
    each prompt's prefill runs once, and its cache is copied to its `group` sample rows."""
    model: GPT = nnx.merge(graphdef, state)
    model.one_pass_norms()  # this traced copy only
    P, T = prompt_ids.shape
    B = P * group
    N = max_new_tokens
    opts = dict(top_k=top_k, top_p=top_p, greedy=greedy, eos_id=eos_id, pad_id=pad_id)
    prompt_mask = prompt_mask.astype(bool)
    # Cache slots: [0, T) prompt (left-padded), then the generated tokens but the last (never
    # fed back). Generated slots are always valid keys; a finished row keeps feeding pad
    # tokens whose outputs are discarded.
    key_mask = jnp.concatenate([prompt_mask, jnp.ones((P, N), bool)], axis=1)  # (P, T + N)
    if model.cfg.n_positions < T + N:  # checked while tracing: no compile, no run
        raise ValueError(
            f"prompt_len + max_new_tokens = {T} + {N} exceeds n_positions={model.cfg.n_positions}"
        )
    ends = segment_ends(N)
    slots = T + (ends[0] if ends else 0)
    cache = model.init_cache(P, slots)
    positions = positions_from_mask(prompt_mask)
    hidden, cache = model.decode(
        prompt_ids, positions, key_mask[:, :slots], cache, 0, last_only=True
    )  # hidden (P, 1, C): the last prompt token's
    first_pos = prompt_mask.sum(axis=-1).astype(jnp.int32)  # (P,) position of 1st new token
    if group > 1:  # row p * group + g is prompt p's sample g, from one shared prefill
        hidden, cache, key_mask, first_pos = jax.tree.map(
            lambda x: jnp.repeat(x, group, axis=0), (hidden, cache, key_mask, first_pos)
        )
    head = model.head_weights()  # (C, V), laid out once for every step's LM head

    out = SampleOutput(
        tokens=jnp.full((B, N), pad_id, jnp.int32),
        logprobs=jnp.zeros((B, N), jnp.float32),
        raw_logprobs=jnp.zeros((B, N), jnp.float32),
        lengths=jnp.zeros((B,), jnp.int32),
    )
    loop = _Loop(
        step=jnp.array(0, jnp.int32),
        logits=model.lm_head(hidden[:, -1], head),  # (B, V)
        cache=cache,
        done=jnp.zeros((B,), bool),
        out=out,
    )
    loop = _record(loop, row_keys, temperature, opts)  # token 0 comes from the prefill

    def step(loop: _Loop, key_mask: jax.Array) -> _Loop:
        # Feed token `step` (slot T + step, position first_pos + step), then sample step + 1.
        prev = jax.lax.dynamic_slice_in_dim(loop.out.tokens, loop.step, 1, axis=1)  # (B, 1)
        positions = (first_pos + loop.step)[:, None]  # (B, 1)
        hidden, cache = model.decode(prev, positions, key_mask, loop.cache, T + loop.step)
        logits = model.lm_head(hidden[:, 0], head)
        loop = loop._replace(step=loop.step + 1, logits=logits, cache=cache)
        return _record(loop, row_keys, temperature, opts)

    def stretch(number: int, loop: _Loop) -> SampleOutput:
        """Decode up to step ends[number] over a cache of T + that many slots, then grow the
        cache and go on, unless every row is done by then (no copy for finished rows)."""
        end = ends[number]
        visible = key_mask[:, : T + end]

        def steps(loop: _Loop) -> _Loop:
            # Up to DONE_CHECK_EVERY steps without asking whether every row is done (a
            # reduction over the rows; asked every step it cost ~10% of decoding, when it was
            # still a cross-device one). Finished rows emit pad meanwhile: same output.
            last = jnp.minimum(loop.step + DONE_CHECK_EVERY, end)
            return jax.lax.while_loop(
                lambda loop: loop.step < last, lambda loop: step(loop, visible), loop
            )

        def unfinished(loop: _Loop) -> jax.Array:
            return (loop.step < end) & ~jnp.all(loop.done)

        loop = jax.lax.while_loop(unfinished, steps, loop)
        if number + 1 == len(ends):
            return loop.out
        grow = ends[number + 1]
        return jax.lax.cond(
            jnp.all(loop.done),
            lambda loop: loop.out,
            lambda loop: stretch(number + 1, loop._replace(cache=loop.cache.grown(T + grow))),
            loop,
        )

    return stretch(0, loop) if ends else loop.out


def _generate_impl(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    eos_id: jax.Array,
    pad_id: jax.Array,
    *,
    max_new_tokens: int,
    top_k: int,
    top_p: float,
    greedy: bool,
    group: int,
    mesh: Mesh | None,
) -> SampleOutput:
    B = prompt_ids.shape[0] * group
    # Row b's stream, however the rows are split. Greedy decoding draws nothing, and takes
    # any key (even None): placeholders keep one signature.
    row_keys = jnp.zeros((B,), jnp.uint32) if greedy else jax.random.split(key, B)
    decode = functools.partial(
        _decode_rows, graphdef, max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p,
        greedy=greedy, group=group,
    )  # fmt: skip
    if mesh is not None:
        # One loop per device over its own rows: it stops when they are done, and nothing
        # crosses devices (a jit over split rows waited at each done-check's all-reduce).
        rows, whole = PartitionSpec(ROWS), PartitionSpec()
        decode = jax.shard_map(
            decode,
            mesh=mesh,
            in_specs=(whole, rows, rows, rows, whole, whole, whole),
            out_specs=rows,
            check_vma=False,
        )
    return decode(state, prompt_ids, prompt_mask, row_keys, temperature, eos_id, pad_id)


_generate = GraphdefJit(
    _generate_impl,
    static_argnames=("max_new_tokens", "top_k", "top_p", "greedy", "group", "mesh"),
)


def _row_mesh(*arrays: Any) -> Mesh | None:
    """The mesh `shard_rows` split these arrays' rows over, if it did (all alike, sharded
    exactly `PartitionSpec("rows")`, more than one device); None otherwise: arrays in one
    place, or laid out some other way, take the plain jit (same tokens, no per-device loops)."""
    meshes = set()
    for x in arrays:
        sharding = getattr(x, "sharding", None)
        if not isinstance(sharding, NamedSharding) or sharding.spec != PartitionSpec(ROWS):
            return None
        meshes.add(sharding.mesh)
    if len(meshes) != 1:
        return None
    mesh = meshes.pop()
    if not isinstance(mesh, Mesh) or mesh.axis_names != (ROWS,) or mesh.size < 2:
        return None
    return mesh


def _int32(x: Any) -> jax.Array:
    """x as an int32 jax array; one already so (e.g. placed by `shard_rows`) as it is."""
    if isinstance(x, jax.Array) and x.dtype == jnp.int32:
        return x
    return jnp.asarray(x, jnp.int32)


def shard_rows(state: nnx.State, *rows: jax.Array) -> tuple[Any, ...]:
    """Lay out a sampling call over this process's devices: `state` replicated, each array of `rows`
    split along its first (batch) axis. With one device everything stays where it is; a
    batch the device count does not divide is left unsplit (callers should round their
    batch size up to a multiple of `jax.local_device_count()`). `generate` then runs the rows in
    parallel (on a CPU split into devices by `trainers.runtime.use_host_devices`, in
    parallel on the cores) and gives the same tokens.

    On CPU devices the replicated state is one host copy that every device reads (see
    `_one_host_copy`): the returned state is for reading, not for donating to a step."""
    # This process's devices: with several hosts each samples every row itself (the same key
    # gives the same tokens), so no host waits for another's rows.
    devices = jax.local_devices()
    n = len(devices)
    if n == 1 or any(np.shape(x)[0] % n for x in rows):
        return (state, *rows)
    mesh = Mesh(np.array(devices), (ROWS,))
    split = NamedSharding(mesh, PartitionSpec(ROWS))
    whole = NamedSharding(mesh, PartitionSpec())
    if all(device.platform == "cpu" for device in devices):
        # A state placed here before (callers reuse it batch after batch) stays as it is.
        state = jax.tree.map(
            lambda x: x if getattr(x, "sharding", None) == whole else _one_host_copy(x, whole),
            state,
        )
    else:
        state = jax.device_put(state, whole)
    return (state, *(jax.device_put(x, split) for x in rows))


_ALIGN = 64  # bytes: XLA:CPU uses a host array in place only if it is this aligned


def _one_host_copy(x: jax.Array, sharding: NamedSharding) -> jax.Array:
    """`x` replicated over CPU devices as one shared buffer: XLA:CPU adopts an aligned NumPy
    array in place, on every device it is put on, instead of copying it per device. Each
    decoding step reads all the weights, so one copy instead of one per device halves what
    the cores pull through the shared cache (`docs/measurements.md` gives the measured gain)."""
    host = np.asarray(x)
    buffer = np.empty(host.nbytes + _ALIGN, np.uint8)
    start = -buffer.ctypes.data % _ALIGN
    copy = buffer[start : start + host.nbytes].view(host.dtype).reshape(host.shape)
    copy[...] = host  # private to the returned array: nothing else ever writes it
    return jax.device_put(copy, sharding)


def generate(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    eos_id: int,
    pad_id: int,
    group: int = 1,
) -> SampleOutput:
    """Sample up to `max_new_tokens` tokens after left-padded prompts, with a KV cache.

    graphdef, state: from `nnx.split(model)` for a `trainers.model.GPT`.
    prompt_ids: (B, T) int32, left-padded; prompt_mask: (B, T) 0/1, 1 on real tokens. Every row
        needs at least one real token; T + max_new_tokens must fit in n_positions.
    key: PRNG key (ignored when greedy). temperature > 0 scales logits before top-k/top-p.
    top_k: keep the k most likely tokens (0 = off); top_p: nucleus mass (1.0 = off).
    greedy: argmax decoding (temperature/top_k/top_p ignored).
    eos_id: a row stops after emitting it (pass an id outside the vocabulary to never stop);
    pad_id: what finished rows emit.
    group: samples per prompt (the group methods' G): each prompt's prefill runs once and its
        KV cache is shared by its G rows; row `p * group + g` of the output is prompt p's
        sample g, drawn exactly as row p*G+g of the same prompts repeated G times would be.
    Returns a `SampleOutput` (tokens/logprobs/raw_logprobs (B * group, max_new_tokens),
    lengths (B * group,)). Compiles once per shape, (max_new_tokens, top_k, top_p, greedy,
    group) and device mesh of split rows; the rest is traced.
    """
    if prompt_ids.ndim != 2 or prompt_mask.shape != prompt_ids.shape:
        raise ValueError(f"prompt_ids {prompt_ids.shape} / mask {prompt_mask.shape}: want (B, T)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    # T + max_new_tokens > n_positions is rejected while tracing, by _decode_rows.
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1, got {top_k}, {top_p}")
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    return _generate(
        graphdef,
        state,
        _int32(prompt_ids),
        _int32(prompt_mask),
        key,
        # NumPy scalars: jit takes them as they are (jnp.asarray would make each a device
        # array first, one dispatch apiece).
        np.float32(temperature),
        np.int32(eos_id),
        np.int32(pad_id),
        max_new_tokens=int(max_new_tokens),
        top_k=0 if greedy else int(top_k),
        top_p=1.0 if greedy else float(top_p),
        greedy=bool(greedy),
        group=int(group),
        mesh=_row_mesh(prompt_ids, prompt_mask),
    )
