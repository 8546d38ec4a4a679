"""Does online RL raise held-out accuracy? Each method trained from one SFT run, then greedy
test accuracy before and after, with the paired bootstrap 95% interval of the gain.

    kinrl generate --out data/l2 --difficulty 2 --n 20000
    kinrl train sft --data data/l2 --out runs/sft-l2 --steps 400      # stopped short
    python benchmarks/online_gain.py --init runs/sft-l2 --data data/l2 --out runs/gain \
        --methods grpo,ppo,rloo,online-dpo --test 1000

Every method runs at its `kinrl train <method>` defaults unless `--set METHOD.OPTION=VALUE`
(repeatable) says otherwise, with the gold reward; the test items are the first `--test`
records of the test split, the same for every model, so the interval is of the paired
difference (`evaluators.stats.paired_bootstrap`). Prints one JSON object (and writes it to
OUT/gain.json): per method its training seconds, accuracy before and after, the gain and its
interval, and the run's last logged KL and gold reward.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def correct(run: str, records: list[dict[str, Any]]) -> list[float]:
    """1.0 where the run's greedy completion of a test record scores exactly 1."""
    from evaluators.accuracy import complete
    from tasks.kinship import score
    from trainers.checkpoint import load_policy

    model, _, tokenizer = load_policy(run)
    completions = complete(model, tokenizer, [r["prompt"] for r in records])
    return [float(c is not None and score(r, c) == 1.0) for r, c in
            zip(records, completions, strict=True)]  # fmt: skip


def parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", required=True, help="the SFT run every method starts from")
    parser.add_argument("--data", required=True, help="an examples folder (train/test splits)")
    parser.add_argument("--out", required=True, type=Path, help="folder of the methods' runs")
    parser.add_argument("--methods", default="grpo,ppo,rloo,online-dpo")
    parser.add_argument("--test", type=int, default=1000, help="test records evaluated")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.OPTION=VALUE")
    args = parser.parse_args()

    from evaluators.stats import paired_bootstrap
    from trainers.data import load_records
    from trainers.engine import train
    from trainers.registry import METHODS

    records = load_records(args.data, "test")[: args.test]
    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        target, _, value = item.partition("=")
        method, _, option = target.partition(".")
        overrides.setdefault(method, {})[option.replace("-", "_")] = parse_value(value)
    before = correct(args.init, records)
    report: dict[str, Any] = {
        "init": args.init,
        "test_items": len(records),
        "accuracy_before": sum(before) / len(before),
        "methods": {},
    }
    for method in args.methods.split(","):
        config = METHODS[method][0].from_options(**overrides.get(method, {}))
        start = time.perf_counter()
        summary = train(method, config, args.data, args.out / method, args.init, progress=False)
        seconds = time.perf_counter() - start
        after = correct(str(args.out / method), records)
        report["methods"][method] = {
            "options": overrides.get(method, {}),
            "train_s": round(seconds, 1),
            "accuracy_after": sum(after) / len(after),
            "gain": paired_bootstrap(before, after),
            "last": {k: summary.get(f"train/{k}") for k in ("kl/exact_seq", "reward/gold")},
        }
        print(json.dumps({method: report["methods"][method]}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gain.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
