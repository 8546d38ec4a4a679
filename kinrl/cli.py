"""The `kinrl` command: parse options into a config and call one library function.

Bad input (an invalid value, an unknown option, an unwritable folder) exits with status 2 and
one line naming the option and what is allowed; no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
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
_seed = _integer(0, None, "a non-negative integer")


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
    gen.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    gen.add_argument("--num-proc", type=_count, default=1, help="worker processes")
    gen.add_argument("--validation-fraction", type=float, default=0.1, metavar="F")
    gen.add_argument("--test-fraction", type=float, default=0.1, metavar="F")
    gen.add_argument(
        "--holdout-hops", type=int, metavar="K", help="train on hops <= K; test_hops > K"
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
    gen.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_options(gen, KinshipConfig)
    fb = gen.add_argument_group("feedback (with --kind preference or feedback)")
    fb.add_argument(
        "--noise", type=float, default=0.0, metavar="EPS", help="label flip rate 0..0.5"
    )
    fb.add_argument(
        "--annotator", choices=("exact", "bradley_terry"), default="exact", help="base model"
    )
    fb.add_argument("--temperature", type=float, default=0.1, help="Bradley-Terry temperature")
    fb.add_argument("--length-bias", type=float, default=0.0, metavar="P", help="longer wins, 0..1")
    fb.add_argument(
        "--position-bias", type=float, default=0.0, metavar="P", help="first wins, 0..1"
    )
    fb.add_argument(
        "--negative-weights",
        type=_weights,
        metavar="KIND=W,...",
        help="weights of negative kinds (unlisted kinds keep their default)",
    )
    fb.add_argument("--min-margin", type=float, default=0.0, help="min gold-reward gap, 0..1")
    fb.add_argument(
        "--desirable-ratio", default="1:1", metavar="D:U", help="binary feedback, e.g. 1:4"
    )
    gen.set_defaults(run=_run_generate)
    return parser


def _run_generate(args: argparse.Namespace) -> int:
    from tasks.io import check_output_folder
    from tasks.kinship.dataset import generate_dataset
    from tasks.kinship.generator import GenerationError
    from tasks.kinship.splits import Holdouts, plan_splits

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
        check_output_folder(args.out, args.overwrite)
        feedback = _feedback_config(args) if args.kind != "examples" else None
    except ValueError as error:
        raise UsageError(_as_option(str(error).splitlines()[0])) from None
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
    except GenerationError as error:
        raise UsageError(str(error)) from None
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
