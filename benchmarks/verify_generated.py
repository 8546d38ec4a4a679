"""Check many generated records against the independent spec checker (a slow, documented run).

    python benchmarks/verify_generated.py --n 300 --seeds 1 2 3

Prints, per level, how many records were checked and every violation found (JSON lines), then
a total. The test suite runs the same checker on fewer records; this is the big sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.kinship import KinshipConfig, make_example
from tests.kinship_spec import check_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="records per level and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--levels", type=int, nargs="+", default=list(range(1, 11)))
    args = parser.parse_args()
    total = bad = 0
    for level in args.levels:
        config = KinshipConfig.for_level(level)
        checked = violations = 0
        for seed in args.seeds:
            for index in range(args.n):
                record = make_example(config, seed, index)
                problems = check_record(record)
                checked += 1
                if problems:
                    violations += 1
                    print(json.dumps({"id": record["id"], "problems": problems}), flush=True)
        total, bad = total + checked, bad + violations
        print(json.dumps({"level": level, "checked": checked, "violating": violations}), flush=True)
    print(json.dumps({"checked": total, "violating": bad}))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
