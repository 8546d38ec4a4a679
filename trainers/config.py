"""Every config of the trainers: plain frozen dataclasses that import nothing of JAX.

* `GPTConfig` and `PRESETS`: the model's shape (`trainers/model.py` builds it).
* `TrainConfig`: the fields every training method shares (optimisation, logging, checkpoints,
  sharding) and the one validator. A method's config subclasses it, adds its own fields and,
  where its defaults differ, re-declares a field with `default_of(TrainConfig, name, value)`.
* `OfflineConfig` (batches of a fixed dataset) and `OnlineConfig` (rollouts of the policy's own
  samples) split it by how a step gets its data.
* `SFTConfig`, `RewardModelConfig`, `DPOConfig`, `KTOConfig`; `GRPOConfig`, `RLOOConfig`,
  `PPOConfig`, `OnlineDPOConfig`: the methods' configs (their steps are in `trainers/sft.py`,
  `reward_model.py`, `dpo.py`, `kto.py`, `grpo.py`, `rloo.py`, `ppo.py`, `online_dpo.py`).

Each field is an `option(help, default, check)`: `help` is its `--help` line, `check` a
(predicate, "what is allowed") pair. `TrainConfig.__post_init__` checks every field of any
subclass by its annotation (bool, int, float, str) and its `check`, then the subclass's
`check()` does what relates two fields; errors are `ValueError("<field> must be <allowed> (got
<value>)")`, which the command line turns into `--<field> must be ...`. Because nothing here
imports JAX, `kinrl train ... --bad-value` fails in a fraction of a second, and tools that only
read configs (hashing a comparison's stages, listing methods) stay light.

A preset of a method is `dataclasses.replace` of its config, e.g.
`dataclasses.replace(DPOConfig(), loss="ipo", beta=0.5)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy, so np.dtype("bfloat16") works)
import numpy as np

Check = tuple[Callable[[Any], bool], str]

# ----------------------------------------------------------------------------- the model

_ALLOWED_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT-2 model. Frozen (hashable) so it can be a static jit argument.

    `dtype` is the compute dtype (activations, matmuls); `param_dtype` is the storage dtype of
    the weights. `remat` recomputes each block's activations in the backward pass (saves memory,
    costs ~30% more compute) on GPU and TPU; XLA:CPU drops the optimisation barriers that keep
    the recomputation apart and folds it back into the forward pass.
    `value_head` adds a scalar head on the final hidden states.
    """

    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    layer_norm_epsilon: float = 1e-5
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    value_head: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not self.layer_norm_epsilon > 0:
            raise ValueError(
                f"GPTConfig.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}"
            )
        for name in ("dtype", "param_dtype"):
            # Accept jnp.float32 / np.dtype / "float32", store the canonical name (hashable, JSON).
            value = getattr(self, name)
            try:
                canonical = np.dtype(value).name
            except TypeError:
                canonical = None
            if canonical not in _ALLOWED_DTYPES:
                raise ValueError(
                    f"GPTConfig.{name} must be one of {_ALLOWED_DTYPES}, got {value!r}"
                )
            object.__setattr__(self, name, canonical)
        for name in ("remat", "value_head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GPTConfig.{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def compute_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def weight_dtype(self) -> np.dtype:
        return np.dtype(self.param_dtype)


# vocab_size here is a placeholder: callers replace it with their tokenizer's size via
# dataclasses.replace(PRESETS["nano"], vocab_size=len(tokenizer)).
PRESETS: dict[str, GPTConfig] = {
    "nano": GPTConfig(vocab_size=1024, n_positions=256, n_embd=128, n_layer=4, n_head=4),
    "small": GPTConfig(vocab_size=1024, n_positions=512, n_embd=384, n_layer=6, n_head=6),
    "gpt2": GPTConfig(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
}

# ----------------------------------------------------------------------------- fields


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def at_least(low: int) -> Check:
    return (lambda v: _is_int(v) and v >= low, f"an integer >= {low}")


def number(ok: Callable[[float], bool], allowed: str) -> Check:
    return (lambda v: _is_number(v) and ok(v), allowed)


POSITIVE = number(lambda v: v > 0, "a number > 0")
NON_NEGATIVE = number(lambda v: v >= 0, "a number >= 0")
UNIT = number(lambda v: 0 <= v <= 1, "a number in 0..1")
FINITE_NON_NEGATIVE = number(lambda v: 0 <= v < float("inf"), "a finite number >= 0")


def one_of(names: Sequence[str]) -> Check:
    return (lambda v: v in names, f"one of {', '.join(names)}")


def option(help: str, default: Any, check: Check | None = None) -> Any:
    """A config field: its `--help` line, default and check (see the module docstring)."""
    return field(default=default, metadata={"help": help, "check": check})


def default_of(base: type, name: str, default: Any) -> Any:
    """`base`'s field `name` (help and check) with another default, for a subclass."""
    [base_field] = [f for f in dataclasses.fields(base) if f.name == name]
    return field(default=default, metadata=base_field.metadata)


def require(ok: bool, name: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed} (got {value!r})")


_KIND_CHECKS: dict[Any, Check] = {
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (_is_int, "an integer"),
    "float": (_is_number, "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
}

MAX_PACK_WIDTH = 4096  # a row's attention mask is (T, T): keep typos from exhausting memory

# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    """What every training method shares; every field is a `kinrl train <method>` option."""

    preset: str = option(
        "model size: nano, small or gpt2 (ignored with --init)",
        "nano",
        (lambda v: v in PRESETS, f"one of {', '.join(PRESETS)}"),  # PRESETS may grow
    )
    steps: int = option("optimizer steps, >= 1", 300, at_least(1))
    learning_rate: float = option("peak learning rate, > 0", 1e-4, POSITIVE)
    warmup_steps: int = option("linear warm-up steps, 0..steps-1", 10)
    min_lr_ratio: float = option("final / peak learning rate of the cosine decay, 0..1", 0.1, UNIT)
    weight_decay: float = option(
        "AdamW decoupled weight decay on matrices, >= 0", 0.0, NON_NEGATIVE
    )
    clip_norm: float = option("clip gradients to this global norm, > 0", 1.0, POSITIVE)
    bf16: bool = option("compute in bfloat16 (weights and optimizer stay float32)", False)
    remat: bool = option(
        "recompute block activations in the backward pass (GPU/TPU; no effect on XLA:CPU)",
        False,
    )
    seed: int = option("seed of the initial weights and the data order, >= 0", 0, at_least(0))
    log_interval: int = option(
        "steps between metric fetches (lines are per step), >= 1", 10, at_least(1)
    )
    eval_interval: int = option(
        "steps between held-out evaluations (0 = at the end only)", 100, at_least(0)
    )
    eval_examples: int = option("held-out examples evaluated, >= 1", 512, at_least(1))
    save_interval: int = option(
        "steps between checkpoints (the last step and Ctrl-C always save)", 500, at_least(1)
    )
    keep_checkpoints: int = option("checkpoints kept on disk (the newest), >= 1", 2, at_least(1))
    fsdp_devices: int = option(
        "devices on the mesh's fsdp axis (the rest is data), >= 1", 1, at_least(1)
    )
    shard_params: bool = option("FSDP: shard parameters and optimizer state over fsdp", False)

    def __post_init__(self) -> None:
        """Check every field by its type and `check`, then `self.check()`."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            type_ok, type_allowed = _KIND_CHECKS.get(kind, (lambda v: True, ""))
            ok, allowed = f.metadata.get("check") or (type_ok, type_allowed)
            require(type_ok(value) and ok(value), f.name, allowed, value)
        self.check()

    def check(self) -> None:
        """Checks that relate fields (subclasses extend it)."""
        warmup = self.warmup_steps
        require(0 <= warmup < self.steps, "warmup_steps", "in 0..steps-1", warmup)

    def step_rows(self) -> int:
        """Rows of one micro-batch, which the mesh's data devices split between them."""
        raise NotImplementedError

    def step_examples(self) -> int:
        """Training examples one step consumes (an epoch is the training set's count)."""
        raise NotImplementedError

    def updates_per_step(self) -> int:
        """Optimizer updates one step makes (the online methods make several per rollout);
        the learning-rate schedule counts updates."""
        return 1

    @classmethod
    def from_options(cls, **given: Any) -> TrainConfig:
        """The config of the options a user gave: a warm-up left at its default shrinks to
        fit a short run (`steps=5` gets 4 warm-up steps, not an error about a default that was
        never given)."""
        steps = given.get("steps", cls.steps)
        if "warmup_steps" not in given and _is_int(steps) and steps >= 1:
            given["warmup_steps"] = min(cls.warmup_steps, steps - 1)
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self, vocab_size: int, base: GPTConfig | None = None) -> GPTConfig:
        """The preset (or `base`, an initial checkpoint's config) with this run's vocabulary
        size (fresh models only), compute dtype and remat."""
        if base is None:
            base = dataclasses.replace(PRESETS[self.preset], vocab_size=vocab_size)
        dtype = "bfloat16" if self.bf16 else "float32"
        return dataclasses.replace(base, dtype=dtype, remat=self.remat)


@dataclass(frozen=True)
class OfflineConfig(TrainConfig):
    """The methods that train on a fixed dataset, in shuffled batches of its examples."""

    batch_size: int = option("examples per micro-batch, >= 1", 32, at_least(1))
    grad_accum: int = option("micro-batches per optimizer step, >= 1", 1, at_least(1))
    length_grouping: int = option(
        "batches per length-sorted window (less padding, but batches of alike examples learn "
        "slower; 1 = plain shuffle), >= 1",
        1,
        at_least(1),
    )

    def step_rows(self) -> int:
        return self.batch_size

    def step_examples(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass(frozen=True)
class SFTConfig(OfflineConfig):
    """Supervised fine-tuning (`trainers/sft.py`). The defaults are the recipe the README
    measures (nano from scratch on level 1)."""

    steps: int = default_of(TrainConfig, "steps", 4500)
    learning_rate: float = default_of(TrainConfig, "learning_rate", 3e-3)
    warmup_steps: int = default_of(TrainConfig, "warmup_steps", 100)
    weight_decay: float = default_of(TrainConfig, "weight_decay", 0.1)
    eval_interval: int = default_of(TrainConfig, "eval_interval", 1000)
    prompt_loss_weight: float = option(
        "weight of the prompt tokens' loss relative to the completion's, 0..1 (0 = "
        "completion-only loss; 1 = every token alike, which on the kinship task teaches the "
        "relation inversions its prompts state; eval/loss is always completion-only)",
        1.0,
        UNIT,
    )
    length_bucket: int = option(
        "pad each batch to a multiple of this many tokens (fewer = less padding, more "
        "compiled shapes), >= 1",
        16,
        at_least(1),
    )
    pack_width: int = option(
        "pack several examples into each row of this many tokens, kept apart by the attention "
        "mask (the same loss as one example per row, with far less padding); 0 = one example "
        "per row, padded to length_bucket",
        128,
        at_least(0),
    )

    def check(self) -> None:
        super().check()
        require(self.pack_width <= MAX_PACK_WIDTH, "pack_width", f"at most {MAX_PACK_WIDTH}",
                self.pack_width)  # fmt: skip


RPO_ALPHA_HELP = (
    "RPO: weight of the chosen completion's mean NLL per token added to the loss, >= 0 "
    "(0: off; Pang et al. 2024 use 1)"
)
PACK_PAIRS_HELP = (
    "pack each pair as its prompt once, then both completions (one forward, no padding "
    "of one completion to the other's length); false: two padded sequences"
)


@dataclass(frozen=True)
class PreferenceConfig(OfflineConfig):
    """The fields of the methods that train on preference data or binary feedback."""

    length_grouping: int = option(
        "batches per length-sorted window, >= 1 (unpacked layouts only; packed pairs are "
        "instead dealt to micro-batches by length, which packs their rows tighter)",
        8,
        at_least(1),
    )
    reference_batch_size: int = option("sequences per reference forward, >= 1", 64, at_least(1))


@dataclass(frozen=True)
class RewardModelConfig(PreferenceConfig):
    """A reward model (`trainers/reward_model.py`)."""

    offset_examples: int = option(
        "reference completions whose mean reward becomes the offset, >= 1", 512, at_least(1)
    )
    calibration_bins: int = option(
        "confidence bins of the calibration error, >= 1", 10, at_least(1)
    )
    pack_pairs: bool = option(PACK_PAIRS_HELP, True)


DPO_LOSS_NAMES = ("sigmoid", "cdpo", "robust", "hinge", "ipo", "simpo")  # trainers.losses


@dataclass(frozen=True)
class DPOConfig(PreferenceConfig):
    """The DPO family (`trainers/dpo.py`). The learning rate defaults to 1e-5: from a nano SFT
    run on level 2, 100 steps of 16 pairs at the former default 1e-4 dropped validation
    accuracy from 46.1% to 35.9% (entity questions to 0%), 5e-5 to 37.9-43.0% and 1e-5 to
    45.3-46.1% (the quickstart's grid on its first data; docs/measurements.md)."""

    learning_rate: float = default_of(TrainConfig, "learning_rate", 1e-5)

    loss: str = option(f"preference loss: {', '.join(DPO_LOSS_NAMES)}", "sigmoid",
                       one_of(DPO_LOSS_NAMES))  # fmt: skip
    beta: float = option("inverse temperature (IPO: tau; SimPO: reward scale), > 0", 0.1, POSITIVE)
    label_smoothing: float = option(
        "assumed label-flip rate (cdpo: 0..0.5, robust: 0..<0.5; 0 for the others)", 0.0
    )
    gamma: float = option("SimPO target reward margin, >= 0", 0.5, NON_NEGATIVE)
    rpo_alpha: float = option(RPO_ALPHA_HELP, 0.0, FINITE_NON_NEGATIVE)
    pack_pairs: bool = option(PACK_PAIRS_HELP, True)

    def check(self) -> None:
        super().check()
        ok, allowed = {
            "cdpo": (lambda v: 0 <= v <= 0.5, "in 0..0.5 for loss cdpo"),
            "robust": (lambda v: 0 <= v < 0.5, "in [0, 0.5) for loss robust"),
        }.get(self.loss, (lambda v: v == 0, "0 unless loss is cdpo or robust"))
        require(ok(self.label_smoothing), "label_smoothing", allowed, self.label_smoothing)


@dataclass(frozen=True)
class KTOConfig(PreferenceConfig):
    """KTO on binary feedback (`trainers/kto.py`). The learning rate defaults to 1e-5, as the
    DPO family's (measured the same way: 39.8% at the former 1e-4, entity questions 1.5%;
    37.5-44.1% at 5e-5; 48.4% at 1e-5)."""

    learning_rate: float = default_of(TrainConfig, "learning_rate", 1e-5)

    beta: float = option("inverse temperature of the implicit reward, > 0", 0.1, POSITIVE)
    desirable_weight: float = option("loss weight of desirable examples, >= 0", 1.0, NON_NEGATIVE)
    undesirable_weight: float = option(
        "loss weight of undesirable examples, >= 0", 1.0, NON_NEGATIVE
    )
    eval_examples: int = option(
        "held-out examples evaluated, >= 2 (z pairs them)", 512, at_least(1)
    )
    length_grouping: int = option(
        "must be 1: the KL reference point z is estimated from each batch, so batches are plain "
        "random draws (length-sorted ones would tie z to their lengths)",
        1,
        at_least(1),
    )

    def check(self) -> None:
        super().check()
        if self.desirable_weight == 0 and self.undesirable_weight == 0:
            raise ValueError("desirable_weight must be > 0 when undesirable_weight is 0")
        why = "1 for KTO (z is a batch statistic; sorted batches would bias it)"
        require(self.length_grouping == 1, "length_grouping", why, self.length_grouping)
        why = "an integer >= 2 for KTO (z pairs held-out examples)"
        require(self.eval_examples >= 2, "eval_examples", why, self.eval_examples)


KL_ESTIMATORS = ("k1", "k2", "k3")  # trainers.estimators.kl_estimates
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")  # trainers.policy_gradient.aggregate
SCALE_REWARDS = ("group", "batch", "none")  # trainers.estimators.group_advantages


def _reward_source(value: Any) -> bool:
    return value == "gold" or (isinstance(value, str) and value.startswith("rm:") and
                               len(value) > 3)  # fmt: skip


@dataclass(frozen=True)
class OnlineConfig(TrainConfig):
    """The methods that learn from their own samples (`trainers/online.py`): each step
    samples `group_size` completions of `prompts_per_step` training prompts, scores them,
    then makes the method's updates on them. The defaults are GRPO's measured recipe from a
    nano SFT run on level 2 (README): at 2e-4 and 1e-4 held-out accuracy fell, at 5e-5 it
    rose."""

    steps: int = default_of(TrainConfig, "steps", 400)
    learning_rate: float = default_of(TrainConfig, "learning_rate", 5e-5)
    warmup_steps: int = default_of(TrainConfig, "warmup_steps", 0)
    min_lr_ratio: float = default_of(TrainConfig, "min_lr_ratio", 1.0)
    eval_interval: int = default_of(TrainConfig, "eval_interval", 100)
    eval_examples: int = default_of(TrainConfig, "eval_examples", 512)
    save_interval: int = default_of(TrainConfig, "save_interval", 100)
    reward: str = option(
        "what is optimised: gold (the task's exact score) or rm:RUN (a reward model run, the "
        "proxy; the gold reward is still logged)",
        "gold",
        (_reward_source, "gold or rm:RUN"),
    )
    missing_answer_penalty: float = option(
        "subtracted from the reward of a completion with no parsable 'Answer:' line, >= 0",
        1.0,
        NON_NEGATIVE,
    )
    prompts_per_step: int = option("training prompts sampled per step, >= 1", 16, at_least(1))
    group_size: int = option("completions sampled per prompt, >= 1", 8, at_least(1))
    max_new_tokens: int = option("most tokens sampled per completion, >= 1", 64, at_least(1))
    temperature: float = option(
        "sampling temperature, > 0 (log-probs are of the tempered policy)", 1.0, POSITIVE
    )
    minibatches: int = option(
        "optimizer updates per pass over a step's samples (its prompts split evenly), >= 1",
        1,
        at_least(1),
    )

    def check(self) -> None:
        super().check()
        P, M = self.prompts_per_step, self.minibatches
        require(P % M == 0, "prompts_per_step", f"a multiple of minibatches ({M})", P)

    def step_rows(self) -> int:
        return self.prompts_per_step // self.minibatches  # a packed row per prompt

    def step_examples(self) -> int:
        return self.prompts_per_step

    def updates_per_step(self) -> int:
        return self.minibatches

    @property
    def reward_model(self) -> str | None:
        """The reward-model run of `--reward rm:RUN`, or None for the gold reward."""
        return self.reward[3:] if self.reward.startswith("rm:") else None

    @property
    def needs_reference(self) -> bool:
        """Whether the rollouts make the reference pass (the reference log-probs the loss
        reads, and the KL logged)."""
        return True


@dataclass(frozen=True)
class KLPenaltyConfig(OnlineConfig):
    """The methods that penalise the KL to the reference by an estimate of it (GRPO, RLOO,
    PPO); `trainers/policy_gradient.py` derives the gradient each choice gives."""

    beta: float = option("KL coefficient towards the initial (reference) policy, >= 0", 0.04,
                         NON_NEGATIVE)  # fmt: skip
    kl_estimator: str = option(
        "KL estimate the penalty uses: k1 (log p/q), k2 ((log p/q)^2 / 2), k3 (q/p - 1 - log q/p)",
        "k3",
        one_of(KL_ESTIMATORS),
    )
    kl_in: str = option(
        "where the penalty goes: reward (subtracted from the reward, no gradient through it) "
        "or loss (added to the loss, differentiated)",
        "loss",
        one_of(("reward", "loss")),
    )
    log_kl: bool = option(
        "with beta 0, still make the reference pass, to log the KL (e.g. to watch a proxy "
        "reward over-optimised as the KL grows); beta 0 alone skips it",
        False,
    )

    @property
    def needs_reference(self) -> bool:
        return self.beta > 0 or self.log_kl

    def check(self) -> None:
        super().check()
        if self.kl_in == "loss" and self.kl_estimator == "k1":
            why = "k2 or k3 with kl_in loss (k1 there has no gradient in expectation)"
            require(False, "kl_estimator", why, self.kl_estimator)


@dataclass(frozen=True)
class PolicyGradientConfig(KLPenaltyConfig):
    """What GRPO and RLOO share: a clipped importance-ratio loss over reused rollouts."""

    epsilon: float = option("lower clip of the importance ratio (1 - epsilon), 0..1", 0.2, UNIT)
    epsilon_high: float = option(
        "upper clip (1 + epsilon_high; DAPO's clip-higher); negative = epsilon", -1.0
    )
    num_iterations: int = option(
        "passes over each rollout (more than 1 reuses it, with the importance ratio), >= 1",
        1,
        at_least(1),
    )
    mask_truncated: bool = option("leave completions cut at max_new_tokens out of the loss", False)

    def updates_per_step(self) -> int:
        return self.minibatches * self.num_iterations

    @property
    def clip_high(self) -> float:
        return self.epsilon if self.epsilon_high < 0 else self.epsilon_high


@dataclass(frozen=True)
class GRPOConfig(PolicyGradientConfig):
    """GRPO (`trainers/grpo.py`; Shao et al. 2024, with the variants TRL offers)."""

    loss_type: str = option(
        "aggregation over tokens and sequences: grpo (per-sequence token means), dr_grpo "
        "(token sums / max_new_tokens), dapo (one mean over the step's tokens), bnpo (a "
        "mean over the update's tokens)",
        "grpo",
        one_of(GRPO_LOSS_TYPES),
    )
    scale_rewards: str = option(
        "divide advantages by the reward standard deviation of the group, the batch, or "
        "none (Dr. GRPO)",
        "group",
        one_of(SCALE_REWARDS),
    )
    sequence_ratio: bool = option(
        "GSPO: one importance ratio per sequence (the geometric mean of its tokens'); GSPO "
        "clips it far tighter (--epsilon 3e-4 --epsilon-high 4e-4)",
        False,
    )
    drop_zero_variance: bool = option(
        "leave groups whose rewards are all equal out of the loss (they carry no signal)",
        False,
    )

    def check(self) -> None:
        super().check()
        why = "an integer >= 2 for GRPO (advantages compare a prompt's samples)"
        require(self.group_size >= 2, "group_size", why, self.group_size)


@dataclass(frozen=True)
class RLOOConfig(PolicyGradientConfig):
    """RLOO (`trainers/rloo.py`; Ahmadian et al. 2024): k samples, a leave-one-out baseline,
    the sequence KL folded into the reward."""

    prompts_per_step: int = default_of(OnlineConfig, "prompts_per_step", 32)
    group_size: int = default_of(OnlineConfig, "group_size", 4)
    beta: float = default_of(KLPenaltyConfig, "beta", 0.05)
    kl_estimator: str = default_of(KLPenaltyConfig, "kl_estimator", "k1")
    kl_in: str = default_of(KLPenaltyConfig, "kl_in", "reward")

    def check(self) -> None:
        super().check()
        why = "an integer >= 2 for RLOO (the baseline is the other samples' mean)"
        require(self.group_size >= 2, "group_size", why, self.group_size)


@dataclass(frozen=True)
class PPOConfig(KLPenaltyConfig):
    """PPO (`trainers/ppo.py`), with the TL;DR reproduction's details (Huang et al. 2024).
    Its defaults are the README's measured run: 4 samples of each of 32 prompts a step (one
    sample each, at 5e-5 and 4 epochs, moved the KL without a gain), 2 epochs of 2
    minibatches, 3e-5."""

    steps: int = default_of(OnlineConfig, "steps", 250)
    learning_rate: float = default_of(OnlineConfig, "learning_rate", 3e-5)
    prompts_per_step: int = default_of(OnlineConfig, "prompts_per_step", 32)
    group_size: int = default_of(OnlineConfig, "group_size", 4)
    minibatches: int = default_of(OnlineConfig, "minibatches", 2)
    beta: float = default_of(KLPenaltyConfig, "beta", 0.05)
    kl_estimator: str = default_of(KLPenaltyConfig, "kl_estimator", "k1")
    kl_in: str = default_of(KLPenaltyConfig, "kl_in", "reward")
    ppo_epochs: int = option("passes over each rollout's minibatches, >= 1", 2, at_least(1))
    epsilon: float = option("policy ratio clip, 0..1", 0.2, UNIT)
    value_clip: float = option("value clip around the old values, >= 0", 0.2, NON_NEGATIVE)
    value_coef: float = option("weight of the value loss, >= 0", 0.1, NON_NEGATIVE)
    gamma: float = option("discount, 0..1", 1.0, UNIT)
    lam: float = option("GAE lambda, 0..1", 0.95, UNIT)
    whiten_advantages: bool = option("standardise the advantages of each rollout", True)
    value_model: str = option(
        "separate (a value model: the reward model's weights with --reward rm:RUN, else the "
        "policy's with a fresh head) or head (a value head on the policy's own trunk)",
        "separate",
        one_of(("separate", "head")),
    )
    adaptive_kl: bool = option("steer the KL coefficient towards kl_target (Ziegler et al.)",
                               False)  # fmt: skip
    kl_target: float = option("target sequence KL of the adaptive coefficient, > 0", 6.0,
                              POSITIVE)  # fmt: skip
    kl_horizon: float = option("horizon of the adaptive coefficient, in completions, > 0",
                               10000.0, POSITIVE)  # fmt: skip
    target_approx_kl: float = option(
        "stop a rollout's updates once the approximate KL to its sampling policy passes this "
        "(0 = never)",
        0.0,
        NON_NEGATIVE,
    )

    def check(self) -> None:
        super().check()
        if self.adaptive_kl and self.beta == 0:
            raise ValueError("beta must be > 0 with adaptive_kl (it is the initial coefficient)")

    def updates_per_step(self) -> int:
        return self.minibatches * self.ppo_epochs


ANNOTATOR_FIELDS = ("noise", "annotator", "annotator_temperature", "length_bias", "position_bias")


@dataclass(frozen=True)
class OnlineDPOConfig(OnlineConfig):
    """Online DPO (`trainers/online_dpo.py`; Guo et al. 2024): two samples per prompt,
    labelled by the simulated annotator on the gold reward (or by `--reward rm:RUN`), then a
    DPO-family loss on the pair."""

    prompts_per_step: int = default_of(OnlineConfig, "prompts_per_step", 64)
    group_size: int = default_of(OnlineConfig, "group_size", 2)
    beta: float = option("inverse temperature (IPO: tau; SimPO: reward scale), > 0", 0.1, POSITIVE)
    loss: str = option(f"preference loss: {', '.join(DPO_LOSS_NAMES)}", "sigmoid",
                       one_of(DPO_LOSS_NAMES))  # fmt: skip
    label_smoothing: float = option("assumed label-flip rate (cdpo, robust), 0..<0.5", 0.0,
                                    number(lambda v: 0 <= v < 0.5, "in [0, 0.5)"))  # fmt: skip
    gamma: float = option("SimPO target reward margin, >= 0", 0.5, NON_NEGATIVE)
    rpo_alpha: float = option(RPO_ALPHA_HELP, 0.0, FINITE_NON_NEGATIVE)
    noise: float = option("simulated annotator: label flip rate, 0..0.5", 0.0,
                          number(lambda v: 0 <= v <= 0.5, "a number in 0..0.5"))  # fmt: skip
    annotator: str = option("simulated annotator's base model: exact or bradley_terry", "exact",
                            one_of(("exact", "bradley_terry")))  # fmt: skip
    annotator_temperature: float = option("Bradley-Terry temperature, > 0", 0.1, POSITIVE)
    length_bias: float = option("probability the longer completion wins outright, 0..1", 0.0,
                                UNIT)  # fmt: skip
    position_bias: float = option("probability the first completion wins outright, 0..1", 0.0,
                                  UNIT)  # fmt: skip
    train_ties: bool = option(
        "also train on pairs whose two samples score alike (then labelled by the annotator's "
        "coin); by default they are left out of the loss",
        False,
    )

    @property
    def needs_reference(self) -> bool:
        return self.loss != "simpo"

    def check(self) -> None:
        super().check()
        why = "2 for online DPO (a pair per prompt)"
        require(self.group_size == 2, "group_size", why, self.group_size)
        if self.loss not in ("cdpo", "robust"):
            why = "0 unless loss is cdpo or robust"
            require(self.label_smoothing == 0, "label_smoothing", why, self.label_smoothing)
        if self.reward_model is not None:  # the reward model labels: no annotator
            for name in ANNOTATOR_FIELDS:
                [f] = [f for f in dataclasses.fields(self) if f.name == name]
                if getattr(self, name) != f.default:
                    raise ValueError(f"{name} applies to reward gold only (the simulated "
                                     "annotator); with rm:RUN the reward model labels")  # fmt: skip


def check_hosts(address: str | None, num_processes: int | None, process_id: int | None) -> None:
    """The several-hosts options (`jax.distributed`), checked before JAX sees them: all three
    or none, the address HOST:PORT, the process id below the count."""
    if address is None and num_processes is None and process_id is None:
        return
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator_address must be HOST:PORT (got {address!r})")
    if num_processes is None or process_id is None:
        raise ValueError("num_processes and process_id go with coordinator_address")
    require(process_id < num_processes, "process_id", f"in 0..{num_processes - 1}", process_id)
