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
from tasks.kinship.native import SHARED as SHARED_LIBRARY
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
        and node.targets[0].id in ("COMPILED", "GROUP")
    }
    assert assigned["COMPILED"] == COMPILED
    assert assigned["GROUP"] + "__mypyc" == SHARED_LIBRARY


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["_in_process.py", "egg_info"], True),  # pip: get_requires_for_build_*
        (["_in_process.py", "dist_info", "--output-dir", "/tmp/m", "--keep-egg-info"], True),
        (["setup.py", "--verbose", "egg_info"], True),
        (["_in_process.py", "editable_wheel", "--dist-dir", "/tmp/w"], False),
        (["_in_process.py", "bdist_wheel", "--dist-dir", "/tmp/w"], False),
        (["setup.py", "build_ext", "--inplace"], False),
        (["setup.py", "egg_info", "build_ext"], False),
    ],
)
def test_setup_runs_mypyc_only_when_it_builds(argv: list[str], expected: bool) -> None:
    tree = ast.parse((ROOT / "setup.py").read_text())
    wanted = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name == "metadata_only")
        or (isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "METADATA")
    ]
    namespace: dict = {}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "setup.py", "exec"), namespace)
    assert namespace["metadata_only"](argv) is expected


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


def _package(folder: Path, built: tuple[str, ...], stamp: bool) -> Path:
    """A fake tasks/kinship under `folder`: sources, `built` extensions, and a stamp of every
    .py file (plus a tracked module outside kinship/) if `stamp`."""
    kinship = folder / "kinship"
    kinship.mkdir(exist_ok=True)
    for name in (*COMPILED, "config"):
        (kinship / f"{name}.py").write_text(f"NAME = {name!r}\n")
    (folder / "fields.py").write_text("FIELDS = 1\n")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in built:
        (kinship / f"{name}{suffix}").write_bytes(b"not really a library")
    if stamp:
        paths = [*kinship.glob("*.py"), folder / "fields.py"]
        digests = {
            path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in paths
        }
        (kinship / STAMP).write_text(json.dumps(digests))
    return kinship


SHARED = "json"  # stands in for the build's shared library: any importable module


def test_choose_runs_a_build_only_while_it_matches_its_sources(tmp_path: Path) -> None:
    kinship = _package(tmp_path, (), stamp=False)
    assert choose(kinship, {}, SHARED)[0] == "python"  # nothing compiled

    kinship = _package(tmp_path, COMPILED, stamp=True)
    assert choose(kinship, {}, SHARED) == ("mypyc", "compiled with mypyc")
    assert choose(kinship, {"KINRL_PURE_PYTHON": "1"}, SHARED)[0] == "python"
    assert choose(kinship, {"KINRL_PURE_PYTHON": "0"}, SHARED)[0] == "mypyc"

    engine, reason = choose(kinship, {}, "kinrl_no_such_library__mypyc")
    assert engine == "python" and "shared library" in reason

    for edited in (kinship / "render.py", kinship / "config.py", tmp_path / "fields.py"):
        _package(tmp_path, COMPILED, stamp=True)
        edited.write_text("NAME = 'edited after the build'\n")
        engine, reason = choose(kinship, {}, SHARED)
        assert engine == "python" and reason.startswith("stale"), edited
        assert edited.relative_to(tmp_path).as_posix() in reason

    _package(tmp_path, COMPILED, stamp=True)
    (kinship / "graph.py").unlink()  # a stamped source gone
    assert choose(kinship, {}, SHARED)[0] == "python"

    _package(tmp_path, COMPILED, stamp=True)
    (kinship / STAMP).unlink()  # a build without its stamp (interrupted) is not trusted
    assert choose(kinship, {}, SHARED)[0] == "python"

    (kinship / STAMP).write_text(json.dumps({"kinship/config.py": "0" * 64}))
    engine, reason = choose(kinship, {}, SHARED)  # a stamp that misses compiled modules
    assert engine == "python" and "does not cover" in reason


def test_choose_refuses_a_partial_build(tmp_path: Path) -> None:
    kinship = _package(tmp_path, COMPILED[:-1], stamp=True)
    engine, reason = choose(kinship, {}, SHARED)
    assert engine == "python" and f"{COMPILED[-1]}.py" in reason


def test_source_finder_imports_the_py_file_ahead_of_a_build(tmp_path: Path) -> None:
    kinship = _package(tmp_path, COMPILED, stamp=False)
    finder = SourceFinder("fakepkg", kinship, COMPILED)
    spec = finder.find_spec("fakepkg.render", None)
    assert spec is not None and spec.origin == str(kinship / "render.py")
    assert finder.find_spec("fakepkg.config", None) is None  # not one of the compiled modules
    assert finder.find_spec("otherpkg.render", None) is None
