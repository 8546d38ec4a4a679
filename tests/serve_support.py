"""Helpers shared by the `kinrl serve` tests: a data folder whose names are HTML, a scripted
policy, a server on a free loopback port in a thread."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EVIL = "<script>window.__xss=1</script>"
EVIL_IMG = "<img src=x onerror=window.__xss=2>"


def hostile_data(folder: Path, n: int = 30) -> Path:
    """A level-1 examples folder whose first test record's people are called `EVIL` and
    `EVIL_IMG` (everywhere the names appear: people, facts, text, answer)."""
    from tasks.kinship import KinshipConfig, generate_dataset

    generate_dataset(folder, KinshipConfig.for_level(1), n, seed=3, progress=False)
    path = folder / "test.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    names = [p["name"] for p in record["people"]][:2]
    line = lines[0]
    for name, evil in zip(names, (EVIL, EVIL_IMG), strict=True):
        line = re.sub(rf"\b{re.escape(name)}\b", evil, line)
    lines[0] = line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


class Scripted:
    """A run that answers every prompt with `text` (it needs no record)."""

    kind = "run"

    def __init__(self, name: str, text: str = "Answer: nobody") -> None:
        self.name, self.text = name, text

    def complete(
        self, prompt: str, record: Mapping[str, Any] | None, n: int, temperature: float, seed: int
    ) -> list[str]:
        return [self.text] * n

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def tiny_sft_run(root: Path, steps: int = 3) -> Path:
    """A tiny SFT run (2 layers of width 32, `steps` steps) on 60 level-1 records."""
    from kinrl.cli import main
    from tasks.kinship import KinshipConfig, generate_dataset
    from trainers.model import PRESETS, GPTConfig

    data = root / "examples"
    generate_dataset(data, KinshipConfig.for_level(1), 60, seed=2, progress=False)
    run = root / "sft"
    PRESETS["serve-tiny"] = GPTConfig(vocab_size=1, n_positions=96, n_embd=32, n_layer=2, n_head=2)
    try:
        argv = [
            "train",
            "sft",
            "--data",
            str(data),
            "--out",
            str(run),
            "--preset",
            "serve-tiny",
            "--steps",
            str(steps),
            "--batch-size",
            "4",
            "--warmup-steps",
            "0",
            "--quiet",
        ]
        assert main(argv) == 0
    finally:
        del PRESETS["serve-tiny"]
    return run
