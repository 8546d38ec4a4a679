"""TL;DR training: the project's trainers on `kinrl tldr prepare` folders, in the reproduction's
order (Huang et al., 2024): SFT on the references, a reward model from the SFT model, then
DPO-family / KTO policies and PPO (on the reward model's score) from the SFT model.

    pipeline("data/tldr", "runs/tldr", init="gpt2", recipe=GPU_RECIPE)      # a GPU run
    pipeline("data/tldr-smoke", "runs/smoke", init=smoke_init(...), recipe=SMOKE_RECIPE)

Every stage is `trainers.engine.train` (checkpoints, resume, logging, the HF export), so a
stage can also be run alone with `kinrl train <method> --data DIR/<folder> --init RUN`.
What this module adds:

* `smoke_init`: the CPU smoke preset's starting point, a fresh `nano` model with a byte-level
  BPE tokenizer trained (HF `tokenizers`) on the prepared folders' text, written as a Hugging
  Face GPT-2 folder that `--init` reads.
* `normalise_reward`: the reproduction's reward normalisation. After the reward model is
  trained, the mean reward of the reference summaries (the SFT folder's `train` completions)
  is stored as its offset (`RUN/reward_offset.json`), so that `reward - offset` is 0 on
  average over the references; `--reward rm:RUN` and `kinrl tldr eval` subtract it.
* The recipes: `GPU_RECIPE` holds the reproduction's hyperparameters (learning rate 3e-6, SFT
  batch 128, RM batch 64, one epoch each; PPO with 512 episodes per update, temperature 0.7,
  KL coefficient 0.05; DPO with beta 0.05), `SMOKE_RECIPE` a few steps of tiny batches for
  the tests.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from trainers.config import PRESETS, TrainConfig
from trainers.tokenizer import EOS, PAD, FastTokenizer

FOLDER_OF = {"sft": "sft", "rm": "preference", "kto": "feedback", "ppo": "sft"}  # else pairs
ONLINE = ("ppo",)  # policies that sample and are scored by the stage's reward model


def folder_of(method: str) -> str:
    """The prepared folder a method trains on (`tasks/tldr/prepare.py`'s names)."""
    return FOLDER_OF.get(method, "preference")


@dataclass(frozen=True)
class Recipe:
    """Options of each stage (`kinrl train <method>` options, as config fields); `epochs`
    sets `steps` to that many passes over the stage's train split when steps is not given."""

    options: dict[str, dict[str, Any]]
    epochs: float = 1.0
    policies: tuple[str, ...] = ("dpo",)
    name: str = ""


# The reproduction's hyperparameters (Huang et al., 2024, their 1B runs; GPT-2 small here).
GPU_RECIPE = Recipe(
    name="gpu",
    options={
        "sft": {"learning_rate": 3e-6, "batch_size": 128, "warmup_steps": 0, "min_lr_ratio": 0.0,
                "prompt_loss_weight": 0.0, "bf16": True, "eval_interval": 200},
        "rm": {"learning_rate": 3e-6, "batch_size": 64, "warmup_steps": 0, "min_lr_ratio": 0.0,
               "bf16": True, "eval_interval": 200},
        "dpo": {"learning_rate": 3e-6, "batch_size": 64, "beta": 0.05, "warmup_steps": 0,
                "min_lr_ratio": 0.0, "bf16": True, "eval_interval": 200},
        "kto": {"learning_rate": 3e-6, "batch_size": 64, "beta": 0.05, "warmup_steps": 0,
                "min_lr_ratio": 0.0, "bf16": True, "eval_interval": 200},
        # 512 episodes per update, about 1M in all; temperature 0.7; KL coefficient 0.05; a
        # completion without EOS penalised by 1; summaries of at most 53 tokens.
        "ppo": {"learning_rate": 3e-6, "prompts_per_step": 512, "group_size": 1,
                "steps": 1953, "temperature": 0.7, "beta": 0.05, "max_new_tokens": 53,
                "missing_answer_penalty": 1.0, "warmup_steps": 0, "min_lr_ratio": 0.0,
                "bf16": True, "eval_interval": 0, "save_interval": 100},
    },
)  # fmt: skip

# The CPU smoke preset: nano (trainers/config.py PRESETS) and a few small steps per stage.
SMOKE_RECIPE = Recipe(
    name="smoke",
    options={
        "sft": {"steps": 24, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 2,
                "prompt_loss_weight": 0.0, "eval_interval": 0, "log_interval": 5,
                "pack_width": 0},
        "rm": {"steps": 6, "batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 1,
               "eval_interval": 0, "log_interval": 4, "pack_pairs": False},
        "dpo": {"steps": 4, "batch_size": 8, "learning_rate": 1e-4, "warmup_steps": 1,
                "eval_interval": 0, "log_interval": 3, "pack_pairs": False},
        "kto": {"steps": 4, "batch_size": 8, "learning_rate": 1e-4, "warmup_steps": 1,
                "eval_interval": 0, "log_interval": 3},
        "ppo": {"steps": 3, "prompts_per_step": 4, "group_size": 2, "minibatches": 1,
                "ppo_epochs": 1, "max_new_tokens": 24, "temperature": 0.7, "beta": 0.05,
                "learning_rate": 1e-5, "warmup_steps": 0, "eval_interval": 0,
                "log_interval": 1},
    },
    epochs=0.0,
)  # fmt: skip
RECIPES = {"gpu": GPU_RECIPE, "smoke": SMOKE_RECIPE}


# ----------------------------------------------------------------------------- smoke init


def train_bpe(texts: Iterable[str], vocab_size: int = 2048) -> FastTokenizer:
    """A byte-level BPE (GPT-2's pre-tokenisation and decoder) trained on `texts`, with
    `<|pad|>` = 0 and `<|endoftext|>` = 1."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer)
    return FastTokenizer(backend, eos_token=EOS, pad_token=PAD, bos_token=EOS)


def _texts(data: Path) -> Iterable[str]:
    """Every prompt and response of the prepared folders' train splits."""
    for name in ("sft", "preference"):
        path = data / name / "train.jsonl"
        if not path.is_file():
            continue
        with path.open(encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                for key in ("prompt", "completion", "chosen", "rejected"):
                    if key in record:
                        yield record[key]


def smoke_init(data: str | Path, out: str | Path, *, preset: str = "nano", seed: int = 0,
               vocab_size: int = 2048) -> Path:  # fmt: skip
    """A fresh `preset` model with a BPE tokenizer trained on the prepared folders under
    `data`, written to `out` as a Hugging Face GPT-2 folder (config.json, model.safetensors,
    tokenizer.json) for `--init`."""
    from trainers.hf import to_hf
    from trainers.model import init_model

    tokenizer = train_bpe(_texts(Path(data)), vocab_size)
    if len(tokenizer) <= 2:
        raise ValueError(f"{data} has no train text to build a tokenizer from (run prepare)")
    cfg = dataclasses.replace(PRESETS[preset], vocab_size=len(tokenizer))
    model = init_model(cfg, seed)
    out = Path(out)
    ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    to_hf(model, cfg, out, **ids)
    tokenizer.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- normalisation


def normalise_reward(rm_run: str | Path, sft_data: str | Path, limit: int = 4096) -> dict:
    """Store the mean reward of the reference summaries (the first `limit` train records of
    the SFT folder) as the reward model's offset; returns what was stored."""
    from trainers.checkpoint import load_run, write_json_atomic
    from trainers.data import load_records
    from trainers.reward_model import OFFSET_FILE, mean_reference_reward

    model, _, tokenizer = load_run(rm_run)
    records = load_records(sft_data, "train", limit=limit)
    pairs = [{"prompt": r["prompt"], "chosen": r["completion"]} for r in records]
    offset, count = mean_reference_reward(model, tokenizer, pairs)
    path = Path(rm_run) / OFFSET_FILE
    previous = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    record = {**previous, "offset": offset, "examples": count,
              "normalised_on": "reference summaries (tldr sft train split)",
              "data": str(Path(sft_data).resolve())}  # fmt: skip
    write_json_atomic(path, record)
    return record


# ----------------------------------------------------------------------------- pipeline


def _train_count(folder: Path) -> int:
    with (folder / "train.jsonl").open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def stage_config(method: str, recipe: Recipe, folder: Path,
                 overrides: dict[str, Any] | None = None) -> TrainConfig:  # fmt: skip
    """The config of one stage: the recipe's options, then `overrides`, and `steps` from the
    recipe's epochs when neither sets it. ValueError naming an unknown or invalid option."""
    from trainers.registry import METHODS

    config_class = METHODS[method][0]
    options = {**recipe.options.get(method, {}), **(overrides or {})}
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(config_class)})
    if unknown:
        raise ValueError(f"{method} has no option {unknown[0]!r} (see kinrl train {method} -h)")
    try:
        config = config_class.from_options(**options)
    except TypeError as error:  # a value of the wrong type
        raise ValueError(str(error)) from None
    if "steps" not in options and recipe.epochs > 0:
        steps = max(1, round(recipe.epochs * _train_count(folder) / config.step_examples()))
        config = config_class.from_options(**options, steps=steps)
    return config


def pipeline(
    data: str | Path,
    runs: str | Path,
    *,
    init: str,
    recipe: Recipe,
    policies: Sequence[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """SFT from `init`, the reward model from the SFT run (normalised), then each of
    `policies` (DPO family, kto; ppo, optimising the normalised reward model's score) from
    the SFT run, each into `runs/<method>`; returns the last metrics of every stage. A stage
    whose run finished already is resumed (no work)."""
    from trainers.engine import train

    data, runs = Path(data), Path(runs)
    overrides = overrides or {}
    results: dict[str, dict[str, Any]] = {}
    stages = [("sft", init), ("rm", str(runs / "sft"))]
    stages += [(name, str(runs / "sft")) for name in (policies or recipe.policies)]
    for method, start in stages:
        folder = data / folder_of(method)
        extra = {"reward": f"rm:{runs / 'rm'}"} if method in ONLINE else {}
        config = stage_config(method, recipe, folder, {**extra, **overrides.get(method, {})})
        results[method] = train(method, config, folder, runs / method, init=start,
                                progress=progress)  # fmt: skip
        if method == "rm":
            results[method]["reward_offset"] = normalise_reward(runs / "rm", data / "sft")["offset"]
        if on_stage is not None:
            on_stage(method, results[method])
    return results
