"""The `kinrl` command: generate kinship tasks, train models on them, evaluate and sample.

Bad input (an invalid value, an unknown option, an unwritable folder) exits with status 2 and
one line naming the option and what is allowed; no traceback. Options are built from the
config dataclasses (`kinrl/options.py`); the work is done by library functions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from kinrl.compare.command import add_command as _add_compare
from kinrl.options import (
    Parser,
    UsageError,
    add_config_options,
    as_option,
    csv,
    given,
    integer,
    key_values,
)
from kinrl.serve.command import add_commands as _add_serve
from kinrl.tldr_command import add_commands as _add_tldr
from tasks.kinship.config import MAX_LEVEL, KinshipConfig
from tasks.kinship.pairs import FEEDBACK_OPTIONS
from tasks.registry import KINDS
from trainers.config import TrainConfig, check_hosts
from trainers.registry import METHODS

USAGE_ERROR = 2
DESCRIPTION = (
    "kinrl: a laboratory for comparing RLHF methods on small language models, on family-tree "
    "puzzles whose answers are exact. Generate a dataset, train a model on it (SFT, reward "
    "model, DPO family, KTO, GRPO, RLOO, PPO, online DPO), evaluate or sample it, compare "
    "methods under one budget with a report (compare), or collect votes in the local web app "
    "(serve)."
)


_level = integer(1, MAX_LEVEL, f"an integer in 1..{MAX_LEVEL}")
_count = integer(1, None, "a positive integer")
_seed = integer(0, 2**63 - 1, "an integer in 0..2**63-1")  # int64 in Parquet files
_index = integer(0, None, "a non-negative integer")
_FEEDBACK_TYPES = {"negative_weights": key_values}


def _add_generate(commands: Any) -> None:
    gen = commands.add_parser("generate", help="write a kinship dataset",
                              description="Write a kinship dataset folder: <split>.jsonl|parquet, "
                              "config.json and a dataset card README.md.")  # fmt: skip
    gen.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    gen.add_argument("--n", type=_count, default=1000,
                     help="i.i.d. examples over train/validation/test")  # fmt: skip
    gen.add_argument("--difficulty", type=_level, default=3, help="difficulty level 1..10")
    gen.add_argument("--seed", type=_seed, default=0, help="seed; items derive from (seed, index)")
    gen.add_argument(
        "--kind",
        choices=KINDS,
        default="examples",
        help="examples (prompt/completion), preference pairs, or binary feedback",
    )
    gen.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                     help="file format of the splits")  # fmt: skip
    gen.add_argument("--num-proc", type=_count, default=1,
                     help="worker processes, >= 1 (same output for any count)")  # fmt: skip
    gen.add_argument("--validation-fraction", type=float, default=0.1, metavar="F",
                     help="share of --n in validation, in [0, 1)")  # fmt: skip
    gen.add_argument("--test-fraction", type=float, default=0.1, metavar="F",
                     help="share of --n in test, in [0, 1); both shares below 1")  # fmt: skip
    gen.add_argument("--holdout-hops", type=int, metavar="K",
                     help="train on hops <= K; test_hops > K (K in min_hops..11)")  # fmt: skip
    gen.add_argument(
        "--holdout-relations",
        type=csv,
        default=(),
        metavar="FAMILY,...",
        help="relation families kept out of train; test_relations has only them",
    )
    gen.add_argument("--holdout-names", action="store_true",
                     help="train on the training name pool; test_names held out")  # fmt: skip
    gen.add_argument("--overwrite", action="store_true",
                     help="replace an --out folder of a kinrl dataset")  # fmt: skip
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    knobs = gen.add_argument_group("task knobs (override the difficulty preset one by one)")
    add_config_options(knobs, KinshipConfig, skip=("difficulty",), show_defaults=False)
    fb = gen.add_argument_group("feedback (with --kind preference or feedback)")
    for name, (default, text) in FEEDBACK_OPTIONS.items():
        kind = _FEEDBACK_TYPES.get(name, type(default))
        fb.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=text)
    gen.set_defaults(run=_run_generate, parser=gen)


def _run_generate(args: argparse.Namespace) -> int:
    from tasks.kinship.dataset import generate_command  # the generator, only when it runs

    feedback = {name: getattr(args, name) for name in FEEDBACK_OPTIONS}
    try:
        summary = generate_command(
            args.out, args.difficulty, given(args, KinshipConfig, ("difficulty",)), args.n,
            seed=args.seed,
            kind=args.kind, feedback=feedback,
            fmt=args.format, num_proc=args.num_proc, validation_fraction=args.validation_fraction,
            test_fraction=args.test_fraction, holdout_hops=args.holdout_hops,
            holdout_relations=args.holdout_relations, holdout_names=args.holdout_names,
            overwrite=args.overwrite, progress=not args.quiet,
        )  # fmt: skip
    except ValueError as error:
        raise UsageError(as_option(str(error), args.parser)) from None
    if summary is None:
        print("kinrl: terminated; no output was written", file=sys.stderr)
        return 143
    counts = ", ".join(f"{name} {count}" for name, count in summary["counts"].items())
    print(f"wrote {args.out}: {counts}")
    return 0


def _add_train(commands: Any) -> None:
    train = commands.add_parser("train", help="train a model (" + ", ".join(METHODS) + ")",
                                description="Train a model; rerun the same command to resume "
                                "an interrupted run from its last checkpoint.")  # fmt: skip
    methods = train.add_subparsers(dest="method", required=True, parser_class=Parser)
    for name, (config_class, _, description) in METHODS.items():
        what = description[0].upper() + description[1:]
        sub = methods.add_parser(name, help=description, description=f"{what}. Rerun the same "
                                 "command to resume an interrupted run.")  # fmt: skip
        sub.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
        sub.add_argument("--out", required=True, metavar="RUN", help="run folder (created)")
        sub.add_argument("--init", metavar="RUN_OR_HF",
                         help="start from a run folder or a HF GPT-2 folder/name")  # fmt: skip
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        add_config_options(sub.add_argument_group("training"), config_class)
        hosts = sub.add_argument_group("several hosts (jax.distributed; leave out on one host)")
        hosts.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's address")
        hosts.add_argument("--num-processes", type=_count, metavar="N", help="processes in all")
        hosts.add_argument("--process-id", type=_index, metavar="I", help="this process, 0..N-1")
        sub.set_defaults(run=_run_train, parser=sub, config_class=config_class)


def _start_jax(host_devices: bool = False) -> None:
    from trainers.runtime import start_process

    try:
        start_process(host_devices)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _shown(summary: dict[str, Any]) -> dict[str, Any]:
    """Floats to 4 significant digits (a final learning rate of 1.2e-05 stays 1.2e-05)."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in summary.items()}


def _run_train(args: argparse.Namespace) -> int:
    try:  # every check that needs no JAX comes first: a mistyped option fails at once
        config: TrainConfig = args.config_class.from_options(**given(args, args.config_class))
        check_hosts(args.coordinator_address, args.num_processes, args.process_id)
    except ValueError as error:
        raise UsageError(as_option(str(error), args.parser)) from None
    _start_jax()
    from trainers.engine import Interrupted, open_run
    from trainers.sharding import initialize_distributed

    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    below_bar = "" if args.quiet else "\n"
    try:
        run = open_run(args.method, config, args.data, args.out, args.init,
                       progress=not args.quiet)  # fmt: skip
    except OSError as error:
        why = error.strerror or error
        raise UsageError(f"--out {args.out}: cannot write there ({why})") from None
    except ValueError as error:
        raise UsageError(as_option(str(error), args.parser)) from None
    except KeyboardInterrupt:  # e.g. during a reference pass
        print(f"{below_bar}kinrl: interrupted before the first step; rerun the same command "
              "to start again", file=sys.stderr)  # fmt: skip
        return 130
    try:
        summary = run.train()
    except Interrupted as stop:  # the engine saved a checkpoint of the step it finished
        print(f"{below_bar}kinrl: interrupted; saved the checkpoint of step {stop.step}: rerun "
              f"the same command to resume from step {stop.step}", file=sys.stderr)  # fmt: skip
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop started
        print(f"{below_bar}kinrl: interrupted; rerun the same command to resume from the last "
              "checkpoint", file=sys.stderr)  # fmt: skip
        return 130
    print(f"trained {args.out}: {json.dumps(_shown(summary))}")
    return 0


def _add_eval(commands: Any) -> None:
    ev = commands.add_parser("eval", help="greedy accuracy of a run on a dataset split",
                             description="Greedy-decode a split with a run's latest (or --step) "
                             "checkpoint and score it with the gold reward: accuracy overall and "
                             "by question type, difficulty, hops, family.")  # fmt: skip
    ev.add_argument("--run", dest="run_dir", required=True, metavar="RUN", help="run folder")
    ev.add_argument("--data", required=True, metavar="DIR", help="dataset folder (examples)")
    ev.add_argument("--split", default="test", help="split to evaluate")
    ev.add_argument("--json", metavar="FILE", help="also write the report here")
    ev.add_argument("--limit", type=_count, metavar="N", help="only the first N records")
    ev.add_argument("--batch-size", type=_count, default=64, help="prompts decoded at once")
    ev.add_argument("--step", type=_count, metavar="N",
                    help="evaluate checkpoint N instead of the latest")  # fmt: skip
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(run=_run_eval, parser=ev)
    sample = commands.add_parser("sample", help="complete one prompt with a run's model",
                                 description="Complete a prompt (\\n in TEXT is a newline) with "
                                 "a run's latest (or --step) checkpoint; greedy unless "
                                 "--temperature > 0.")  # fmt: skip
    sample.add_argument("--run", dest="run_dir", required=True, metavar="RUN", help="run folder")
    sample.add_argument("--prompt", required=True, metavar="TEXT", help="the prompt")
    sample.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    sample.add_argument("--top-k", type=_index, default=0, help="keep the K likeliest (0 = all)")
    sample.add_argument("--top-p", type=float, default=1.0, help="nucleus mass, in (0, 1]")
    sample.add_argument("--max-new-tokens", type=_count, metavar="N", help="cap on new tokens")
    sample.add_argument("--step", type=_count, metavar="N", help="checkpoint N, not the latest")
    sample.add_argument("--seed", type=_seed, default=0, help="sampling seed")
    sample.set_defaults(run=_run_sample, parser=sample)


def _run_eval(args: argparse.Namespace) -> int:
    from evaluators.accuracy import check_report_path, evaluate, write_report

    try:
        check_report_path(args.json)  # before the decoding, not after it
    except ValueError as error:
        raise UsageError(str(error)) from None
    _start_jax(host_devices=True)  # decode the eval batch's rows on every core
    from trainers.checkpoint import load_policy
    from trainers.data import load_records

    try:
        model, _, tokenizer = load_policy(args.run_dir, step=args.step)
        records = load_records(args.data, args.split, exact=True)[: args.limit]
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    report = evaluate(model, tokenizer, records, batch_size=args.batch_size,
                      progress=not args.quiet)  # fmt: skip
    report = {"run": args.run_dir, "data": args.data, "split": args.split, **report}
    if args.json:
        write_report(report, args.json)
    headline = {k: v for k, v in report.items() if not k.startswith("by_") and k != "correct"}
    print(json.dumps(headline))  # the per-item list goes to --json only; the breakdowns follow
    for name in ("by_question_type", "by_hops", "by_family"):
        cells = ", ".join(f"{k} {v['accuracy']:.3f} (n={v['n']})" for k, v in report[name].items())
        print(f"{name}: {cells}")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UsageError(f"--temperature must be a finite number >= 0 (got {args.temperature})")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1] (got {args.top_p})")
    prompt = args.prompt.replace("\\n", "\n")
    if not prompt.strip():
        raise UsageError("--prompt must hold some text (got an empty prompt)")
    prompt = prompt if prompt.endswith("\n") else prompt + "\n"
    _start_jax()
    from evaluators.accuracy import complete
    from trainers.checkpoint import load_policy
    from trainers.tokenizer import unknown_words

    try:
        model, _, tokenizer = load_policy(args.run_dir, step=args.step)
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    unknown = unknown_words(tokenizer, prompt)
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        words = ", ".join(unknown[:10]) + more
        print(f"kinrl: warning: --prompt has words the run's tokenizer does not know, each read "
              f"as {tokenizer.unk_token}: {words}", file=sys.stderr)  # fmt: skip
    [completion] = complete(
        model, tokenizer, [prompt], batch_size=1, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
    )  # fmt: skip
    if completion is None:
        raise UsageError("--prompt leaves no room in the model's context to answer")
    print(completion)
    return 0


def _version() -> str:
    try:
        return version("kinrl")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kinrl", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kinrl {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_generate(commands)
    _add_train(commands)
    _add_eval(commands)
    _add_compare(commands)  # kinrl/compare/command.py
    _add_serve(commands)  # serve, labels export: kinrl/serve/command.py
    _add_tldr(commands)  # tldr prepare|train|eval: kinrl/tldr_command.py
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
