"""Load and save GPT-2 checkpoints in the Hugging Face layout (config.json + safetensors).

Name mapping, ours (nnx state path) <-> HF (`GPT2LMHeadModel` state dict):

    wte.embedding              <-> transformer.wte.weight            (V, C)
    wpe.embedding              <-> transformer.wpe.weight            (n_positions, C)
    h.{i}.ln_{1,2}.scale/bias  <-> transformer.h.{i}.ln_{1,2}.weight/bias
    h.{i}.attn.c_attn.kernel   <-> transformer.h.{i}.attn.c_attn.weight   (C, 3C)
    h.{i}.attn.c_proj.kernel   <-> transformer.h.{i}.attn.c_proj.weight   (C, C)
    h.{i}.mlp.c_fc.kernel      <-> transformer.h.{i}.mlp.c_fc.weight      (C, 4C)
    h.{i}.mlp.c_proj.kernel    <-> transformer.h.{i}.mlp.c_proj.weight    (4C, C)
    ln_f.scale/bias            <-> transformer.ln_f.weight/bias
    (tied)                     <-> lm_head.weight  (omitted on save; if present on load it
                                                    must equal wte)
    value_head.kernel/bias     <-> v_head.weight (1, C) / v_head.bias (1,)  (ours only;
                                                    transformers ignores these keys)

GPT-2 uses `Conv1D`, whose weight is stored (in, out) -- the same as an `nnx.Linear` kernel --
so no matrix needs transposing. Only the value head is a true `nn.Linear` layout (out, in)
and is transposed. Only safetensors are read (never pickles); no remote code is run.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.traverse_util import unflatten_dict
from safetensors import safe_open
from safetensors.numpy import save_file

from trainers.model import GPT, GPTConfig, abstract_model

_PARAM_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}
# Buffers older GPT-2 checkpoints carry (causal-mask constants), not parameters.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def hf_name(path: tuple[Any, ...]) -> str:
    """Our nnx state path, e.g. ('h', 0, 'attn', 'c_attn', 'kernel') -> HF tensor name."""
    *module, leaf = (str(p) for p in path)
    if module == ["value_head"]:
        return f"v_head.{_PARAM_NAMES[leaf]}"
    return "transformer." + ".".join([*module, _PARAM_NAMES[leaf]])


def config_from_hf(hf_config: dict[str, Any], **overrides: Any) -> GPTConfig:
    """Build a GPTConfig from a GPT-2 config.json dict; refuses variants we do not implement."""
    if hf_config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"not a GPT-2 config: model_type={hf_config.get('model_type')!r}")
    act = hf_config.get("activation_function", "gelu_new")
    if act not in _GELU_TANH:
        raise ValueError(f"unsupported activation_function {act!r}; expected one of {_GELU_TANH}")
    n_embd = hf_config["n_embd"]
    if hf_config.get("n_inner") not in (None, 4 * n_embd):
        raise ValueError(f"unsupported n_inner={hf_config['n_inner']} (only 4 * n_embd)")
    unsupported = {
        "scale_attn_weights": False,
        "scale_attn_by_inverse_layer_idx": True,
        "add_cross_attention": True,
    }
    for key, bad in unsupported.items():
        if hf_config.get(key, not bad) == bad:
            raise ValueError(f"unsupported GPT-2 variant: {key}={bad}")
    if hf_config.get("tie_word_embeddings", True) is False:
        raise ValueError("only tied LM heads are supported (tie_word_embeddings=false)")
    return GPTConfig(
        vocab_size=hf_config["vocab_size"],
        n_positions=hf_config["n_positions"],
        n_embd=n_embd,
        n_layer=hf_config["n_layer"],
        n_head=hf_config["n_head"],
        layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-5)),
        **overrides,
    )


def _resolve(path_or_name: str | os.PathLike[str]) -> pathlib.Path:
    """A local folder as is; otherwise a hub repo id fetched with huggingface_hub."""
    path = pathlib.Path(path_or_name)
    if path.is_dir():
        return path
    if path.exists() or str(path_or_name).startswith((".", "/")):
        raise FileNotFoundError(f"{path_or_name} is not a checkpoint folder")
    from huggingface_hub import snapshot_download  # only needed for hub names

    patterns = ["config.json", "*.safetensors", "model.safetensors.index.json"]
    try:
        return pathlib.Path(snapshot_download(repo_id=str(path_or_name), allow_patterns=patterns))
    except Exception as error:  # offline, unknown repo, bad name: all mean "not found" here
        raise FileNotFoundError(
            f"{path_or_name!r} is not a local folder and could not be fetched from the hub "
            f"({type(error).__name__}: {error})"
        ) from error


def _load_tensors(folder: pathlib.Path) -> dict[str, jax.Array]:
    """All tensors of model.safetensors (or its shards), as jax arrays (keeps bf16 intact)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors in {folder} (pickled weights are refused)")
    tensors: dict[str, jax.Array] = {}
    for name in files:
        with safe_open(str(folder / name), framework="flax") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if key.endswith(_IGNORED_SUFFIXES):
                    continue
                # Checkpoints saved from GPT2Model (e.g. the original "gpt2") lack the prefix.
                if not key.startswith(("transformer.", "lm_head.", "v_head.")):
                    tensors["transformer." + key] = f.get_tensor(key)
                else:
                    tensors[key] = f.get_tensor(key)
    return tensors


def from_hf(
    path_or_name: str | os.PathLike[str],
    *,
    value_head: bool = False,
    seed: int = 0,
    **overrides: Any,
) -> tuple[GPT, GPTConfig]:
    """Load a GPT-2 checkpoint (HF layout) from a folder or hub name -> (model, config).

    `overrides` go to GPTConfig (e.g. dtype="bfloat16", remat=True). With `value_head=True`
    the head is loaded if the checkpoint has `v_head.*`, else freshly initialised from `seed`
    (a reward model starting from a pretrained LM).
    """
    folder = _resolve(path_or_name)
    hf_config = json.loads((folder / "config.json").read_text())
    cfg = config_from_hf(hf_config, value_head=value_head, **overrides)
    tensors = _load_tensors(folder)
    _pop_tied_head(tensors)
    if not value_head:  # a value head in the checkpoint is dropped on purpose
        tensors.pop("v_head.weight", None)
        tensors.pop("v_head.bias", None)
    graphdef, state = nnx.split(abstract_model(cfg))
    fresh_head = value_head and "v_head.weight" not in tensors
    if fresh_head:
        init = nnx.initializers.normal(stddev=0.02)  # as in GPT.__init__
        head = nnx.Linear(cfg.n_embd, 1, kernel_init=init, rngs=nnx.Rngs(seed))
        head_state = nnx.state(head)
        tensors["v_head.weight"] = head_state["kernel"][...].T
        tensors["v_head.bias"] = head_state["bias"][...]
    pure: dict[tuple[Any, ...], jax.Array] = {}
    for path, leaf in nnx.to_flat_state(state):
        name = hf_name(path)
        if name not in tensors:
            raise ValueError(f"checkpoint {folder} lacks tensor {name}")
        array = tensors.pop(name)
        if name == "v_head.weight":
            array = array.T  # nn.Linear (out, in) -> kernel (in, out)
        if array.shape != leaf.shape:
            raise ValueError(f"{name}: checkpoint shape {array.shape} != model {leaf.shape}")
        pure[path] = jnp.asarray(array, dtype=cfg.weight_dtype)
    if tensors:
        raise ValueError(f"unexpected tensors in checkpoint: {sorted(tensors)[:5]}")
    nnx.replace_by_pure_dict(state, unflatten_dict(pure))
    return nnx.merge(graphdef, state), cfg


def _pop_tied_head(tensors: dict[str, jax.Array]) -> None:
    """Drop lm_head.weight if present; it must be the token embedding (tied head)."""
    lm_head = tensors.pop("lm_head.weight", None)
    wte = tensors.get("transformer.wte.weight")
    if lm_head is not None and wte is not None and not np.array_equal(lm_head, wte):
        raise ValueError("lm_head.weight differs from wte: untied heads are not supported")


def hf_config_dict(cfg: GPTConfig, **extra: Any) -> dict[str, Any]:
    """The config.json content `transformers.GPT2LMHeadModel` needs for `cfg`."""
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_positions,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "activation_function": "gelu_new",
        "tie_word_embeddings": True,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "dtype": "float32",
        # HF's GPT2Config defaults these to 50256, which is out of range for small vocabularies;
        # pass the tokenizer's ids through `extra` when they exist.
        "bos_token_id": None,
        "eos_token_id": None,
        **extra,
    }


def to_hf(
    model: GPT, cfg: GPTConfig, out_dir: str | os.PathLike[str], **config_extra: Any
) -> pathlib.Path:
    """Write `model` as a HF GPT-2 checkpoint (config.json + model.safetensors, float32).

    `GPT2LMHeadModel.from_pretrained(out_dir)` loads the result; `config_extra` adds keys such
    as bos_token_id / eos_token_id to config.json. Returns the folder path.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        name = hf_name(path)
        array = np.asarray(jnp.asarray(leaf[...], jnp.float32))
        if name == "v_head.weight":
            array = array.T  # kernel (in, out) -> nn.Linear (out, in)
        tensors[name] = np.ascontiguousarray(array)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = hf_config_dict(cfg, **config_extra)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
