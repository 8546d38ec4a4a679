"""The run loop of the offline preference trainers (reward model, DPO family, KTO).

A method is a `Method`: its data kind, how records become `SequencePairs`, whether it needs
reference log-probs, its jitted-once `step` and per-example `eval_step`. Everything else is
shared with SFT through `trainers/checkpoint.py` (run folder, Orbax checkpoints, metrics.jsonl,
HF export), `trainers/sft.py` (optimizer, `init_from`, `export_hf`) and `trainers/sharding.py`
(mesh and placement): rerunning a crashed run resumes from its last checkpoint, with the
cached reference log-probs and the data position restored.

Metrics lines: `train/<name>` per step and `eval/<name>` (held-out means) every
`eval_interval` steps and at the end; the summary adds `time/reference_s` (computing the
reference log-probs; 0 when read from the cache) and `time/train_s`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from trainers.checkpoint import (
    Checkpoints,
    MetricsLog,
    check_new_or_run_folder,
    check_same_run,
    create_run,
    export_hf,
)
from trainers.data import (
    has_split,
    load_records,
    read_data_config,
    require_step_examples,
    split_path,
)
from trainers.model import GPT, GPTConfig, init_model
from trainers.offline import (
    OfflineConfig,
    cached_reference_logps,
    packed_reference_logps,
    reference_logps,
    state_fingerprint,
)
from trainers.preference_data import (
    PackedPairBatch,
    PairBatch,
    PairIterator,
    SequencePairs,
    eval_pair_batches,
    tokenize_pairs,
)
from trainers.runtime import CompiledPerShape, release_host_memory
from trainers.sft import init_from, learning_rate_schedule, make_optimizer, start_or_resume
from trainers.sharding import (
    BATCH_AXES,
    batch_divisor,
    make_mesh,
    put_global,
    replicated,
)
from trainers.tokenizer import kinship_tokenizer

Summarize = Callable[[dict[str, np.ndarray]], dict[str, float]]


def _identity_model(model: GPT, cfg: GPTConfig, seed: int) -> tuple[GPT, GPTConfig]:
    return model, cfg


class Method(NamedTuple):
    """What distinguishes one offline method; see `trainers/dpo.py` for an example."""

    name: str
    data_kind: str
    needs_reference: bool
    step: Callable[..., Any]  # (graphdef, state, opt_state, batch, *, optimizer) -> (s, o, m)
    eval_step: Callable[..., Any]  # (graphdef, state, one-micro-batch batch) -> metrics (B,)
    tokenize: Callable[..., SequencePairs] = tokenize_pairs  # (records, tokenizer, max_len)
    prepare_model: Callable[..., tuple[GPT, GPTConfig]] = _identity_model
    summarize: Summarize | None = None  # extra held-out figures from the per-example metrics
    packed: bool = False  # batches are `PackedPairBatch`es (both sequences share the prompt)


class OfflineSetup(NamedTuple):
    """What a run starts from: tokenizer, the initial model, data and reference log-probs."""

    tokenizer: Any
    model_cfg: GPTConfig
    model: GPT
    mesh: Mesh
    train: SequencePairs
    validation: SequencePairs | None
    references: dict[str, np.ndarray]  # "train" (2N,), "validation" (2M,); empty if unused
    reference_seconds: float
    data_dir: Path


def _initial_model(config: OfflineConfig, init: str | None, locale: str) -> tuple:
    if init is not None:
        return init_from(init, config)
    tokenizer = kinship_tokenizer(locale)
    cfg = config.model_config(len(tokenizer))
    return init_model(cfg, config.seed), cfg, tokenizer


def _load(method: Method, data_dir: str | Path, split: str, tokenizer: Any, n: int | None,
          max_length: int) -> SequencePairs:  # fmt: skip
    records = load_records(data_dir, split, method.data_kind)[:n]
    return method.tokenize(records, tokenizer, max_length)


def prepare_offline(
    method: Method,
    config: OfflineConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    init: str | None = None,
    *,
    progress: bool = False,
) -> OfflineSetup:
    """Every check of the user's input (ValueError), then the run folder, the data and the
    reference log-probs (computed once with the initial model, or read from the cache; with a
    progress bar if `progress`)."""
    data_config = read_data_config(data_dir, method.data_kind)
    split_path(data_dir, "train")
    mesh = make_mesh(config.fsdp_devices)
    if config.batch_size % batch_divisor(mesh):
        raise ValueError(f"batch_size must be a multiple of the {batch_divisor(mesh)} devices "
                         f"it is split over (got {config.batch_size})")  # fmt: skip
    run = Path(run_dir)
    record = {"method": method.name, method.name: config.to_dict(),
              "data": str(Path(data_dir).absolute()), "init": init}  # fmt: skip
    check_new_or_run_folder(run)
    fresh = not (run / "config.json").exists()
    if not fresh:
        check_same_run(run, record)
    locale = data_config.get("config", {}).get("locale", "en_US")
    model, cfg, tokenizer = _initial_model(config, init, locale)
    model, cfg = method.prepare_model(model, cfg, config.seed)
    train = _load(method, data_dir, "train", tokenizer, None, cfg.n_positions)
    require_step_examples(len(train), config.batch_size * config.grad_accum)
    validation = None
    if has_split(data_dir, "validation"):
        validation = _load(method, data_dir, "validation", tokenizer, config.eval_examples,
                           cfg.n_positions)  # fmt: skip
    # Only now, with every check of the input passed: a rejected command leaves no run folder
    # behind that would block the corrected one.
    if fresh and jax.process_index() == 0:
        create_run(run, {**record, "model": dataclasses.asdict(cfg)}, tokenizer)
    start = time.perf_counter()
    references: dict[str, np.ndarray] = {}
    if method.needs_reference:
        splits = {"train": train.sequences}
        if validation is not None:
            splits["validation"] = validation.sequences
        graphdef, state = nnx.split(model)
        if method.packed:  # reference_batch_size counts sequences: half as many pairs
            compute = functools.partial(
                packed_reference_logps, graphdef, state,
                batch_size=max(config.reference_batch_size // 2, 1), pad_id=tokenizer.pad_token_id,
                progress=progress,
            )  # fmt: skip
        else:
            compute = functools.partial(
                reference_logps, graphdef, state, batch_size=config.reference_batch_size,
                pad_id=tokenizer.pad_token_id, max_length=cfg.n_positions, progress=progress,
            )  # fmt: skip
        # Keyed on the data and on the reference weights: a run resumed after its --init run
        # was retrained recomputes them instead of training against stale ones.
        references = cached_reference_logps(run / "reference_logps.npz", splits, compute,
                                            model=state_fingerprint(state))  # fmt: skip
        release_host_memory()  # the reference programs are done with: lower the training peak
    seconds = time.perf_counter() - start
    return OfflineSetup(tokenizer, cfg, model, mesh, train, validation, references, seconds,
                        Path(data_dir))  # fmt: skip


def pair_batch_sharding(mesh: Mesh, packed: bool = False) -> PairBatch | PackedPairBatch:
    """Shardings of a `PairBatch` (or `PackedPairBatch`): the example axis B (and the packed
    row axis R) split over every device."""
    spec = functools.partial(NamedSharding, mesh)
    if packed:
        rows = spec(PartitionSpec(None, BATCH_AXES, None))  # (A, R, W): rows split
        examples = spec(PartitionSpec(None, None, BATCH_AXES))  # (A, 2, B)
        return PackedPairBatch(
            tokens=rows, positions=rows, segments=rows, sources=rows, targets=rows,
            last=examples, ref_logps=examples, labels=spec(PartitionSpec(None, BATCH_AXES)),
        )  # fmt: skip
    return PairBatch(
        tokens=spec(PartitionSpec(None, None, BATCH_AXES, None)),
        attention_mask=spec(PartitionSpec(None, None, BATCH_AXES, None)),
        loss_mask=spec(PartitionSpec(None, None, BATCH_AXES, None)),
        ref_logps=spec(PartitionSpec(None, None, BATCH_AXES)),
        labels=spec(PartitionSpec(None, BATCH_AXES)),
    )


class _Placed(NamedTuple):
    graphdef: nnx.GraphDef
    state: nnx.State
    opt_state: Any
    step: int
    data_position: int
    train_step: Any
    eval_step: Any


def place(method: Method, config: OfflineConfig, model: GPT, mesh: Mesh,
          checkpoints: Checkpoints) -> _Placed:  # fmt: skip
    """Shard the initial model (or restore the latest checkpoint) and jit the steps once."""
    optimizer = make_optimizer(config)
    start = start_or_resume(model, optimizer, mesh, config.shard_params, checkpoints)
    train_step = CompiledPerShape(jax.jit(
        functools.partial(method.step, optimizer=optimizer), static_argnums=0,
        donate_argnums=(1, 2),
        out_shardings=(start.state_sharding, start.opt_sharding, replicated(mesh)),
    ))  # fmt: skip
    eval_step = CompiledPerShape(
        jax.jit(method.eval_step, static_argnums=0, out_shardings=replicated(mesh))
    )
    return _Placed(start.graphdef, start.state, start.opt_state, start.step,
                   start.data_position, train_step, eval_step)  # fmt: skip


def evaluate_pairs(method: Method, placed: _Placed, state: nnx.State, batches: list,
                   mesh: Mesh) -> dict[str, float]:  # fmt: skip
    """Held-out means of every per-example metric (plus `method.summarize`'s figures)."""
    sharding = pair_batch_sharding(mesh, method.packed)
    outputs = [
        (placed.eval_step(placed.graphdef, state, put_global(batch, sharding)), real)
        for batch, real in batches
    ]
    per_example: dict[str, list[np.ndarray]] = {}
    for metrics, real in jax.device_get(outputs):
        for key, value in metrics.items():
            per_example.setdefault(key, []).append(np.asarray(value)[:real])
    arrays = {key: np.concatenate(parts) for key, parts in per_example.items()}
    summary = {key: float(np.mean(value)) for key, value in arrays.items()}
    if method.summarize is not None:
        summary.update(method.summarize(arrays))
    return summary


class _Logger:
    """Keeps step metrics on device and fetches them every `log_interval` steps."""

    def __init__(self, log: MetricsLog, config: OfflineConfig, bar: tqdm) -> None:
        self.log, self.bar, self.schedule = log, bar, learning_rate_schedule(config)
        self.examples = config.batch_size * config.grad_accum
        self.pending: list[tuple[int, dict[str, jax.Array]]] = []
        self.last: dict[str, Any] = {}
        self.start = time.perf_counter()

    def flush(self) -> None:
        if not self.pending:
            return
        fetched = jax.device_get([metrics for _, metrics in self.pending])
        rate = len(self.pending) * self.examples / max(time.perf_counter() - self.start, 1e-9)
        lines = []
        for (step, _), metrics in zip(self.pending, fetched, strict=True):
            line = {"step": step, **{f"train/{k}": float(v) for k, v in metrics.items()}}
            line.update({"train/lr": float(self.schedule(step - 1)),
                         "train/examples_per_s": round(rate, 1)})  # fmt: skip
            lines.append(line)
        self.log.write(lines)
        self.bar.update(len(lines))
        self.bar.set_postfix(loss=f"{lines[-1]['train/loss']:.4f}", ex_s=f"{rate:.0f}")
        self.last.update(lines[-1])
        self.pending, self.start = [], time.perf_counter()

    def write_eval(self, step: int, metrics: dict[str, float]) -> None:
        line = {f"eval/{k}": v for k, v in metrics.items()}
        self.log.write([{"step": step, **line}])
        self.last.update(line)
        self.start = time.perf_counter()


def _train_loop(method: Method, config: OfflineConfig, setup: OfflineSetup, placed: _Placed,
                checkpoints: Checkpoints, log: MetricsLog, progress: bool) -> tuple:  # fmt: skip
    """Steps `placed.step + 1 .. config.steps`: train, log, evaluate, checkpoint."""
    pad_id, max_length = setup.tokenizer.pad_token_id, setup.model_cfg.n_positions
    iterator = PairIterator(
        setup.train, setup.references.get("train"), batch_size=config.batch_size,
        grad_accum=config.grad_accum, seed=config.seed, pad_id=pad_id, max_length=max_length,
        length_grouping=config.length_grouping, position=placed.data_position,
        packed=method.packed, steps=config.steps, row_multiple=batch_divisor(setup.mesh),
    )  # fmt: skip
    held_out = []
    if setup.validation is not None and len(setup.validation):
        held_out = eval_pair_batches(setup.validation, setup.references.get("validation"),
                                     config.batch_size, pad_id, max_length, packed=method.packed,
                                     row_multiple=batch_divisor(setup.mesh))  # fmt: skip
    sharding = pair_batch_sharding(setup.mesh, method.packed)
    bar = tqdm(total=config.steps, initial=placed.step, unit="step",
               disable=not progress or jax.process_index() != 0)  # fmt: skip
    logger = _Logger(log, config, bar)
    state, opt_state = placed.state, placed.opt_state
    for done in range(placed.step + 1, config.steps + 1):
        batch = put_global(next(iterator), sharding)
        state, opt_state, metrics = placed.train_step(placed.graphdef, state, opt_state, batch)
        logger.pending.append((done, metrics))
        last = done == config.steps
        if done % config.log_interval == 0 or last:
            logger.flush()
        if held_out and ((config.eval_interval and done % config.eval_interval == 0) or last):
            logger.flush()
            logger.write_eval(done, evaluate_pairs(method, placed, state, held_out, setup.mesh))
        if done % config.save_interval == 0 or last:
            logger.flush()
            meta = {"step": done, "data_position": iterator.position, "seed": config.seed}
            checkpoints.save(done, state, opt_state, meta)
            logger.start = time.perf_counter()
    bar.close()
    return state, logger.last


def run_offline(
    method: Method,
    config: OfflineConfig,
    setup: OfflineSetup,
    run_dir: str | Path,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train from the latest checkpoint (or the start) to `config.steps`, then export the
    model to `RUN/hf/`. Returns the last train and held-out metrics and the timings."""
    start = time.perf_counter()
    checkpoints = Checkpoints(run_dir, config.keep_checkpoints)
    try:
        placed = place(method, config, setup.model, setup.mesh, checkpoints)
        log = MetricsLog(run_dir)
        log.truncate_after(placed.step)
        state, last = _train_loop(method, config, setup, placed, checkpoints, log, progress)
    finally:
        checkpoints.close()
    export_hf(nnx.merge(placed.graphdef, state), setup.model_cfg, setup.tokenizer, run_dir)
    timing = {"time/reference_s": round(setup.reference_seconds, 3),
              "time/train_s": round(time.perf_counter() - start, 3)}  # fmt: skip
    return {"steps": config.steps, "resumed_from": placed.step, **last, **timing}
