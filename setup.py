"""Build hook: compiles the kinship generator's hot modules to C with mypyc.

The modules stay plain, type-checked Python; compiled, they make records about twice as fast.
Set KINRL_COMPILE=0 to install without compiling. Without a C compiler the install goes on
with the pure-Python modules (the extensions are optional). Next to the compiled modules the
build writes `tasks/kinship/_compiled.json`, the SHA-256 of each source it compiled:
`tasks.kinship` imports the compiled modules only while their sources still match (see
`tasks/kinship/native.py`), so an edited source is never shadowed by a stale build.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = ("draws", "relations", "graph", "render", "generator")  # = native.COMPILED
SOURCES = [f"tasks/kinship/{name}.py" for name in COMPILED]
GROUP = "kinrl_kinship"


class StampedBuildExt(build_ext):
    """build_ext that records which sources the compiled modules were built from."""

    def run(self) -> None:
        super().run()
        if not self.extensions:
            return
        built = [self.get_ext_fullpath(f"tasks.kinship.{name}") for name in COMPILED]
        shared = self.get_ext_fullpath(GROUP + "__mypyc")  # the code all of them link to
        if not all(Path(path).exists() for path in [*built, shared]):
            return  # an optional extension failed: leave no stamp, so the source is used
        digests = {
            name: hashlib.sha256(Path(source).read_bytes()).hexdigest()
            for name, source in zip(COMPILED, SOURCES, strict=True)
        }
        stamp = Path(built[0]).parent / "_compiled.json"
        stamp.write_text(json.dumps(digests, indent=1) + "\n")


def extensions() -> list:
    if os.environ.get("KINRL_COMPILE", "1") == "0":
        return []
    # Type errors only in the compiled modules count; the rest is imported as it is.
    flags = ["--ignore-missing-imports", "--follow-imports=silent"]
    try:
        from mypyc.build import mypycify

        modules = mypycify([*flags, *SOURCES], opt_level="3", group_name=GROUP)
    except (Exception, SystemExit) as error:  # mypyc missing or refusing: install pure Python
        print(f"kinrl: not compiling the kinship generator ({error!r}); using pure Python")
        return []
    for module in modules:
        module.optional = True  # no compiler: a warning and the pure-Python modules
    return modules


setup(ext_modules=extensions(), cmdclass={"build_ext": StampedBuildExt})
