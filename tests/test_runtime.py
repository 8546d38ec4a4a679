import subprocess
import sys
from pathlib import Path

from trainers.runtime import CACHE_ENV, compilation_cache_dir


def test_cache_folder_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache_dir() == tmp_path / "kinrl" / "jax"
    for off in ("off", "0", "", "OFF"):
        monkeypatch.setenv(CACHE_ENV, off)
        assert compilation_cache_dir() is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert compilation_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax's"))
    assert compilation_cache_dir() == tmp_path / "jax's"


_CHILD = """
import jax, jax.numpy as jnp
from trainers.runtime import enable_compilation_cache
print(enable_compilation_cache(min_compile_seconds=0.0))
f = jax.jit(lambda x: jnp.sin(x) @ x.T + 1.0)
f(jnp.ones((64, 64))).block_until_ready()
"""


def test_compiled_programs_are_written_to_the_cache_and_reused(tmp_path):
    folder = tmp_path / "cache"
    env = {"PATH": "/usr/bin:/bin", CACHE_ENV: str(folder), "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    first = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert first.stdout.strip() == str(folder)
    entries = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    assert entries, "nothing was written to the compilation cache"
    subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True, capture_output=True)
    # A hit reads the entry; a miss would compile again and write it anew.
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == entries


def test_host_device_count_reads_the_environment(monkeypatch):
    import pytest

    from trainers.runtime import CPU_DEVICES_ENV, MAX_HOST_DEVICES, host_device_count

    monkeypatch.setenv(CPU_DEVICES_ENV, "3")
    assert host_device_count() == 3
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv(CPU_DEVICES_ENV, bad)
        with pytest.raises(ValueError, match=CPU_DEVICES_ENV):
            host_device_count()
    monkeypatch.delenv(CPU_DEVICES_ENV)
    assert 1 <= host_device_count() <= MAX_HOST_DEVICES


_SHARDED_SAMPLING = """
import json, sys
import numpy as np
from trainers.runtime import use_host_devices
print(use_host_devices())  # KINRL_CPU_DEVICES=2: before jax starts
import jax
from flax import nnx
from trainers.model import PRESETS, GPTConfig, init_model
from trainers.sampling import _row_mesh, generate, shard_rows

cfg = GPTConfig(vocab_size=64, n_positions=48, n_embd=32, n_layer=2, n_head=2)
graphdef, state = nnx.split(init_model(cfg, 0))
rng = np.random.default_rng(0)
ids = rng.integers(1, 64, (6, 10)).astype(np.int32)
mask = np.ones_like(ids)
mask[0, :4] = 0  # a left-padded row
kw = dict(max_new_tokens=26, eos_id=3, pad_id=0)  # 26: the cache grows once per device
outs = []
for args in ((state, ids, mask), shard_rows(state, ids, mask)):
    greedy = generate(graphdef, *args, jax.random.key(1), greedy=True, **kw)
    sampled = generate(graphdef, *args, jax.random.key(1), temperature=0.8, top_k=20, **kw)
    outs.append([np.asarray(x).tolist() for x in (*greedy[:1], greedy.lengths, sampled.tokens)])
    outs.append(len(getattr(args[1], 'sharding', None) and args[1].sharding.device_set or [0]))
    mesh = _row_mesh(*args[1:])
    outs.append(None if mesh is None else mesh.size)  # split rows: one loop per device
# shard_rows' replicated weights: one host buffer that both CPU devices read
placed = shard_rows(state, ids, mask)[0]
shared = [len({s.data.unsafe_buffer_pointer() for s in leaf.addressable_shards}) == 1
          for leaf in jax.tree.leaves(placed)]
again = shard_rows(placed, ids, mask)[0]  # placed already: kept, not copied per batch
kept = all(a is b for a, b in zip(jax.tree.leaves(placed), jax.tree.leaves(again)))
print(sum(shared), len(shared), int(kept))
print(json.dumps(outs))
"""


def test_rows_split_over_host_devices_sample_the_same_tokens():
    import json

    env = {"PATH": "/usr/bin:/bin", "KINRL_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu",
           "KINRL_COMPILATION_CACHE": "off",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _SHARDED_SAMPLING], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "2"
    single, single_devices, single_mesh, split, split_devices, split_mesh = json.loads(lines[-1])
    shared, leaves, kept = map(int, lines[-2].split())
    assert shared == leaves > 0  # every weight is one buffer for both devices
    assert kept  # and a state placed once is not copied again
    assert (single_devices, split_devices) == (1, 2)
    assert (single_mesh, split_mesh) == (None, 2)  # shard_map over the split rows
    assert split == single  # greedy tokens and lengths, and seeded samples, row for row


def test_compiled_per_shape_compiles_once_per_batch_shape_and_matches_jit():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from trainers.runtime import CompiledPerShape

    def step(scale, state, batch):
        return state + scale * jnp.sum(batch["x"], axis=0), jnp.mean(batch["x"])

    jitted = jax.jit(step, static_argnums=0, donate_argnums=1)
    compiled = CompiledPerShape(jitted)
    state = jnp.zeros(3)
    for rows in (4, 4, 8, 4):
        batch = {"x": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)}
        want = step(2.0, state, batch)
        state, mean = compiled(2.0, state, batch)
        np.testing.assert_allclose(state, want[0])
        np.testing.assert_allclose(mean, want[1])
    assert len(compiled) == 2  # shapes (4, 3) and (8, 3)
    compiled(3.0, state, batch)  # another static argument: another program
    assert len(compiled) == 3


def test_malloc_arena_limit_reads_the_environment(monkeypatch):
    import pytest

    from trainers.runtime import ARENAS_ENV, limit_malloc_arenas

    monkeypatch.setenv(ARENAS_ENV, "two")
    with pytest.raises(ValueError, match=ARENAS_ENV):
        limit_malloc_arenas()
    monkeypatch.setenv(ARENAS_ENV, str(2**40))
    with pytest.raises(ValueError, match=ARENAS_ENV):
        limit_malloc_arenas()
    monkeypatch.setenv(ARENAS_ENV, "0")
    assert limit_malloc_arenas() is None  # glibc's default left alone
