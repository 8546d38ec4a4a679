"""`kinrl compare`: its options (the standard library and config classes only, so a usage error
costs no JAX import) and what it runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kinrl.options import UsageError, csv, integer

_count = integer(1, None, "a positive integer")


def add_command(commands: Any) -> None:
    """Add `compare` to the `kinrl` subcommands."""
    from kinrl.compare.presets import BASELINE, COMPARE_METHODS, PRESETS

    described = "; ".join(f"{name}: {p.description}" for name, p in PRESETS.items())
    compare = commands.add_parser(
        "compare", help="train methods under one budget and write a report",
        description="Generate a task, train SFT and a reward model, train every method from "
        "the SFT run under one budget (each tuned over a small grid on validation items), "
        "evaluate them alike on test items with intervals, and write OUT/report.md, "
        "OUT/results.json and plots. Every stage is cached by the hash of its settings: rerun "
        f"the same command to continue an interrupted comparison. Presets: {described}.",
    )  # fmt: skip
    compare.add_argument("--preset", default="quickstart", metavar="NAME",
                         help=f"one of {', '.join(PRESETS)}")  # fmt: skip
    compare.add_argument("--methods", type=csv, metavar="M,...",
                         help="methods to compare (default: the preset's); from "
                         f"{', '.join([BASELINE, *COMPARE_METHODS])}")  # fmt: skip
    compare.add_argument(
        "--seeds",
        type=_count,
        metavar="K",
        help="training seeds of each chosen method (default: the preset's)",
    )
    compare.add_argument("--out", metavar="DIR", help="report folder (default reports/PRESET)")
    compare.add_argument("--work", metavar="DIR",
                         help="folder of the data, runs and stage cache (default "
                         "runs/compare/PRESET)")  # fmt: skip
    compare.add_argument("--quiet", action="store_true", help="stage lines only, no bars")
    compare.set_defaults(run=run_compare, parser=compare)


def run_compare(args: argparse.Namespace) -> int:
    from kinrl.compare.presets import resolve

    try:
        preset = resolve(args.preset, tuple(args.methods) if args.methods else None, args.seeds)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = args.out or f"reports/{preset.name}"
    work = args.work or f"runs/compare/{preset.name}"
    from trainers.runtime import start_process

    try:
        start_process()
    except ValueError as error:
        raise UsageError(str(error)) from None
    from kinrl.compare.pipeline import compare
    from trainers.engine import Interrupted

    try:
        results = compare(preset, out, work, progress=not args.quiet)
    except (Interrupted, KeyboardInterrupt):
        print("\nkinrl: compare interrupted; rerun the same command to continue (finished "
              "stages are kept)", file=sys.stderr)  # fmt: skip
        return 130
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    gains = ", ".join(results["significant_gains"]) or "none"
    print(f"wrote {out}/report.md (gains over SFT with the interval above zero: {gains})")
    return 0
