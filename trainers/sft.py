"""Supervised fine-tuning (SFT): next-token cross-entropy on the completion tokens.

    train_sft(SFTConfig(steps=2000), "data/l1", "runs/sft-l1")

One optimizer step sees `batch_size * grad_accum` sequences as `grad_accum` micro-batches,
scanned inside one jitted `train_step`. The loss is the mean over every completion token of
the whole step (each micro-batch's token-loss sum is divided by the step's total token count
before the gradients are added), so batch 8 x accumulation 1 and batch 1 x accumulation 8
take the same step.

`train_sft` is the loop around it: a run folder (see `trainers/checkpoint.py`), Orbax
checkpoints every `save_interval` steps, resume from the last one after a crash (the resumed
steps reproduce the metrics of an uninterrupted run), per-step metrics in `metrics.jsonl`,
a progress bar, and the final model exported in Hugging Face layout to `RUN/hf/`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from tqdm import tqdm

from tasks.io import is_dataset_folder
from trainers.checkpoint import (
    Checkpoints,
    MetricsLog,
    abstract_with_shardings,
    check_new_or_run_folder,
    check_same_run,
    create_run,
    export_hf,
    is_run_folder,
    load_run,
)
from trainers.data import (
    Batch,
    BatchIterator,
    TokenizedSplit,
    fixed_size_chunks,
    has_split,
    load_records,
    make_batch,
    read_data_config,
    require_step_examples,
    split_path,
    tokenize_examples,
)
from trainers.hf import from_hf
from trainers.model import (
    GPT,
    PRESETS,
    GPTConfig,
    abstract_model,
    init_model,
    segment_attention,
    segment_positions,
)
from trainers.runtime import CompiledPerShape
from trainers.sharding import (
    batch_divisor,
    batch_sharding,
    make_mesh,
    put_global,
    replicated,
    state_shardings,
)
from trainers.tokenizer import kinship_tokenizer, load_tokenizer

ADAM_B1, ADAM_B2 = 0.9, 0.95  # nanoGPT's betas: b2 = 0.95 is steadier for small batches


def _doc(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class SFTConfig:
    """Hyper-parameters of an SFT run; every field is a `kinrl train sft` option."""

    preset: str = _doc("model size: nano, small or gpt2 (ignored with --init)", default="nano")
    steps: int = _doc("optimizer steps, >= 1", default=2000)
    batch_size: int = _doc("sequences per micro-batch, >= 1", default=32)
    grad_accum: int = _doc("micro-batches per optimizer step, >= 1", default=1)
    learning_rate: float = _doc("peak learning rate, > 0", default=3e-3)
    warmup_steps: int = _doc("linear warm-up steps, 0..steps-1", default=100)
    min_lr_ratio: float = _doc("final / peak learning rate of the cosine decay, 0..1", default=0.1)
    weight_decay: float = _doc("AdamW decoupled weight decay on matrices, >= 0", default=0.1)
    prompt_loss_weight: float = _doc(
        "weight of the prompt tokens' loss relative to the completion's, 0..1 (0 = "
        "completion-only loss; 1 = every token alike, which on the kinship task teaches the "
        "relation inversions its prompts state; eval/loss is always completion-only)",
        default=0.0,
    )
    clip_norm: float = _doc("clip gradients to this global norm, > 0", default=1.0)
    bf16: bool = _doc("compute in bfloat16 (weights and optimizer stay float32)", default=False)
    remat: bool = _doc(
        "recompute block activations in the backward pass (GPU/TPU; no effect on XLA:CPU)",
        default=False,
    )
    seed: int = _doc("seed of the initial weights and the data order, >= 0", default=0)
    log_interval: int = _doc("steps between metric fetches (lines are per step), >= 1", default=10)
    eval_interval: int = _doc("steps between validation losses (0 = at the end only)", default=1000)
    eval_examples: int = _doc("validation examples in each validation loss, >= 1", default=512)
    save_interval: int = _doc("steps between checkpoints (the last step always saves)", default=500)
    keep_checkpoints: int = _doc("checkpoints kept on disk (the newest), >= 1", default=2)
    length_bucket: int = _doc(
        "pad each batch to a multiple of this many tokens (fewer = less padding, more "
        "compiled shapes), >= 1",
        default=16,
    )
    pack_width: int = _doc(
        "pack several examples into each row of this many tokens, kept apart by the attention "
        "mask (the same loss as one example per row, with far less padding); 0 = one example "
        "per row, padded to length_bucket",
        default=128,
    )
    length_grouping: int = _doc(
        "batches per window sorted by length (less padding, but batches of alike examples "
        "learn slower; 1 = plain shuffle), >= 1",
        default=1,
    )
    fsdp_devices: int = _doc("devices on the mesh's fsdp axis (the rest is data), >= 1", default=1)
    shard_params: bool = _doc("FSDP: shard parameters and optimizer state over fsdp", default=False)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)} (got {self.preset!r})")
        for name, low in _INT_MINIMUM.items():
            value = getattr(self, name)
            _require(_is_int(value) and value >= low, name, f"an integer >= {low}", value)
        warmup = self.warmup_steps
        _require(
            _is_int(warmup) and 0 <= warmup < self.steps, "warmup_steps", "in 0..steps-1", warmup
        )
        for name, (ok, allowed) in _FLOAT_RANGE.items():
            value = getattr(self, name)
            _require(_is_number(value) and ok(value), name, allowed, value)
        _require(self.pack_width <= MAX_PACK_WIDTH, "pack_width", f"at most {MAX_PACK_WIDTH}",
                 self.pack_width)  # fmt: skip
        for name in ("bf16", "remat", "shard_params"):
            value = getattr(self, name)
            _require(isinstance(value, bool), name, "true or false", value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self, vocab_size: int, base: GPTConfig | None = None) -> GPTConfig:
        """The preset (or `base`, e.g. a checkpoint's config) with this run's vocabulary size
        (for a fresh model), compute dtype and remat."""
        if base is None:
            base = dataclasses.replace(PRESETS[self.preset], vocab_size=vocab_size)
        dtype = "bfloat16" if self.bf16 else "float32"
        return dataclasses.replace(base, dtype=dtype, remat=self.remat)


_INT_MINIMUM = {
    "steps": 1,
    "batch_size": 1,
    "grad_accum": 1,
    "log_interval": 1,
    "eval_interval": 0,
    "pack_width": 0,
    "eval_examples": 1,
    "save_interval": 1,
    "keep_checkpoints": 1,
    "length_bucket": 1,
    "length_grouping": 1,
    "fsdp_devices": 1,
    "seed": 0,
}
MAX_PACK_WIDTH = 4096  # a row's attention mask is (T, T): keep typos from exhausting memory
_FLOAT_RANGE = {
    "learning_rate": (lambda v: v > 0, "a number > 0"),
    "min_lr_ratio": (lambda v: 0 <= v <= 1, "a number in 0..1"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "clip_norm": (lambda v: v > 0, "a number > 0"),
    "prompt_loss_weight": (lambda v: 0 <= v <= 1, "a number in 0..1"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require(ok: bool, name: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed} (got {value!r})")


def learning_rate_schedule(config: SFTConfig) -> optax.Schedule:
    """Linear warm-up to the peak, then cosine decay to `min_lr_ratio * peak` at the end."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=config.steps,
        end_value=config.learning_rate * config.min_lr_ratio,
    )


def make_optimizer(config: SFTConfig) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW; weight decay on matrices only (not biases, LayerNorms)."""
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(
            learning_rate_schedule(config),
            b1=ADAM_B1,
            b2=ADAM_B2,
            weight_decay=config.weight_decay,
            mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
        ),
    )


def token_losses(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """Next-token cross-entropy: logits (B, T, V) float32, tokens (B, T) -> (B, T - 1), the
    loss of predicting tokens[:, t + 1] from position t. Unreduced: masks at the call site."""
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])


def _loss_sum(model: GPT, tokens: jax.Array, segments: jax.Array, mask: jax.Array) -> jax.Array:
    """Sum of the masked token losses of one (B, T) micro-batch; `segments` is the batch's
    `attention_mask` (segment ids: one sequence per row, or several packed)."""
    hidden = model.hidden_states(
        tokens, positions=segment_positions(segments), attend=segment_attention(segments)
    )
    logits = model.lm_head(hidden)  # (B, T, V)
    return jnp.sum(token_losses(logits, tokens) * mask[:, 1:])


def train_step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    opt_state: optax.OptState,
    batch: Batch,
    *,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState, dict[str, jax.Array]]:
    """One optimizer step on a (A, B, T) batch: scan the A micro-batches, adding gradients of
    (token-loss sum / the whole step's token count), then clip and apply AdamW.

    Pure; jit it once per run with `graphdef` and `optimizer` static and state donated.
    Metrics: loss (mean token loss), grad_norm (before clipping), tokens (completion tokens).
    """
    total = jnp.maximum(jnp.sum(batch.loss_mask[:, :, 1:]), 1.0)

    def scaled_loss(state: nnx.State, micro: Batch) -> jax.Array:
        model = nnx.merge(graphdef, state)
        return _loss_sum(model, micro.tokens, micro.attention_mask, micro.loss_mask) / total

    def accumulate(grads: nnx.State, micro: Batch) -> tuple[nnx.State, jax.Array]:
        loss, micro_grads = jax.value_and_grad(scaled_loss)(state, micro)
        return jax.tree.map(jnp.add, grads, micro_grads), loss

    zeros = jax.tree.map(jnp.zeros_like, state)
    grads, losses = jax.lax.scan(accumulate, zeros, batch)
    updates, opt_state = optimizer.update(grads, opt_state, state)
    state = optax.apply_updates(state, updates)
    metrics = {"loss": jnp.sum(losses), "grad_norm": optax.global_norm(grads), "tokens": total}
    return state, opt_state, metrics


def eval_step(graphdef: nnx.GraphDef, state: nnx.State, batch: Batch) -> dict[str, jax.Array]:
    """Summed completion-token loss and token count of a (1, B, T) batch (no update)."""
    model = nnx.merge(graphdef, state)
    micro = jax.tree.map(lambda x: x[0], batch)
    loss = _loss_sum(model, micro.tokens, micro.attention_mask, micro.loss_mask)
    return {"loss_sum": loss, "tokens": jnp.sum(micro.loss_mask[:, 1:])}


# ----------------------------------------------------------------------------- the run


class _Setup(NamedTuple):
    """What a run starts from: tokenizer, model config and initial model, data."""

    tokenizer: Any
    model_cfg: GPTConfig
    model: GPT
    train: TokenizedSplit
    validation: TokenizedSplit | None


def init_from(init: str, config: SFTConfig) -> tuple[GPT, GPTConfig, Any]:
    """(model, config, tokenizer) from a run folder or a Hugging Face GPT-2 folder / hub name,
    with this run's compute dtype and remat. ValueError when it cannot be loaded."""
    if is_run_folder(init):
        model, cfg, tokenizer = load_run(init)
    else:
        try:
            model, cfg = from_hf(init)
            tokenizer = load_tokenizer(init)
        except (OSError, ValueError, KeyError) as error:
            if is_dataset_folder(Path(init)):
                why = "give a run folder or a GPT-2 checkpoint (the data goes to --data)"
                raise ValueError(f"--init {init} is a dataset folder; {why}") from None
            raise ValueError(f"--init {init}: not a run or GPT-2 checkpoint ({error})") from None
    new_cfg = config.model_config(cfg.vocab_size, base=cfg)
    if len(tokenizer) > new_cfg.vocab_size:
        raise ValueError(f"--init {init}: its tokenizer is larger than the model's vocabulary")
    graphdef, _ = nnx.split(abstract_model(new_cfg))
    return nnx.merge(graphdef, nnx.state(model)), new_cfg, tokenizer


def open_run(
    config: SFTConfig, data_dir: str | Path, run_dir: str | Path, init: str | None = None
) -> _Setup:
    """Create the run folder, or check that an existing one holds this very run (to resume).

    ValueError for a data folder of the wrong kind or without a train split, too few training
    examples for one step, an unreadable init, or a run folder that was started with a
    different config or data; every check comes before the folder is created, so a rejected
    command leaves nothing that would block the corrected one.
    """
    data_config = read_data_config(data_dir)
    split_path(data_dir, "train")
    run = Path(run_dir)
    check_new_or_run_folder(run)
    record = {"method": "sft", "sft": config.to_dict(), "data": str(Path(data_dir).absolute())}
    record["init"] = init
    if (run / "config.json").exists():
        check_same_run(run, record)
    if init is not None:
        model, model_cfg, tokenizer = init_from(init, config)
    else:
        tokenizer = kinship_tokenizer(data_config["config"].get("locale", "en_US"))
        model_cfg = config.model_config(len(tokenizer))
        model = init_model(model_cfg, config.seed)
    max_length = model_cfg.n_positions
    train = tokenize_examples(load_records(data_dir, "train"), tokenizer, max_length)
    # Checked before the run folder exists: a rerun with a smaller batch can fix it.
    require_step_examples(len(train), config.batch_size * config.grad_accum)
    validation = None
    if has_split(data_dir, "validation"):
        records = load_records(data_dir, "validation")[: config.eval_examples]
        validation = tokenize_examples(records, tokenizer, max_length)
    if not (run / "config.json").exists() and jax.process_index() == 0:
        create_run(run, {**record, "model": dataclasses.asdict(model_cfg)}, tokenizer)
    return _Setup(tokenizer, model_cfg, model, train, validation)


class _Placed(NamedTuple):
    """Model and optimizer state on the mesh, with the jitted steps that keep them there."""

    graphdef: nnx.GraphDef
    state: nnx.State
    opt_state: optax.OptState
    step: int
    data_position: int
    train_step: Any
    eval_step: Any
    batch_sharding: NamedSharding


class Start(NamedTuple):
    """Where a run starts: the model and optimizer state on the mesh (fresh, or restored from
    the latest checkpoint), with their shardings for the jitted steps' outputs."""

    graphdef: nnx.GraphDef
    state: nnx.State
    opt_state: optax.OptState
    step: int  # optimizer steps already taken: 0 for a fresh run
    data_position: int  # examples (or pairs) of the data order already consumed
    state_sharding: Any
    opt_sharding: Any


def start_or_resume(
    model: GPT,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    shard_params: bool,
    checkpoints: Checkpoints,
) -> Start:
    """Shard the initial model and a fresh optimizer state over `mesh`, or restore the latest
    checkpoint straight into those shardings (the trainers' shared start)."""
    graphdef, state = nnx.split(model)
    state_sh = state_shardings(state, mesh, shard_params)
    abstract_opt = jax.eval_shape(optimizer.init, state)
    opt_sh = state_shardings(abstract_opt, mesh, shard_params)
    restored = checkpoints.restore_latest(
        abstract_with_shardings(state, state_sh), abstract_with_shardings(abstract_opt, opt_sh)
    )
    if restored is None:
        state = put_global(state, state_sh)
        opt_state = jax.jit(optimizer.init, out_shardings=opt_sh)(state)
        return Start(graphdef, state, opt_state, 0, 0, state_sh, opt_sh)
    step, state, opt_state, meta = restored
    return Start(graphdef, state, opt_state, step, meta["data_position"], state_sh, opt_sh)


def place(config: SFTConfig, model: GPT, checkpoints: Checkpoints, mesh: Mesh) -> _Placed:
    """Shard the initial model (or restore the latest checkpoint) and jit the steps once."""
    optimizer = make_optimizer(config)
    start = start_or_resume(model, optimizer, mesh, config.shard_params, checkpoints)
    step_fn = CompiledPerShape(
        jax.jit(
            functools.partial(train_step, optimizer=optimizer),
            static_argnums=0,
            donate_argnums=(1, 2),
            out_shardings=(start.state_sharding, start.opt_sharding, replicated(mesh)),
        )
    )
    eval_fn = CompiledPerShape(jax.jit(eval_step, static_argnums=0, out_shardings=replicated(mesh)))
    return _Placed(start.graphdef, start.state, start.opt_state, start.step,
                   start.data_position, step_fn, eval_fn, batch_sharding(mesh))  # fmt: skip


class _StepLogger:
    """Collects each step's metrics as device arrays and fetches them every `log_interval`
    steps (one sync per window, not per step), writing one line per step and updating the
    progress bar. tokens/s is the window's non-pad tokens over its wall time."""

    def __init__(self, log: MetricsLog, config: SFTConfig, n_train: int, bar: tqdm) -> None:
        self.log, self.bar, self.n_train = log, bar, n_train
        self.schedule = learning_rate_schedule(config)
        self.examples_per_step = config.batch_size * config.grad_accum
        self.pending: list[tuple[int, dict[str, jax.Array], int]] = []
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    def add(self, step: int, metrics: dict[str, jax.Array], tokens: int) -> None:
        self.pending.append((step, metrics, tokens))

    def flush(self) -> None:
        if not self.pending:
            return
        fetched = jax.device_get([metrics for _, metrics, _ in self.pending])
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        tokens_per_s = sum(tokens for _, _, tokens in self.pending) / elapsed
        lines = []
        for (step, _, _), metrics in zip(self.pending, fetched, strict=True):
            lines.append({
                "step": step,
                "train/loss": float(metrics["loss"]),
                "train/grad_norm": float(metrics["grad_norm"]),
                "train/lr": float(self.schedule(step - 1)),
                "train/loss_tokens": int(metrics["tokens"]),
                "train/tokens_per_s": round(tokens_per_s, 1),
                "train/epoch": round(step * self.examples_per_step / self.n_train, 4),
            })  # fmt: skip
        self.log.write(lines)
        self.bar.update(len(lines))
        self.bar.set_postfix(loss=f"{lines[-1]['train/loss']:.4f}", tok_s=f"{tokens_per_s:.0f}")
        self.pending = []
        self.restart_clock()

    def write_eval(self, step: int, loss: float) -> None:
        self.log.write([{"step": step, "eval/loss": loss}])
        self.restart_clock()


def eval_batches(
    data: TokenizedSplit, config: SFTConfig, pad_id: int, max_length: int
) -> list[Batch]:
    """The validation set as (1, batch_size, T) batches sorted by length; the last batch is
    filled up with copies whose loss mask is zeroed (fixed shapes, nothing counted twice)."""
    order = np.argsort(data.lengths, kind="stable")
    batches = []
    for chunk, filled in fixed_size_chunks(order, config.batch_size):
        batch = make_batch(
            data, filled, grad_accum=1, pad_id=pad_id, max_length=max_length,
            bucket=config.length_bucket,
        )  # fmt: skip
        batch.loss_mask[:, len(chunk) :] = 0.0
        batches.append(batch)
    return batches


def validation_loss(placed: _Placed, state: nnx.State, batches: list[Batch]) -> float:
    """Mean completion-token loss over the validation batches."""
    results = [
        placed.eval_step(placed.graphdef, state, put_global(batch, placed.batch_sharding))
        for batch in batches
    ]
    results = jax.device_get(results)
    loss = sum(float(r["loss_sum"]) for r in results)
    return loss / max(sum(float(r["tokens"]) for r in results), 1.0)


def _train_loop(
    config: SFTConfig,
    setup: _Setup,
    placed: _Placed,
    checkpoints: Checkpoints,
    log: MetricsLog,
    progress: bool,
) -> nnx.State:
    """Steps `placed.step + 1 .. config.steps`: train, log, validate, checkpoint."""
    tokenizer, max_length = setup.tokenizer, setup.model_cfg.n_positions
    iterator = BatchIterator(
        setup.train, batch_size=config.batch_size, grad_accum=config.grad_accum,
        seed=config.seed, pad_id=tokenizer.pad_token_id, max_length=max_length,
        length_grouping=config.length_grouping, bucket=config.length_bucket,
        prompt_weight=config.prompt_loss_weight, position=placed.data_position,
        pack_width=config.pack_width, row_multiple=batch_divisor(placed.batch_sharding.mesh),
    )  # fmt: skip
    validation = []
    if setup.validation is not None and len(setup.validation):
        validation = eval_batches(setup.validation, config, tokenizer.pad_token_id, max_length)
    quiet = not progress or jax.process_index() != 0
    bar = tqdm(total=config.steps, initial=placed.step, unit="step", disable=quiet)
    logger = _StepLogger(log, config, len(setup.train), bar)
    state, opt_state = placed.state, placed.opt_state
    for done in range(placed.step + 1, config.steps + 1):
        host_batch = next(iterator)
        batch = put_global(host_batch, placed.batch_sharding)
        state, opt_state, metrics = placed.train_step(placed.graphdef, state, opt_state, batch)
        logger.add(done, metrics, int(np.count_nonzero(host_batch.attention_mask)))
        last = done == config.steps
        if done % config.log_interval == 0 or last:
            logger.flush()
        if validation and ((config.eval_interval and done % config.eval_interval == 0) or last):
            logger.flush()
            logger.write_eval(done, validation_loss(placed, state, validation))
        if done % config.save_interval == 0 or last:
            logger.flush()
            meta = {"step": done, "data_position": iterator.position, "seed": config.seed}
            checkpoints.save(done, state, opt_state, meta)
            logger.restart_clock()
    bar.close()
    return state


def prepare_sft(
    config: SFTConfig, data_dir: str | Path, run_dir: str | Path, init: str | None = None
) -> tuple[Mesh, _Setup]:
    """Every check of the user's input (ValueError), then the run folder and the data."""
    mesh = make_mesh(config.fsdp_devices)
    if config.batch_size % batch_divisor(mesh):
        raise ValueError(
            f"batch_size must be a multiple of the {batch_divisor(mesh)} devices it is split "
            f"over (got {config.batch_size})"
        )
    return mesh, open_run(config, data_dir, run_dir, init)


def run_sft(
    config: SFTConfig, setup: _Setup, mesh: Mesh, run_dir: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train from the latest checkpoint (or the start) to `config.steps`, then export.
    Returns the last value of every metric, and `time/run_s` (this call's wall time)."""
    start = time.perf_counter()
    checkpoints = Checkpoints(run_dir, config.keep_checkpoints)
    try:
        placed = place(config, setup.model, checkpoints, mesh)
        log = MetricsLog(run_dir)
        log.truncate_after(placed.step)
        state = _train_loop(config, setup, placed, checkpoints, log, progress)
    finally:
        checkpoints.close()
    export_hf(nnx.merge(placed.graphdef, state), setup.model_cfg, setup.tokenizer, run_dir)
    summary = {"steps": config.steps, "resumed_from": placed.step}
    for line in log.read():
        summary.update({k: v for k, v in line.items() if k != "step"})
    summary["time/run_s"] = round(time.perf_counter() - start, 1)
    return summary


def train_sft(
    config: SFTConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    init: str | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune on the `train` split of a `kinrl generate` folder; resume if `run_dir` holds
    a crashed run of the same config. `init`: a run folder or a HF GPT-2 folder / hub name
    (default: a fresh `config.preset` model). Returns the last metrics (train and eval)."""
    mesh, setup = prepare_sft(config, data_dir, run_dir, init)
    return run_sft(config, setup, mesh, run_dir, progress=progress)
