"""The measured columns of the README's difficulty table (not a test).

    python benchmarks/difficulty_table.py [--n 300 --seed 1]

For each level 1..10, over `--n` records of `make_example` (what `kinrl generate --seed S`
writes for its i.i.d. splits): mean people in the record's graph (the disconnected second
family included), mean people mentioned in the stated facts, mean stated facts, mean hops.
Prints markdown rows `| level | people | mentioned | facts | hops |`.
"""

from __future__ import annotations

import argparse
import statistics

from tasks.kinship import KinshipConfig, make_example
from tasks.kinship.config import MAX_LEVEL


def level_row(level: int, n: int, seed: int) -> tuple[float, float, float, float]:
    config = KinshipConfig.for_level(level)
    records = [make_example(config, seed, i) for i in range(n)]
    people = statistics.fmean(len(r["people"]) for r in records)
    mentioned = statistics.fmean(
        len({f["a"] for f in r["facts"]} | {f["b"] for f in r["facts"]}) for r in records
    )
    facts = statistics.fmean(len(r["facts"]) for r in records)
    hops = statistics.fmean(r["hops"] for r in records)
    return people, mentioned, facts, hops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="records per level")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print("| level | mean people | mean mentioned | mean facts | mean hops |")
    print("|---|---|---|---|---|")
    for level in range(1, MAX_LEVEL + 1):
        people, mentioned, facts, hops = level_row(level, args.n, args.seed)
        print(f"| {level} | {people:.1f} | {mentioned:.1f} | {facts:.1f} | {hops:.2f} |")


if __name__ == "__main__":
    main()
