"""`kinrl serve` and `kinrl labels export`: their options (imported by `kinrl --help`, so the
standard library only) and what they run (FastAPI, uvicorn and JAX imported then)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from typing import Any

from kinrl.options import Parser, UsageError, integer

LOOPBACK = "127.0.0.1"
_port = integer(0, 65535, "an integer in 0..65535")
_count = integer(1, None, "a positive integer")


def add_commands(commands: Any) -> None:
    """Add `serve` and `labels` to the `kinrl` subcommands."""
    serve = commands.add_parser(
        "serve", help="the local web app: explore puzzles, compare runs, collect votes",
        description="Serve the local web app: generate or pick kinship puzzles and see their "
        "family tree, see what runs answer (scored by the gold reward), vote blind on two "
        "runs' answers, and rank the runs. Votes go to an SQLite file (--db); "
        "`kinrl labels export` turns them into a dataset for `kinrl train dpo|rm`. Listens on "
        "loopback only unless --host says otherwise.",
    )  # fmt: skip
    serve.add_argument("--run", dest="runs", action="append", default=[], metavar="NAME=RUN[@STEP]",
                       help="a run to serve, under NAME (repeat for several); @STEP picks a "
                       "checkpoint")  # fmt: skip
    serve.add_argument("--baselines", action="store_true",
                       help="also serve the runs 'reference' (the puzzle's reference answer) "
                       "and 'negative' (a wrong answer), which need no model")  # fmt: skip
    serve.add_argument("--data", metavar="DIR", help="a dataset folder to pick puzzles from")
    serve.add_argument("--db", default="labels.db", metavar="PATH",
                       help="the SQLite file of votes (created)")  # fmt: skip
    serve.add_argument(
        "--host",
        default=LOOPBACK,
        help="address to listen on (anything but loopback is reachable by others)",
    )
    serve.add_argument("--port", type=_port, default=8000, help="port (0 = any free one)")
    serve.add_argument("--max-new-tokens", type=_count, default=256, metavar="N",
                       help="cap on the tokens of a run's answer")  # fmt: skip
    serve.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"),
                       default="warning", help="the server's log level")  # fmt: skip
    serve.set_defaults(run=run_serve, parser=serve)

    labels = commands.add_parser("labels", help="the votes collected by kinrl serve",
                                 description="Work with the votes of `kinrl serve`.")  # fmt: skip
    actions = labels.add_subparsers(dest="action", required=True, parser_class=Parser)
    export = actions.add_parser(
        "export", help="write the votes as a preference dataset folder",
        description="Write the A/B votes of --db as a preference dataset folder (the kinship "
        "spec's preference records, plus who labelled, when, which runs, which was shown "
        "first and whether the label agrees with the gold reward), with config.json and a "
        "card; `kinrl train dpo|rm --data DIR` trains on it. Ties and both-bad votes are "
        "counted but make no record.",
    )  # fmt: skip
    export.add_argument("--db", required=True, metavar="PATH", help="the SQLite file of votes")
    export.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    export.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                        help="file format of the splits")  # fmt: skip
    export.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="share of the puzzles whose votes go to validation, in [0, 1)",
    )
    export.add_argument("--overwrite", action="store_true",
                        help="replace an --out folder of a kinrl dataset")  # fmt: skip
    export.set_defaults(run=run_export, parser=export)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _policies(args: argparse.Namespace) -> dict[str, Any]:
    from kinrl.serve.runs import BASELINES, parse_run_spec

    specs = []
    for text in args.runs:
        try:
            specs.append(parse_run_spec(text))
        except ValueError as error:
            raise UsageError(str(error)) from None
    names = [name for name, _, _ in specs] + (list(BASELINES) if args.baselines else [])
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise UsageError(f"--run names must differ (and differ from the baselines with "
                         f"--baselines): {', '.join(doubled)} given twice")  # fmt: skip
    runs: dict[str, Any] = {}
    if specs:
        from trainers.runtime import start_process

        try:
            start_process(False)
        except ValueError as error:
            raise UsageError(str(error)) from None
        from kinrl.serve.runs import TrainedRun

        for name, path, step in specs:
            try:
                runs[name] = TrainedRun(name, path, step, max_new_tokens=args.max_new_tokens)
            except ValueError as error:
                raise UsageError(f"--run {name}={path}: {str(error).splitlines()[0]}") from None
    if args.baselines:
        runs.update({name: cls() for name, cls in BASELINES.items()})
    return runs


def run_serve(args: argparse.Namespace) -> int:
    if not args.host:
        raise UsageError("--host must be an address (got an empty string)")
    try:
        import uvicorn

        from kinrl.serve.app import ServeState, create_app
        from kinrl.serve.puzzles import DataSource
        from kinrl.serve.store import Store, StoreError
    except ImportError as error:
        raise UsageError(
            f"kinrl serve needs the web packages ({error.name} is missing): "
            "pip install -e '.[dev]' or pip install fastapi uvicorn"
        ) from None
    try:
        data = DataSource(args.data) if args.data else None
        store = Store(args.db)
    except (ValueError, StoreError) as error:
        raise UsageError(str(error)) from None
    runs = _policies(args)
    loopback = is_loopback(args.host)
    hosts = ["127.0.0.1", "localhost", "[::1]", "::1"] if loopback else None
    app = create_app(ServeState(store=store, runs=runs, data=data), allowed_hosts=hosts)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            access_log=args.log_level in ("info", "debug"),
                            timeout_graceful_shutdown=5)  # fmt: skip
    server = uvicorn.Server(config)
    sock = _listen(args.host, args.port)
    port = sock.getsockname()[1]
    if not loopback:
        print(f"kinrl: warning: listening on {args.host}, beyond loopback: anyone who can reach "
              "it can read the puzzles and vote", file=sys.stderr)  # fmt: skip
    shown = f"[{args.host}]" if ":" in args.host else args.host
    names = ", ".join(runs) or "none (give --run NAME=RUN, or --baselines)"
    print(f"kinrl serve: http://{shown}:{port}/ (runs: {names}; votes in {args.db}); "
          "Ctrl-C stops", flush=True)  # fmt: skip
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        store.close()
    return 0 if server.started else 1


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), so a port in use is one line, and port 0 is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UsageError(f"--host {host} --port {port}: cannot listen there "
                         f"({error.strerror or error})") from None  # fmt: skip
    return sock


def run_export(args: argparse.Namespace) -> int:
    from kinrl.options import as_option
    from kinrl.serve.export import export_labels
    from kinrl.serve.store import StoreError

    try:
        summary = export_labels(args.db, args.out, fmt=args.format,
                                validation_fraction=args.validation_fraction,
                                overwrite=args.overwrite)  # fmt: skip
    except (ValueError, StoreError) as error:
        raise UsageError(as_option(str(error), args.parser)) from None
    counts = ", ".join(f"{name} {count}" for name, count in summary["counts"].items())
    votes = summary["votes"]
    print(f"wrote {args.out}: {counts} (votes: a {votes['a']}, b {votes['b']}, tie "
          f"{votes['tie']}, both bad {votes['both_bad']})")  # fmt: skip
    return 0
