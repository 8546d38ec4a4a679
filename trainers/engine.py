"""The one training loop: every method (`trainers/sft.py`, `dpo.py`, ...) is a `Method` on it.

    from trainers.engine import train
    train("dpo", DPOConfig(beta=0.1), "data/pairs", "runs/dpo", init="runs/sft")

A method says what is particular to it: its config class, the dataset kind it trains on, how
to `prepare` (tokenise, compute reference log-probs) into batches, the jitted `step`, and how
to `evaluate` held-out batches. The engine does the rest, the same for every method:

* checks every input before any work (data kind, split, run folder, `--init` and whether its
  tokenizer, vocabulary and context fit the data), and creates the run folder only then;
* places the train state (parameters, optimizer state, step) on the mesh, fresh or restored
  from the latest readable checkpoint (a damaged newer one is moved aside);
* per step: the method's next batch, then one jitted step with the state donated, its key
  `fold_in(root, step)`; metrics to `RUN/metrics.jsonl` (fetched from the device every
  `log_interval` steps), a progress bar with rate and ETA, a held-out evaluation every
  `eval_interval` steps and at the end, a checkpoint every `save_interval` steps and at the end;
* Ctrl-C (or SIGTERM) finishes the step in flight, saves a checkpoint and raises `Interrupted`
  naming the step a rerun of the same command resumes from;
* exports the final model in Hugging Face layout to `RUN/hf/`.

Method steps are pure: `step(graphdef, params, opt_state, batch, key, *, config, optimizer)
-> (params, opt_state, metrics)`, where `metrics` are scalars. `accumulate_gradients` and
`apply_gradients` are the pieces the offline methods' steps share.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh
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
from trainers.config import GPTConfig, TrainConfig
from trainers.data import load_records, read_data_config, split_path
from trainers.hf import from_hf
from trainers.model import GPT, abstract_model, init_model
from trainers.runtime import CompiledPerShape
from trainers.sharding import (
    batch_divisor,
    make_mesh,
    put_global,
    replicated,
    state_shardings,
)
from trainers.tokenizer import kinship_tokenizer, load_tokenizer, unknown_words

Metrics = dict[str, jax.Array]
ADAM_B1, ADAM_B2 = 0.9, 0.95  # nanoGPT's betas: b2 = 0.95 is steadier for small batches

# ----------------------------------------------------------------------------- methods


class Setup(NamedTuple):
    """What a method's `prepare` gets: the checked inputs and the initial model."""

    config: Any  # the method's TrainConfig subclass
    data_dir: Path
    run_dir: Path
    tokenizer: Any
    model_cfg: GPTConfig
    model: GPT
    mesh: Mesh
    progress: bool


class Prepared(NamedTuple):
    """What a method's `prepare` returns: its data, ready for the loop."""

    batches: Callable[[int], Iterator[Any]]  # data position -> endless host batches;
    # the iterator's `position` attribute (steps consumed) goes into every checkpoint
    sharding: Any  # shardings of one batch (a pytree like it)
    held_out: list[tuple[Any, int]]  # one-micro-batch batches, each with its real examples
    examples: int  # training examples (an epoch)
    rate: tuple[str, Callable[[Any], int]] | None = None  # ("tokens", non-pad tokens of a host
    # batch): logged as train/tokens_per_s; None: train/examples_per_s
    dropped: int = 0  # training records left out for not fitting the context
    data: dict[str, Any] = {}  # what was prepared (splits, reference log-probs), to inspect  # noqa: RUF012
    summary: dict[str, Any] = {}  # extra figures for the run summary  # noqa: RUF012
    # The online methods' hooks (`trainers/online.py`); None for the offline ones:
    rollout: Callable[[nnx.GraphDef, nnx.State, Any, int], tuple[Any, Metrics]] | None = None
    # (graphdef, current params, host batch of prompts, step) -> (the step's batch: samples
    # scored, with their reference log-probs; metrics of the rollout)
    evaluate: Callable[[nnx.GraphDef, nnx.State], dict[str, float]] | None = None
    # held-out figures of params, replacing eval_step + Method.evaluate over held_out
    opt_state: Callable[[optax.GradientTransformation, nnx.State], Any] | None = None
    # the state the step carries beside the params (default: optimizer.init(params)); PPO's
    # holds the value model and the KL coefficient too
    step_kwargs: dict[str, Any] = {}  # static keyword arguments of the step (graphdefs)  # noqa: RUF012


EvaluateOutputs = Callable[[Any, list[tuple[dict[str, np.ndarray], int]]], dict[str, float]]


def keep_model(model: GPT, cfg: GPTConfig, seed: int) -> tuple[GPT, GPTConfig]:
    return model, cfg


@dataclasses.dataclass(frozen=True)
class Method:
    """One training method. See `trainers/dpo.py` for a short example."""

    name: str
    config_class: type[TrainConfig]
    data_kind: str  # the `kind` of the dataset folders it trains on (`tasks.registry`)
    prepare: Callable[[Setup], Prepared]
    step: Callable[..., tuple[nnx.State, Any, Metrics]]  # see the module docstring
    eval_step: Callable[..., Metrics] | None = None  # (graphdef, params, batch, *, config)
    evaluate: EvaluateOutputs | None = None  # (config, fetched eval_step outputs with their
    # real counts) -> held-out figures. The online methods generate instead: `Prepared.evaluate`
    policy: bool = True  # trains a language-model policy (False: a reward model)
    model: Callable[[GPT, GPTConfig, int], tuple[GPT, GPTConfig]] = keep_model  # (.., seed)
    finish: Callable[[Setup], dict[str, Any]] | None = None  # after the export (e.g. offsets)


# ----------------------------------------------------------------------------- optimisation


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warm-up to the peak, then cosine decay to `min_lr_ratio * peak` at the end; over
    optimizer updates (`config.updates_per_step()` of them a step)."""
    updates = config.updates_per_step()
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps * updates,
        decay_steps=config.steps * updates,
        end_value=config.learning_rate * config.min_lr_ratio,
    )


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
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


def accumulate_gradients(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    batch: Any,
    example_loss: Callable[[GPT, Any], tuple[jax.Array, Metrics]],
    examples: tuple[int, int],
) -> tuple[nnx.State, Metrics]:
    """Gradient of the mean per-example loss over a step batch of A micro-batches of B
    examples (`examples` = (A, B)), scanning the micro-batches, so batch 8 x accumulation 1
    and batch 1 x accumulation 8 take the same step. Metrics: `loss`, `grad_norm` (before
    clipping) and the mean over the step of every per-example metric of `example_loss`."""
    total = examples[0] * examples[1]

    def scaled_loss(params: nnx.State, micro: Any) -> tuple[jax.Array, Metrics]:
        loss, metrics = example_loss(nnx.merge(graphdef, params), micro)  # (B,), (B,) each
        return jnp.sum(loss) / total, metrics

    def body(grads: nnx.State, micro: Any) -> tuple[nnx.State, tuple[jax.Array, Metrics]]:
        (loss, metrics), micro_grads = jax.value_and_grad(scaled_loss, has_aux=True)(params, micro)
        sums = {k: jnp.sum(v) for k, v in metrics.items()}
        return jax.tree.map(jnp.add, grads, micro_grads), (loss, sums)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (losses, sums) = jax.lax.scan(body, zeros, batch)
    metrics = {k: jnp.sum(v) / total for k, v in sums.items()}
    metrics.update(loss=jnp.sum(losses), grad_norm=optax.global_norm(grads))
    return grads, metrics


def apply_gradients(
    params: nnx.State,
    opt_state: optax.OptState,
    grads: nnx.State,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState]:
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def per_example_means(config: Any, outputs: list[tuple[dict[str, np.ndarray], int]]) -> dict:
    """The mean over every real held-out example of each per-example metric."""
    del config
    return {key: float(np.mean(value)) for key, value in concatenate(outputs).items()}


def concatenate(outputs: list[tuple[dict[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """Per-example metrics of every eval batch, the fill-up copies left out."""
    parts: dict[str, list[np.ndarray]] = {}
    for metrics, real in outputs:
        for key, value in metrics.items():
            parts.setdefault(key, []).append(np.asarray(value)[:real])
    return {key: np.concatenate(value) for key, value in parts.items()}


# ----------------------------------------------------------------------------- inputs


def _load_init(init: str) -> tuple[GPT, GPTConfig, Any]:
    """(model, config, tokenizer) of a run folder or a Hugging Face GPT-2 folder / hub name."""
    if is_run_folder(init):
        return load_run(init)
    try:
        model, cfg = from_hf(init)
        tokenizer = load_tokenizer(init)
    except (OSError, ValueError, KeyError) as error:
        if is_dataset_folder(Path(init)):
            why = "give a run folder or a GPT-2 checkpoint (the data goes to --data)"
            raise ValueError(f"--init {init} is a dataset folder; {why}") from None
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reason = reason.split(" (")[0].rstrip(".:;, ")  # no half-cut parenthesis
        if len(reason) > 110:
            reason = reason[:110].rsplit(" ", 1)[0] + " ..."
        raise ValueError(f"--init {init} is not a run folder or a GPT-2 checkpoint that "
                         f"loads here: {reason}") from None  # fmt: skip
    return model, cfg, tokenizer


def init_from(init: str, config: TrainConfig) -> tuple[GPT, GPTConfig, Any]:
    """(model, config, tokenizer) from a run folder or a Hugging Face GPT-2 folder / hub name,
    with this run's compute dtype and remat. ValueError when it cannot be loaded, or has no
    usable tokenizer."""
    model, cfg, tokenizer = _load_init(init)
    if len(tokenizer) <= 1 or tokenizer.eos_token_id is None:
        raise ValueError(_NO_TOKENIZER.format(init=init))
    new_cfg = config.model_config(cfg.vocab_size, base=cfg)
    if len(tokenizer) > new_cfg.vocab_size:
        raise ValueError(f"--init {init}: its tokenizer is larger than the model's vocabulary")
    graphdef, _ = nnx.split(abstract_model(new_cfg))
    return nnx.merge(graphdef, nnx.state(model)), new_cfg, tokenizer


_NO_TOKENIZER = ("--init {init} has no usable tokenizer (no tokenizer.json or vocabulary "
                 "files with an end-of-sequence token)")  # fmt: skip


def check_init_fits(init: str, method: Method, cfg: GPTConfig, tokenizer: Any,
                    records: list[dict[str, Any]]) -> None:  # fmt: skip
    """ValueError unless the `--init` model can be trained by `method` on `records` (a sample
    of its training data): a policy method needs a policy (not a reward model), and the
    tokenizer must turn the data's text into tokens, all known and inside the vocabulary."""
    if method.policy and cfg.value_head:
        raise ValueError(f"--init {init} is a reward model (it has a value head); "
                         f"{method.name} trains a policy: start from an SFT run or a GPT-2 "
                         "checkpoint")  # fmt: skip
    texts = [value for r in records for key, value in r.items()
             if key in ("prompt", "completion", "chosen", "rejected") and value]  # fmt: skip
    unknown = sorted({word for text in texts for word in unknown_words(tokenizer, text)})
    if unknown:
        shown = ", ".join(unknown[:3])
        raise ValueError(f"--init {init}: its tokenizer does not know words of the data "
                         f"({shown}, ...); train from a run made on this task")  # fmt: skip
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    if not all(ids):  # a vocabulary that reads the text as nothing at all
        raise ValueError(_NO_TOKENIZER.format(init=init))
    if any(i >= cfg.vocab_size for seq in ids for i in seq):
        raise ValueError(f"--init {init}: its tokenizer gives ids beyond the model's "
                         f"vocabulary of {cfg.vocab_size}")  # fmt: skip


def _check_fits_context(init: str | None, cfg: GPTConfig, prepared: Prepared,
                        config: TrainConfig) -> None:  # fmt: skip
    """ValueError when most training records do not fit the `--init` model's context (its
    positions do not fit the data); a warning when some are left out."""
    dropped, kept = prepared.dropped, prepared.examples
    if init is None or not dropped:
        return
    total = dropped + kept
    # An online method drops the prompts that leave no room for its completions.
    new_tokens = getattr(config, "max_new_tokens", None)
    what = "longer than" if new_tokens is None else f"too long for {new_tokens} new tokens in"
    if dropped > kept:
        raise ValueError(f"--init {init}: {dropped} of the {total} training examples are {what} "
                         f"its context of {cfg.n_positions} positions")  # fmt: skip
    print(f"kinrl: warning: {dropped} of the {total} training examples are {what} the context "
          f"of {cfg.n_positions} positions and are left out", file=sys.stderr)  # fmt: skip


# ----------------------------------------------------------------------------- the run


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training: a checkpoint of `step` was saved (None: the run
    stopped before its first step), and a rerun of the same command resumes from it."""

    def __init__(self, step: int | None) -> None:
        super().__init__(step)
        self.step = step


class TrainState(NamedTuple):
    """The state the jitted step carries: parameters, optimizer state, steps taken."""

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar


def _engine_step(
    method_step: Callable[..., tuple[nnx.State, Any, Metrics]],
    graphdef: nnx.GraphDef,
    state: TrainState,
    root_key: jax.Array,
    batch: Any,
) -> tuple[TrainState, Metrics]:
    key = jax.random.fold_in(jax.random.wrap_key_data(root_key), state.step)
    params, opt_state, metrics = method_step(graphdef, state.params, state.opt_state, batch, key)
    return TrainState(params, opt_state, state.step + 1), metrics


class Run:
    """A run whose inputs are all checked and whose folder exists: `Run.train()` trains it.

    `open_run` makes one; `train` does both. The split lets a command line report bad input
    (ValueError from `open_run`) apart from what happens during training."""

    def __init__(self, method: Method, setup: Setup, prepared: Prepared, seconds: float) -> None:
        self.method, self.setup, self.prepared = method, setup, prepared
        self.prepare_seconds = seconds

    def train(self) -> dict[str, Any]:
        """Train from the latest checkpoint (or the start) to `config.steps`, then export to
        `RUN/hf/`. Returns the last value of every metric and the timings. Raises
        `Interrupted` on Ctrl-C or SIGTERM, after saving a checkpoint."""
        method, setup, config = self.method, self.setup, self.setup.config
        start = time.perf_counter()
        checkpoints = Checkpoints(setup.run_dir, config.keep_checkpoints)
        try:
            graphdef, state, position = self.initial_state(checkpoints)
            log = MetricsLog(setup.run_dir)
            first = int(state.step)
            log.truncate_after(first)
            state = _loop(self, graphdef, state, position, checkpoints, log)
        finally:
            checkpoints.close()
        export_hf(nnx.merge(graphdef, state.params), setup.model_cfg, setup.tokenizer,
                  setup.run_dir)  # fmt: skip
        summary: dict[str, Any] = {"steps": config.steps, "resumed_from": first}
        for line in log.read():  # the last value of every metric, resumed runs included
            summary.update({k: v for k, v in line.items() if k != "step"})
        summary.update(self.prepared.summary)
        if method.finish is not None:
            summary.update(method.finish(setup))
        summary["time/prepare_s"] = round(self.prepare_seconds, 3)
        summary["time/run_s"] = round(time.perf_counter() - start, 1)
        return summary

    def initial_state(self, checkpoints: Checkpoints) -> tuple[nnx.GraphDef, TrainState, int]:
        """The train state on the mesh, fresh or restored from the latest readable checkpoint
        straight into its shardings; and the data position to continue from."""
        return _place(self.setup.config, self.setup, self.prepared, checkpoints)

    def compiled_step(self, state: TrainState) -> tuple[CompiledPerShape, jax.Array]:
        """The loop's jitted step `step(graphdef, state, root_key, batch) -> (state, metrics)`
        (state donated, laid out as `state`), with the run's root key (as raw key data, put
        on every host's devices alike)."""
        config, mesh = self.setup.config, self.setup.mesh
        method_step = functools.partial(self.method.step, config=config,
                                        optimizer=make_optimizer(config),
                                        **self.prepared.step_kwargs)  # fmt: skip
        state_sh = jax.tree.map(lambda leaf: leaf.sharding, state)
        step_fn = CompiledPerShape(jax.jit(
            functools.partial(_engine_step, method_step), static_argnums=0, donate_argnums=1,
            out_shardings=(state_sh, replicated(mesh)),
        ))  # fmt: skip
        root = np.asarray(jax.random.key_data(jax.random.key(config.seed)))
        return step_fn, put_global(root, replicated(mesh))

    def evaluate(self, params: nnx.State | None = None,
                 held_out: list[tuple[Any, int]] | None = None) -> dict[str, float]:  # fmt: skip
        """The method's held-out figures of `params` (default: the initial model) on
        `held_out` batches (default: the prepared ones)."""
        graphdef, initial = nnx.split(self.setup.model)
        eval_fn = _eval_fn(self.method, self.setup.config, self.setup.mesh)
        prepared = self.prepared if held_out is None else self.prepared._replace(held_out=held_out)
        params = initial if params is None else params
        return _evaluate(self.method, self.setup.config, eval_fn, graphdef, params, prepared)


def open_run(
    method: Method | str,
    config: TrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    init: str | None = None,
    *,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> Run:
    """Every check of the input (ValueError), then the run folder and the method's data.

    A rejected command leaves no run folder behind that would block the corrected one; an
    existing folder is resumed only if it holds this very run (method, config, data, init).
    `mesh`: default `make_mesh(config.fsdp_devices)` over every device."""
    from trainers.registry import get_method  # the registry imports every method module

    method = get_method(method) if isinstance(method, str) else method
    if not isinstance(config, method.config_class):
        raise TypeError(f"{method.name} takes a {method.config_class.__name__}")
    data_config = read_data_config(data_dir, method.data_kind)
    split_path(data_dir, "train")
    mesh = make_mesh(config.fsdp_devices) if mesh is None else mesh
    rows, divisor = config.step_rows(), batch_divisor(mesh)
    if rows % divisor:
        what = "batch_size" if hasattr(config, "batch_size") else "prompts_per_step / minibatches"
        raise ValueError(f"{what} must be a multiple of the {divisor} devices it is split over "
                         f"(got {rows})")  # fmt: skip
    run = Path(run_dir)
    check_new_or_run_folder(run)
    record = {"method": method.name, method.name: config.to_dict(),
              "data": str(Path(data_dir).absolute()), "init": init}  # fmt: skip
    fresh = not (run / "config.json").exists()
    if not fresh:
        check_same_run(run, record)
    if init is not None:
        model, cfg, tokenizer = init_from(init, config)
        sample = load_records(data_dir, "train", method.data_kind, limit=256)
        check_init_fits(init, method, cfg, tokenizer, sample)
    else:
        tokenizer = kinship_tokenizer(data_config.get("config", {}).get("locale", "en_US"))
        cfg = config.model_config(len(tokenizer))
        model = init_model(cfg, config.seed)
    model, cfg = method.model(model, cfg, config.seed)
    setup = Setup(config, Path(data_dir), run, tokenizer, cfg, model, mesh, progress)
    existed = run.exists()
    if fresh and jax.process_index() == 0:
        create_run(run, {**record, "model": dataclasses.asdict(cfg)}, tokenizer)
    start = time.perf_counter()
    try:  # the method's checks of its data; its reference cache goes into the run folder
        prepared = method.prepare(setup)
        _check_fits_context(init, cfg, prepared, config)
    except ValueError:
        if fresh and jax.process_index() == 0:  # leave nothing that blocks the fixed command
            _remove_new_run(run, existed)
        raise
    return Run(method, setup, prepared, time.perf_counter() - start)


def _remove_new_run(run: Path, existed: bool) -> None:
    """Undo `create_run` of a run that never started (the folder, or what it put there)."""
    if not existed:
        shutil.rmtree(run, ignore_errors=True)
        return
    shutil.rmtree(run / "tokenizer", ignore_errors=True)
    for name in ("config.json", "reference_logps.npz"):
        (run / name).unlink(missing_ok=True)


def train(
    method: Method | str,
    config: TrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    init: str | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `method` (a `Method` or its registry name) with `config` on the `train` split of
    the dataset folder `data_dir` (held out: its `validation` split), into `run_dir`; resume if
    `run_dir` holds an interrupted run of the same config. `init`: a run folder or a Hugging
    Face GPT-2 folder / hub name (default: a fresh `config.preset` model). Returns the last
    train and held-out metrics."""
    return open_run(method, config, data_dir, run_dir, init, progress=progress).train()


def _place(
    config: TrainConfig, setup: Setup, prepared: Prepared, checkpoints: Checkpoints
) -> tuple[nnx.GraphDef, TrainState, int]:
    """The train state on the mesh, fresh or restored from the latest readable checkpoint
    straight into its shardings; and the data position to continue from."""
    optimizer = make_optimizer(config)
    init = optimizer.init
    if prepared.opt_state is not None:
        init = functools.partial(prepared.opt_state, optimizer)
    graphdef, params = nnx.split(setup.model)
    params_sh = state_shardings(params, setup.mesh, config.shard_params)
    abstract_opt = jax.eval_shape(init, params)
    opt_sh = state_shardings(abstract_opt, setup.mesh, config.shard_params)
    restored = checkpoints.restore_latest(
        abstract_with_shardings(params, params_sh), abstract_with_shardings(abstract_opt, opt_sh)
    )
    if restored is None:
        params = put_global(params, params_sh)
        opt_state = jax.jit(init, out_shardings=opt_sh)(params)
        step, position = 0, 0
    else:
        step, params, opt_state, meta = restored
        position = meta["data_position"]
    step_array = put_global(np.int32(step), replicated(setup.mesh))
    return graphdef, TrainState(params, opt_state, step_array), position


class _StopRequest:
    """While active, Ctrl-C (SIGINT) and SIGTERM set `requested` instead of raising, so the
    loop stops between steps with a whole state to save; a second Ctrl-C raises at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():  # None: not set from Python
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def everywhere(self) -> bool:
        """Whether any process was asked to stop: with several hosts, all of them must stop
        (and save) at the same step, so they agree on it after every step."""
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.any(flags))


class _Logger:
    """Keeps each step's metrics on the device and fetches them every `log_interval` steps
    (one sync per window), writing one line per step and updating the progress bar."""

    def __init__(self, log: MetricsLog, config: TrainConfig, prepared: Prepared,
                 bar: tqdm) -> None:  # fmt: skip
        self.log, self.bar, self.prepared = log, bar, prepared
        self.schedule = learning_rate_schedule(config)
        self.updates = config.updates_per_step()
        self.examples_per_step = config.step_examples()
        self.pending: list[tuple[int, Metrics, int]] = []
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    def add(self, step: int, metrics: Metrics, host_batch: Any) -> None:
        counted = self.prepared.rate[1](host_batch) if self.prepared.rate else 0
        self.pending.append((step, metrics, counted))

    def flush(self) -> None:
        if not self.pending:
            return
        fetched = jax.device_get([metrics for _, metrics, _ in self.pending])
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        if self.prepared.rate is not None:  # e.g. tokens/s, completions/s
            unit = self.prepared.rate[0]
            rates = {f"{unit}_per_s": round(sum(n for _, _, n in self.pending) / elapsed, 1)}
        else:
            examples = len(self.pending) * self.examples_per_step
            rates = {"examples_per_s": round(examples / elapsed, 1)}
        lines = []
        for (step, _, _), metrics in zip(self.pending, fetched, strict=True):
            line = {"step": step}
            line.update({f"train/{k}": np.asarray(v).item() for k, v in metrics.items()})
            line["train/lr"] = float(self.schedule((step - 1) * self.updates))
            line.update({f"train/{k}": v for k, v in rates.items()})
            line["train/epoch"] = round(step * self.examples_per_step / self.prepared.examples, 4)
            lines.append(line)
        self.log.write(lines)
        self.bar.update(len(lines))
        shown = {"loss": f"{lines[-1].get('train/loss', float('nan')):.4f}"}
        if "train/reward/gold" in lines[-1]:  # the online methods: what they optimise
            shown["gold"] = f"{lines[-1]['train/reward/gold']:.3f}"
        shown.update({k.split("_")[0] + "/s": f"{v:.0f}" for k, v in rates.items()})
        self.bar.set_postfix(shown)
        self.pending = []
        self.restart_clock()

    def write_eval(self, step: int, metrics: dict[str, float]) -> None:
        line = {f"eval/{k}": v for k, v in metrics.items()}
        self.log.write([{"step": step, **line}])
        self.restart_clock()


def _eval_fn(method: Method, config: Any, mesh: Mesh) -> CompiledPerShape | None:
    if method.eval_step is None:
        return None
    eval_step = functools.partial(method.eval_step, config=config)
    return CompiledPerShape(jax.jit(eval_step, static_argnums=0, out_shardings=replicated(mesh)))


def _evaluate(method: Method, config: Any, eval_fn: Any, graphdef: nnx.GraphDef,
              params: nnx.State, prepared: Prepared) -> dict[str, float]:  # fmt: skip
    if prepared.evaluate is not None:
        return prepared.evaluate(graphdef, params)
    outputs = [
        (eval_fn(graphdef, params, put_global(batch, prepared.sharding)), real)
        for batch, real in prepared.held_out
    ]
    fetched = jax.device_get([metrics for metrics, _ in outputs])
    reals = [real for _, real in outputs]
    return method.evaluate(config, list(zip(fetched, reals, strict=True)))


def _loop(run: Run, graphdef: nnx.GraphDef, state: TrainState, position: int,
          checkpoints: Checkpoints, log: MetricsLog) -> TrainState:  # fmt: skip
    """Steps `state.step + 1 .. config.steps`: train, log, evaluate, checkpoint."""
    method, setup, prepared = run.method, run.setup, run.prepared
    config, mesh = setup.config, setup.mesh
    step_fn, root_key = run.compiled_step(state)
    eval_fn = _eval_fn(method, config, mesh)
    batches = prepared.batches(position)
    first = int(state.step)
    bar = tqdm(total=config.steps, initial=first, unit="step",
               disable=not setup.progress or jax.process_index() != 0)  # fmt: skip
    logger = _Logger(log, config, prepared, bar)

    def save(done: int) -> None:
        logger.flush()
        meta = {"step": done, "data_position": batches.position, "seed": config.seed}
        checkpoints.save(done, state.params, state.opt_state, meta)
        logger.restart_clock()

    done = first
    with _StopRequest() as stop:
        for done in range(first + 1, config.steps + 1):
            host_batch = next(batches)
            if prepared.rollout is not None:  # sample with the current policy, then score
                host_batch, rollout_metrics = prepared.rollout(graphdef, state.params,
                                                               host_batch, done)  # fmt: skip
                started = time.perf_counter()
            batch = put_global(host_batch, prepared.sharding)
            state, metrics = step_fn(graphdef, state, root_key, batch)
            if prepared.rollout is not None:  # the next rollout waits for it anyway
                jax.block_until_ready(state.params)
                seconds = np.float32(time.perf_counter() - started)
                metrics = {**rollout_metrics, **metrics, "time/update_s": seconds}
            logger.add(done, metrics, host_batch)
            last = done == config.steps
            if done % config.log_interval == 0 or last:
                logger.flush()
            if (prepared.held_out or prepared.evaluate) and (
                (config.eval_interval and done % config.eval_interval == 0) or last
            ):
                logger.flush()
                figures = _evaluate(method, config, eval_fn, graphdef, state.params, prepared)
                logger.write_eval(done, figures)
            stopping = stop.everywhere()
            if done % config.save_interval == 0 or last or stopping:
                save(done)
            if stopping:
                bar.close()
                raise Interrupted(done)
    bar.close()
    return state
