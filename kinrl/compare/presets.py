"""The presets of `kinrl compare`, and how a method's config is built under the shared budget.

Standard library and config classes only (no JAX): `kinrl compare --bad-option` fails at once,
and a stage's cache key is computed from these records before anything is imported.

**The budget.** Every method trains `steps` optimizer steps on `prompts_per_step` prompts a
step, from the same SFT run: an offline method's batch is `prompts_per_step` pairs (or
feedback examples), an online method samples `group_size` completions of each of its
`prompts_per_step` prompts (online DPO: two). Prompts seen and gradient steps are equal; wall
time is reported beside them, since an online step also samples. PPO makes `minibatches x
ppo_epochs` updates a step and GRPO/RLOO `num_iterations`; the presets keep those at what the
methods need and the report states them.

**Tuning.** Each method gets the same small grid over its key hyperparameters (learning rate,
beta), every point trained under the budget, the best chosen by greedy accuracy on validation
items (never the test items, which report the chosen point).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from trainers.config import TrainConfig
from trainers.registry import METHODS

# method name in `kinrl compare` -> (the `kinrl train` method, fixed options, dataset kind)
COMPARE_METHODS: dict[str, tuple[str, dict[str, Any], str]] = {
    "dpo": ("dpo", {"loss": "sigmoid"}, "preference"),
    "ipo": ("dpo", {"loss": "ipo"}, "preference"),
    "kto": ("kto", {}, "feedback"),
    "grpo": ("grpo", {}, "examples"),
    # GRPO on the exact reward instead of the proxy: what the proxy costs (an oracle row)
    "grpo-gold": ("grpo", {"reward": "gold"}, "examples"),
    "rloo": ("rloo", {}, "examples"),
    "ppo": ("ppo", {}, "examples"),
    "online-dpo": ("online-dpo", {}, "examples"),
}
ONLINE = ("grpo", "grpo-gold", "rloo", "ppo", "online-dpo")
BASELINE = "sft"  # the SFT run every method starts from; always in the report


@dataclass(frozen=True)
class Preset:
    """One comparison: the task, the SFT and reward model it starts from, the shared budget,
    the tuning grids and the evaluation sizes. Each stage's cache key holds the fields it
    depends on (and the keys of the stages it reads), so a changed field reruns only those."""

    name: str
    description: str
    methods: tuple[str, ...]
    seeds: int = 1
    # the task
    difficulty: int = 2
    examples: int = 20_000  # kinrl generate --n (train/validation/test 80/10/10)
    pairs: int = 4_000  # preference pairs (the RM's and the DPO family's data)
    feedback: int = 4_000  # binary feedback examples (KTO's data)
    noise: float = 0.0  # the simulated annotator's label-flip rate
    # generalisation splits of the examples (`kinrl generate --holdout-hops/--holdout-names`):
    # test_hops holds questions of more hops than training has, test_names unseen names
    holdout_hops: int | None = None
    holdout_names: bool = False
    # SFT and the reward model
    sft: dict[str, Any] = field(default_factory=lambda: {"steps": 400})
    rm: dict[str, Any] = field(default_factory=lambda: {"steps": 200, "learning_rate": 1e-4})
    # the shared budget
    steps: int = 100
    prompts_per_step: int = 16
    checkpoints: int = 4  # evenly spaced checkpoints per run (KL drift, over-optimisation)
    online_reward: str = "rm"  # "rm": the reward model above (the proxy); "gold": exact
    group_size: int = 4
    max_new_tokens: int = 48
    # the tuning grids: method -> option -> values (the product is trained)
    grids: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> options
    # evaluation
    validation_items: int = 256  # for choosing a grid point
    test_items: int = 1_000
    generalisation_items: int = 500  # of each generalisation split
    pass_k: tuple[int, ...] = (1, 4, 8)
    pass_items: int = 200
    drift_prompts: int = 64
    drift_samples: int = 4
    bon_prompts: int = 64
    bon_n: int = 64
    rm_items: int = 400  # held-out pairs for the reward model's quality

    def grid(self, method: str) -> list[dict[str, Any]]:
        """The grid points of `method`: dicts of options (one empty dict without a grid)."""
        axes = self.grids.get(method, {})
        names = sorted(axes)
        return [dict(zip(names, values, strict=True)) for values in
                itertools.product(*(axes[n] for n in names))]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def method_config(preset: Preset, method: str, point: dict[str, Any], seed: int,
                  reward_run: str | None) -> TrainConfig:  # fmt: skip
    """The `kinrl train` config of `method` at grid `point` under the preset's budget."""
    train_name, fixed, _ = COMPARE_METHODS[method]
    config_class = METHODS[train_name][0]
    every = max(1, preset.steps // preset.checkpoints)
    options: dict[str, Any] = {
        "steps": preset.steps,
        "seed": seed,
        "save_interval": every,
        # the planned ones, and room for two saved by interruptions (Ctrl-C saves one)
        "keep_checkpoints": preset.checkpoints + 3,
        "log_interval": max(1, min(10, every)),
        "eval_interval": 0,  # the comparison evaluates every run itself, alike
        **fixed,
    }
    if method in ONLINE:
        options |= {"prompts_per_step": preset.prompts_per_step,
                    "max_new_tokens": preset.max_new_tokens, "eval_examples": 32}  # fmt: skip
        if method != "online-dpo":
            options["group_size"] = preset.group_size
        if preset.online_reward == "rm" and "reward" not in fixed:
            if reward_run is None:
                raise ValueError(f"{method} needs the reward model run")
            options["reward"] = f"rm:{reward_run}"
    else:
        options |= {"batch_size": preset.prompts_per_step, "eval_examples": 64}
    options |= preset.fixed.get(method, {}) | point
    return config_class.from_options(**options)


def describe(point: dict[str, Any]) -> str:
    """'learning_rate=1e-05 beta=0.1' (or 'defaults')."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sorted(point.items())) or "defaults"  # fmt: skip


_OFFLINE_GRID = {"learning_rate": (1e-5, 5e-5), "beta": (0.1, 0.5)}

PRESETS: dict[str, Preset] = {
    "quickstart": Preset(
        name="quickstart",
        description="level 2, a 400-step nano SFT run, then DPO, KTO, GRPO on the reward "
        "model and GRPO on the gold reward from it, each under a 100-step budget of 16 "
        "prompts a step and tuned over a small grid; about 11 minutes on 2 CPU cores",
        methods=("dpo", "kto", "grpo", "grpo-gold"),
        grids={
            "dpo": _OFFLINE_GRID,
            "kto": _OFFLINE_GRID,
            "grpo": {"learning_rate": (1e-5, 2e-5)},
            "grpo-gold": {"learning_rate": (5e-5,)},
        },
        holdout_hops=2,
        holdout_names=True,
        test_items=2_000,
    ),
    "cpu-hour": Preset(
        name="cpu-hour",
        description="level 3, every method under a 200-step budget of 32 prompts a step, "
        "tuned over learning rate and beta; about an hour on 2 CPU cores",
        methods=("dpo", "ipo", "kto", "grpo", "grpo-gold", "rloo", "ppo", "online-dpo"),
        difficulty=3,
        examples=40_000,
        pairs=8_000,
        feedback=8_000,
        noise=0.1,
        holdout_hops=3,
        holdout_names=True,
        sft={"steps": 1500},
        rm={"steps": 400, "learning_rate": 1e-4},
        steps=200,
        prompts_per_step=32,
        grids={
            "dpo": _OFFLINE_GRID,
            "ipo": {"learning_rate": (1e-5, 5e-5), "beta": (0.1, 0.5)},
            "kto": _OFFLINE_GRID,
            "grpo": {"learning_rate": (1e-5, 3e-5)},
            "grpo-gold": {"learning_rate": (5e-5,)},
            "rloo": {"learning_rate": (1e-5, 3e-5)},
            "ppo": {"learning_rate": (1e-5, 3e-5)},
            "online-dpo": {"learning_rate": (1e-5, 5e-5)},
        },
        test_items=2_000,
    ),
    "gpu": Preset(
        name="gpu",
        description="for one GPU (not run here): level 5, the small model, every method under "
        "a 1,000-step budget of 64 prompts a step, 3 seeds",
        methods=("dpo", "ipo", "kto", "grpo", "rloo", "ppo", "online-dpo"),
        seeds=3,
        difficulty=5,
        examples=200_000,
        pairs=40_000,
        feedback=40_000,
        noise=0.1,
        sft={"steps": 10_000, "preset": "small", "learning_rate": 1e-3, "batch_size": 64},
        rm={"steps": 1_000, "learning_rate": 5e-5},
        steps=1_000,
        prompts_per_step=64,
        group_size=8,
        max_new_tokens=96,
        grids={
            "dpo": {"learning_rate": (3e-6, 1e-5, 3e-5), "beta": (0.05, 0.1, 0.5)},
            "ipo": {"learning_rate": (3e-6, 1e-5, 3e-5), "beta": (0.1, 0.5, 1.0)},
            "kto": {"learning_rate": (3e-6, 1e-5, 3e-5), "beta": (0.05, 0.1, 0.5)},
            "grpo": {"learning_rate": (1e-5, 3e-5), "beta": (0.0, 0.04)},
            "rloo": {"learning_rate": (1e-5, 3e-5), "beta": (0.01, 0.05)},
            "ppo": {"learning_rate": (1e-5, 3e-5), "beta": (0.01, 0.05)},
            "online-dpo": {"learning_rate": (3e-6, 1e-5), "beta": (0.1, 0.5)},
        },
        test_items=5_000,
        pass_items=1_000,
        drift_prompts=256,
        bon_prompts=256,
        rm_items=2_000,
    ),
    # For the tests: seconds, not minutes; shows that every stage runs, not that methods differ.
    "tiny": Preset(
        name="tiny",
        description="for the tests: a few steps of everything",
        methods=("dpo", "grpo"),
        examples=400,
        holdout_hops=2,
        holdout_names=True,
        generalisation_items=8,
        pairs=200,
        feedback=200,
        sft={"steps": 30, "batch_size": 8, "pack_width": 0},
        rm={"steps": 4, "batch_size": 8},
        steps=4,
        prompts_per_step=4,
        checkpoints=2,
        group_size=2,
        max_new_tokens=16,
        grids={"dpo": {"learning_rate": (1e-5, 5e-5)}},
        validation_items=8,
        test_items=16,
        pass_k=(1, 2),
        pass_items=8,
        drift_prompts=4,
        drift_samples=2,
        bon_prompts=4,
        bon_n=4,
        rm_items=16,
    ),
}


def resolve(name: str, methods: tuple[str, ...] | None = None,
            seeds: int | None = None) -> Preset:  # fmt: skip
    """The preset `name` with `methods` and `seeds` overridden; ValueError in one line for an
    unknown preset or method."""
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)} (got {name!r})")
    preset = PRESETS[name]
    if methods is not None:
        unknown = [m for m in methods if m not in COMPARE_METHODS and m != BASELINE]
        if unknown:
            raise ValueError(f"--methods: unknown {', '.join(unknown)}; choose from "
                             f"{', '.join([BASELINE, *COMPARE_METHODS])}")  # fmt: skip
        preset = dataclasses.replace(preset, methods=tuple(m for m in methods if m != BASELINE))
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds must be a positive integer (got {seeds})")
        preset = dataclasses.replace(preset, seeds=seeds)
    return preset
