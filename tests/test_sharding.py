"""Sharding: the FSDP rule, and a 2 x 2 (data x fsdp) run equal to a single-device run.

The multi-device test runs in a subprocess: XLA_FLAGS must give the CPU 4 devices before jax
is imported, which this (already importing) test process cannot do.
"""

from __future__ import annotations

import textwrap

import pytest
from jax.sharding import PartitionSpec as P

from tests.devices import run_on_cpu_devices
from trainers.sharding import initialize_distributed, param_spec


@pytest.mark.parametrize(
    ("shape", "fsdp", "spec"),
    [
        ((1056, 32), 2, P("fsdp", None)),  # the largest divisible dimension
        ((32, 96), 2, P(None, "fsdp")),
        ((33, 64), 4, P(None, "fsdp")),  # 33 is larger but not divisible
        ((64, 64), 2, P("fsdp", None)),  # ties go to the first
        ((3, 5), 2, P()),  # nothing divisible: replicated
        ((), 2, P()),  # scalars (Adam's count) replicated
        ((1056, 32), 1, P()),  # no fsdp axis: replicated
    ],
)
def test_param_spec(shape, fsdp, spec):
    assert param_spec(shape, fsdp) == spec


def test_distributed_is_not_initialised_unless_asked():
    assert initialize_distributed() is False


SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, sys
    import jax, numpy as np
    from safetensors.numpy import load_file
    from tasks.kinship import KinshipConfig, generate_dataset
    from trainers.checkpoint import Checkpoints, MetricsLog
    from trainers.model import PRESETS, GPTConfig
    from trainers.config import SFTConfig
    from trainers.engine import open_run
    from trainers.sharding import make_mesh

    out = sys.argv[1]
    assert len(jax.devices()) == 4
    PRESETS["tiny"] = GPTConfig(vocab_size=1, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    generate_dataset(out + "/data", KinshipConfig.for_level(1), 200, seed=7, progress=False)
    base = SFTConfig(preset="tiny", steps=4, batch_size=8, grad_accum=2, warmup_steps=1,
                     learning_rate=3e-3, eval_examples=16, save_interval=4)
    runs = {
        "single": (base, make_mesh(1, jax.devices()[:1])),
        "sharded": (dataclasses.replace(base, fsdp_devices=2, shard_params=True), make_mesh(2)),
    }
    report = {}
    for name, (config, mesh) in runs.items():
        run = open_run("sft", config, out + "/data", out + "/" + name, progress=False, mesh=mesh)
        _, placed, _ = run.initial_state(Checkpoints(out + "/probe-" + name))
        leaves = jax.tree.leaves(placed.params)
        specs = {json.dumps(list(leaf.sharding.spec)) for leaf in leaves}
        report[name + "_specs"] = sorted(specs)
        report[name + "_mesh"] = dict(mesh.shape)
        run.train()
        report[name + "_metrics"] = MetricsLog(out + "/" + name).read()
    a = load_file(out + "/single/hf/model.safetensors")
    b = load_file(out + "/sharded/hf/model.safetensors")
    # The key bias gets a gradient that is zero in exact arithmetic (softmax ignores a shift
    # shared by all keys); Adam rescales its float noise to updates of size ~lr, so it is
    # compared apart, in absolute terms.
    key_bias = {k: slice(32, 64) for k in a if k.endswith("c_attn.bias")}
    rel, key_abs = {}, {}
    for k in a:
        diff = np.abs(a[k] - b[k])
        if k in key_bias:
            key_abs[k] = float(diff[key_bias[k]].max())
            diff[key_bias[k]] = 0.0
        rel[k] = float(diff.max() / np.abs(a[k]).max())
    report["rel_diff"], report["key_bias_abs_diff"] = rel, key_abs
    print(json.dumps(report))
    """
)


def test_sharded_fsdp_run_equals_single_device_run(tmp_path):
    report = run_on_cpu_devices(SCRIPT, str(tmp_path), devices=4)
    assert report["single_mesh"] == {"data": 1, "fsdp": 1}
    assert report["sharded_mesh"] == {"data": 2, "fsdp": 2}
    assert report["single_specs"] == ["[]"]  # replicated
    assert '["fsdp", null]' in report["sharded_specs"]  # e.g. wte (1056, 32)
    assert '[null, "fsdp"]' in report["sharded_specs"]  # e.g. c_attn (32, 96)
    single, sharded = report["single_metrics"], report["sharded_metrics"]
    assert [m["step"] for m in single] == [m["step"] for m in sharded] and len(single) >= 4
    for a, b in zip(single, sharded, strict=True):
        for key in ("train/loss", "train/grad_norm", "eval/loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a["step"])
    assert max(report["rel_diff"].values()) < 1e-5, report["rel_diff"]
    steps, lr = 4, 3e-3
    assert max(report["key_bias_abs_diff"].values()) < steps * lr
