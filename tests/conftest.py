"""Test-wide settings and shared fixtures.

The suite never writes JAX's persistent compilation cache into the user's home (`kinrl`
commands run in-process here); `tests/test_runtime.py` turns it on in a child process with its
own folder."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import pytest

os.environ["KINRL_COMPILATION_CACHE"] = "off"


@pytest.fixture
def nano64(monkeypatch) -> str:
    """The nano preset with a 64-token context: longer level-1 examples are dropped, so every
    batch pads to one length bucket and each step compiles once."""
    from trainers.model import PRESETS

    monkeypatch.setitem(PRESETS, "nano64", dataclasses.replace(PRESETS["nano"], n_positions=64))
    return "nano64"


@pytest.fixture
def usage_error(capsys) -> Callable[[list[str]], str]:
    """`usage_error(argv)`: run `kinrl argv`, assert it exits 2 with one line on stderr that
    starts "kinrl: error: ", and return that line."""
    from kinrl.cli import main

    def run(argv: list[str]) -> str:
        capsys.readouterr()
        assert main(argv) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kinrl: error: "), captured.err
        return lines[0]

    return run
