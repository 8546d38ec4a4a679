"""Which build of the generator's hot modules runs: the mypyc-compiled one, or the source.

`pip install` compiles the modules of `COMPILED` to C with mypyc (see `setup.py`), which makes
records about twice as fast, and stamps the SHA-256 of each source it compiled in
`_compiled.json`. Python would import a compiled module in preference to its source even after
the source was edited, so `tasks.kinship` imports this module first, and it runs the compiled
build only while every stamp still matches its source; otherwise (or with KINRL_PURE_PYTHON=1
in the environment) the sources are imported, with a warning if a build was stale. Both give
identical records (`tests/test_native.py`).
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
PACKAGE = "tasks.kinship"
HERE = Path(__file__).resolve().parent
STAMP = "_compiled.json"


def _compiled_file(folder: Path, name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def choose(folder: Path, environ: Mapping[str, str]) -> tuple[str, str]:
    """("mypyc" or "python", why) for the modules of `folder`; a reason starting with "stale"
    means a build exists but does not match its sources."""
    if environ.get("KINRL_PURE_PYTHON", "0") not in ("", "0"):
        return "python", "KINRL_PURE_PYTHON is set"
    built = [name for name in COMPILED if _compiled_file(folder, name) is not None]
    if not built:
        return "python", "not compiled (install with a C compiler, or KINRL_COMPILE was 0)"
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        stamp = {}
    missing = [name for name in COMPILED if name not in built]
    changed = [
        name
        for name in COMPILED
        if stamp.get(name) != hashlib.sha256((folder / f"{name}.py").read_bytes()).hexdigest()
    ]
    if missing or changed:
        which = ", ".join(f"{name}.py" for name in missing or changed)
        return "python", f"stale build: {which} changed since compiled or not built"
    return "mypyc", "compiled with mypyc"


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
    if REASON.startswith("stale"):
        warnings.warn(
            f"kinrl: the compiled kinship generator is out of date ({REASON}); running the "
            "Python sources, about half as fast. Rebuild it with `pip install -e .`.",
            RuntimeWarning,
            stacklevel=2,
        )
    sys.meta_path.insert(0, SourceFinder(PACKAGE, HERE, COMPILED))
