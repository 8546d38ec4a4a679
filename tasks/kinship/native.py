"""Which build of the generator's hot modules runs: the mypyc-compiled one, or the source.

`pip install` compiles the modules of `COMPILED` to C with mypyc (see `setup.py`), which makes
records 1.7-1.9x as fast, and stamps in `_compiled.json` the SHA-256 of every source mypyc
read (the compiled modules and the project modules whose types it relied on). Python would
import a compiled module in preference to its source even after the source was edited, so
`tasks.kinship` imports this module first, and it runs the compiled build only while it is
whole and every stamp still matches its source; otherwise (or with KINRL_PURE_PYTHON=1 in the
environment) all the sources are imported, never a mix, with a warning if a build was stale.
Both give identical records (`tests/test_native.py`).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

COMPILED = ("draws", "relations", "graph", "render", "generator")  # setup.py compiles these
SHARED = "kinrl_kinship__mypyc"  # the library the compiled modules share (setup.GROUP)
PACKAGE = "tasks.kinship"
HERE = Path(__file__).resolve().parent
STAMP = "_compiled.json"


def _compiled_file(folder: Path, name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def choose(folder: Path, environ: Mapping[str, str], shared: str = SHARED) -> tuple[str, str]:
    """("mypyc" or "python", why) for the modules of `folder` (a copy of tasks/kinship); a
    reason starting with "stale" means a build exists but may not match its sources."""
    if environ.get("KINRL_PURE_PYTHON", "0") not in ("", "0"):
        return "python", "KINRL_PURE_PYTHON is set"
    built = [name for name in COMPILED if _compiled_file(folder, name) is not None]
    if not built:
        return "python", "not compiled (install with a C compiler, or KINRL_COMPILE was 0)"
    missing = [f"{name}.py" for name in COMPILED if name not in built]
    if missing:
        return "python", f"stale build: {', '.join(missing)} not built"
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return "python", f"stale build: no {STAMP} (an interrupted or failed build)"
    if not isinstance(stamp, dict) or any(f"kinship/{n}.py" not in stamp for n in COMPILED):
        return "python", f"stale build: {STAMP} does not cover the compiled modules"
    changed = [path for path, digest in stamp.items() if _digest(folder.parent / path) != digest]
    if changed:
        return "python", f"stale build: {', '.join(changed)} changed since it was compiled"
    if importlib.util.find_spec(shared) is None:
        return "python", f"stale build: its shared library {shared} is not importable"
    return "mypyc", "compiled with mypyc"


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class SourceFinder(importlib.abc.MetaPathFinder):
    """Imports the modules of `names` in `package` from their .py files, ahead of any build."""

    def __init__(self, package: str, folder: Path, names: Sequence[str]) -> None:
        self.prefix = package + "."
        self.folder = folder
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.prefix):
            return None
        name = fullname[len(self.prefix) :]
        if name not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, self.folder / f"{name}.py")


ENGINE, REASON = choose(HERE, os.environ)
if ENGINE == "python" and any(_compiled_file(HERE, name) for name in COMPILED):
    if REASON.startswith("stale") and not os.environ.get("KINRL_STALE_BUILD_WARNED"):
        os.environ["KINRL_STALE_BUILD_WARNED"] = "1"  # once: not again in worker processes
        warnings.warn(
            f"kinrl: the compiled kinship generator is out of date ({REASON}); running the "
            "Python sources, which are slower. Rebuild it with `pip install -e .`.",
            RuntimeWarning,
            stacklevel=1,
        )
    sys.meta_path.insert(0, SourceFinder(PACKAGE, HERE, COMPILED))
