"""Build hook: compiles the kinship generator's hot modules to C with mypyc.

The modules stay plain, type-checked Python; compiled, they make records 1.7-1.9x as fast.
Set KINRL_COMPILE=0 to install without compiling (this also removes an old in-place build).
Without a C compiler, or if mypyc refuses, the install goes on with the pure-Python modules.

Next to the compiled modules the build writes `tasks/kinship/_compiled.json`: the SHA-256 of
every project module mypyc reads (ANALYSED: the compiled modules and those whose types they
rely on), hashed before compiling, written only once every extension of this build was built.
`tasks.kinship` imports the compiled modules only while all of them still match (see
`tasks/kinship/native.py`), so an edited source is never shadowed by a stale build.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import ClassVar

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILED = ("draws", "relations", "graph", "render", "generator")  # = native.COMPILED
SOURCES = [f"tasks/kinship/{name}.py" for name in COMPILED]
GROUP = "kinrl_kinship"  # the shared library all of them link to: kinrl_kinship__mypyc
STAMP = "tasks/kinship/_compiled.json"
ROOT = Path(__file__).resolve().parent


# The project modules mypyc reads: the compiled ones and those they import names from, whose
# types are compiled in (a changed field type of KinshipConfig must invalidate the build).
ANALYSED = [*SOURCES, *(f"tasks/kinship/{name}.py" for name in ("config", "names", "terms"))]
ANALYSED.append("tasks/fields.py")


def analysed() -> dict[str, str]:
    """SHA-256 of every module of ANALYSED, keyed by path under tasks/ (the keys
    tasks.kinship.native.choose checks)."""
    return {
        path.removeprefix("tasks/"): hashlib.sha256((ROOT / path).read_bytes()).hexdigest()
        for path in ANALYSED
    }


def remove_inplace_build() -> None:
    """Delete an in-place (editable) build, so that it cannot outlive the sources it was made
    from."""
    for folder, names in ((ROOT / "tasks" / "kinship", COMPILED), (ROOT, (f"{GROUP}__mypyc",))):
        for name in names:
            for path in folder.glob(f"{name}.*"):
                if path.suffix in (".so", ".pyd"):
                    path.unlink()
    (ROOT / STAMP).unlink(missing_ok=True)


class StampedBuildExt(build_ext):
    """build_ext that stamps the build with the sources it was made from, and only a build
    whose every extension was built in this run."""

    digests: ClassVar[dict[str, str]] = {}

    def run(self) -> None:
        self._built: set[str] = set()
        # The stamp of the build this run replaces: in the source tree only for an in-place
        # (editable) build; a wheel built from an editable checkout leaves that one alone.
        for folder in {Path(self.build_lib), *([ROOT] if self.inplace else [])}:
            (folder / STAMP).unlink(missing_ok=True)
        super().run()
        if not self.extensions or self._built != {ext.name for ext in self.extensions}:
            # An optional extension failed (no compiler?): no stamp, so the sources are
            # imported, and no leftovers of an older in-place build either.
            if self.inplace:
                remove_inplace_build()
            return
        stamp = (
            Path(self.get_ext_fullpath(f"tasks.kinship.{COMPILED[0]}")).parent / "_compiled.json"
        )
        stamp.write_text(json.dumps(self.digests, indent=1, sort_keys=True) + "\n")

    def build_extension(self, ext: Extension) -> None:
        super().build_extension(ext)  # raises if it fails; optional ones are then skipped
        self._built.add(ext.name)


# What pip asks of setup.py before it builds: the build's requirements (egg_info) and the
# metadata (dist_info). They need the extensions' names only (top_level.txt lists them, and
# the wheel keeps that metadata), so they get placeholders instead of mypyc (~7.5 s each).
METADATA = {"egg_info", "dist_info"}


def metadata_only(argv: list[str]) -> bool:
    """Whether setup.py runs only metadata commands (options aside): no extension is built.
    An option's value counts as a command, so at worst a metadata run also compiles."""
    commands = {arg for arg in argv[1:] if not arg.startswith("-")}
    return bool(commands & METADATA) and not any(
        command.startswith(("build", "bdist", "install", "develop", "editable"))
        for command in commands
    )


def extensions() -> list[Extension]:
    if os.environ.get("KINRL_COMPILE", "1") == "0":
        remove_inplace_build()
        return []
    if metadata_only(sys.argv):  # the names mypycify gives, no sources
        names = [f"{GROUP}__mypyc", *(f"tasks.kinship.{name}" for name in COMPILED)]
        return [Extension(name, sources=[]) for name in names]
    StampedBuildExt.digests = analysed()  # before mypyc reads the sources
    # Type errors only in the compiled modules count; the rest is imported as it is.
    flags = ["--ignore-missing-imports", "--follow-imports=silent"]
    try:
        from mypyc.build import mypycify

        modules = mypycify([*flags, *SOURCES], opt_level="3", group_name=GROUP)
    except (Exception, SystemExit) as error:  # mypyc missing or refusing: install pure Python
        print(f"kinrl: not compiling the kinship generator ({error!r}); using pure Python")
        remove_inplace_build()
        return []
    for module in modules:
        module.optional = True  # no compiler: a warning and the pure-Python modules
    return modules


setup(ext_modules=extensions(), cmdclass={"build_ext": StampedBuildExt})
