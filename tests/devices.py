"""Run a test script in a child process whose CPU is split into several JAX devices.

`XLA_FLAGS` must give the CPU its devices before jax is imported, which an already-running
test process cannot do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_on_cpu_devices(script: str, *args: str, devices: int = 4) -> Any:
    """Run `python -c script args...` with `devices` CPU devices and the repository on the
    path; assert it succeeded and return the JSON on its last line of output."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
