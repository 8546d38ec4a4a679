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
