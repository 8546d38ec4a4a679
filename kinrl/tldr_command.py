"""`kinrl tldr prepare|train|eval`: the TL;DR summarisation benchmark (docs/tldr.md).

Its options (imported by `kinrl --help`, so the standard library only) and what they run:
`tasks/tldr/prepare.py` (no JAX), `trainers/tldr.py` and `evaluators/tldr.py` (JAX, imported
once the options have been checked; a usage error is one line, before JAX starts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kinrl.options import Parser, UsageError, csv, integer

_count = integer(1, None, "a positive integer")
_seed = integer(0, 2**63 - 1, "an integer in 0..2**63-1")
POLICIES = ("dpo", "kto", "ppo")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1) (got {text!r})") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1) (got {text!r})")
    return value


def _steps(text: str) -> dict[str, int]:
    """`sft=30,rm=8` -> {"sft": 30, "rm": 8}."""
    out = {}
    for part in csv(text):
        name, _, value = part.partition("=")
        if name not in ("sft", "rm", *POLICIES) or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"must look like sft=30,rm=8,dpo=6 (stages: sft, rm, dpo, kto, ppo; got {text!r})"
            )
        out[name] = int(value)
    return out


def _setting(text: str) -> tuple[str, str, Any]:
    """`sft.grad_accum=4` -> ("sft", "grad_accum", 4): a value parses as JSON (numbers,
    true/false), else stays a string."""
    target, sep, raw = text.partition("=")
    stage, dot, name = target.partition(".")
    if not sep or not dot or stage not in ("sft", "rm", *POLICIES) or not name:
        raise argparse.ArgumentTypeError(
            f"must look like sft.grad_accum=4 (stages: sft, rm, dpo, kto, ppo; got {text!r})"
        )
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return stage, name.replace("-", "_"), value


def add_commands(commands: Any) -> None:
    """Add `tldr` (prepare, train, eval) to the `kinrl` subcommands."""
    tldr = commands.add_parser(
        "tldr", help="the TL;DR summarisation benchmark (prepare, train, eval)",
        description="Reddit TL;DR summarisation (Stiennon et al. 2020) with the preprocessing "
        "of its reproduction (Huang et al. 2024), on the same trainers and report format.",
    )  # fmt: skip
    actions = tldr.add_subparsers(dest="action", required=True, parser_class=Parser)

    prep = actions.add_parser(
        "prepare", help="comparison batches and reference CSVs -> dataset folders",
        description="Write OUT/preference (rm, dpo), OUT/feedback (kto) and OUT/sft (sft, and "
        "the references of eval), each with config.json and a card: queries in the "
        "reproduction's format, cut at the post's last newline to fit the budget in GPT-2 "
        "tokens; responses with a leading space, capped; empty and repeated summaries "
        "filtered and counted.",
    )  # fmt: skip
    prep.add_argument("--comparisons", nargs="+", default=[], metavar="FILE",
                      help="OpenAI comparison batches (JSON lines)")  # fmt: skip
    prep.add_argument("--references", nargs="+", default=[], metavar="CSV",
                      help="CSVs with query and reference_responses columns")  # fmt: skip
    prep.add_argument(
        "--hub",
        action="append",
        default=[],
        metavar="NAME",
        help="read a hub dataset (needs network): openai/summarize_from_feedback, "
        "vwxyzjn/summarize_from_feedback_tldr_3_filtered or trl-lib/tldr",
    )
    prep.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    prep.add_argument("--query-tokens", type=_count, default=512, metavar="N",
                      help="query budget in GPT-2 tokens")  # fmt: skip
    prep.add_argument("--sft-response-tokens", type=_count, default=53, metavar="N",
                      help="SFT response cap in GPT-2 tokens, with the EOS")  # fmt: skip
    prep.add_argument(
        "--rm-response-tokens",
        type=_count,
        default=169,
        metavar="N",
        help="preference/feedback response cap in GPT-2 tokens, with the EOS",
    )
    prep.add_argument("--holdout", type=_fraction, metavar="F",
                      help="re-split by post: a share F of the posts to validation, the rest "
                      "to train (default: the sources' splits)")  # fmt: skip
    prep.add_argument(
        "--skip-malformed",
        action="store_true",
        help="leave malformed lines out (counted in the cards) instead of failing",
    )
    prep.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the dataset folders of an earlier prepare in --out",
    )
    prep.set_defaults(run=run_prepare, parser=prep)

    train = actions.add_parser(
        "train", help="SFT -> reward model -> DPO/KTO/PPO on prepared folders",
        description="Train on a prepared folder, each stage a `kinrl train` run in OUT/<method>: "
        "SFT from --init, the reward model from the SFT run (normalised so the reference "
        "summaries score 0 on average), then the policies from the SFT run (PPO optimises the "
        "reward model's score). --recipe gpu is "
        "the reproduction's hyperparameters (GPT-2 small: --init gpt2 or a local folder); "
        "--smoke builds the CPU smoke preset (nano with a BPE tokenizer trained on --data) "
        "in OUT/init. Rerunning the same command resumes.",
    )  # fmt: skip
    train.add_argument("--data", required=True, metavar="DIR", help="a `tldr prepare` folder")
    train.add_argument("--out", required=True, metavar="DIR", help="the runs' folder")
    start = train.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--init",
        metavar="MODEL",
        help="a GPT-2 folder in Hugging Face layout, a hub name, or a run",
    )
    start.add_argument("--smoke", action="store_true",
                       help="the CPU smoke preset (implies --recipe smoke)")  # fmt: skip
    train.add_argument("--recipe", choices=("gpu", "smoke"),
                       help="stage hyperparameters (default: gpu; smoke with --smoke)")  # fmt: skip
    train.add_argument(
        "--policies",
        type=csv,
        default=("dpo",),
        metavar="M,...",
        help="policy methods after the reward model: dpo, kto, ppo",
    )
    train.add_argument(
        "--steps",
        type=_steps,
        default={},
        metavar="STAGE=N,...",
        help="override a stage's steps (default: the recipe's, one epoch on gpu)",
    )
    train.add_argument(
        "--dpo-loss",
        default=None,
        metavar="LOSS",
        help="the DPO family member (sigmoid, cdpo, robust, hinge, ipo, simpo)",
    )
    train.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                       metavar="STAGE.OPTION=VALUE",
                       help="any `kinrl train <method>` option of a stage, e.g. "
                       "sft.grad_accum=4 (repeat for several)")  # fmt: skip
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=run_train, parser=train)

    ev = actions.add_parser(
        "eval", help="ROUGE, win rate against the references, lengths -> a report folder",
        description="Summarise the prepared SFT folder's prompts with each run and write "
        "report.md, results.json and judgements.jsonl: ROUGE-1/2/L against the references, the "
        "win rate against them (judge: --rm by default, or --judge module:function; the A/B "
        "order is drawn per prompt and logged), lengths, and the reward model's agreement "
        "with the human choice by annotator confidence.",
    )  # fmt: skip
    ev.add_argument("--run", dest="runs", action="append", default=[], metavar="[NAME=]RUN",
                    help="a policy run (repeat for several)")  # fmt: skip
    ev.add_argument("--data", metavar="DIR", help="a `tldr prepare` folder")
    ev.add_argument("--responses", metavar="CSV",
                    help="measure a CSV's postprocessed_response summaries against its "
                    "reference_responses (its queries replace --data's prompts)")  # fmt: skip
    ev.add_argument("--rm", metavar="RUN", help="a reward-model run (the default judge)")
    ev.add_argument("--judge", metavar="MODULE:FUNCTION",
                    help="a judge callable judge(prompts, a, b) -> [0, 1 or 0.5]")  # fmt: skip
    ev.add_argument("--out", required=True, metavar="DIR", help="the report folder")
    ev.add_argument("--split", default="validation", help="the split of DATA/sft")
    ev.add_argument("--limit", type=_count, default=256, metavar="N", help="prompts evaluated")
    ev.add_argument("--max-new-tokens", type=_count, default=53, metavar="N",
                    help="summary length cap")  # fmt: skip
    ev.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ev.add_argument("--seed", type=_seed, default=0, help="sampling, A/B order, bootstrap")
    ev.set_defaults(run=run_eval, parser=ev)


def _start_jax() -> None:
    from trainers.runtime import start_process

    try:
        start_process(False)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _existing(paths: list[str], option: str) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise UsageError(f"{option} {path} is not a file")


def run_prepare(args: argparse.Namespace) -> int:
    from tasks.tldr import sources
    from tasks.tldr.prepare import prepare

    _existing(args.comparisons, "--comparisons")
    _existing(args.references, "--references")
    unknown = [name for name in args.hub if name not in sources.HUB_NAMES]
    if unknown:
        raise UsageError(f"--hub must be one of {', '.join(sources.HUB_NAMES)} "
                         f"(got {unknown[0]!r})")  # fmt: skip
    try:
        hub_comparisons, hub_references = [], {}
        for name in args.hub:
            if name == sources.HUB_COMPARISONS:
                hub_comparisons += sources.hub_comparisons(name)
            else:
                for split, rows in sources.hub_references(name).items():
                    hub_references.setdefault(split, []).extend(rows)
        summary = prepare(
            args.comparisons, args.references, args.out, budget=args.query_tokens,
            sft_cap=args.sft_response_tokens, rm_cap=args.rm_response_tokens,
            holdout=args.holdout, skip_malformed=args.skip_malformed, overwrite=args.overwrite,
            hub_comparisons=hub_comparisons, hub_references=hub_references,
        )  # fmt: skip
    except ValueError as error:
        raise UsageError((str(error).strip().splitlines() or ["invalid input"])[0]) from None
    counts = "; ".join(f"{name}: " + ", ".join(f"{s} {n}" for s, n in splits.items())
                       for name, splits in summary["counts"].items() if splits)  # fmt: skip
    filtered = sum(summary["filtered"].values())
    print(f"wrote {args.out}: {counts} (filtered {filtered}, skipped "
          f"{summary['skipped']['count']} malformed)")  # fmt: skip
    return 0


def run_train(args: argparse.Namespace) -> int:
    data = Path(args.data)
    for folder in ("sft", "preference"):
        if not (data / folder / "config.json").is_file():
            raise UsageError(f"--data {data} has no {folder}/ folder (run kinrl tldr prepare)")
    bad = [p for p in args.policies if p not in POLICIES]
    if bad:
        raise UsageError(f"--policies must be among {', '.join(POLICIES)} (got {bad[0]!r})")
    if "kto" in args.policies and not (data / "feedback" / "config.json").is_file():
        raise UsageError(f"--data {data} has no feedback/ folder for kto")
    recipe_name = args.recipe or ("smoke" if args.smoke else "gpu")
    from trainers.tldr import RECIPES, folder_of, stage_config  # no JAX

    overrides: dict[str, dict[str, Any]] = {m: {"steps": n} for m, n in args.steps.items()}
    for stage, name, value in args.settings:
        overrides.setdefault(stage, {})[name] = value
    if args.dpo_loss:
        if "dpo" not in args.policies:
            raise UsageError("--dpo-loss needs dpo in --policies")
        overrides.setdefault("dpo", {})["loss"] = args.dpo_loss
    for method in ("sft", "rm", *args.policies):  # every stage's config, before any work
        try:
            stage_config(method, RECIPES[recipe_name], data / folder_of(method),
                         overrides.get(method))  # fmt: skip
        except (ValueError, OSError) as error:
            message = (str(error).strip().splitlines() or ["invalid option"])[0]
            raise UsageError(f"{method} stage: {message}") from None
    _start_jax()
    from trainers.engine import Interrupted
    from trainers.tldr import pipeline, smoke_init

    out = Path(args.out)
    try:
        init = args.init
        if args.smoke:
            init_dir = out / "init"
            if not (init_dir / "tokenizer.json").is_file():
                smoke_init(data, init_dir)
            init = str(init_dir)

        def report(method: str, metrics: dict[str, Any]) -> None:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
            print(f"trained {out / method}: {json.dumps(shown)}", flush=True)

        pipeline(data, out, init=init, recipe=RECIPES[recipe_name], policies=args.policies,
                 overrides=overrides, progress=not args.quiet, on_stage=report)  # fmt: skip
    except ValueError as error:
        raise UsageError((str(error).strip().splitlines() or ["invalid input"])[0]) from None
    except Interrupted as stop:
        print(f"kinrl: interrupted; saved step {stop.step}: rerun the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    return 0


def _runs(specs: list[str]) -> dict[str, str]:
    runs: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = (name, path) if sep else (Path(spec).name, spec)
        if not (Path(path) / "config.json").is_file():
            raise UsageError(f"--run {spec}: {path} is not a run folder")
        if name in runs:
            raise UsageError(f"--run names must differ ({name} given twice)")
        runs[name] = path
    return runs


def run_eval(args: argparse.Namespace) -> int:
    runs = _runs(args.runs)
    if not runs and args.responses is None:
        raise UsageError("give --run RUN (repeat for several) or --responses CSV")
    if runs and args.rm is None and args.judge is None:
        raise UsageError("give --rm RUN (the default judge) or --judge MODULE:FUNCTION")
    if args.rm is not None and not (Path(args.rm) / "config.json").is_file():
        raise UsageError(f"--rm {args.rm} is not a run folder")
    if args.responses is not None:
        _existing([args.responses], "--responses")
    elif args.data is None:
        raise UsageError("give --data DIR (a tldr prepare folder) or --responses CSV")
    if args.data is not None and not (Path(args.data) / "sft" / "config.json").is_file():
        raise UsageError(f"--data {args.data} has no sft/ folder (run kinrl tldr prepare)")
    if args.temperature < 0:
        raise UsageError(f"--temperature must be >= 0 (got {args.temperature})")
    _start_jax()
    from evaluators.tldr import evaluate

    try:
        results = evaluate(
            runs, args.data, args.out, judge=args.judge, reward_model=args.rm,
            responses=args.responses, split=args.split,
            limit=args.limit, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            seed=args.seed, progress=True,
        )  # fmt: skip
    except ValueError as error:
        raise UsageError((str(error).strip().splitlines() or ["invalid input"])[0]) from None
    for name, r in results["runs"].items():
        wins = "none" if r["win_rate"] is None else f"{r['win_rate']['mean']:.3f}"
        print(f"{name}: ROUGE-L {r['rouge']['rougeL']['mean']:.3f}, win rate {wins}, "
              f"{r['lengths']['words_mean']:.1f} words")  # fmt: skip
    print(f"wrote {args.out}/report.md")
    return 0
