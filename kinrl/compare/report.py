"""The report of a `kinrl compare`: `results.json` (every number), `report.md` (its tables, built
from those results through `evaluators/report.py`, which refuses a number the results lack) and
PNG plots (matplotlib, drawn without a display).

`summarise(context)` turns the stages' outputs into the results; `markdown(results)` writes the
tables; `plots(results, out)` draws the figures; `write(context, out)` does all three.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.report import (
    fmt,
    heading,
    interval,
    pct,
    plain,
    signed_interval,
    table,
    unmatched_numbers,
    write_report,
)
from kinrl.compare.presets import BASELINE, COMPARE_METHODS, ONLINE, describe

BREAKDOWNS = {"by_hops": "hops", "by_question_type": "question type",
              "by_family": "relation family", "by_difficulty": "level"}  # fmt: skip
REFERENCES = {
    "gao": "Gao, Schulman and Hilton 2022, Scaling laws for reward model overoptimization",
    "beirami": "Beirami et al. 2024, Theoretical guarantees on the best-of-n alignment policy",
}
PLOTS = ("accuracy_by_difficulty.png", "gold_vs_kl.png", "overoptimisation.png",
         "calibration.png", "training_curves.png")  # fmt: skip
SMOOTHING = 10  # steps in the training curves' moving mean
DEGENERATE_UNPARSEABLE = 0.2  # flagged when a fifth of greedy answers cannot be parsed
DEGENERATE_REPETITION = 0.1  # or a tenth of completions repeat themselves


# ----------------------------------------------------------------------------- results


def _budget(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """What the trained config spent: steps, prompts (or pairs, or examples) a step, updates."""
    from trainers.registry import METHODS

    trained = METHODS[COMPARE_METHODS[method][0]][0](**config)
    online = method in ONLINE
    return {
        "steps": trained.steps,
        "prompts_per_step": trained.step_examples(),
        "prompts_seen": trained.steps * trained.step_examples(),
        "completions_per_prompt": config["group_size"] if online else None,
        "updates": trained.steps * trained.updates_per_step(),
        "learning_rate": trained.learning_rate,
        "beta": config.get("beta"),
        "reward": _learns_from(method, config),
    }


def _learns_from(method: str, config: dict[str, Any]) -> str:
    kind = COMPARE_METHODS[method][2]
    if kind != "examples":
        return {"preference": "preference pairs", "feedback": "binary feedback"}[kind]
    reward = config.get("reward", "gold")
    source = "the reward model" if reward.startswith("rm:") else "the gold reward"
    return f"its samples, scored by {source}"


def _calibrate(proxy: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Least squares gold ~ a + b proxy over all the SFT model's best-of-n samples: the proxy
    in gold units (the line only rescales the proxy for the plots and tables; which sample
    best-of-n picks is decided by the raw proxy)."""
    x, y = proxy.ravel(), gold.ravel()
    if np.ptp(x) == 0:
        return {"a": float(y.mean()), "b": 0.0}
    b, a = np.polyfit(x, y, 1)
    return {"a": float(a), "b": float(b)}


def _fit(form: str, d: list[float], r: list[float]) -> dict[str, Any] | None:
    from evaluators.overoptimisation import fit_bon, fit_rl

    try:
        return (fit_bon if form == "bon" else fit_rl)(np.asarray(d), np.asarray(r))
    except (ValueError, RuntimeError) as error:  # too few points, or no fit
        return {"form": form, "error": str(error)}


def _peak_drop(proxy: np.ndarray, gold: np.ndarray, ns: list[int], samples: int = 2000,
               seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The gold reward of best-of-n at its peak n minus at the largest n, with a percentile
    bootstrap 95% interval over prompts (the peak n is the point estimate's, held fixed)."""
    from evaluators.overoptimisation import best_of_n_curve

    golds = [c["gold"] for c in best_of_n_curve(proxy, gold, ns)]
    peak = int(np.argmax(golds))
    pick = [ns[peak], ns[-1]]
    rng = np.random.default_rng(seed)
    drops = np.empty(samples)
    for i in range(samples):
        rows = rng.integers(0, len(proxy), len(proxy))
        at = best_of_n_curve(proxy[rows], gold[rows], pick)
        drops[i] = at[0]["gold"] - at[1]["gold"]
    low, high = np.quantile(drops, [0.025, 0.975])
    return {"peak_n": ns[peak], "last_n": ns[-1], "mean": golds[peak] - golds[-1],
            "low": float(low), "high": float(high), "level": 0.95}  # fmt: skip


def _overoptimisation(context: dict[str, Any]) -> dict[str, Any]:
    from evaluators.overoptimisation import best_of_n_curve

    bon = context["best_of_n"]
    proxy, gold = np.asarray(bon["proxy"], float), np.asarray(bon["gold"], float)
    calibration = _calibrate(proxy, gold)
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= proxy.shape[1]]
    curve = best_of_n_curve(proxy, gold, ns)  # picked by the raw proxy
    for c in curve:  # an expectation, so the line maps it as it maps each sample
        c["proxy_raw"] = c["proxy"]
        c["proxy"] = calibration["a"] + calibration["b"] * c["proxy_raw"]
    base_proxy, base_gold = curve[0]["proxy"], curve[0]["gold"]
    d = [c["d"] for c in curve]
    result: dict[str, Any] = {
        "calibration": calibration,
        "best_of_n": {
            "curve": curve,
            "kl_note": "log n - (n-1)/n, an upper bound on best-of-n's KL (Beirami et al.)",
            "fit_gold": _fit("bon", d, [c["gold"] - base_gold for c in curve]),
            "fit_proxy": _fit("bon", d, [c["proxy"] - base_proxy for c in curve]),
            "gold_peak_minus_last": _peak_drop(proxy, gold, ns),
        },
        "rl": {},
    }
    for method, run in context["runs"].items():
        points = run["drift"]["drift"]["checkpoints"]
        rows = [{"step": 0, "kl": 0.0, "d": 0.0, "gold": base_gold, "proxy": base_proxy}]
        for c in points:
            kl = max(float(c["kl"]["exact_seq"]), 0.0)
            proxy_gold = calibration["a"] + calibration["b"] * c["proxy"]
            rows.append({"step": c["step"], "kl": kl, "d": math.sqrt(kl), "gold": c["gold"],
                         "proxy": proxy_gold})  # fmt: skip
        ds = [r["d"] for r in rows]
        result["rl"][method] = {
            "points": rows,
            "fit_gold": _fit("rl", ds, [r["gold"] - base_gold for r in rows]),
            "fit_proxy": _fit("rl", ds, [r["proxy"] - base_proxy for r in rows]),
        }
    return result


def summarise(context: dict[str, Any]) -> dict[str, Any]:
    """The results of a comparison from its stages' outputs (`Comparison.run`)."""
    from evaluators.stats import paired_bootstrap, seed_spread
    from evaluators.training import logprob_trend

    preset, tests = context["preset"], context["tests"]
    baseline = tests[BASELINE][0]
    base_correct = baseline["accuracy"]["correct"]
    leaderboard, grids, budgets, breakdowns, degeneration = [], {}, {}, {}, {}
    methods = [BASELINE, *context["runs"]]
    for method in methods:
        first = tests[method][0]
        accuracy = first["accuracy"]
        row: dict[str, Any] = {
            "method": method,
            "accuracy": accuracy["interval"],
            "n": accuracy["n"],
            "pass_at_k": first["pass_at_k"]["pass@k"],
            "generalisation": {
                split: report["interval"]
                for split, report in first.get("generalisation", {}).items()
            },
        }
        if method != BASELINE:
            run = context["runs"][method]
            chosen = run["grid"][run["chosen"]]
            row["gain_vs_sft"] = paired_bootstrap(base_correct, accuracy["correct"])
            row["generalisation_gain_vs_sft"] = {
                split: paired_bootstrap(baseline["generalisation"][split]["correct"],
                                        report["correct"])
                for split, report in first.get("generalisation", {}).items()
            }  # fmt: skip
            row["chosen"] = chosen["point"]
            row["validation_accuracy"] = chosen["validation_accuracy"]
            row["train_s"] = chosen["train_s"]
            if len(tests[method]) > 1:
                row["seeds"] = seed_spread([t["accuracy"]["accuracy"] for t in tests[method]])
            grids[method] = [{"point": g["point"], "validation_accuracy": g["validation_accuracy"],
                              "train_s": g["train_s"], "chosen": i == run["chosen"]}
                             for i, g in enumerate(run["grid"])]  # fmt: skip
            budgets[method] = _budget(method, chosen["config"])
        else:
            row["train_s"] = context["sft"]["train_s"]
        leaderboard.append(row)
        breakdowns[method] = {key: accuracy[key] for key in BREAKDOWNS if key in accuracy}
        stats = first["completions"]
        trend = None
        if method != BASELINE and COMPARE_METHODS[method][0] == "dpo":
            trend = logprob_trend(
                context["runs"][method]["grid"][context["runs"][method]["chosen"]]["run"]
            )
        flags = []
        if (stats.get("unparseable_rate") or 0) >= DEGENERATE_UNPARSEABLE:
            flags.append("unparseable answers")
        if (stats.get("repetition_rate") or 0) >= DEGENERATE_REPETITION:
            flags.append("repetition")
        if trend and trend.get("slope") is not None and trend["slope"] < 0:
            flags.append("chosen log-prob falls")
        degeneration[method] = {"completions": stats, "chosen_logprob": trend, "flags": flags}
    sft_validation = context["sft_validation"]["validation_accuracy"]
    grid_collapse = {m: all(p["validation_accuracy"] < sft_validation for p in points)
                     for m, points in grids.items()}  # fmt: skip
    drift = {m: r["drift"]["drift"]["checkpoints"] for m, r in context["runs"].items()}
    agreement = {m: r["drift"]["rm_agreement"] for m, r in context["runs"].items()}
    gains = [r for r in leaderboard if r.get("gain_vs_sft") and r["gain_vs_sft"]["low"] > 0]
    over = _overoptimisation(context)
    high = over["best_of_n"]["curve"][-1]
    return plain(
        {
            "preset": preset,
            "command": f"kinrl compare --preset {preset['name']}",
            "baseline": {"run": context["sft"]["run"], "config": context["sft"]["config"]},
            "reward_model": {"run": context["rm"]["run"], "config": context["rm"]["config"]},
            "data": context["data"]["counts"],
            "leaderboard": leaderboard,
            "significant_gains": [r["method"] for r in gains],
            "budgets": budgets,
            "sft_validation_accuracy": sft_validation,
            "grids": grids,
            "below_sft_at_every_grid_point": grid_collapse,
            "breakdowns": breakdowns,
            "degeneration": degeneration,
            "kl_drift": drift,
            "overoptimisation": over,
            "gold_below_proxy_at_high_kl": high["gold"] < high["proxy"],
            "rm_quality": context["rm_quality"] | {"agreement_on_policy_samples": agreement},
            "examples": {m: tests[m][0]["examples"] for m in methods},
            "stages": context["stages"],
            "cached_stages": context["cached"],
            "total_stage_s": round(sum(context["stages"].values()), 1),
            "machine": context["machine"],
            "references": REFERENCES,
            "thresholds": {
                "unparseable": DEGENERATE_UNPARSEABLE,
                "repetition": DEGENERATE_REPETITION,
                "level": 0.95,
            },
        }
    )


# ----------------------------------------------------------------------------- markdown


def _pass(row: dict[str, Any]) -> str:
    return ", ".join(f"@{k} {pct(v['mean'])}" for k, v in row["pass_at_k"].items())


def markdown(results: dict[str, Any]) -> str:
    """report.md: every number from `results`."""
    p = results["preset"]
    lb = results["leaderboard"]
    out = [f"# kinrl compare: {p['name']}", "", p["description"] + ".", "",
           f"Produced by `{results['command']}`. Test accuracy is greedy decoding scored by the "
           "exact gold reward; intervals are 95% percentile bootstraps over the test items, and "
           "a method's gain over SFT is a paired bootstrap on the same items."]  # fmt: skip
    out.append(heading("Findings"))
    out += [f"- {line}" for line in findings(results)]
    out.append(heading("Leaderboard"))
    rows = []
    for r in lb:
        seeds = r.get("seeds")
        spread = (f"{pct(seeds['mean'])} ± {pct(seeds['std'])} over {seeds['n_seeds']}"
                  if seeds and seeds.get("std") is not None else "–")  # fmt: skip
        rows.append([r["method"], interval(r["accuracy"]), signed_interval(r.get("gain_vs_sft")),
                     spread, _pass(r), describe(r.get("chosen") or {}) if r["method"] != BASELINE
                     else "–", fmt(r["train_s"], 1)])  # fmt: skip
    out.append(
        table(
            [
                "method",
                "test accuracy [95%]",
                "gain vs SFT, points [95%]",
                "seed spread",
                "pass@k (sampled)",
                "chosen grid point",
                "train s",
            ],
            rows,
        )
    )
    out.append(
        f"Test items: {fmt(lb[0]['n'])}. Seed spread: mean ± standard deviation of the "
        "test accuracy over training seeds (the same data and SFT run)."
    )
    splits = sorted({s for r in lb for s in r.get("generalisation", {})})
    if splits:
        out.append(heading("Generalisation"))
        out.append("Greedy accuracy on the generalisation splits (`test_hops`: more hops than "
                   "training had; `test_names`: names never seen in training; "
                   "`test_relations`: held-out relation families), with the paired gain over "
                   "SFT in points.\n")  # fmt: skip
        rows = [[r["method"]] + [_generalisation_cell(r, s) for s in splits] for r in lb]
        out.append(table(["method", *splits], rows))
    out.append(heading("Budget and settings"))
    rows = [[m, b["steps"], b["prompts_per_step"], b["prompts_seen"],
             b["completions_per_prompt"] or "–", b["updates"], f"{b['learning_rate']:g}",
             "–" if b["beta"] is None else f"{b['beta']:g}", b["reward"] or "–"]
            for m, b in results["budgets"].items()]  # fmt: skip
    out.append(
        table(
            [
                "method",
                "steps",
                "prompts/step",
                "prompts seen",
                "samples/prompt",
                "updates",
                "learning rate",
                "beta",
                "learns from",
            ],
            rows,
        )
    )
    out.append(f"Every method starts from the SFT run ({fmt(p['sft']['steps'])} steps) and "
               "sees the same prompts a step for the same steps; an online step also samples "
               "(its wall time is in the grids below). 'Learns from' is what each trains on: "
               "the reward model was trained on the DPO family's preference pairs.")  # fmt: skip
    out.append(heading("Tuning grids"))
    out.append("Each grid point trained under the budget; chosen by greedy accuracy on "
               f"{fmt(p['validation_items'])} validation items (the SFT run: "
               f"{pct(results['sft_validation_accuracy'])}).\n")  # fmt: skip
    rows = [[m, describe(g["point"]), pct(g["validation_accuracy"]), fmt(g["train_s"], 1),
             "**chosen**" if g["chosen"] else ""]
            for m, points in results["grids"].items() for g in points]  # fmt: skip
    out.append(table(["method", "point", "validation accuracy", "train s", ""], rows))
    for key, label in (("by_hops", "hops"), ("by_question_type", "question type"),
                       ("by_family", "relation family")):  # fmt: skip
        values = sorted({v for b in results["breakdowns"].values() for v in b.get(key, {})},
                        key=lambda v: (0, int(v)) if v.isdigit() else (1, v))  # fmt: skip
        if not values:
            continue
        out.append(heading(f"Accuracy by {label}"))
        rows = [[m] + [pct(b[key][v]["accuracy"]) if v in b.get(key, {}) else "–"
                       for v in values] for m, b in results["breakdowns"].items()]  # fmt: skip
        out.append(table(["method", *values], rows))
    out.append(heading("Degeneration"))
    rows = []
    for m, d in results["degeneration"].items():
        c, trend = d["completions"], d["chosen_logprob"]
        rows.append([m, pct(c.get("unparseable_rate")), pct(c.get("repetition_rate")),
                     pct(c.get("truncation_rate")), pct(c.get("chain_valid")),
                     fmt(c.get("mean_length"), 1),
                     fmt(trend["slope"], 2) if trend and trend.get("slope") is not None else "–",
                     ", ".join(d["flags"]) or "none"])  # fmt: skip
    out.append(
        table(
            [
                "method",
                "unparseable",
                "repetitive",
                "truncated",
                "valid chain",
                "mean length",
                "chosen log-prob / 100 steps",
                "flags",
            ],
            rows,
        )
    )
    out.append(
        "Greedy test completions. A method is flagged at "
        f"{pct(results['thresholds']['unparseable'], 0)} unparseable answers or "
        f"{pct(results['thresholds']['repetition'], 0)} repetitive completions, or when "
        "its chosen completions' log-prob falls during training (likelihood "
        "displacement)."
    )
    out.append(heading("KL drift"))
    out.append(
        "KL(policy ‖ SFT) per sequence on held-out prompts, at each saved checkpoint: "
        "exact (summed over the vocabulary along sampled completions) and the k1, k2, k3 "
        "estimates; gold and proxy reward of the same samples.\n"
    )
    rows = [[m, c["step"], fmt(c["kl"]["exact_seq"]), fmt(c["kl"]["k1_seq"]),
             fmt(c["kl"]["k2_seq"]), fmt(c["kl"]["k3_seq"]), fmt(c["kl"]["exact"], 4),
             fmt(c["gold"]), fmt(c["proxy"])]
            for m, points in results["kl_drift"].items() for c in points]  # fmt: skip
    out.append(
        table(["method", "step", "exact", "k1", "k2", "k3", "exact / token", "gold", "proxy"], rows)
    )
    out += _overoptimisation_md(results)
    out += _rm_md(results)
    out.append(heading("Stage times"))
    rows = [[name, fmt(s, 1)] for name, s in results["stages"].items()]
    out.append(table(["stage", "seconds"], rows))
    cached, stages = len(results["cached_stages"]), len(results["stages"])
    note = "." if not cached else (
        "; this report was written again from the cache, so every figure, and each stage's "
        "seconds, are those of the run that first made them." if cached == stages else
        f"; {cached} of the {stages} stages were taken from the cache of an earlier run (their "
        "seconds are that run's).")  # fmt: skip
    out.append(f"Total {fmt(results['total_stage_s'], 1)} s of stages{note}")
    m = results["machine"]
    out.append(heading("Machine"))
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    out.append(
        f"{m['cpus']} CPUs, {m['platform']}, Python {m['python']}, backend "
        f"{m['backend']} ({', '.join(m['devices'])}); {versions}."
    )
    return "\n".join(out) + "\n"


def _generalisation_cell(row: dict[str, Any], split: str) -> str:
    shown = interval(row["generalisation"].get(split))
    if row["method"] == BASELINE:
        return shown
    return f"{shown} ({signed_interval(row['generalisation_gain_vs_sft'].get(split))})"


def findings(results: dict[str, Any]) -> list[str]:
    """What the tables show, in sentences computed from the results."""
    lines = []
    rows = {r["method"]: r for r in results["leaderboard"]}
    gains = results["significant_gains"]
    if gains:
        shown = ", ".join(f"{m} ({signed_interval(rows[m]['gain_vs_sft'])} points)" for m in gains)
        lines.append(f"**Gains over SFT whose 95% interval is above zero:** {shown}. Each "
                     "interval is for its own comparison, not corrected for the number of "
                     f"methods compared ({len(rows) - 1}).")  # fmt: skip
    else:
        lines.append("**No method's gain over SFT has a 95% interval above zero at this "
                     "budget.**")  # fmt: skip
    for m, every in results["below_sft_at_every_grid_point"].items():
        if every:
            lines.append(
                f"{m} scored below the SFT run's validation accuracy at every point of "
                f"its grid (on the {fmt(results['preset']['validation_items'])} "
                "validation items that choose the point; the leaderboard's test "
                f"accuracy is on {fmt(results['leaderboard'][0]['n'])} items)."
            )
    for m, d in results["degeneration"].items():
        if d["flags"]:
            lines.append(f"{m} is flagged for degeneration: {', '.join(d['flags'])}.")
    q = results["rm_quality"]
    agreement = [a["agreement"] for a in q["agreement_on_policy_samples"].values()
                 if a.get("agreement") is not None]  # fmt: skip
    if agreement:
        lines.append(f"The reward model orders {pct(q['accuracy'])} of held-out pairs as the "
                     f"gold reward does, and {pct(min(agreement))} to {pct(max(agreement))} of "
                     "the pairs of the trained policies' own samples whose gold scores differ: "
                     "samples like those an online method optimising it is scored on.")  # fmt: skip
    bon = results["overoptimisation"]["best_of_n"]
    drop, curve = bon["gold_peak_minus_last"], {c["n"]: c for c in bon["curve"]}
    peak, last = curve[drop["peak_n"]], curve[drop["last_n"]]
    if drop["peak_n"] < drop["last_n"] and drop["mean"] > 0:
        sure = drop["low"] > 0
        lines.append(f"Best-of-n{' over-optimises the proxy' if sure else ''}: the gold reward "
                     f"peaks at n = {peak['n']} ({fmt(peak['gold'])}) and is "
                     f"{fmt(last['gold'])} at n = {last['n']}, a drop of "
                     f"{interval(drop, 3, percent=False)} (95% interval over prompts"
                     f"{'' if sure else ', which includes no drop'}), while the proxy's "
                     f"prediction rises to {fmt(last['proxy'])}.")  # fmt: skip
    return lines


def _overoptimisation_md(results: dict[str, Any]) -> list[str]:
    over = results["overoptimisation"]
    bon = over["best_of_n"]
    out = [heading("Reward over-optimisation"),
           "Best-of-n from the SFT model: n samples per prompt, the proxy's pick scored by both "
           "rewards; KL = log n − (n−1)/n, an upper bound on best-of-n's KL "
           f"({results['references']['beirami']}). The proxy is shown in gold units: a "
           "least-squares line from proxy to gold "
           f"on the SFT model's samples (gold ≈ {fmt(over['calibration']['a'])} + "
           f"{fmt(over['calibration']['b'])} × proxy). Plot: `overoptimisation.png`.\n",
           "![over-optimisation](overoptimisation.png)\n"]  # fmt: skip
    rows = [[c["n"], fmt(c["kl"]), fmt(c["d"]), fmt(c["proxy"]), fmt(c["gold"])]
            for c in bon["curve"]]  # fmt: skip
    out.append(table(["n", "KL bound", "d = sqrt(KL)", "proxy (gold units)", "gold"], rows))
    top = max(c["d"] for c in bon["curve"])
    fits = [("best-of-n", "gold", bon["fit_gold"], top),
            ("best-of-n", "proxy", bon["fit_proxy"], top)]  # fmt: skip
    fits += [(m, w, r[f"fit_{w}"], max(p["d"] for p in r["points"]))
             for m, r in over["rl"].items() for w in ("gold", "proxy")]  # fmt: skip
    rows = []
    for source, which, f, reach in fits:
        if f is None or "error" in f:
            rows.append([source, which, "–", "–", "–", "–", (f or {}).get("error", "no fit")])
            continue
        rows.append([source, which, f"{fmt(f['alpha'])} ± {fmt(f['alpha_se'])}",
                     f"{fmt(f['beta'])} ± {fmt(f['beta_se'])}", fmt(f["r2"]),
                     fmt(f["d_star"]), "beyond the measured d" if f["d_star"] is not None and
                     f["d_star"] > reach else ""])  # fmt: skip
    out.append(
        f"Fits of the gain over the SFT model ({results['references']['gao']}): best-of-n "
        "R(d) = d(α − β d), RL R(d) = d(α − β log d); d* is the predicted peak.\n"
    )
    out.append(table(["policy", "reward", "α ± se", "β ± se", "R²", "d*", "note"], rows))
    verdict = "below" if results["gold_below_proxy_at_high_kl"] else "not below"
    out.append(f"At the largest n the gold reward is {verdict} the proxy's prediction.")
    return out


def _rm_md(results: dict[str, Any]) -> list[str]:
    q = results["rm_quality"]
    out = [heading("Reward model"),
           f"Held-out pair accuracy {pct(q['accuracy'])} on {fmt(q['n'])} pairs; expected "
           f"calibration error {fmt(q['ece'])} (reliability: `calibration.png`).\n",
           "![calibration](calibration.png)\n"]  # fmt: skip
    rows = [[kind, pct(v["accuracy"]), v["n"]] for kind, v in q["by_negative_kind"].items()]
    out.append(table(["negative kind", "accuracy", "pairs"], rows))
    rows = [[m, pct(a.get("agreement")), a.get("pairs")]
            for m, a in q["agreement_on_policy_samples"].items()]  # fmt: skip
    out.append(
        "Agreement with the gold reward on each trained policy's own samples (pairs of "
        "a prompt's samples whose gold scores differ), which is what an online method "
        "optimising the proxy is scored on.\n"
    )
    out.append(table(["policy", "agreement", "pairs"], rows))
    return out


# ----------------------------------------------------------------------------- plots


def plots(results: dict[str, Any], out: Path) -> list[str]:
    """Draw the report's PNGs into `out`; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)

    # accuracy by hops (the difficulty within a level) per method
    fig, ax = plt.subplots(figsize=(7, 4))
    methods = list(results["breakdowns"])
    hops = sorted({int(h) for b in results["breakdowns"].values() for h in b.get("by_hops", {})})
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        cells = results["breakdowns"][m].get("by_hops", {})
        values = np.array([cells.get(str(h), {}).get("accuracy", np.nan) for h in hops])
        low = np.array([cells.get(str(h), {}).get("low", np.nan) for h in hops])
        high = np.array([cells.get(str(h), {}).get("high", np.nan) for h in hops])
        ax.bar(np.arange(len(hops)) + i * width, values, width, label=m,
               yerr=[values - low, high - values], capsize=2)  # fmt: skip
    ax.set_xticks(np.arange(len(hops)) + 0.4 - width / 2, [str(h) for h in hops])
    ax.set_xlabel(f"hops (level {results['preset']['difficulty']})")
    ax.set_ylabel("greedy test accuracy (95% interval)")
    ax.legend()
    save(fig, "accuracy_by_difficulty.png")

    # gold reward against KL per method
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, points in results["kl_drift"].items():
        ax.plot([c["kl"]["exact_seq"] for c in points], [c["gold"] for c in points], "o-",
                label=m)  # fmt: skip
    ax.set_xlabel("KL(policy ‖ SFT) per sequence (exact)")
    ax.set_ylabel("gold reward")
    ax.legend()
    save(fig, "gold_vs_kl.png")

    # over-optimisation with fits
    over = results["overoptimisation"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    curve = over["best_of_n"]["curve"]
    d = np.array([c["d"] for c in curve])
    ax = axes[0]
    ax.plot(d, [c["proxy"] for c in curve], "o", color="tab:blue", label="proxy (gold units)")
    ax.plot(d, [c["gold"] for c in curve], "s", color="tab:red", label="gold")
    grid = np.linspace(0, max(d.max(), 1e-3) * 1.1, 100)
    for which, colour in (("proxy", "tab:blue"), ("gold", "tab:red")):
        f = over["best_of_n"][f"fit_{which}"]
        if f and "alpha" in f:
            base = curve[0][which]
            ax.plot(grid, base + grid * (f["alpha"] - f["beta"] * grid), "--", color=colour)
    ax.set_title("best-of-n from SFT")
    ax.set_xlabel("d = sqrt(KL bound)")
    ax.set_ylabel("reward")
    ax.legend()
    ax = axes[1]
    for i, (m, r) in enumerate(over["rl"].items()):
        colour = f"C{i}"
        ds = [p["d"] for p in r["points"]]
        ax.plot(ds, [p["gold"] for p in r["points"]], "s-", color=colour, label=f"{m} gold")
        ax.plot(ds, [p["proxy"] for p in r["points"]], "o:", color=colour, label=f"{m} proxy")
    ax.set_title("checkpoints of each method")
    ax.set_xlabel("d = sqrt(KL per sequence)")
    ax.legend(fontsize=8)
    save(fig, "overoptimisation.png")

    # reward-model calibration
    q = results["rm_quality"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    bins = [b for b in q.get("reliability", []) if b["count"]]
    ax.plot([0.5, 1], [0.5, 1], ":", color="grey")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-")
    ax.set_xlabel("confidence (sigmoid of the margin)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reward model, ECE {q['ece']:.3f}")
    save(fig, "calibration.png")

    # training curves: the offline methods' loss, the online methods' gold reward (moving means)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (m, points) in enumerate(results["training_curves"].items()):
        ax = axes[1] if m in ONLINE else axes[0]
        steps, values = np.asarray(points["steps"]), np.asarray(points["values"], float)
        if len(values) >= SMOOTHING:
            values = np.convolve(values, np.ones(SMOOTHING) / SMOOTHING, mode="valid")
            steps = steps[SMOOTHING - 1 :]
        ax.plot(steps, values, color=f"C{i}", label=m)
    axes[0].set_title(f"offline methods: training loss ({SMOOTHING}-step mean)")
    axes[1].set_title(f"online methods: gold reward of the samples ({SMOOTHING}-step mean)")
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    save(fig, "training_curves.png")
    return names


def training_curves(context: dict[str, Any]) -> dict[str, Any]:
    """Each chosen run's main training metric by step: the online methods' gold reward, the
    others' loss."""
    from trainers.checkpoint import MetricsLog

    curves = {}
    for method, run in context["runs"].items():
        folder = run["grid"][run["chosen"]]["run"]
        metric = "train/reward/gold" if method in ONLINE else "train/loss"
        lines = [line for line in MetricsLog(folder).read() if metric in line]
        curves[method] = {"metric": metric, "steps": [line["step"] for line in lines],
                          "values": [line[metric] for line in lines]}  # fmt: skip
    return curves


def write(context: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """results.json, report.md and the plots of a comparison into `out`; returns the results."""
    out = Path(out)
    results = summarise(context)
    results["training_curves"] = plain(training_curves(context))
    results["plots"] = list(PLOTS)
    text = markdown(results)
    missing = unmatched_numbers(text, results)
    if missing:  # a bug of this module, not of the user's input: checked before any file
        raise RuntimeError(f"report.md would show numbers results.json lacks: {missing[:10]}")
    out.mkdir(parents=True, exist_ok=True)
    drawn = plots(results, out)
    assert drawn == list(PLOTS), drawn
    write_report(out, text, results)
    return results
