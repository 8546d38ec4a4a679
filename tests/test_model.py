"""GPT-2 model and HF checkpoint I/O: parity with transformers' logits, round trips, invariances."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from trainers.hf import from_hf, to_hf
from trainers.model import (
    PRESETS,
    GPTConfig,
    abstract_model,
    count_params,
    forward,
    init_model,
    positions_from_mask,
    pure_jit,
)

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "tiny_gpt2"
TINY = GPTConfig(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2)


def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "expected_logits.npz", allow_pickle=False) as data:
        return dict(data)


def logits_of(model, ids, mask=None) -> np.ndarray:
    # Always pass a mask: one compiled program then serves padded and unpadded batches.
    mask = np.ones_like(ids) if mask is None else mask
    return np.asarray(forward(*nnx.split(model), jnp.asarray(ids), jnp.asarray(mask)))


_values = pure_jit(lambda model, ids: model.value(model.hidden_states(ids)))


def value_of(model, ids) -> jax.Array:
    return _values(*nnx.split(model), ids)


def test_hf_fixture_parity_unpadded_and_left_padded():
    model, cfg = from_hf(FIXTURE)
    assert (cfg.vocab_size, cfg.n_embd, cfg.n_layer, cfg.n_head) == (64, 16, 2, 2)
    exp = expected()
    np.testing.assert_allclose(logits_of(model, exp["input_ids"]), exp["logits"], atol=1e-4)
    ours = logits_of(model, exp["padded_ids"], exp["padded_mask"])
    real = exp["padded_mask"].astype(bool)
    assert not real.all()  # the fixture really is padded
    np.testing.assert_allclose(ours[real], exp["padded_logits"][real], atol=1e-4)


def test_loads_unprefixed_gpt2_names_and_ignores_mask_buffers(tmp_path):
    # The original "gpt2" checkpoint was saved from GPT2Model: no "transformer." prefix, plus
    # attn.bias causal-mask buffers.
    tensors = load_file(FIXTURE / "model.safetensors")
    renamed = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    renamed["h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
    renamed["lm_head.weight"] = tensors["transformer.wte.weight"]
    save_file(renamed, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((FIXTURE / "config.json").read_text())
    model, _ = from_hf(tmp_path)
    exp = expected()
    np.testing.assert_allclose(logits_of(model, exp["input_ids"]), exp["logits"], atol=1e-4)


def test_from_hf_refuses_untied_head_and_missing_weights(tmp_path):
    tensors = load_file(FIXTURE / "model.safetensors")
    (tmp_path / "config.json").write_text((FIXTURE / "config.json").read_text())
    untied = dict(tensors, **{"lm_head.weight": tensors["transformer.wte.weight"] + 1.0})
    save_file(untied, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="lm_head"):
        from_hf(tmp_path)
    missing = {k: v for k, v in tensors.items() if k != "transformer.h.1.mlp.c_fc.bias"}
    save_file(missing, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.bias"):
        from_hf(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError):
        from_hf(tmp_path)


def test_from_hf_refuses_other_activation(tmp_path):
    config = json.loads((FIXTURE / "config.json").read_text())
    config["activation_function"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((FIXTURE / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="activation_function"):
        from_hf(tmp_path)


def test_export_round_trip_and_hf_names(tmp_path):
    model, cfg = from_hf(FIXTURE)
    out = to_hf(model, cfg, tmp_path / "export")
    with safe_open(str(out / "model.safetensors"), framework="numpy") as f:
        exported = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    with safe_open(str(FIXTURE / "model.safetensors"), framework="numpy") as f:
        written_by_hf = set(f.keys())
    assert exported == written_by_hf
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2"
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert config["activation_function"] == "gelu_new"
    assert config["tie_word_embeddings"] is True
    for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        assert config[field] == getattr(cfg, field)
    assert config["layer_norm_epsilon"] == cfg.layer_norm_epsilon
    reloaded, cfg2 = from_hf(out)
    assert cfg2 == cfg
    exp = expected()
    np.testing.assert_array_equal(
        logits_of(reloaded, exp["padded_ids"], exp["padded_mask"]),
        logits_of(model, exp["padded_ids"], exp["padded_mask"]),
    )


def test_value_head_round_trip_and_fresh_init(tmp_path):
    model, cfg = from_hf(FIXTURE, value_head=True, seed=3)
    assert cfg.value_head
    ids = jnp.asarray(expected()["input_ids"])
    values = value_of(model, ids)
    assert values.shape == ids.shape and values.dtype == jnp.float32
    assert float(jnp.abs(values).max()) > 0  # the fresh head is not all zeros
    out = to_hf(model, cfg, tmp_path)
    reloaded, _ = from_hf(out, value_head=True, seed=99)  # loaded, not re-initialised
    np.testing.assert_array_equal(value_of(reloaded, ids), values)
    plain, plain_cfg = from_hf(out)  # an LM-only load drops the head
    assert plain.value_head is None and not plain_cfg.value_head
    with pytest.raises(ValueError, match="value head"):
        plain.value(plain.hidden_states(ids))


def test_left_padding_does_not_change_logits():
    model, _ = from_hf(FIXTURE)
    ids = expected()["input_ids"]  # (3, 12)
    reference = logits_of(model, ids)
    pads = (1, 4, 11)  # row r: its first 12 - pads[r] tokens behind pads[r] pad slots
    padded = np.full_like(ids, 7)
    mask = np.zeros_like(ids)
    for row, pad in enumerate(pads):
        padded[row, pad:] = ids[row, : 12 - pad]
        mask[row, pad:] = 1
    got = logits_of(model, padded, mask)
    assert np.isfinite(got).all()
    for row, pad in enumerate(pads):
        np.testing.assert_allclose(got[row, pad:], reference[row, : 12 - pad], atol=1e-5)


def test_positions_from_mask():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(positions_from_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


def test_cached_decode_matches_full_forward():
    model, _ = from_hf(FIXTURE)
    exp = expected()
    ids, mask = jnp.asarray(exp["padded_ids"]), jnp.asarray(exp["padded_mask"])  # (3, 12)
    full = logits_of(model, ids, mask)

    def prefill_then_steps(model, ids, mask):
        positions = positions_from_mask(mask)
        cache = model.init_cache(3, 14)  # spare slots stay unused
        key_mask = jnp.concatenate([mask, jnp.ones((3, 2), mask.dtype)], axis=1)
        h, cache = model.decode(ids[:, :8], positions[:, :8], key_mask, cache, 0)  # prefill 8
        steps = [model.lm_head(h)]
        for t in range(8, 12):  # then one token at a time
            pos = positions[:, t : t + 1]
            h, cache = model.decode(ids[:, t : t + 1], pos, key_mask, cache, t)
            steps.append(model.lm_head(h))
        return jnp.concatenate(steps, axis=1)

    cached = np.asarray(pure_jit(prefill_then_steps)(*nnx.split(model), ids, mask))
    real = np.asarray(mask).astype(bool)
    np.testing.assert_allclose(cached[real], full[real], atol=1e-5)


def test_sampler_head_layout_and_one_pass_norms_match_the_fixture():
    """The sampler's LM head (a pre-transposed embedding) and its one-pass layer norms give
    HF's logits, as the model's own forms do."""
    model, _ = from_hf(FIXTURE)
    exp = expected()

    def sampler_logits(model, ids):
        model.one_pass_norms()  # on the traced copy
        assert all(b.ln_1.use_fast_variance and b.ln_2.use_fast_variance for b in model.h)
        return model.lm_head(model.hidden_states(ids), model.head_weights())

    graphdef, state = nnx.split(model)
    ours = np.asarray(pure_jit(sampler_logits)(graphdef, state, jnp.asarray(exp["input_ids"])))
    np.testing.assert_allclose(ours, exp["logits"], atol=1e-4)
    assert not nnx.merge(graphdef, state).ln_f.use_fast_variance  # the split state: untouched
    assert model.head_weights().shape == (model.cfg.n_embd, model.cfg.vocab_size)


def test_last_only_prefill_gives_the_last_hidden_state_and_the_same_cache():
    model, _ = from_hf(FIXTURE)
    exp = expected()
    ids, mask = jnp.asarray(exp["padded_ids"]), jnp.asarray(exp["padded_mask"])  # (3, 12)

    def prefill(model, ids, mask, last_only):
        cache = model.init_cache(3, 14)
        key_mask = jnp.concatenate([mask, jnp.ones((3, 2), mask.dtype)], axis=1)
        return model.decode(ids, positions_from_mask(mask), key_mask, cache, 0, last_only)

    run = pure_jit(prefill, static_argnames="last_only")
    full_h, full_cache = run(*nnx.split(model), ids, mask, last_only=False)
    last_h, last_cache = run(*nnx.split(model), ids, mask, last_only=True)
    assert last_h.shape == (3, 1, full_h.shape[-1])
    np.testing.assert_allclose(last_h, full_h[:, -1:], atol=1e-6)
    for a, b in zip(jax.tree.leaves(full_cache), jax.tree.leaves(last_cache), strict=True):
        np.testing.assert_array_equal(a, b)


def test_remat_gives_same_logits_and_gradients():
    ids = jnp.asarray(expected()["input_ids"][:2, :6])
    grads = []
    for remat in (False, True):
        graphdef, state = nnx.split(from_hf(FIXTURE, remat=remat)[0])

        def loss(state, graphdef=graphdef):
            return nnx.merge(graphdef, state)(ids).mean()

        grads.append(jax.jit(jax.grad(loss))(state))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads[0]))


def test_bfloat16_compute_stays_close_to_float32():
    ids = expected()["input_ids"]
    f32 = logits_of(from_hf(FIXTURE)[0], ids)
    bf16_model, cfg = from_hf(FIXTURE, dtype="bfloat16")
    assert cfg.compute_dtype == jnp.bfloat16
    assert bf16_model.h[0].attn.c_attn.kernel[...].dtype == jnp.float32  # weights stay f32
    bf16 = logits_of(bf16_model, ids)
    assert bf16.dtype == np.float32 and np.isfinite(bf16).all()
    assert not np.array_equal(bf16, f32)  # really computed in bf16
    np.testing.assert_allclose(bf16, f32, atol=0.1)


def test_init_model_statistics_and_pure_jit_compiles_once():
    model = init_model(TINY, seed=6)
    assert count_params(model) == count_params(abstract_model(TINY))
    wte = np.asarray(model.wte.embedding[...])
    assert abs(wte.std() - 0.02) < 0.003  # GPT-2 init
    proj = np.asarray(model.h[1].mlp.c_proj.kernel[...])
    assert abs(proj.std() - 0.02 / np.sqrt(2 * TINY.n_layer)) < 0.002  # scaled residual init
    np.testing.assert_array_equal(model.h[0].ln_1.scale[...], 1.0)
    assert not np.array_equal(wte, np.asarray(init_model(TINY, seed=7).wte.embedding[...]))
    graphdef, state = nnx.split(model)
    f = pure_jit(lambda m, ids: m(ids).sum())
    ids = jnp.zeros((2, 5), jnp.int32)
    a = f(graphdef, state, ids)
    state2 = jax.tree.map(lambda x: x * 1.5, state)
    b = f(graphdef, state2, ids + 1)
    c = f(*nnx.split(model), ids)  # a fresh but equal graphdef reuses the program
    assert f.cache_size() == 1
    assert float(c) == float(a)
    assert not np.isclose(float(a), float(b))


def test_preset_param_counts_without_materialising():
    counts = {name: count_params(abstract_model(cfg)) for name, cfg in PRESETS.items()}
    assert 0.8e6 <= counts["nano"] <= 1.3e6
    assert 9e6 <= counts["small"] <= 12e6
    assert counts["gpt2"] == 124_439_808  # HF's GPT2LMHeadModel("gpt2"), tied head counted once
    leaves = jax.tree.leaves(nnx.state(abstract_model(PRESETS["gpt2"])))
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)


def test_vocab_override_keeps_other_fields():
    cfg = dataclasses.replace(PRESETS["nano"], vocab_size=77)
    assert cfg.vocab_size == 77 and cfg.n_embd == PRESETS["nano"].n_embd
    assert count_params(abstract_model(cfg)) < count_params(abstract_model(PRESETS["nano"]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vocab_size", 0),
        ("n_positions", -1),
        ("n_embd", 30),  # not divisible by n_head=4
        ("n_layer", 2.0),
        ("n_head", 0),
        ("layer_norm_epsilon", 0.0),
        ("dtype", "int8"),
        ("param_dtype", "float64"),
        ("remat", "yes"),
        ("value_head", 1),
    ],
)
def test_invalid_config_raises_naming_field(field, value):
    base = dict(vocab_size=10, n_positions=8, n_embd=16, n_layer=1, n_head=4)
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{**base, field: value})


def test_config_normalises_dtype_and_is_hashable():
    cfg = GPTConfig(
        vocab_size=10, n_positions=8, n_embd=16, n_layer=1, n_head=4, dtype=jnp.bfloat16
    )
    assert cfg.dtype == "bfloat16" and cfg.compute_dtype == jnp.bfloat16
    assert hash(cfg) == hash(dataclasses.replace(cfg))
