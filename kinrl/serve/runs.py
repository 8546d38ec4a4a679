"""What answers a puzzle: trained runs, and two baselines that need no model.

A `Policy` completes a prompt `n` times at a temperature (0 = greedy). `TrainedRun` is a run
folder's policy (`trainers.checkpoint.load_policy`), decoded by the KV-cache sampler through
`evaluators.accuracy.complete`; JAX is imported when the first run is loaded. The baselines
(`kinrl serve --baselines`) answer from the puzzle itself: `reference` gives the record's
reference completion (always right), `negative` a wrong one made as the simulated pairs' are
(`tasks/kinship/negatives.py`). They calibrate annotators (a person who prefers `negative`
is not reading closely) and let the page be tried, and load-tested, without a trained model.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

# One model call at a time: JAX already uses every core for one batch, and two decodes at once
# would only contend for them.
_MODEL_LOCK = threading.Lock()


class NeedsRecord(ValueError):
    """A baseline asked to answer a bare prompt (it answers from a puzzle's record)."""


class Policy(Protocol):
    name: str
    kind: str  # "run" or "baseline"

    def complete(
        self, prompt: str, record: Mapping[str, Any] | None, n: int, temperature: float, seed: int
    ) -> list[str]: ...

    def describe(self) -> dict[str, Any]: ...


def parse_run_spec(text: str) -> tuple[str, str, int | None]:
    """`NAME=RUN` or `NAME=RUN@STEP` -> (name, run folder, step or None)."""
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not name or not path:
        raise ValueError(f"--run must look like NAME=RUN or NAME=RUN@STEP (got {text!r})")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", name):
        raise ValueError(
            f"--run name {name!r} must be 1-64 letters, digits or _.+- (starting with a letter or "
            "digit)"
        )
    step = None
    match = re.fullmatch(r"(.+)@(\d+)", path)
    if match and not Path(path).exists():
        path, step = match.group(1), int(match.group(2))
    return name, path, step


class TrainedRun:
    """A run folder's policy at its latest checkpoint (or `step`)."""

    kind = "run"

    def __init__(self, name: str, path: str, step: int | None = None,
                 max_new_tokens: int = 256) -> None:  # fmt: skip
        from trainers.checkpoint import load_policy  # JAX, only when a run is served

        self.name, self.path, self.step, self.max_new_tokens = name, path, step, max_new_tokens
        self.model, self.model_config, self.tokenizer = load_policy(path, step=step)

    def complete(
        self, prompt: str, record: Mapping[str, Any] | None, n: int, temperature: float, seed: int
    ) -> list[str]:
        from evaluators.accuracy import complete

        prompt = prompt if prompt.endswith("\n") else prompt + "\n"
        copies = 1 if temperature == 0 else n
        rows = 1 << (copies - 1).bit_length()  # a power of two: few shapes to compile
        with _MODEL_LOCK:
            out = complete(
                self.model, self.tokenizer, [prompt] * copies, batch_size=rows,
                max_new_tokens=self.max_new_tokens, temperature=temperature, seed=seed,
            )  # fmt: skip
        if out[0] is None:
            raise ValueError(f"the prompt leaves run {self.name!r} no room in its context")
        texts = [text or "" for text in out]
        return texts * n if copies == 1 else texts

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "path": self.path, "step": self.step,
                "n_positions": self.model_config.n_positions}  # fmt: skip


class Reference:
    """The record's own reference completion: the gold answer with its reasoning chain."""

    kind = "baseline"
    name = "reference"

    def complete(
        self, prompt: str, record: Mapping[str, Any] | None, n: int, temperature: float, seed: int
    ) -> list[str]:
        if record is None or not isinstance(record.get("completion"), str):
            raise NeedsRecord("run 'reference' answers puzzles with a reference completion only")
        return [record["completion"]] * n

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind,
                "what": "the puzzle's reference completion (always right)"}  # fmt: skip


class Negative:
    """A wrong completion of the puzzle, of a kind drawn as in the simulated preference data."""

    kind = "baseline"
    name = "negative"

    def complete(
        self, prompt: str, record: Mapping[str, Any] | None, n: int, temperature: float, seed: int
    ) -> list[str]:
        from tasks.kinship.negatives import make_negative
        from tasks.kinship.pairs import default_negative_weights

        if record is None or not isinstance(record.get("completion"), str):
            raise NeedsRecord("run 'negative' answers puzzles with a reference completion only")
        weights = dict(default_negative_weights())
        out = []
        for i in range(n):
            rng = random.Random(f"kinrl/serve/negative/{record.get('id')}/{seed}/{i}")
            out.append(make_negative(record, rng, weights, min_margin=1e-9)[1])
        return out

    def describe(self) -> dict[str, Any]:
        what = "a wrong completion made like the simulated pairs' rejected side"
        return {"name": self.name, "kind": self.kind, "what": what}


BASELINES: dict[str, type] = {"reference": Reference, "negative": Negative}
