"""The `kinrl` command: parse options into a config and call one library function.

Bad input (an invalid value, an unknown option, an unwritable folder) exits with status 2 and
one line naming the option and what is allowed; no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import math
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from tasks.kinship.config import MAX_LEVEL, KinshipConfig

USAGE_ERROR = 2


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _integer(low: int, high: int | None, allowed: str):
    """An argparse type for integers in low..high, with `allowed` in its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed} (got {text!r})")
        return value

    return parse


_level = _integer(1, MAX_LEVEL, f"an integer in 1..{MAX_LEVEL}")
_count = _integer(1, None, "a positive integer")
_seed = _integer(0, 2**63 - 1, "an integer in 0..2**63-1")  # int64 in Parquet files
_index = _integer(0, None, "a non-negative integer")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _weights(text: str) -> dict[str, float]:
    out = {}
    for part in _csv(text):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must look like gender_swap=2,inverse=1 (got {text!r})"
            ) from None
    return out


def _add_config_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One option per config field (except difficulty), its help from the field's doc."""
    group = parser.add_argument_group("task knobs (override the difficulty preset one by one)")
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if f.name == "difficulty":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif kind in (int, float, str):
            group.add_argument(flag, type=kind, metavar=f.name.upper(), help=help_text)
        elif f.name == "question_weights":
            group.add_argument(flag, type=float, nargs=4, metavar="W", help=help_text)
        else:
            group.add_argument(flag, type=_csv, metavar="A,B", help=help_text)


def _config_overrides(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config_class):
        value = getattr(args, f.name, None)
        if f.name != "difficulty" and value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kinrl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = commands.add_parser(
        "generate",
        help="write a kinship dataset (splits, config.json, dataset card)",
        description="Write a kinship dataset: <split>.jsonl|parquet, config.json, README.md.",
    )
    gen.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    gen.add_argument(
        "--n", type=_count, default=1000, help="i.i.d. examples over train/validation/test"
    )
    gen.add_argument("--difficulty", type=_level, default=3, help="difficulty level 1..10")
    gen.add_argument("--seed", type=_seed, default=0, help="seed; items derive from (seed, index)")
    gen.add_argument(
        "--kind",
        choices=("examples", "preference", "feedback"),
        default="examples",
        help="examples (prompt/completion), preference pairs, or binary feedback",
    )
    gen.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                     help="file format of the splits (default jsonl)")  # fmt: skip
    gen.add_argument("--num-proc", type=_count, default=1,
                     help="worker processes, >= 1 (same output for any count)")  # fmt: skip
    gen.add_argument("--validation-fraction", type=float, default=0.1, metavar="F",
                     help="share of --n in validation, in [0, 1) (default 0.1)")  # fmt: skip
    gen.add_argument("--test-fraction", type=float, default=0.1, metavar="F",
                     help="share of --n in test, in [0, 1); both shares below 1")  # fmt: skip
    gen.add_argument(
        "--holdout-hops",
        type=int,
        metavar="K",
        help="train on hops <= K; test_hops > K (K in min_hops..11)",
    )
    gen.add_argument(
        "--holdout-relations",
        type=_csv,
        default=(),
        metavar="FAMILY,...",
        help="relation families kept out of train; test_relations has only them",
    )
    gen.add_argument(
        "--holdout-names",
        action="store_true",
        help="train on the training name pool; test_names held out",
    )
    gen.add_argument(
        "--overwrite", action="store_true", help="replace an --out folder of a kinrl dataset"
    )
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_options(gen, KinshipConfig)
    fb = gen.add_argument_group("feedback (with --kind preference or feedback)")
    d = _FEEDBACK_DEFAULTS
    fb.add_argument(
        "--noise", type=float, default=d["noise"], metavar="EPS", help="label flip rate 0..0.5"
    )
    fb.add_argument("--annotator", choices=("exact", "bradley_terry"), default=d["annotator"],
                    help="base model")  # fmt: skip
    fb.add_argument("--temperature", type=float, default=d["temperature"],
                    help="Bradley-Terry temperature, > 0 (default 0.1)")  # fmt: skip
    fb.add_argument("--length-bias", type=float, default=d["length_bias"], metavar="P",
                    help="longer wins, 0..1")  # fmt: skip
    fb.add_argument("--position-bias", type=float, default=d["position_bias"], metavar="P",
                    help="first wins, 0..1")  # fmt: skip
    fb.add_argument(
        "--negative-weights",
        type=_weights,
        metavar="KIND=W,...",
        help="weights of negative kinds (unlisted kinds keep their default)",
    )
    fb.add_argument("--min-margin", type=float, default=d["min_margin"],
                    help="min gold-reward gap, 0..1")  # fmt: skip
    fb.add_argument("--desirable-ratio", default=d["desirable_ratio"], metavar="D:U",
                    help="binary feedback (--kind feedback), e.g. 1:4")  # fmt: skip
    gen.set_defaults(run=_run_generate)
    _add_train_commands(commands)
    _add_eval_commands(commands)
    return parser


# The feedback options and their defaults: given with a --kind they do not apply to, they are
# refused rather than silently ignored.
_FEEDBACK_DEFAULTS: dict[str, Any] = {
    "noise": 0.0,
    "annotator": "exact",
    "temperature": 0.1,
    "length_bias": 0.0,
    "position_bias": 0.0,
    "negative_weights": None,
    "min_margin": 0.0,
    "desirable_ratio": "1:1",
}


def _check_feedback_options(args: argparse.Namespace) -> None:
    """UsageError for a feedback option set away from its default where it has no effect."""
    for name, default in _FEEDBACK_DEFAULTS.items():
        if getattr(args, name) == default:
            continue
        option = "--" + name.replace("_", "-")
        if args.kind == "examples":
            raise UsageError(f"{option} applies to --kind preference or feedback only")
        if name == "desirable_ratio" and args.kind != "feedback":
            raise UsageError(f"{option} applies to --kind feedback only")


class _Terminated(KeyboardInterrupt):
    """SIGTERM during `kinrl generate`: shut down like Ctrl-C (workers, temporary folder)."""


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the cleanup finish
    raise _Terminated


def _run_generate(args: argparse.Namespace) -> int:
    import signal
    import threading

    from tasks.io import OutputError, check_output_folder
    from tasks.kinship.dataset import generate_dataset
    from tasks.kinship.generator import GenerationError
    from tasks.kinship.splits import Holdouts, plan_splits

    _check_feedback_options(args)
    try:  # every check of the user's input happens here, before any work
        config = KinshipConfig.for_level(args.difficulty, **_config_overrides(args, KinshipConfig))
        holdouts = Holdouts(
            hops=args.holdout_hops, relations=args.holdout_relations, names=args.holdout_names
        )
        plan_splits(
            config,
            args.n,
            validation_fraction=args.validation_fraction,
            test_fraction=args.test_fraction,
            holdouts=holdouts,
        )
        feedback = _feedback_config(args) if args.kind != "examples" else None
        check_output_folder(args.out, args.overwrite)  # last: the other errors come first
    except ValueError as error:
        raise UsageError(_as_option(str(error).splitlines()[0])) from None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        summary = generate_dataset(
            args.out,
            config,
            args.n,
            seed=args.seed,
            kind=args.kind,
            feedback=feedback,
            fmt=args.format,
            num_proc=args.num_proc,
            validation_fraction=args.validation_fraction,
            test_fraction=args.test_fraction,
            holdouts=holdouts,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (GenerationError, OutputError) as error:
        raise UsageError(str(error)) from None
    except _Terminated:
        print("kinrl: terminated; no output was written", file=sys.stderr)
        return 143
    finally:
        if main_thread:  # None: a handler not installed from Python; restore the default
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    counts = ", ".join(f"{name} {count}" for name, count in summary["counts"].items())
    print(f"wrote {args.out}: {counts}")
    return 0


def _feedback_config(args: argparse.Namespace):
    from tasks.feedback import AnnotatorConfig
    from tasks.kinship.pairs import FeedbackConfig, default_negative_weights, parse_ratio

    weights = dict(default_negative_weights()) | (args.negative_weights or {})
    return FeedbackConfig(
        annotator=AnnotatorConfig(
            model=args.annotator,
            flip_rate=args.noise,
            temperature=args.temperature,
            length_bias=args.length_bias,
            position_bias=args.position_bias,
        ),
        negative_weights=tuple(weights.items()),
        min_margin=args.min_margin,
        desirable_fraction=parse_ratio(args.desirable_ratio),
    )


def _add_dataclass_options(group: Any, config_class: type) -> None:
    """One option per field of a flat config dataclass, its help from the field's doc."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default {f.default})"
        if hints[f.name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            metavar = f.name.upper()
            group.add_argument(flag, type=hints[f.name], metavar=metavar, help=help_text)


class _LazyParser(_Parser):
    """A sub-command parser that adds its options only when that sub-command is parsed, so
    that `kinrl generate` never imports jax."""

    def __init__(self, *args: Any, add_options: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._add_options = add_options

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._add_options is not None:
            add, self._add_options = self._add_options, None
            add(self)
        return super().parse_known_args(args, namespace)


def _add_train_commands(commands: Any) -> None:
    train = commands.add_parser(
        "train", help="train a model (sft, rm, dpo, kto)", description="Train a model."
    )
    methods = train.add_subparsers(dest="method", required=True, parser_class=_LazyParser)
    methods.add_parser(
        "sft",
        help="supervised fine-tuning on prompt/completion data",
        description="Supervised fine-tuning on a `kinrl generate` folder; rerun the same "
        "command to resume a crashed run from its last checkpoint.",
        add_options=_sft_options,
    )
    _add_preference_commands(methods)


def _training_options(
    parser: argparse.ArgumentParser, config_class: type, kind: str, run: Callable[..., int]
) -> None:
    """What every `kinrl train` command takes: data, run folder, init, the config's fields
    (`config_class`, a dataclass) and the multi-host options; `run` carries it out."""
    parser.add_argument("--data", required=True, metavar="DIR", help=f"dataset folder ({kind})")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder (created)")
    parser.add_argument(
        "--init", metavar="RUN_OR_HF", help="start from a run folder or a HF GPT-2 folder/name"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_dataclass_options(parser.add_argument_group("training"), config_class)
    hosts = parser.add_argument_group("several hosts (jax.distributed; leave out on one host)")
    hosts.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's address")
    hosts.add_argument("--num-processes", type=_count, metavar="N", help="processes in all")
    hosts.add_argument("--process-id", type=_index, metavar="I", help="this process, 0..N-1")
    parser.set_defaults(run=run)


def _sft_options(sft: argparse.ArgumentParser) -> None:
    from trainers.sft import SFTConfig

    _training_options(sft, SFTConfig, "examples", _run_train_sft)


def _start_jax(host_devices: bool = False) -> None:
    """Process-wide settings before JAX starts (`trainers.runtime`): at most two malloc
    arenas, one device per core if `host_devices`, and the persistent compilation cache."""
    from trainers.runtime import enable_compilation_cache, limit_malloc_arenas, use_host_devices

    try:
        limit_malloc_arenas()
        if host_devices:
            use_host_devices()
    except ValueError as error:
        raise UsageError(str(error)) from None
    enable_compilation_cache()


def _check_hosts(args: argparse.Namespace) -> None:
    """The several-hosts options, checked before `jax.distributed` sees them."""
    n, i, address = args.num_processes, args.process_id, args.coordinator_address
    if n is None and i is None and address is None:
        return
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--coordinator-address must be HOST:PORT (got {address!r})")
    if n is None or i is None:
        raise UsageError("--num-processes and --process-id go with --coordinator-address")
    if i >= n:
        raise UsageError(f"--process-id must be in 0..{n - 1} (got {i})")


def _train_config(config_class: type, args: argparse.Namespace) -> Any:
    """The config of a train command. A warm-up left at its default shrinks to fit a short
    run (`--steps 5` gets 4 warm-up steps, not an error about a default never given)."""
    overrides = _config_overrides(args, config_class)
    default = {f.name: f.default for f in dataclasses.fields(config_class)}
    steps = overrides.get("steps", default["steps"])
    if "warmup_steps" not in overrides and isinstance(steps, int) and steps >= 1:
        overrides["warmup_steps"] = min(default["warmup_steps"], steps - 1)
    return config_class(**overrides)


def _setup_error(error: Exception, config_class: type, out: str) -> UsageError:
    """A check of the input failed (ValueError), or the run folder cannot be made (OSError)."""
    if isinstance(error, OSError):
        return UsageError(f"--out {out}: cannot write there ({error.strerror or error})")
    return UsageError(_field_as_option(str(error).splitlines()[0], config_class))


def _interrupted(args: argparse.Namespace) -> None:
    """The Ctrl-C line of a train command, below its progress bar (if one is drawn)."""
    below_bar = "" if args.quiet else "\n"
    print(f"{below_bar}kinrl: interrupted; rerun the same command to resume", file=sys.stderr)


def _shown(summary: dict[str, Any]) -> dict[str, Any]:
    """A run summary for the terminal: floats to 4 significant digits (a final learning rate
    of 1.2e-05 stays 1.2e-05)."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in summary.items()}


def _train(
    args: argparse.Namespace,
    config_class: type,
    prepare: Callable[[Any], Any],
    run: Callable[[Any, Any], dict[str, Any]],
) -> int:
    """What every `kinrl train` method does: check the input (hosts, options, data, run folder)
    with `prepare(config)` before any training, then `run(config, setup)`; exit 2 with one line
    on bad input, 130 on Ctrl-C (a rerun resumes)."""
    from trainers.sharding import initialize_distributed

    _start_jax()
    _check_hosts(args)
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    try:  # every check of the user's input happens here, before any training
        config = _train_config(config_class, args)
        setup = prepare(config)
    except (ValueError, OSError) as error:
        raise _setup_error(error, config_class, args.out) from None
    except KeyboardInterrupt:  # e.g. during a reference pass, after the run folder exists
        _interrupted(args)
        return 130
    try:
        summary = run(config, setup)
    except KeyboardInterrupt:  # on a line of its own, below the progress bar
        _interrupted(args)
        return 130
    print(f"trained {args.out}: {json.dumps(_shown(summary))}")
    return 0


def _run_train_sft(args: argparse.Namespace) -> int:
    from trainers.sft import SFTConfig, prepare_sft, run_sft

    def run(config: SFTConfig, prepared: tuple[Any, Any]) -> dict[str, Any]:
        mesh, setup = prepared
        return run_sft(config, setup, mesh, args.out, progress=not args.quiet)

    return _train(
        args, SFTConfig, lambda config: prepare_sft(config, args.data, args.out, args.init), run
    )


# method: (module, config class, prepare function, run function, data kind, description)
_PREFERENCE_TRAINERS = {
    "rm": ("trainers.reward_model", "RewardModelConfig", "prepare_reward_model",
           "run_reward_model", "preference", "a reward model (value head, Bradley-Terry loss) on "
           "preference pairs; stores the reward offset"),
    "dpo": ("trainers.dpo", "DPOConfig", "prepare_dpo", "run_dpo", "preference",
            "the DPO family on preference pairs (--loss sigmoid|cdpo|robust|hinge|ipo|simpo)"),
    "kto": ("trainers.kto", "KTOConfig", "prepare_kto", "run_kto", "feedback",
            "KTO on binary feedback (desirable/undesirable)"),
}  # fmt: skip


def _add_preference_commands(methods: Any) -> None:
    for name, (*_, description) in _PREFERENCE_TRAINERS.items():
        methods.add_parser(
            name,
            help=description.split(";")[0],
            description=f"Train {description}; rerun the same command to resume a crashed run.",
            add_options=functools.partial(_preference_options, name),
        )


def _preference_trainer(name: str) -> tuple[type, Any, Any]:
    module_name, config_name, prepare, run, *_ = _PREFERENCE_TRAINERS[name]
    module = importlib.import_module(module_name)
    return getattr(module, config_name), getattr(module, prepare), getattr(module, run)


def _preference_options(name: str, parser: argparse.ArgumentParser) -> None:
    config_class, _, _ = _preference_trainer(name)
    kind = _PREFERENCE_TRAINERS[name][4]
    _training_options(parser, config_class, kind, functools.partial(_run_train_preference, name))


def _run_train_preference(name: str, args: argparse.Namespace) -> int:
    config_class, prepare, run = _preference_trainer(name)
    progress = not args.quiet
    return _train(
        args,
        config_class,
        lambda config: prepare(config, args.data, args.out, args.init, progress=progress),
        lambda config, setup: run(config, setup, args.out, progress=progress),
    )


def _field_as_option(message: str, config_class: type) -> str:
    """'batch_size must be ...' -> '--batch-size must be ...' for a field of `config_class`."""
    head, _, rest = message.partition(" ")
    if head in {f.name for f in dataclasses.fields(config_class)}:
        return f"--{head.replace('_', '-')} {rest}"
    return message


def _add_eval_commands(commands: Any) -> None:
    ev = commands.add_parser(
        "eval",
        help="greedy accuracy of a run on a dataset split",
        description="Greedy-decode a split with a run's latest (or --step) checkpoint and "
        "score it with the gold reward: accuracy overall and by question type, difficulty, "
        "hops, family.",
    )
    ev.add_argument("--run", dest="run_dir", required=True, metavar="RUN", help="run folder")
    ev.add_argument("--data", required=True, metavar="DIR", help="dataset folder (examples)")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--json", metavar="FILE", help="also write the report here")
    ev.add_argument("--limit", type=_count, metavar="N", help="only the first N records")
    ev.add_argument("--batch-size", type=_count, default=64, help="prompts decoded at once")
    ev.add_argument("--step", type=_count, metavar="N",
                    help="evaluate checkpoint N instead of the latest")  # fmt: skip
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(run=_run_eval)
    sample = commands.add_parser(
        "sample",
        help="complete one prompt with a run's model",
        description="Complete a prompt (\\n in TEXT is a newline) with a run's latest "
        "checkpoint; greedy unless --temperature > 0.",
    )
    sample.add_argument("--run", dest="run_dir", required=True, metavar="RUN", help="run folder")
    sample.add_argument("--prompt", required=True, metavar="TEXT", help="the prompt")
    sample.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    sample.add_argument("--max-new-tokens", type=_count, metavar="N", help="cap on new tokens")
    sample.add_argument("--seed", type=_seed, default=0, help="sampling seed")
    sample.set_defaults(run=_run_sample)


def _run_eval(args: argparse.Namespace) -> int:
    from evaluators.accuracy import evaluate
    from trainers.checkpoint import load_run
    from trainers.data import load_records

    _start_jax(host_devices=True)  # decode the eval batch's rows on every core
    if args.json:  # checked before the decoding, not after it
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UsageError(f"--json {args.json}: its folder {folder} is missing or unwritable")
    try:
        model, _, tokenizer = load_run(args.run_dir, step=args.step)
        records = load_records(args.data, args.split)[: args.limit]
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    report = evaluate(model, tokenizer, records, batch_size=args.batch_size,
                      progress=not args.quiet)  # fmt: skip
    report = {"run": args.run_dir, "data": args.data, "split": args.split, **report}
    if args.json:  # written whole or not at all
        tmp = f"{args.json}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, args.json)
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("by_")}))
    for name in ("by_question_type", "by_hops", "by_family"):
        cells = ", ".join(f"{k} {v['accuracy']:.3f} (n={v['n']})" for k, v in report[name].items())
        print(f"{name}: {cells}")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    from evaluators.accuracy import complete
    from trainers.checkpoint import load_run
    from trainers.tokenizer import unknown_words

    _start_jax()
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UsageError(f"--temperature must be a finite number >= 0 (got {args.temperature})")
    prompt = args.prompt.replace("\\n", "\n")
    prompt = prompt if prompt.endswith("\n") else prompt + "\n"
    try:
        model, _, tokenizer = load_run(args.run_dir)
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    unknown = unknown_words(tokenizer, prompt)
    if unknown:
        shown = ", ".join(unknown[:10]) + (
            f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        )
        print(
            f"kinrl: warning: --prompt has words the run's tokenizer does not know, each read as "
            f"{tokenizer.unk_token}: {shown}",
            file=sys.stderr,
        )
    [completion] = complete(
        model, tokenizer, [prompt], batch_size=1, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, seed=args.seed,
    )  # fmt: skip
    if completion is None:
        raise UsageError("--prompt leaves no room in the model's context to answer")
    print(completion)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except UsageError as error:
        print(f"kinrl: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("kinrl: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kinrl eval ... | head -1`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _as_option(message: str) -> str:
    """'max_hops must be ...' -> '--max-hops must be ...' (config fields are options here)."""
    head, _, rest = message.partition(" ")
    if head.isidentifier() and head in _OPTION_NAMES:
        return f"--{head.replace('_', '-')} {rest}"
    return message


_OPTION_NAMES = {f.name for f in dataclasses.fields(KinshipConfig)} | {
    "validation_fraction",
    "test_fraction",
    "holdout_hops",
    "holdout_relations",
    "n",
    "noise",
    "temperature",
    "length_bias",
    "position_bias",
    "min_margin",
    "desirable_ratio",
    "negative_weights",
    "annotator",
}


if __name__ == "__main__":
    sys.exit(main())
