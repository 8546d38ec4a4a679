"""Process-wide JAX settings the command line applies before it compiles anything.

Host devices (`use_host_devices`): on a CPU-only machine JAX sees one device, and a decoding
step (a few small matrix products per token) runs on one core. Splitting the host into one
JAX device per core and the sampler's batch over them (`trainers.sampling.shard_rows`) runs
the rows in parallel (`benchmarks/bench_sampling.py --cpu-devices 1|2` measures the gain).
Training steps gain nothing (their matrix products already use every core), so only
`kinrl eval` asks for it. `$KINRL_CPU_DEVICES` overrides the count.

The persistent compilation cache: XLA programs (a training step, a sampler) take seconds to
compile on a CPU, and a run compiles one per length bucket. JAX can keep compiled programs on
disk and reuse them in later processes with the same shapes, model and JAX version, so a
second run (or a resumed one, or `kinrl eval` after `kinrl train`) starts at once.

Where: `$KINRL_COMPILATION_CACHE` if set (`off`, `0` or empty disables it), else
`$XDG_CACHE_HOME/kinrl/jax` (`~/.cache/kinrl/jax`). JAX's own `JAX_COMPILATION_CACHE_DIR`, when
set, wins. The cache is trusted code: keep it in a folder only you can write to.

Host memory (`limit_malloc_arenas`, `release_host_memory`): glibc gives each thread that
allocates under contention its own heap arena (up to 8 per core), and XLA's compiler and
runtime threads spread their short-lived buffers over them, so freed memory piles up in
arenas the process never gives back. Two arenas lower a DPO run's peak resident memory
(`benchmarks/bench_dpo.py` reports it; `docs/measurements.md` has the history).
`$KINRL_MALLOC_ARENAS` overrides the count (`0`: glibc's default).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import sys
from pathlib import Path
from typing import Any

import jax

CACHE_ENV = "KINRL_COMPILATION_CACHE"
CPU_DEVICES_ENV = "KINRL_CPU_DEVICES"
ARENAS_ENV = "KINRL_MALLOC_ARENAS"
DEFAULT_ARENAS = 2
MAX_ARENAS = 1024
_M_ARENA_MAX = -8  # glibc's mallopt parameter number
MAX_HOST_DEVICES = 8
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


def host_device_count() -> int:
    """How many CPU devices `use_host_devices` asks for: `$KINRL_CPU_DEVICES` if set, else
    one per core this process may run on (at most 8)."""
    value = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{CPU_DEVICES_ENV} must be a positive integer, got {value!r}")
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_HOST_DEVICES))


def use_host_devices(count: int | None = None) -> int:
    """Split the CPU into `count` JAX devices (default `host_device_count()`). Only possible
    before JAX starts its backends; later (or when `XLA_FLAGS` already sets a count) nothing
    changes. Returns the number of CPU devices in effect once JAX starts."""
    count = host_device_count() if count is None else count
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return jax.device_count("cpu")
    with contextlib.suppress(RuntimeError):  # backends already up: keep what they have
        jax.config.update("jax_num_cpu_devices", count)
    return jax.device_count("cpu")


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (the only one with `mallopt(M_ARENA_MAX)`/`malloc_trim`)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (absent from musl and others)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def limit_malloc_arenas(count: int | None = None) -> int | None:
    """Cap glibc's malloc arenas at `count` (default `$KINRL_MALLOC_ARENAS`, else 2; 0 leaves
    glibc's default). Call it before JAX starts its threads. Returns the cap set, or None
    where nothing changed (not glibc, or 0)."""
    if count is None:
        value = os.environ.get(ARENAS_ENV, "").strip()
        if value and not (value.isdigit() and int(value) <= MAX_ARENAS):
            raise ValueError(f"{ARENAS_ENV} must be an integer in 0..{MAX_ARENAS}, got {value!r}")
        count = int(value) if value else DEFAULT_ARENAS
    libc = _glibc()
    if not 0 < count <= MAX_ARENAS or libc is None:
        return None
    return count if libc.mallopt(_M_ARENA_MAX, count) == 1 else None


def start_process(host_devices: bool = False) -> None:
    """What a `kinrl` command sets before JAX starts: at most two malloc arenas, one device
    per core if `host_devices`, and the persistent compilation cache. ValueError for a bad
    `$KINRL_MALLOC_ARENAS` or `$KINRL_CPU_DEVICES`."""
    limit_malloc_arenas()
    if host_devices:
        use_host_devices()
    enable_compilation_cache()


def trim_host_memory() -> None:
    """Hand the heap's free memory back to the system (glibc's `malloc_trim`; else nothing)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def release_host_memory() -> None:
    """After a one-off phase (e.g. the reference pass): drop every compiled program and JAX's
    tracing caches, then hand the freed heap back to the system (glibc's `malloc_trim`). Later
    calls of any jitted function compile again (or load from the compilation cache)."""
    jax.clear_caches()
    gc.collect()
    trim_host_memory()


class CompiledPerShape:
    """A jitted step `jitted(static, *args)` compiled ahead of time, once per shape of its last
    argument (the batch), with the compiler's freed memory handed back to the system before
    the program first runs.

    XLA's compiler frees hundreds of MB when it is done, but scattered over the heap, and the
    first run's buffers then land above it: compiling and trimming before that run lowers the
    peak resident memory (see `docs/measurements.md`). The other arguments
    (the run's state) must keep their shapes and shardings from call to call."""

    def __init__(self, jitted: Any) -> None:
        self._jitted = jitted
        self._compiled: dict[tuple, tuple[Any, Any]] = {}

    def __call__(self, static: Any, *args: Any) -> Any:
        leaves, tree = jax.tree.flatten(args[-1])
        key = (id(static), tree, tuple((leaf.shape, leaf.dtype) for leaf in leaves))
        entry = self._compiled.get(key)
        if entry is None or entry[0] is not static:  # the stored ref keeps ids unique
            entry = (static, self._jitted.lower(static, *args).compile())
            self._compiled[key] = entry
            trim_host_memory()
        return entry[1](*args)

    def __len__(self) -> int:
        """Number of programs compiled so far."""
        return len(self._compiled)
