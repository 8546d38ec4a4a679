"""The compiled (mypyc) generator is the source, only faster: same records, never stale."""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.kinship import ENGINE, KinshipConfig, make_example
from tasks.kinship.native import COMPILED, STAMP, SourceFinder, choose
from tasks.kinship.pairs import FeedbackConfig, make_binary, make_pair

ROOT = Path(__file__).resolve().parents[1]

# Levels and knobs that reach every code path of the compiled modules: noise of all three
# kinds, sibling facts, grouped facts, reasoning chains, held-out relation families.
CASES = [
    (1, {}),
    (3, {}),
    (5, {"reasoning": True}),
    (8, {"shuffle_facts": False}),
    (10, {}),
    (4, {"relation_families": ("cousin", "sibling", "parent-in-law")}),
]
PER_CASE = 60


def _records() -> list[str]:
    """Examples of every case, and preference pairs and binary feedback (whose negatives
    re-run parts of the generator) at two levels."""
    out = [
        json.dumps(make_example(KinshipConfig.for_level(level, **knobs), 7, index))
        for level, knobs in CASES
        for index in range(PER_CASE)
    ]
    feedback = FeedbackConfig()
    for level in (2, 6):
        config = KinshipConfig.for_level(level, reasoning=True)
        out += [json.dumps(make_pair(config, feedback, 3, i)) for i in range(PER_CASE)]
        out += [json.dumps(make_binary(config, feedback, 3, i)) for i in range(PER_CASE)]
    return out


def test_setup_compiles_the_modules_native_guards() -> None:
    tree = ast.parse((ROOT / "setup.py").read_text())
    assigned = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == "COMPILED"
    }
    assert assigned["COMPILED"] == COMPILED


@pytest.mark.skipif(ENGINE != "mypyc", reason="the generator is not compiled in this install")
def test_compiled_records_equal_the_source_records() -> None:
    code = (
        "import json, sys; from tests.test_native import _records; "
        "import tasks.kinship.generator as g; assert g.__file__.endswith('.py'), g.__file__; "
        "json.dump(_records(), sys.stdout)"
    )
    env = {**os.environ, "KINRL_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    source = json.loads(out.stdout)
    compiled = _records()
    assert len(compiled) == (len(CASES) + 4) * PER_CASE
    for i, (a, b) in enumerate(zip(compiled, source, strict=True)):
        assert a == b, f"record {i} differs between the compiled and the source generator"


def _package(folder: Path, built: tuple[str, ...], stamp: dict[str, str] | None) -> None:
    for name in COMPILED:
        (folder / f"{name}.py").write_text(f"NAME = {name!r}\n")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in built:
        (folder / f"{name}{suffix}").write_bytes(b"not really a library")
    if stamp is not None:
        (folder / STAMP).write_text(json.dumps(stamp))


def _digests(folder: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((folder / f"{name}.py").read_bytes()).hexdigest() for name in COMPILED
    }


def test_choose_runs_a_build_only_while_it_matches_its_sources(tmp_path: Path) -> None:
    _package(tmp_path, (), None)
    assert choose(tmp_path, {})[0] == "python"  # nothing compiled

    _package(tmp_path, COMPILED, _digests(tmp_path))
    assert choose(tmp_path, {}) == ("mypyc", "compiled with mypyc")
    assert choose(tmp_path, {"KINRL_PURE_PYTHON": "1"})[0] == "python"
    assert choose(tmp_path, {"KINRL_PURE_PYTHON": "0"})[0] == "mypyc"

    (tmp_path / "render.py").write_text("NAME = 'edited'\n")  # edited after the build
    engine, reason = choose(tmp_path, {})
    assert engine == "python" and reason.startswith("stale") and "render.py" in reason

    (tmp_path / STAMP).unlink()  # a build without its stamp is not trusted
    assert choose(tmp_path, {})[0] == "python"


def test_choose_refuses_a_partial_build(tmp_path: Path) -> None:
    _package(tmp_path, COMPILED[:-1], None)
    _package(tmp_path, COMPILED[:-1], _digests(tmp_path))
    engine, reason = choose(tmp_path, {})
    assert engine == "python" and f"{COMPILED[-1]}.py" in reason


def test_source_finder_imports_the_py_file_ahead_of_a_build(tmp_path: Path) -> None:
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    _package(package, COMPILED, None)
    finder = SourceFinder("fakepkg", package, COMPILED)
    spec = finder.find_spec("fakepkg.render", None)
    assert spec is not None and spec.origin == str(package / "render.py")
    assert finder.find_spec("fakepkg.config", None) is None  # not one of the compiled modules
    assert finder.find_spec("otherpkg.render", None) is None
