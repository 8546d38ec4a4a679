"""The training methods by name: `kinrl train <name>` and `trainers.train(name, ...)`.

Adding a method is one file (its config in `trainers/config.py`, its step and `Method` record
in `trainers/<name>.py`) and one line here. `METHODS` is what the command line builds its
options from, without importing JAX; `get_method` imports the method's module when asked.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from trainers.config import (
    DPOConfig,
    GRPOConfig,
    KTOConfig,
    OnlineDPOConfig,
    PPOConfig,
    RewardModelConfig,
    RLOOConfig,
    SFTConfig,
    TrainConfig,
)

if TYPE_CHECKING:
    from trainers.engine import Method

# name -> (config class, module holding METHOD, one line for --help)
METHODS: dict[str, tuple[type[TrainConfig], str, str]] = {
    "sft": (SFTConfig, "trainers.sft", "supervised fine-tuning on prompt/completion data"),
    "rm": (RewardModelConfig, "trainers.reward_model",
           "a reward model (value head, Bradley-Terry loss) on preference pairs; it stores "
           "the reward offset"),
    "dpo": (DPOConfig, "trainers.dpo",
            "the DPO family on preference pairs (--loss sigmoid|cdpo|robust|hinge|ipo|simpo)"),
    "kto": (KTOConfig, "trainers.kto", "KTO on binary feedback (desirable/undesirable)"),
    "grpo": (GRPOConfig, "trainers.grpo",
             "GRPO: G samples per prompt, group-relative advantages, a clipped loss"),
    "rloo": (RLOOConfig, "trainers.rloo",
             "RLOO: k samples per prompt, a leave-one-out baseline, the KL in the reward"),
    "ppo": (PPOConfig, "trainers.ppo",
            "PPO: a value model, GAE, the per-token KL penalty, clipped minibatch epochs"),
    "online-dpo": (OnlineDPOConfig, "trainers.online_dpo",
                   "online DPO: two samples per prompt, labelled by the simulated annotator "
                   "or a reward model, a DPO-family loss"),
}  # fmt: skip


def get_method(name: str) -> Method:
    """The `Method` record of `name`; ValueError for an unknown name."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)} (got {name!r})")
    return importlib.import_module(METHODS[name][1]).METHOD
