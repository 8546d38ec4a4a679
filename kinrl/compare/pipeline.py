"""`kinrl compare`: generate, SFT, reward model, every method tuned under one budget, evaluation,
report. Each step is a cached stage (`kinrl/compare/stages.py`), so a rerun continues where an
interrupted one stopped and a changed setting reruns only what it touches.

    results = compare(resolve("quickstart"), out="reports/quickstart", work="runs/compare")

The stages, in order (names as the progress line shows them):

1. `data`: the examples (SFT, the online methods' prompts, every evaluation), preference pairs
   (the reward model, the DPO family) and binary feedback (KTO) of the preset's level;
2. `sft`: the SFT run every method starts from, and the reference of every KL;
3. `rm`: the reward model on the preference pairs (the online methods' proxy reward);
4. `train <method> <point>`: each grid point of each method under the budget, then its greedy
   accuracy on the validation items (which chooses the point);
5. `seed <method> <k>`: the chosen point again with seeds 1..K-1 (`--seeds K`);
6. `test <run>`: greedy test accuracy (per item, so methods can be paired), pass@k, and the
   completions' statistics, for SFT and every chosen run;
7. `drift <method>`: every checkpoint's KL to the SFT model (exact and k1/k2/k3), its gold and
   proxy reward, on held-out prompts; the final policy's samples give the reward model's
   agreement with gold on the distribution it is optimised on;
8. `best-of-n`: n samples of the SFT model per prompt, the proxy's pick scored by both rewards;
9. `rm-quality`: the reward model's held-out pair accuracy and calibration;
10. the report (`kinrl/compare/report.py`): report.md, results.json, plots.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from kinrl.compare.presets import BASELINE, COMPARE_METHODS, ONLINE, Preset, describe, method_config
from kinrl.compare.stages import Stages

DATA_SEEDS = {"examples": 0, "preference": 1, "feedback": 2}
EVAL_SEED = 1234
GENERALISATION_SPLITS = ("test_hops", "test_names", "test_relations")  # tasks/kinship/splits.py


def training_knobs(preset: Preset) -> dict[str, Any]:
    """The task knobs that keep the preference and feedback data inside what the examples'
    training split holds: the generalisation splits' names and hops must be unseen by every
    method (the examples get them from `kinrl generate`'s holdouts; the other kinds, which
    have no holdout splits of their own, from these knobs)."""
    from tasks.kinship.config import KinshipConfig

    knobs: dict[str, Any] = {}
    if preset.holdout_names:
        knobs["name_pool"] = "train"
    if preset.holdout_hops is not None:
        level = KinshipConfig.for_level(preset.difficulty)
        knobs["max_hops"] = min(level.max_hops, preset.holdout_hops)
    return knobs


def plan(preset: Preset) -> dict[str, float]:
    """Every stage of `preset`'s comparison with its rough cost in seconds, for the ETA only:
    the quickstart's stage times on 2 quiet cores, scaled by each stage's size (the ETA then
    scales them all by how fast this machine has been so far)."""
    p = preset
    online_step = p.prompts_per_step * p.group_size * p.max_new_tokens * 1.5e-4
    test = p.test_items / 150 + p.pass_items * max(p.pass_k) / 800 + p.generalisation_items / 100
    stages: dict[str, float] = {
        "data": (p.examples + p.pairs + p.feedback) / 8000,
        "sft": p.sft["steps"] * 0.16,
        "rm": p.rm["steps"] * 0.22,
        "validate sft": p.validation_items / 80,
        "test sft": test,
    }
    for method in p.methods:
        per_step = online_step if method in ONLINE else p.prompts_per_step * 0.01
        train = 10 + p.steps * per_step + p.validation_items / 80
        for point in p.grid(method):
            stages[f"train {method} {describe(point)}"] = train
        for seed in range(1, p.seeds):
            stages[f"seed {method} {seed}"] = train
        for seed in range(p.seeds):
            stages[f"test {method} seed {seed}"] = test
        stages[f"drift {method}"] = p.checkpoints * 2.5
    stages["best-of-n"] = p.bon_prompts * p.bon_n / 250
    stages["rm-quality"] = 3
    return stages


def _train(method: str, config: Any, data: str, run: Path, init: str | None,
           progress: bool) -> dict[str, Any]:  # fmt: skip
    from trainers.engine import train

    train_name = COMPARE_METHODS[method][0] if method in COMPARE_METHODS else method
    begin = time.perf_counter()
    summary = train(train_name, config, data, run, init, progress=progress)
    seconds = time.perf_counter() - begin
    return {"run": str(run), "summary": summary, "train_s": round(seconds, 1),
            "config": config.to_dict()}  # fmt: skip


def _greedy(run: str, records: list[dict[str, Any]], max_new_tokens: int) -> list[str | None]:
    from evaluators.accuracy import complete
    from trainers.checkpoint import load_policy

    model, _, tokenizer = load_policy(run)
    return complete(model, tokenizer, [r["prompt"] for r in records],
                    max_new_tokens=max_new_tokens)  # fmt: skip


def _greedy_accuracy(run: str, records: list[dict[str, Any]], max_new_tokens: int) -> float:
    """The share of `records` whose greedy completion scores exactly 1."""
    from tasks.kinship import score

    completions = _greedy(run, records, max_new_tokens)
    correct = [c is not None and score(r, c) == 1.0
               for r, c in zip(records, completions, strict=True)]  # fmt: skip
    return sum(correct) / max(len(correct), 1)


def _sampled(run: str, records: list[dict[str, Any]], k: int,
             max_new_tokens: int) -> list[list[str | None]]:  # fmt: skip
    from evaluators.accuracy import complete
    from trainers.checkpoint import load_policy

    model, _, tokenizer = load_policy(run)
    prompts = [r["prompt"] for r in records for _ in range(k)]
    flat = complete(model, tokenizer, prompts, temperature=1.0, seed=EVAL_SEED,
                    max_new_tokens=max_new_tokens)  # fmt: skip
    return [flat[i * k : (i + 1) * k] for i in range(len(records))]


class Comparison:
    """One `kinrl compare`: the preset, its folders and its stages."""

    def __init__(self, preset: Preset, out: str | Path, work: str | Path, *,
                 progress: bool = True, lines: bool = True) -> None:  # fmt: skip
        self.preset, self.out, self.work = preset, Path(out), Path(work)
        self.progress = progress
        self.stages = Stages(self.work, plan(preset), progress=lines)
        self.eval_tokens = 2 * preset.max_new_tokens  # room to answer (and to ramble)

    # ------------------------------------------------------------------ the stages

    def data(self) -> dict[str, Any]:
        p = self.preset
        inputs = {"difficulty": p.difficulty, "examples": p.examples, "pairs": p.pairs,
                  "feedback": p.feedback, "noise": p.noise, "seeds": DATA_SEEDS,
                  "holdout_hops": p.holdout_hops, "holdout_names": p.holdout_names,
                  "knobs": training_knobs(p)}  # fmt: skip

        def work(folder: Path) -> dict[str, Any]:
            from tasks.kinship.dataset import generate_command

            counts = {}
            for kind, n in (("examples", p.examples), ("preference", p.pairs),
                            ("feedback", p.feedback)):  # fmt: skip
                feedback = {} if kind == "examples" else {"noise": p.noise}
                holdouts = ({"holdout_hops": p.holdout_hops, "holdout_names": p.holdout_names}
                            if kind == "examples" else {})  # fmt: skip
                knobs = {} if kind == "examples" else training_knobs(p)
                summary = generate_command(folder / kind, p.difficulty, knobs, n,
                                           feedback=feedback, kind=kind, seed=DATA_SEEDS[kind],
                                           num_proc=min(2, os.cpu_count() or 1),
                                           overwrite=True, progress=self.progress,
                                           **holdouts)  # fmt: skip
                if summary is None:
                    raise KeyboardInterrupt
                counts[kind] = summary["counts"]
            return {"folders": {k: str(folder / k) for k in DATA_SEEDS}, "counts": counts}

        return self.stages.run("data", inputs, work)

    def sft(self, data: dict[str, Any]) -> dict[str, Any]:
        from trainers.config import SFTConfig

        config = SFTConfig.from_options(**self.preset.sft)
        inputs = {"data": data["key"], "config": config.to_dict()}
        return self.stages.run(
            "sft",
            inputs,
            lambda folder: _train(
                "sft", config, data["folders"]["examples"], folder / "run", None, self.progress
            ),
        )

    def rm(self, data: dict[str, Any], sft: dict[str, Any]) -> dict[str, Any]:
        from trainers.config import RewardModelConfig

        config = RewardModelConfig.from_options(**self.preset.rm)
        inputs = {"data": data["key"], "sft": sft["key"], "config": config.to_dict()}
        return self.stages.run(
            "rm",
            inputs,
            lambda folder: _train(
                "rm",
                config,
                data["folders"]["preference"],
                folder / "run",
                sft["run"],
                self.progress,
            ),
        )

    def records(self, data: dict[str, Any], split: str, count: int) -> list[dict[str, Any]]:
        from trainers.data import load_records

        return load_records(data["folders"]["examples"], split, limit=count)

    def train_point(self, method: str, point: dict[str, Any], seed: int, data: dict[str, Any],
                    sft: dict[str, Any], rm: dict[str, Any],
                    name: str) -> dict[str, Any]:  # fmt: skip
        config = method_config(self.preset, method, point, seed, rm["run"])
        kind = COMPARE_METHODS[method][2]
        inputs = {
            "data": data["key"],
            "sft": sft["key"],
            "rm": rm["key"],
            "method": method,
            "config": config.to_dict(),
            "validation_items": self.preset.validation_items,
            "tokens": self.eval_tokens,
        }
        validation = self.records(data, "validation", self.preset.validation_items)

        def work(folder: Path) -> dict[str, Any]:
            result = _train(method, config, data["folders"][kind], folder / "run", sft["run"],
                            self.progress)  # fmt: skip
            accuracy = _greedy_accuracy(result["run"], validation, self.eval_tokens)
            return result | {"validation_accuracy": accuracy}

        return self.stages.run(name, inputs, work) | {"point": point, "seed": seed}

    def validate_sft(self, sft: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """The SFT run's greedy accuracy on the validation items the grids are chosen on."""
        items = self.preset.validation_items
        inputs = {"sft": sft["key"], "data": data["key"], "items": items,
                  "tokens": self.eval_tokens}  # fmt: skip
        validation = self.records(data, "validation", items)

        def work(folder: Path) -> dict[str, Any]:
            accuracy = _greedy_accuracy(sft["run"], validation, self.eval_tokens)
            return {"validation_accuracy": accuracy}

        return self.stages.run("validate sft", inputs, work)

    def test(self, name: str, run: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        p = self.preset
        inputs = {
            "run": run["key"],
            "data": data["key"],
            "items": p.test_items,
            "pass_k": p.pass_k,
            "pass_items": p.pass_items,
            "tokens": self.eval_tokens,
            "generalisation_items": p.generalisation_items,
        }
        records = self.records(data, "test", p.test_items)

        def work(folder: Path) -> dict[str, Any]:
            from evaluators.accuracy import accuracy_report, pass_at_k_report
            from evaluators.completions import completion_stats
            from trainers.data import has_split
            from trainers.tokenizer import load_tokenizer

            completions = _greedy(run["run"], records, self.eval_tokens)
            report = accuracy_report(records, completions)
            tokenizer = load_tokenizer(Path(run["run"]) / "tokenizer")
            stats = completion_stats(records, completions, tokenizer=tokenizer,
                                     max_new_tokens=self.eval_tokens)  # fmt: skip
            k = max(p.pass_k)
            samples = _sampled(run["run"], records[: p.pass_items], k, self.eval_tokens)
            passes = pass_at_k_report(records[: p.pass_items], samples, p.pass_k)
            generalisation = {}
            for split in GENERALISATION_SPLITS:
                if has_split(data["folders"]["examples"], split):
                    held = self.records(data, split, p.generalisation_items)
                    held_out = _greedy(run["run"], held, self.eval_tokens)
                    generalisation[split] = accuracy_report(held, held_out)
            examples = [{"prompt": r["prompt"], "completion": c}
                        for r, c in zip(records[:3], completions[:3], strict=True)]  # fmt: skip
            return {"accuracy": report, "completions": stats, "pass_at_k": passes,
                    "generalisation": generalisation, "examples": examples}  # fmt: skip

        return self.stages.run(name, inputs, work)

    def drift(self, method: str, run: dict[str, Any], sft: dict[str, Any], rm: dict[str, Any],
              data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        p = self.preset
        inputs = {"run": run["key"], "sft": sft["key"], "rm": rm["key"], "data": data["key"],
                  "prompts": p.drift_prompts, "samples": p.drift_samples,
                  "tokens": p.max_new_tokens}  # fmt: skip
        records = self.records(data, "validation", p.drift_prompts)

        def work(folder: Path) -> dict[str, Any]:
            from evaluators.policy_eval import kl_drift, rm_gold_agreement, sample_policy

            # The planned checkpoints only: one saved by an interruption (Ctrl-C saves) would
            # make the table depend on how often the run was stopped.
            config = run["config"]
            every, last = config["save_interval"], config["steps"]
            planned = sorted({*range(every, last + 1, every), last})
            drift = kl_drift(run["run"], records, reference=sft["run"], steps=planned,
                             samples_per_prompt=p.drift_samples,
                             max_new_tokens=p.max_new_tokens, reward_run=rm["run"],
                             seed=EVAL_SEED)  # fmt: skip
            samples = sample_policy(run["run"], records, group=max(2, p.drift_samples),
                                    max_new_tokens=p.max_new_tokens, seed=EVAL_SEED,
                                    reward_run=rm["run"])  # fmt: skip
            agreement = rm_gold_agreement(rm["run"], samples)
            return {"drift": drift, "rm_agreement": agreement}

        return self.stages.run(f"drift {method}", inputs, work)

    def best_of_n(self, sft: dict[str, Any], rm: dict[str, Any],
                  data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        p = self.preset
        inputs = {"sft": sft["key"], "rm": rm["key"], "data": data["key"], "n": p.bon_n,
                  "prompts": p.bon_prompts, "tokens": p.max_new_tokens}  # fmt: skip
        records = self.records(data, "validation", p.bon_prompts)

        def work(folder: Path) -> dict[str, Any]:
            from evaluators.policy_eval import best_of_n_samples

            samples = best_of_n_samples(
                sft["run"],
                rm["run"],
                records,
                p.bon_n,
                max_new_tokens=p.max_new_tokens,
                seed=EVAL_SEED,
            )
            return {"proxy": samples["proxy"], "gold": samples["gold"]}

        return self.stages.run("best-of-n", inputs, work)

    def rm_quality(self, rm: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        inputs = {"rm": rm["key"], "data": data["key"], "items": self.preset.rm_items}

        def work(folder: Path) -> dict[str, Any]:
            from evaluators.policy_eval import rm_quality
            from tasks.registry import PREFERENCE_KIND
            from trainers.data import load_records

            pairs = load_records(data["folders"]["preference"], "test", PREFERENCE_KIND,
                                 limit=self.preset.rm_items)  # fmt: skip
            return rm_quality(rm["run"], pairs)

        return self.stages.run("rm-quality", inputs, work)

    # ------------------------------------------------------------------ the whole

    def run(self) -> dict[str, Any]:
        """Every stage, then the report; returns the results (also in OUT/results.json)."""
        from kinrl.compare.report import write

        p = self.preset
        data = self.data()
        sft = self.sft(data)
        rm = self.rm(data, sft)
        sft_validation = self.validate_sft(sft, data)
        tests = {BASELINE: [self.test("test sft", sft, data)]}
        runs: dict[str, Any] = {}
        for method in p.methods:
            points = [self.train_point(method, point, 0, data, sft, rm,
                                       f"train {method} {describe(point)}")
                      for point in p.grid(method)]  # fmt: skip
            best = max(range(len(points)), key=lambda i: (points[i]["validation_accuracy"], -i))
            chosen = [points[best]]
            chosen += [self.train_point(method, points[best]["point"], seed, data, sft, rm,
                                        f"seed {method} {seed}")
                       for seed in range(1, p.seeds)]  # fmt: skip
            tests[method] = [self.test(f"test {method} seed {i}", run, data)
                             for i, run in enumerate(chosen)]  # fmt: skip
            runs[method] = {"grid": points, "chosen": best, "seeds": chosen,
                            "drift": self.drift(method, chosen[0], sft, rm, data)}  # fmt: skip
        bon = self.best_of_n(sft, rm, data)
        quality = self.rm_quality(rm, data)
        context = {"preset": p.to_dict(), "data": data, "sft": sft, "rm": rm, "tests": tests,
                   "sft_validation": sft_validation,
                   "runs": runs, "best_of_n": bon, "rm_quality": quality,
                   "stages": dict(self.stages.done), "cached": list(self.stages.cached),
                   "machine": machine()}  # fmt: skip
        return write(context, self.out)


def machine() -> dict[str, Any]:
    """What the comparison ran on: the processor count, platform, Python and library
    versions, JAX's devices."""
    import jax

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions,
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
    }


def compare(preset: Preset, out: str | Path, work: str | Path, *,
            progress: bool = True, lines: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run (or continue) `preset`'s comparison, its stages under `work`, its report in `out`.
    `progress`: the generators' and trainers' bars; `lines`: a line per stage on stderr."""
    return Comparison(preset, out, work, progress=progress, lines=lines).run()
