"""Cached stages: each stage of a comparison is keyed by the hash of everything it depends on,
its result kept in `WORK/stages/<name>-<hash>/stage.json` once it has finished.

A rerun finds the stages whose key is unchanged and takes their results as they are; a changed
setting changes the keys of the stages it reaches (a stage's key includes the keys of the
stages it reads), so only those run again. A stage killed midway has no `stage.json` and runs
again; a training run inside it resumes from its last checkpoint (the engine's own resume).

The progress line names each stage with its place in the plan, the time so far and an ETA:
the plan's stages carry rough cost weights, scaled by how long the finished ones really took.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGE_FILE = "stage.json"
# Part of every key: raised when what a stage computes changes (a fixed evaluator, a new
# field), so results of the older code are not served from the cache.
SCHEMA = 2


def stage_key(name: str, inputs: Any) -> str:
    """A stable hash of a stage's name and inputs (JSON with sorted keys)."""
    text = json.dumps({"stage": name, "schema": SCHEMA, "inputs": inputs}, sort_keys=True,
                      default=str)  # fmt: skip
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")[:80]


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Stages:
    """Run or recall the stages of a plan: `planned` maps each stage name to its rough cost
    (any unit; only ratios matter) in the order they will run."""

    def __init__(self, work: Path, planned: dict[str, float], *, progress: bool = True) -> None:
        self.work, self.planned, self.progress = work, planned, progress
        self.done: dict[str, float] = {}  # name -> the seconds it took (recorded, or now)
        self.ran: list[str] = []  # stages run by this process (not taken from the cache)
        self.cached: list[str] = []
        self.start = time.perf_counter()
        self._fresh_cost = 0.0  # planned cost of the stages this process ran
        self._fresh_seconds = 0.0

    def folder(self, name: str, key: str) -> Path:
        return self.work / "stages" / f"{_slug(name)}-{key}"

    def run(self, name: str, inputs: Any, work: Callable[[Path], dict[str, Any]]) -> dict:
        """The result of stage `name`: from its `stage.json` when one with the same key exists,
        else `work(folder)`, recorded (with its seconds and key) once it returns."""
        key = stage_key(name, inputs)
        folder = self.folder(name, key)
        record_path = folder / STAGE_FILE
        if record_path.exists():
            record = json.loads(record_path.read_text(encoding="utf-8"))
            self.done[name] = record["seconds"]
            self.cached.append(name)
            self._say(name, "cached")
            return record["result"] | {"key": key, "seconds": record["seconds"], "cached": True}
        folder.mkdir(parents=True, exist_ok=True)
        self._say(name, "running")
        began = time.perf_counter()
        result = work(folder)
        seconds = round(time.perf_counter() - began, 1)
        record = {"name": name, "key": key, "inputs": inputs, "seconds": seconds,
                  "result": result}  # fmt: skip
        tmp = record_path.with_name(STAGE_FILE + ".tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(record_path)
        self.done[name] = seconds
        self.ran.append(name)
        self._fresh_cost += self.planned.get(name, 0.0)
        self._fresh_seconds += seconds
        self._say(name, f"done in {_clock(seconds)}")
        return result | {"key": key, "seconds": seconds, "cached": False}

    def eta(self) -> float | None:
        """Seconds left, by the planned costs of the stages not done, at the rate (seconds per
        cost unit) of the stages this process has run; None before the first one."""
        if not self._fresh_cost:
            return None
        left = sum(cost for name, cost in self.planned.items() if name not in self.done)
        return left * self._fresh_seconds / self._fresh_cost

    def _say(self, name: str, what: str) -> None:
        if not self.progress:
            return
        names = list(self.planned)
        place = f"[{names.index(name) + 1}/{len(names)}]" if name in names else "[+]"
        elapsed = _clock(time.perf_counter() - self.start)
        eta = self.eta()
        left = f", ETA {_clock(eta)}" if eta is not None else ""
        print(f"kinrl compare {place} {name}: {what} ({elapsed} so far{left})", file=sys.stderr,
              flush=True)  # fmt: skip
