"""KV-cache sampler: matches slow full-recompute decoding, honours EOS/top-k/top-p/log-probs."""

from __future__ import annotations

import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trainers.hf import from_hf
from trainers.model import forward
from trainers.sampling import (
    MIN_SEGMENT,
    SEGMENTS,
    _generate,
    _pick,
    filter_logits,
    generate,
    segment_ends,
)

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "tiny_gpt2"
NEVER = 10_000  # an eos_id outside the vocabulary: rows never stop early
PAD = 0
N_NEW = 10


@pytest.fixture(scope="module")
def split_model():
    model, _ = from_hf(FIXTURE)
    return nnx.split(model)


@pytest.fixture(scope="module")
def prompts():
    """Three left-padded prompts of 6, 3 and 1 real tokens, (3, 6)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 64, size=(3, 6)).astype(np.int32)
    mask = np.zeros_like(ids)
    for row, n in enumerate((6, 3, 1)):
        mask[row, 6 - n :] = 1
    return jnp.asarray(np.where(mask, ids, PAD)), jnp.asarray(mask)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """NumPy reference (also keeps the tests from compiling many tiny eager jax ops)."""
    x = np.asarray(x, np.float64)
    top = np.max(np.where(np.isfinite(x), x, -np.inf), axis=-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


def full_logits(split_model, prompt_ids, prompt_mask, tokens, lengths):
    """Teacher-forced (B, N, V) logits of each generated token, one full forward, no cache."""
    T = prompt_ids.shape[1]
    N = tokens.shape[1]
    gen_mask = (jnp.arange(N)[None, :] < lengths[:, None]).astype(jnp.int32)
    ids = jnp.concatenate([prompt_ids, tokens], axis=1)
    mask = jnp.concatenate([prompt_mask, gen_mask], axis=1)
    logits = forward(*split_model, ids, mask)  # (B, T + N, V)
    return np.asarray(logits[:, T - 1 : T + N - 1]), np.asarray(gen_mask).astype(bool)


def test_segment_ends_cover_every_step_in_few_stretches():
    assert segment_ends(1) == []  # the prefill's token only
    assert segment_ends(10) == [9]
    assert segment_ends(64) == [32, 63]
    assert segment_ends(18) == [17]  # no stretch of 1 step at the end
    for n in range(2, 600):
        ends = segment_ends(n)
        assert ends[-1] == n - 1 and ends == sorted(set(ends))
        assert len(ends) <= SEGMENTS and ends[0] >= min(MIN_SEGMENT, n - 1)
        assert all(b - a >= MIN_SEGMENT // 2 for a, b in itertools.pairwise(ends))


def test_greedy_takes_no_key(split_model, prompts):
    out = generate(
        *split_model, *prompts, None, max_new_tokens=3, greedy=True, eos_id=NEVER, pad_id=PAD
    )
    assert out.tokens.shape == (3, 3)


@pytest.mark.parametrize("n_new", [N_NEW, 26])  # 26: the cache grows once on the way
def test_greedy_kv_cache_equals_full_recompute(split_model, prompts, n_new):
    N_NEW = n_new
    assert len(segment_ends(N_NEW)) == (1 if N_NEW < MIN_SEGMENT else 2)
    prompt_ids, prompt_mask = prompts
    out = generate(
        *split_model, prompt_ids, prompt_mask, jax.random.key(0),
        max_new_tokens=N_NEW, greedy=True, eos_id=NEVER, pad_id=PAD,
    )  # fmt: skip
    # Slow reference: re-run the whole sequence through the model for every new token. The
    # buffer has its final width from the start (not-yet-generated slots masked out, and
    # invisible to earlier queries anyway) so the forward compiles once.
    T = prompt_ids.shape[1]
    ids = np.concatenate([prompt_ids, np.full((3, N_NEW), PAD, np.int32)], axis=1)
    mask = np.concatenate([prompt_mask, np.zeros((3, N_NEW), np.int32)], axis=1)
    reference, reference_lp = [], []
    for step in range(N_NEW):
        logits = forward(*split_model, jnp.asarray(ids), jnp.asarray(mask))
        row = np.asarray(logits)[:, T + step - 1]
        nxt = row.argmax(-1).astype(np.int32)
        reference.append(nxt)
        reference_lp.append(np.take_along_axis(log_softmax(row), nxt[:, None], -1)[:, 0])
        ids[:, T + step] = nxt
        mask[:, T + step] = 1
    np.testing.assert_array_equal(out.tokens, np.stack(reference, axis=1))
    np.testing.assert_allclose(out.raw_logprobs, np.stack(reference_lp, axis=1), atol=1e-4)
    np.testing.assert_array_equal(out.lengths, [N_NEW] * 3)
    np.testing.assert_array_equal(out.logprobs, 0.0)  # greedy: a point mass


def test_raw_and_sampling_logprobs_match_teacher_forcing(split_model, prompts):
    prompt_ids, prompt_mask = prompts
    temperature, top_k = 0.7, 8
    out = generate(
        *split_model, prompt_ids, prompt_mask, jax.random.key(1), max_new_tokens=N_NEW,
        temperature=temperature, top_k=top_k, eos_id=NEVER, pad_id=PAD,
    )  # fmt: skip
    logits, valid = full_logits(split_model, prompt_ids, prompt_mask, out.tokens, out.lengths)
    assert valid.all()
    tokens = np.asarray(out.tokens)[..., None]
    raw = np.take_along_axis(log_softmax(logits), tokens, -1)[..., 0]
    np.testing.assert_allclose(out.raw_logprobs, raw, atol=1e-4)
    # Sampling distribution: tempered, then restricted to the top-k and renormalised.
    scaled = logits / temperature
    kth = np.sort(scaled, axis=-1)[..., -top_k][..., None]
    filtered = np.where(scaled >= kth, scaled, -np.inf)
    expected = np.take_along_axis(log_softmax(filtered), tokens, -1)[..., 0]
    np.testing.assert_allclose(out.logprobs, expected, atol=1e-4)
    rank = (logits > np.take_along_axis(logits, tokens, -1)).sum(-1)  # 0 = most likely
    assert (rank < top_k).all()
    # Same key, same tokens; key, temperature and eos_id are traced: no new compilation.
    compiled = _generate.cache_size()
    kwargs = dict(max_new_tokens=N_NEW, top_k=top_k, pad_id=PAD)
    again = generate(
        *split_model, prompt_ids, prompt_mask, jax.random.key(1), temperature=temperature,
        eos_id=NEVER, **kwargs,
    )  # fmt: skip
    other = generate(
        *split_model, prompt_ids, prompt_mask, jax.random.key(2), temperature=1.3, eos_id=3,
        **kwargs,
    )  # fmt: skip
    assert _generate.cache_size() == compiled
    np.testing.assert_array_equal(again.tokens, out.tokens)
    assert not np.array_equal(other.tokens, out.tokens)


def test_top_p_samples_only_inside_the_nucleus(split_model, prompts):
    prompt_ids, prompt_mask = prompts
    top_p = 0.3
    out = generate(
        *split_model, prompt_ids, prompt_mask, jax.random.key(2), max_new_tokens=N_NEW,
        top_p=top_p, eos_id=NEVER, pad_id=PAD,
    )  # fmt: skip
    logits, _ = full_logits(split_model, prompt_ids, prompt_mask, out.tokens, out.lengths)
    probs = np.exp(log_softmax(logits))
    chosen = np.take_along_axis(probs, np.asarray(out.tokens)[..., None], -1)
    mass_of_better = np.where(probs > chosen, probs, 0.0).sum(-1)
    assert (mass_of_better < top_p + 1e-5).all()
    # The sampling log-prob is the token's probability renormalised over the nucleus.
    sorted_probs = -np.sort(-probs, axis=-1)
    kept = (np.cumsum(sorted_probs, axis=-1) - sorted_probs) < top_p
    nucleus_mass = np.where(kept, sorted_probs, 0.0).sum(-1)
    assert (nucleus_mass < 0.999).all()  # the filter really removed tokens
    np.testing.assert_allclose(out.logprobs, np.log(chosen[..., 0] / nucleus_mass), atol=1e-4)


def test_filter_logits_top_p_keeps_the_crossing_token():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(np.asarray(filter_logits(logits, 0, 0.7)))
    np.testing.assert_array_equal(kept, [[True, True, False, False]])
    kept = np.isfinite(np.asarray(filter_logits(logits, 0, 0.5)))
    np.testing.assert_array_equal(kept, [[True, False, False, False]])
    kept = np.isfinite(np.asarray(filter_logits(logits, 3, 1.0)))
    np.testing.assert_array_equal(kept, [[True, True, True, False]])


def test_eos_stops_each_row_and_pads_the_rest(split_model, prompts):
    prompt_ids, prompt_mask = prompts
    kwargs = dict(max_new_tokens=N_NEW, greedy=True, pad_id=PAD)
    free = generate(
        *split_model, prompt_ids, prompt_mask, jax.random.key(0), eos_id=NEVER, **kwargs
    )
    free_tokens = np.asarray(free.tokens)
    eos = int(free_tokens[0, 3])  # a token row 0 really produces at step 3
    out = generate(*split_model, prompt_ids, prompt_mask, jax.random.key(0), eos_id=eos, **kwargs)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    for row in range(3):
        hits = np.flatnonzero(free_tokens[row] == eos)
        n = hits[0] + 1 if hits.size else N_NEW
        assert lengths[row] == n
        np.testing.assert_array_equal(tokens[row, :n], free_tokens[row, :n])
        np.testing.assert_array_equal(tokens[row, n:], PAD)
        np.testing.assert_array_equal(np.asarray(out.raw_logprobs)[row, n:], 0.0)
    assert lengths[0] <= 4


def test_all_rows_done_early_ends_decoding_with_the_same_output(split_model, prompts):
    """Every row emits EOS at step 2 of 24: whether every row is done is asked only every
    DONE_CHECK_EVERY steps, and the steps run meanwhile must leave no trace."""
    prompt_ids, prompt_mask = (jnp.repeat(x[:1], 4, axis=0) for x in prompts)  # same rows
    kwargs = dict(max_new_tokens=24, greedy=True, pad_id=PAD)
    key = jax.random.key(0)
    free = generate(*split_model, prompt_ids, prompt_mask, key, eos_id=NEVER, **kwargs)
    eos = int(np.asarray(free.tokens)[0, 2])
    first = int(np.flatnonzero(np.asarray(free.tokens)[0] == eos)[0])  # 2, or earlier
    out = generate(*split_model, prompt_ids, prompt_mask, key, eos_id=eos, **kwargs)
    np.testing.assert_array_equal(np.asarray(out.lengths), first + 1)
    tokens = np.asarray(out.tokens)
    np.testing.assert_array_equal(tokens[:, : first + 1], np.asarray(free.tokens)[:, : first + 1])
    np.testing.assert_array_equal(tokens[:, first + 1 :], PAD)
    np.testing.assert_array_equal(np.asarray(out.raw_logprobs)[:, first + 1 :], 0.0)


def test_top_k_one_equals_greedy(split_model, prompts):
    prompt_ids, prompt_mask = prompts
    kwargs = dict(max_new_tokens=N_NEW, eos_id=NEVER, pad_id=PAD)
    greedy = generate(
        *split_model, prompt_ids, prompt_mask, jax.random.key(0), greedy=True, **kwargs
    )
    top1 = generate(*split_model, prompt_ids, prompt_mask, jax.random.key(5), top_k=1, **kwargs)
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)
    np.testing.assert_allclose(top1.logprobs, 0.0, atol=1e-6)  # a one-token distribution
    np.testing.assert_allclose(top1.raw_logprobs, greedy.raw_logprobs, atol=1e-6)


def test_sampled_frequencies_follow_the_tempered_filtered_softmax():
    # 20000 draws from fixed logits: the empirical distribution must match the tempered, top-k
    # filtered softmax (computed here in NumPy) up to noise (sd <= 0.0036; bound is ~7 sd).
    raw_logits = np.random.default_rng(0).normal(size=12) * 1.5
    B, temperature, top_k = 20_000, 0.7, 5
    keys = jax.random.split(jax.random.key(9), B)  # one per row, as `generate` passes them
    tokens, lp, raw_lp = jax.jit(_pick, static_argnames=("top_k", "top_p", "greedy"))(
        jnp.asarray(np.tile(raw_logits, (B, 1)), jnp.float32), keys,
        jnp.float32(temperature), top_k=top_k, top_p=1.0, greedy=False,
    )  # fmt: skip
    scaled = raw_logits / temperature
    scaled[np.argsort(-scaled)[top_k:]] = -np.inf
    probs = np.exp(log_softmax(scaled))
    assert 0.2 < probs.max() < 0.8  # neither flat nor a point mass: the check has teeth
    tokens = np.asarray(tokens)
    freq = np.bincount(tokens, minlength=probs.size) / B
    assert np.abs(freq - probs).max() < 0.025
    assert freq[probs == 0].sum() == 0  # never outside the top-k
    np.testing.assert_allclose(lp, np.log(probs[tokens]), atol=1e-5)
    np.testing.assert_allclose(raw_lp, log_softmax(raw_logits)[tokens], atol=1e-5)


def test_rejects_bad_arguments(split_model, prompts):
    prompt_ids, prompt_mask = prompts
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="n_positions"):
        generate(*split_model, prompt_ids, prompt_mask, key, max_new_tokens=40, eos_id=1, pad_id=0)
    with pytest.raises(ValueError, match="temperature"):
        generate(
            *split_model, prompt_ids, prompt_mask, key,
            max_new_tokens=2, temperature=0.0, eos_id=1, pad_id=0,
        )  # fmt: skip
    with pytest.raises(ValueError, match="top_p"):
        generate(
            *split_model, prompt_ids, prompt_mask, key,
            max_new_tokens=2, top_p=0.0, eos_id=1, pad_id=0,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        generate(
            *split_model, prompt_ids[0], prompt_mask[0], key, max_new_tokens=2, eos_id=1, pad_id=0
        )


@pytest.mark.parametrize("greedy", [False, True])
def test_group_shares_one_prefill_and_equals_repeated_prompts(split_model, prompts, greedy):
    """group=G from one prefill per prompt gives exactly the samples of each prompt repeated G
    times (row p * G + g), and the same log-probs."""
    prompt_ids, prompt_mask = prompts
    G = 4
    kw = dict(max_new_tokens=N_NEW, eos_id=NEVER, pad_id=PAD, greedy=greedy, temperature=0.9)
    key = jax.random.key(3)
    grouped = generate(*split_model, prompt_ids, prompt_mask, key, group=G, **kw)
    repeated = generate(*split_model, jnp.repeat(prompt_ids, G, axis=0),
                        jnp.repeat(prompt_mask, G, axis=0), key, **kw)  # fmt: skip
    assert grouped.tokens.shape == (3 * G, N_NEW)
    np.testing.assert_array_equal(grouped.tokens, repeated.tokens)
    np.testing.assert_array_equal(grouped.lengths, repeated.lengths)
    np.testing.assert_allclose(grouped.raw_logprobs, repeated.raw_logprobs, atol=1e-5)
    np.testing.assert_allclose(grouped.logprobs, repeated.logprobs, atol=1e-5)
    if not greedy:  # G different samples of one prompt
        assert len({tuple(np.asarray(grouped.tokens[g])) for g in range(G)}) > 1
    with pytest.raises(ValueError, match="group"):
        generate(*split_model, prompt_ids, prompt_mask, key, group=0, **kw)
