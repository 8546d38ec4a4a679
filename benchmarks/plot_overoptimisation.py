"""Plot an online run's proxy and gold reward against the KL it has moved from its reference
(Gao, Schulman and Hilton 2022: reward against d = sqrt(KL)) and against the step.

    kinrl generate --out data/pairs300 --difficulty 2 --kind preference --n 375 --noise 0.2
    kinrl train rm --init runs/sft-l2 --data data/pairs300 --out runs/rm300 --steps 60
    kinrl train grpo --init runs/sft-l2 --data data/l2 --out runs/grpo-proxy \
        --reward rm:runs/rm300 --beta 0 --log-kl
    python benchmarks/plot_overoptimisation.py runs/grpo-proxy --out docs/overoptimisation.png

Reads `RUN/metrics.jsonl` (`train/reward/proxy`, `train/reward/gold`, `train/kl/exact_seq`),
smooths each over `--window` steps (a centred moving mean; the raw points are drawn faintly)
and writes one PNG with two panels. Prints the step, KL and rewards where the smoothed gold
reward peaked, and at the end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean, the window shrinking at the ends."""
    out = np.empty_like(values)
    half = window // 2
    for i in range(len(values)):
        out[i] = values[max(0, i - half) : i + half + 1].mean()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an online run folder (trained with rm:RUN)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--window", type=int, default=25, help="steps in the moving mean")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    lines = [line for line in lines if "train/reward/proxy" in line]
    if not lines:
        raise SystemExit(
            f"{args.run}: no train/reward/proxy in metrics.jsonl (a --reward rm: run?)"
        )
    step = np.array([line["step"] for line in lines])
    proxy = np.array([line["train/reward/proxy"] for line in lines])
    gold = np.array([line["train/reward/gold"] for line in lines])
    kl = np.array([line.get("train/kl/exact_seq", np.nan) for line in lines])
    d = np.sqrt(np.maximum(smooth(kl, args.window), 0.0))
    sp, sg = smooth(proxy, args.window), smooth(gold, args.window)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, x, label in ((left, d, "d = sqrt(KL(policy || reference)), nats"),
                           (right, step, "step")):  # fmt: skip
        axis.plot(x, proxy, color="tab:blue", alpha=0.15, linewidth=0.8)
        axis.plot(x, gold, color="tab:orange", alpha=0.15, linewidth=0.8)
        axis.plot(x, sp, color="tab:blue", label="proxy (reward model, minus its offset)")
        axis.plot(x, sg, color="tab:orange", label="gold (exact score)")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    left.set_ylabel("mean reward of the step's samples")
    left.legend(loc="best", fontsize=8)
    fig.suptitle(f"{args.run.name}: proxy vs gold reward (moving mean of {args.window} steps)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    peak = int(np.argmax(sg))
    report = {
        "gold_peak": {"step": int(step[peak]), "d": round(float(d[peak]), 3),
                      "gold": round(float(sg[peak]), 4), "proxy": round(float(sp[peak]), 4)},
        "end": {"step": int(step[-1]), "d": round(float(d[-1]), 3),
                "gold": round(float(sg[-1]), 4), "proxy": round(float(sp[-1]), 4)},
        "start": {"gold": round(float(sg[0]), 4), "proxy": round(float(sp[0]), 4)},
    }  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
