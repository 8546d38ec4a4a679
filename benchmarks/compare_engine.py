"""Same metrics and speed as an earlier commit: the training engine's behaviour check.

    python benchmarks/compare_engine.py --against 9fef2c7            # metrics, short runs
    python benchmarks/compare_engine.py --against 9fef2c7 --speed    # + tokens/s and pairs/s

Checks out `--against` in a temporary git worktree and runs the same `kinrl train` commands
with both trees (each in its own process, the tree first on PYTHONPATH), on datasets the
current tree generates once: SFT (with the old default `--prompt-loss-weight 0` given), the
reward model, DPO with the sigmoid, IPO and SimPO losses, and KTO. Every value of every
`metrics.jsonl` line must agree to `--rtol` (timing values excepted); the script prints the
largest relative difference per run and exits 1 if one is over.

`--speed` then times longer SFT and DPO runs, alternating the two trees `--rounds` times, and
reports the median over rounds of each run's median steady-state rate (`train/tokens_per_s`,
`train/examples_per_s` of the log windows after the first, which holds the compilation).

Measured 2026-12-04 against 9fef2c7 (the commit before the engine), 2 CPU cores:
- metrics: sft, rm, dpo-sigmoid, dpo-ipo, dpo-simpo and kto, 14 lines each, largest relative
  difference 0 (identical floats); the engine adds `train/epoch` to the preference methods'
  lines (SFT had it already) and loses no key;
- speed (`--speed --rounds 3`): SFT tokens/s old 13,284 / new 14,822 (rounds 13,179, 14,832,
  13,284 vs 14,822, 15,263, 12,939): 1.12, within the machine's noise; DPO pairs/s old 188.2 /
  new 204.3 (188.2, 187.5, 215.4 vs 197.1, 215.4, 204.3): 1.09, within noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMING = {"train/tokens_per_s", "train/examples_per_s"}
SHORT = ["--steps", "12", "--batch-size", "8", "--warmup-steps", "2", "--log-interval", "4",
         "--eval-interval", "6", "--eval-examples", "24", "--save-interval", "6",
         "--quiet"]  # fmt: skip
CASES = {
    "sft": ("sft", "examples", ["--prompt-loss-weight", "0", "--learning-rate", "3e-3"]),
    "rm": ("rm", "pairs", []),
    "dpo-sigmoid": ("dpo", "pairs", ["--loss", "sigmoid"]),
    "dpo-ipo": ("dpo", "pairs", ["--loss", "ipo", "--beta", "0.5"]),
    "dpo-simpo": ("dpo", "pairs", ["--loss", "simpo"]),
    "kto": ("kto", "feedback", ["--desirable-weight", "1.5"]),
}


def kinrl(tree: Path, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree), KINRL_COMPILATION_CACHE="off")
    code = "import sys; from kinrl.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, env=env,
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{tree}: kinrl {' '.join(args)} failed:\n{result.stderr[-2000:]}")


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def largest_difference(a: list[dict], b: list[dict]) -> tuple[float, set[str], set[str]]:
    """The largest relative difference of the values both logs have, and the keys only the
    first / only the second has (a new metric is fine; a lost or changed one is not)."""
    if [x["step"] for x in a] != [x["step"] for x in b]:
        return float("inf"), set(), set()
    worst, only_a, only_b = 0.0, set(), set()
    for x, y in zip(a, b, strict=True):
        only_a |= set(x) - set(y)
        only_b |= set(y) - set(x)
        for key in (set(x) & set(y)) - TIMING:
            scale = max(abs(x[key]), abs(y[key]), 1e-12)
            worst = max(worst, abs(x[key] - y[key]) / scale)
    return worst, only_a - TIMING, only_b - TIMING


def rate(run: Path, key: str) -> float:
    values = [line[key] for line in metrics(run) if key in line]
    return statistics.median(values[1:] or values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the earlier commit")
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--speed", action="store_true", help="also compare tokens/s, pairs/s")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kinrl-compare-"))
    old = work / "old"
    subprocess.run(["git", "worktree", "add", "--detach", str(old), args.against], cwd=REPO,
                   check=True, capture_output=True)  # fmt: skip
    try:
        data = {"examples": work / "l1", "pairs": work / "pairs", "feedback": work / "kto"}
        kinrl(REPO, "generate", "--out", str(data["examples"]), "--difficulty", "1", "--n",
              "3000", "--quiet")  # fmt: skip
        kinrl(REPO, "generate", "--out", str(data["pairs"]), "--difficulty", "1", "--n", "1500",
              "--kind", "preference", "--quiet")  # fmt: skip
        kinrl(REPO, "generate", "--out", str(data["feedback"]), "--difficulty", "1", "--n",
              "1500", "--kind", "feedback", "--desirable-ratio", "1:2", "--quiet")  # fmt: skip
        failed = False
        for name, (method, kind, extra) in CASES.items():
            runs = {}
            for label, tree in (("old", old), ("new", REPO)):
                runs[label] = work / f"{label}-{name}"
                kinrl(tree, "train", method, "--data", str(data[kind]), "--out",
                      str(runs[label]), *SHORT, *extra)  # fmt: skip
            worst, lost, added = largest_difference(metrics(runs["old"]), metrics(runs["new"]))
            failed |= worst > args.rtol or bool(lost)
            print(f"{name:12s} {len(metrics(runs['new']))} lines, largest relative difference "
                  f"{worst:.2e}; keys lost {sorted(lost) or 'none'}, added "
                  f"{sorted(added) or 'none'}")  # fmt: skip
        if args.speed:
            long = {"sft": ("sft", "examples", "train/tokens_per_s",
                            ["--steps", "150", "--prompt-loss-weight", "0"]),
                    "dpo": ("dpo", "pairs", "train/examples_per_s", ["--steps", "80"])}  # fmt: skip
            for name, (method, kind, key, steps) in long.items():
                rates: dict[str, list[float]] = {"old": [], "new": []}
                for round_ in range(args.rounds):
                    for label, tree in (("old", old), ("new", REPO)):
                        run = work / f"speed-{label}-{name}-{round_}"
                        kinrl(
                            tree,
                            "train",
                            method,
                            "--data",
                            str(data[kind]),
                            "--out",
                            str(run),
                            "--batch-size",
                            "16",
                            "--log-interval",
                            "10",
                            "--quiet",
                            "--eval-interval",
                            "0",
                            *steps,
                        )
                        rates[label].append(rate(run, key))
                old_rate, new_rate = (statistics.median(rates[k]) for k in ("old", "new"))
                print(f"{name} {key}: old {old_rate:.1f}, new {new_rate:.1f} "
                      f"(new/old {new_rate / old_rate:.3f}; rounds {rates})")  # fmt: skip
        return 1 if failed else 0
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO,
                       capture_output=True)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
