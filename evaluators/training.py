"""What a run's training log says about it: the trend of a logged metric over the steps.

    logprob_trend("runs/dpo")["slope"]  # change of the chosen log-prob per 100 steps

The DPO family logs `train/logps/chosen` (the policy's summed log-prob of each chosen
completion, averaged over the step's pairs; `trainers/dpo.py`). A negative slope while the
reward margin grows is likelihood displacement: the chosen completions lose probability along
with the rejected ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

CHOSEN_LOGPS = "train/logps/chosen"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of `RUN/metrics.jsonl` (`trainers.checkpoint.MetricsLog`), [] when there is
    none. A line that is not JSON (a torn last line of a crashed run) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return lines


def logprob_trend(run_dir: str | Path, metric: str = CHOSEN_LOGPS) -> dict[str, Any]:
    """The trend of `metric` (default the chosen log-prob) over a run's logged steps.

    Returns {"first", "last", "slope", "points"}: `points` the (step, value) pairs in step
    order (a step logged twice keeps its last value; non-finite values are left out),
    `first`/`last` the first and last values, and `slope` the ordinary least-squares slope of
    value on step, times 100 (the change per 100 steps). All None (and `points` empty) when
    the run logs no such metric; `slope` is None with fewer than two distinct steps.
    """
    values: dict[int, float] = {}
    for line in read_metrics(run_dir):
        value = line.get(metric)
        if isinstance(value, int | float) and math.isfinite(value) and "step" in line:
            values[int(line["step"])] = float(value)
    points = sorted(values.items())
    if not points:
        return {"first": None, "last": None, "slope": None, "points": []}
    return {
        "first": points[0][1],
        "last": points[-1][1],
        "slope": _slope(points),
        "points": points,
    }


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope per 100 steps, or None with fewer than two distinct steps."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return 100.0 * sxy / sxx
