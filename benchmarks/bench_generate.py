"""Kinship generator throughput and streaming memory (a benchmark, not a test).

    python benchmarks/bench_generate.py                  # examples/s per level, one core
    python benchmarks/bench_generate.py --stream 1000000 --num-proc 2  # + `kinrl generate`
                                                         # of a million: time, peak RSS

With `reasoning-gym` installed (`pip install reasoning-gym`), its `family_relationships`
generator runs side by side as the comparator, alternating with ours so that machine load
hits both alike, and the ratio is reported. Prints JSON. "records/s" makes records in memory
(generation + the solvability check) and drops them; "jsonl/s" also serialises each one as
`kinrl generate` does; each figure is the best of `--rounds` passes. One process (one core).

The generator runs compiled with mypyc when installed with a C compiler (`tasks.kinship.ENGINE`
says which); the same levels are then measured again on the Python sources in a child process
(KINRL_PURE_PYTHON=1) for the speed-up, in child processes that alternate round by round.
`--engine-only` measures only this install's engine, in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from tasks.io import json_line
from tasks.kinship import ENGINE, KinshipConfig, make_example


def throughput(level: int, n: int, rounds: int = 3, seed: int = 0) -> dict[str, object]:
    config = KinshipConfig.for_level(level)
    for i in range(min(n, 500)):  # warm up: name pools, term caches, the allocator
        make_example(config, seed + 1, i)
    made = written = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(n):
            make_example(config, seed, i)
        made = min(made, time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(n):  # as `kinrl generate` does: each record to a JSON line at once
            json_line(make_example(config, seed, i))
        written = min(written, time.perf_counter() - start)
    return {
        "engine": ENGINE,
        "level": level,
        "n": n,
        "records_per_s": round(n / made),
        "jsonl_per_s": round(n / written),
    }


def engines_side_by_side(levels: list[int], n: int, rounds: int) -> list[dict[str, object]]:
    """Rows for the compiled build and the Python sources (KINRL_PURE_PYTHON=1), each round
    one child process per engine, alternating so that the machine's drift hits both alike;
    the best round counts."""
    command = [sys.executable, __file__, "--engine-only", "--n", str(n), "--rounds", "1"]
    command += ["--levels", *map(str, levels)]
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for _ in range(rounds):
        for pure in ("0", "1"):
            env = {**os.environ, "KINRL_PURE_PYTHON": pure}
            out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            for line in out.stdout.splitlines():
                row = json.loads(line)
                key = (str(row["engine"]), int(row["level"]))
                if key not in best or row["records_per_s"] > best[key]["records_per_s"]:
                    best[key] = row
    rows = []
    for level in levels:
        compiled, source = best[("mypyc", level)], best[("python", level)]
        speedup = round(compiled["records_per_s"] / source["records_per_s"], 2)
        rows += [compiled, {**source, "compiled_speedup": speedup}]
    return rows


def comparator(n: int, rounds: int = 3) -> dict[str, float] | None:
    """reasoning-gym's family_relationships items/s and ours at level 3, interleaved."""
    try:
        import reasoning_gym
    except ImportError:
        return None
    config = KinshipConfig.for_level(3)
    theirs, ours = [], []
    for round_ in range(rounds):
        dataset = reasoning_gym.create_dataset("family_relationships", size=n, seed=round_)
        start = time.perf_counter()
        for i in range(n):
            dataset[i]
        theirs.append(n / (time.perf_counter() - start))
        start = time.perf_counter()
        for i in range(n):
            make_example(config, round_, i)
        ours.append(n / (time.perf_counter() - start))
    best_theirs, best_ours = max(theirs), max(ours)
    return {
        "comparator": "reasoning_gym family_relationships",
        "engine": ENGINE,
        "theirs_items_per_s": round(best_theirs),
        "ours_level3_records_per_s": round(best_ours),
        "ratio_ours_over_theirs": round(best_ours / best_theirs, 3),
    }


# Runs a command and prints the peak RSS (KiB) of the largest process it started: getrusage's
# RUSAGE_CHILDREN of this fresh process covers that command alone, not earlier benchmarks.
_PEAK_RSS = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def stream(n: int, level: int, num_proc: int) -> dict[str, float]:
    """Run `kinrl generate` for n examples in a child process; report time and peak RSS."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "kinrl.cli", "generate", "--out", f"{folder}/d"]
        command += ["--n", str(n), "--difficulty", str(level), "--num-proc", str(num_proc)]
        command += ["--quiet"]
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, *command], check=True, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        peak_kib = int(out.stdout.split()[-1])
    return {
        "stream_n": n,
        "level": level,
        "num_proc": num_proc,
        "seconds": round(seconds, 1),
        "examples_per_s": round(n / seconds),
        "peak_rss_mib_of_largest_process": round(peak_kib / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 3, 5, 8, 10])
    parser.add_argument("--n", type=int, default=3000, help="records per level")
    parser.add_argument("--stream", type=int, default=0, help="also stream this many to disk")
    parser.add_argument("--stream-level", type=int, default=3)
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="passes per level (best counts)")
    parser.add_argument(
        "--engine-only",
        action="store_true",
        help="only this install's engine: no Python-source rows, no comparator",
    )
    args = parser.parse_args()
    if args.engine_only or ENGINE == "python":
        results = [throughput(level, args.n, args.rounds) for level in args.levels]
    else:
        results = engines_side_by_side(args.levels, args.n, args.rounds)
    for row in results:
        print(json.dumps(row), flush=True)
    side_by_side = None if args.engine_only else comparator(args.n)
    if side_by_side:
        print(json.dumps(side_by_side), flush=True)
    if args.stream:
        print(json.dumps(stream(args.stream, args.stream_level, args.num_proc)), flush=True)


if __name__ == "__main__":
    main()
