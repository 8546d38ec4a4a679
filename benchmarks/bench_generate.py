"""Kinship generator throughput and streaming memory (a benchmark, not a test).

    python benchmarks/bench_generate.py                  # examples/s per level, one core
    python benchmarks/bench_generate.py --stream 1000000 # + a streamed write, peak RSS

With `reasoning-gym` installed (`pip install reasoning-gym`), its `family_relationships`
generator runs side by side as the comparator, alternating with ours so that machine load
hits both alike, and the ratio is reported. Prints JSON. "records/s" makes records in memory
(generation + the solvability check); "jsonl/s" also serialises them as `kinrl generate`
does. Runs in one process (one core).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

from tasks.kinship import KinshipConfig, make_example


def throughput(level: int, n: int, seed: int = 0) -> dict[str, float]:
    config = KinshipConfig.for_level(level)
    make_example(config, seed, 0)  # warm caches (name pools)
    start = time.perf_counter()
    records = [make_example(config, seed, i) for i in range(n)]
    made = time.perf_counter() - start
    start = time.perf_counter()
    for record in records:
        json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    dumped = time.perf_counter() - start
    return {
        "level": level,
        "n": n,
        "records_per_s": round(n / made),
        "jsonl_per_s": round(n / (made + dumped)),
    }


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
        "theirs_items_per_s": round(best_theirs),
        "ours_level3_records_per_s": round(best_ours),
        "ratio_ours_over_theirs": round(best_ours / best_theirs, 3),
    }


def stream(n: int, level: int, num_proc: int) -> dict[str, float]:
    """Run `kinrl generate` for n examples in a child process; report time and peak RSS."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "kinrl.cli", "generate", "--out", f"{folder}/d"]
        command += ["--n", str(n), "--difficulty", str(level), "--num-proc", str(num_proc)]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
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
    args = parser.parse_args()
    results = [throughput(level, args.n) for level in args.levels]
    for row in results:
        print(json.dumps(row), flush=True)
    side_by_side = comparator(args.n)
    if side_by_side:
        print(json.dumps(side_by_side), flush=True)
    if args.stream:
        print(json.dumps(stream(args.stream, args.stream_level, args.num_proc)), flush=True)


if __name__ == "__main__":
    main()
