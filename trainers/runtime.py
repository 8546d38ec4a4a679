"""Process-wide JAX settings the command line applies before it compiles anything.

The persistent compilation cache: XLA programs (a training step, a sampler) take seconds to
compile on a CPU, and a run compiles one per length bucket. JAX can keep compiled programs on
disk and reuse them in later processes with the same shapes, model and JAX version, so a
second run (or a resumed one, or `kinrl eval` after `kinrl train`) starts at once.

Where: `$KINRL_COMPILATION_CACHE` if set (`off`, `0` or empty disables it), else
`$XDG_CACHE_HOME/kinrl/jax` (`~/.cache/kinrl/jax`). JAX's own `JAX_COMPILATION_CACHE_DIR`, when
set, wins. The cache is trusted code: keep it in a folder only you can write to.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

CACHE_ENV = "KINRL_COMPILATION_CACHE"
_OFF = {"", "0", "off", "false", "no"}


def compilation_cache_dir() -> Path | None:
    """The folder the persistent compilation cache should use, or None when disabled."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    if CACHE_ENV in os.environ:
        value = os.environ[CACHE_ENV].strip()
        return None if value.lower() in _OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kinrl" / "jax"


def enable_compilation_cache(min_compile_seconds: float = 0.5) -> Path | None:
    """Turn on JAX's persistent compilation cache (see the module docstring) for programs that
    took at least `min_compile_seconds` to compile; returns the folder, or None if disabled
    or not writable (then nothing changes: compiling still works, it is just not kept)."""
    folder = compilation_cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return folder
