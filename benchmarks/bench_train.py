"""Training throughput of the SFT step as a fraction of this machine's matmul peak (a benchmark,
not a test).

    python benchmarks/bench_train.py                          # small preset, batch 16 x 256
    python benchmarks/bench_train.py --preset nano --batch 32 --seq 128

Prints JSON. Peak: the best float32 GFLOP/s of a jitted (n x n) @ (n x n) `jnp.dot`.
Training FLOPs per step (the PaLM / nanoGPT count):
    6 * N * tokens                 N = parameters in matmuls: the blocks' kernels plus the
                                   tied LM head (V x C); embeddings lookups, biases and
                                   LayerNorms are left out
  + 12 * n_layer * C * T * tokens  attention scores and weighted values, forward and backward,
                                   over the full T x T square (no causal halving)
Every token is a real token (no padding) and every position carries loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from trainers.config import SFTConfig
from trainers.data import Batch
from trainers.engine import make_optimizer
from trainers.model import PRESETS, init_model
from trainers.sft import sft_step
from trainers.tokenizer import kinship_tokenizer


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a float32 (n, n) @ (n, n) product."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def matmul_params(state: nnx.State) -> int:
    """Parameters that take part in matmuls: every 2-D kernel, and wte (the tied LM head)."""
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        name = jax.tree_util.keystr(path)
        if "kernel" in name or "wte" in name:
            total += math.prod(leaf.shape)
    return total


def train_throughput(preset: str, batch: int, seq: int, steps: int, bf16: bool) -> dict:
    vocab = len(kinship_tokenizer())
    config = SFTConfig(preset=preset, batch_size=batch, warmup_steps=0, bf16=bf16)
    cfg = config.model_config(vocab)
    cfg = dataclasses.replace(cfg, n_positions=max(cfg.n_positions, seq))
    graphdef, state = nnx.split(init_model(cfg))
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(state)
    step = jax.jit(sft_step, static_argnums=0, static_argnames="optimizer", donate_argnums=(1, 2))
    tokens = np.random.default_rng(0).integers(3, vocab, (1, batch, seq), dtype=np.int32)
    ones = np.ones_like(tokens)
    data = jax.device_put(Batch(tokens, ones, ones.astype(np.float32)))
    state, opt_state, metrics = step(graphdef, state, opt_state, data, optimizer=optimizer)
    jax.block_until_ready(metrics)  # compile and warm up
    start = time.perf_counter()
    for _ in range(steps):
        state, opt_state, metrics = step(graphdef, state, opt_state, data, optimizer=optimizer)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / steps
    n_tokens = batch * seq
    n_matmul = matmul_params(state)
    flops = 6 * n_matmul * n_tokens + 12 * cfg.n_layer * cfg.n_embd * seq * n_tokens
    return {
        "preset": preset,
        "batch": batch,
        "seq_len": seq,
        "compute_dtype": cfg.dtype,
        "matmul_params": n_matmul,
        "step_s": round(seconds, 4),
        "tokens_per_s": round(n_tokens / seconds),
        "train_gflops": round(flops / seconds / 1e9, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--peak-n", type=int, default=2048, help="matmul size for the peak")
    args = parser.parse_args()
    peak = matmul_peak(args.peak_n)
    result = train_throughput(args.preset, args.batch, args.seq, args.steps, args.bf16)
    result["peak_matmul_gflops"] = round(peak, 2)
    result["fraction_of_peak"] = round(result["train_gflops"] / peak, 3)
    result["devices"] = [str(d) for d in jax.devices()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
