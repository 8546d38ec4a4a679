"""Run folders and their Orbax checkpoints.

    RUN/config.json      what was trained and how (kind "kinrl/run"): method config, model
                         config, data folder, initialisation
    RUN/tokenizer/       tokenizer.json (+ its config)
    RUN/checkpoints/N/   Orbax checkpoint after N steps: model state, optimizer state, and
                         `meta` (step, data-iterator position, seed: the whole RNG state,
                         since every random choice is a pure function of the seed and step)
    RUN/metrics.jsonl    one JSON line per logged step ({"step": N, "train/loss": ...})
    RUN/hf/              the final model in Hugging Face layout (+ tokenizer)

Orbax writes each checkpoint to a temporary folder and renames it on commit, so a run killed
at any moment leaves only whole checkpoints (and stale temporaries that are cleaned up when
the manager next opens). Nothing is pickled: arrays go to Orbax/safetensors, the rest to JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from trainers.hf import to_hf
from trainers.model import GPT, GPTConfig, abstract_model
from trainers.tokenizer import load_tokenizer, save_tokenizer

RUN_KIND = "kinrl/run"


def write_json_atomic(path: Path, content: Any) -> None:
    """Write JSON to `path` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def create_run(run_dir: str | Path, config: dict[str, Any], tokenizer: Any) -> Path:
    """Start a run folder: `config.json` (with "kind" added) and `tokenizer/`."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, run / "tokenizer")
    write_json_atomic(run / "config.json", {"kind": RUN_KIND, **config})
    return run


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config.json of a run folder; ValueError when missing, corrupt or of another kind."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise ValueError(f"run folder {run_dir} does not exist")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"{run_dir} is not a run folder (no readable config.json)") from None
    if not isinstance(config, dict) or config.get("kind") != RUN_KIND:
        raise ValueError(f"{run_dir} is not a run folder (config.json kind is not {RUN_KIND!r})")
    if not isinstance(config.get("model"), dict):
        raise ValueError(f"{run_dir}/config.json lacks the model config")
    return config


def is_run_folder(path: str | Path) -> bool:
    try:
        read_run_config(path)
    except ValueError:
        return False
    return True


def model_config_of(run_config: dict[str, Any]) -> GPTConfig:
    try:
        return GPTConfig(**run_config["model"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"run config has an invalid model config: {error}") from None


def check_new_or_run_folder(run_dir: str | Path) -> None:
    """ValueError unless `run_dir` is missing, empty, or a run folder (to resume)."""
    run = Path(run_dir)
    if not run.exists() or (run / "config.json").exists():
        return
    # A crash between create_run's two writes leaves only tokenizer/: still a fresh start.
    if not run.is_dir() or {p.name for p in run.iterdir()} - {"tokenizer"}:
        raise ValueError(f"{run} exists and is not a run folder; use a new --out")


# Config fields added after runs were already written, with the behaviour those older runs
# had: a folder without the field resumes only with that value.
LEGACY_DEFAULTS: dict[str, Any] = {"pack_width": 0, "pack_pairs": False}


# Options that change what a run logs and keeps, not what it computes: a resume may change them.
BOOKKEEPING = frozenset({"log_interval", "eval_interval", "save_interval", "keep_checkpoints"})


def check_same_run(run_dir: str | Path, record: dict[str, Any]) -> None:
    """ValueError naming the options where `run_dir`'s config.json differs from `record` (a
    run's config: its method, the method's fields, data and init); the `BOOKKEEPING` options
    may differ."""
    stored = read_run_config(run_dir)
    differing = []
    for key, value in record.items():
        old = stored.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            differing += [
                f"--{k.replace('_', '-')} {old.get(k, LEGACY_DEFAULTS.get(k))!r} -> {value[k]!r}"
                for k in value
                if k not in BOOKKEEPING and old.get(k, LEGACY_DEFAULTS.get(k)) != value[k]
            ]
        elif old != value:  # data and init are paths (long): named, not shown
            differing.append(f"--{key}" if key in ("data", "init") else f"the {key}")
    if differing:
        shown = "; ".join(d if len(d) <= 40 else d.split(" ")[0] for d in differing[:4])
        shown += f" and {len(differing) - 4} more" if len(differing) > 4 else ""
        raise ValueError(f"{run_dir} holds another run ({shown}); use a new --out, or the same "
                         "options to resume it")  # fmt: skip


def _first_line(error: Exception, limit: int = 200) -> str:
    """An exception as one short line (Orbax/tensorstore messages span pages)."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Checkpoints:
    """The Orbax checkpoints of a run: save after step N, restore the latest, keep the last K."""

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self.directory = (Path(run_dir) / "checkpoints").absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: nnx.State, opt_state: Any, meta: dict[str, Any]) -> None:
        """Write checkpoint `step` (the state after `step` optimizer steps), synchronously."""
        args = ocp.args.Composite(
            model=ocp.args.StandardSave(state),
            optimizer=ocp.args.StandardSave(opt_state),
            meta=ocp.args.JsonSave(meta),
        )
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def restore(
        self, step: int, abstract_state: Any, abstract_opt_state: Any
    ) -> tuple[nnx.State, Any, dict[str, Any]]:
        """(state, opt_state, meta) of checkpoint `step`, laid out as the abstract trees'
        shardings (ShapeDtypeStructs with `.sharding`)."""
        args = ocp.args.Composite(
            model=ocp.args.StandardRestore(abstract_state),
            optimizer=ocp.args.StandardRestore(abstract_opt_state),
            meta=ocp.args.JsonRestore(),
        )
        restored = self.manager.restore(step, args=args)
        return restored.model, restored.optimizer, restored.meta

    def restore_latest(
        self, abstract_state: Any, abstract_opt_state: Any
    ) -> tuple[int, nnx.State, Any, dict[str, Any]] | None:
        """(step, state, opt_state, meta) of the newest checkpoint that can be read, or None
        when there is none. A damaged newer checkpoint (a crash mid-write on a filesystem
        without atomic renames, a disk error) is moved aside to `checkpoints-damaged/` with
        a warning, so the run resumes from the one before and can save that step again."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return (step, *self.restore(step, abstract_state, abstract_opt_state))
            except Exception as error:  # Orbax/tensorstore errors vary by what is broken
                reason = _first_line(error)
            aside = self.directory.parent / "checkpoints-damaged" / str(step)
            if jax.process_index() == 0:
                aside.parent.mkdir(exist_ok=True)
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(self.directory / str(step), aside)
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices(f"kinrl damaged checkpoint {step}")
            self.manager.reload()
            print(f"kinrl: checkpoint {step} cannot be read ({reason}); moved it to {aside} "
                  "and resuming from the one before", file=sys.stderr)  # fmt: skip
        if self.manager.all_steps():
            raise ValueError(f"no checkpoint of {self.directory} can be read")
        return None

    def restore_model(self, step: int, abstract_state: Any) -> nnx.State:
        """Only the model state of checkpoint `step` (for evaluation and sampling)."""
        args = ocp.args.Composite(model=ocp.args.StandardRestore(abstract_state))
        return self.manager.restore(step, args=args).model

    def close(self) -> None:
        self.manager.close()


def load_run(run_dir: str | Path, step: int | None = None) -> tuple[GPT, GPTConfig, Any]:
    """(model, model config, tokenizer) of a run at checkpoint `step` (default the latest).

    ValueError when the folder is not a run, has no checkpoint, or a checkpoint cannot be read.
    """
    run_config = read_run_config(run_dir)
    cfg = model_config_of(run_config)
    try:
        tokenizer = load_tokenizer(Path(run_dir) / "tokenizer")
    except Exception as error:  # transformers raises many kinds for a broken folder
        raise ValueError(f"{run_dir}/tokenizer cannot be loaded: {error}") from None
    checkpoints = Checkpoints(run_dir)
    try:
        steps = sorted(checkpoints.manager.all_steps())
        if not steps:
            raise ValueError(f"{run_dir} has no checkpoint yet")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise ValueError(f"{run_dir} has no checkpoint {step} (it has {steps})")
        graphdef, abstract_state = nnx.split(abstract_model(cfg))
        try:
            state = checkpoints.restore_model(step, abstract_state)
        except Exception as error:  # Orbax/tensorstore errors vary by what is broken
            reason = _first_line(error)
            raise ValueError(f"{run_dir}: checkpoint {step} cannot be read ({reason})") from None
    finally:
        checkpoints.close()
    return nnx.merge(graphdef, state), cfg, tokenizer


def load_policy(run_dir: str | Path, step: int | None = None) -> tuple[GPT, GPTConfig, Any]:
    """`load_run` of a policy (a language model to decode); ValueError for a reward model."""
    if model_config_of(read_run_config(run_dir)).value_head:
        raise ValueError(f"{run_dir} is a reward model (it has a value head), not a policy to "
                         "decode; give a policy run (sft, dpo, kto)")  # fmt: skip
    return load_run(run_dir, step)


class MetricsLog:
    """`RUN/metrics.jsonl`: appended line by line; on resume, lines after the restored step
    are dropped so the resumed steps replace them instead of being duplicated."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"

    def truncate_after(self, step: int) -> None:
        """Keep only the lines with "step" <= `step` (a torn last line is dropped too)."""
        if not self.path.exists() or jax.process_index() != 0:
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line + "\n")
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records or jax.process_index() != 0:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
            f.flush()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]


def export_hf(model: GPT, cfg: GPTConfig, tokenizer: Any, run_dir: str | Path) -> Path:
    """Write the model (float32) and its tokenizer in Hugging Face layout to `RUN/hf/`,
    replacing an older export only once the new one is complete. With several processes,
    all gather the weights and process 0 writes."""
    out = Path(run_dir) / "hf"
    if jax.process_count() > 1:
        state = multihost_utils.process_allgather(nnx.state(model), tiled=True)
        model = nnx.merge(nnx.graphdef(model), state)
    if jax.process_index() != 0:
        return out
    tmp = out.with_name("hf.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id}
    to_hf(model, cfg, tmp, pad_token_id=tokenizer.pad_token_id, **ids)
    save_tokenizer(tokenizer, tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` carrying `shardings` (what Orbax restores into)."""
    return jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        tree,
        shardings,
    )
