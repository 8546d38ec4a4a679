"""`tasks.registry` owns the dataset kinds, and the project's modules do not import in circles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tasks import registry
from tasks.io import is_dataset_folder
from tasks.kinship import KinshipConfig, generate_dataset

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "trainers", "evaluators", "kinrl")  # the project's import packages


# --- the import scan (extend the assertions below to more packages as they are untangled) ---


def project_modules(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """{dotted module name: its file} for every .py file of `packages` under `root`."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportFinder(ast.NodeVisitor):
    """The import statements that run when the module is imported (with `lazy`, also those in
    function bodies); not those under `if TYPE_CHECKING:`."""

    def __init__(self, lazy: bool) -> None:
        self.lazy = lazy
        self.found: list[ast.Import | ast.ImportFrom] = []

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if self.lazy:
            self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        if self.lazy:
            self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            for statement in node.body:
                self.visit(statement)
        for statement in node.orelse:
            self.visit(statement)


def _imported(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]
) -> Iterator[str]:
    """The project modules (of `known`) that `node`, a statement of `module`, imports."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in known:
                yield alias.name
        return
    base = node.module or ""
    if node.level:  # relative: from the package of `module`
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    for alias in node.names:
        if f"{base}.{alias.name}" in known:  # `from tasks import kinship`: the submodule
            yield f"{base}.{alias.name}"
        elif base in known:
            yield base


def import_graph(
    scan: Iterable[str] = PACKAGES, root: Path = ROOT, lazy: bool = False
) -> dict[str, set[str]]:
    """{module: the project modules it imports} for the modules of the packages in `scan`,
    at module level (with `lazy`, in function bodies too). Imports of any project package
    count (`project_modules(root)` names them), but only the files of `scan` are parsed."""
    known = set(project_modules(root, sorted({*PACKAGES, *scan})))
    graph: dict[str, set[str]] = {}
    for module, path in project_modules(root, scan).items():
        finder = _ImportFinder(lazy)
        finder.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        is_package = path.name == "__init__.py"
        graph[module] = {
            target
            for node in finder.found
            for target in _imported(module, is_package, node, known)
            if not (is_package and target == module)  # `from . import name` in an __init__
        }
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph`: its strongly connected components of more than one module
    (or a module importing itself), each sorted; Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_import_scan_finds_cycles(tmp_path: Path) -> None:
    package = tmp_path / "tasks"
    package.mkdir()
    (package / "__init__.py").write_text("from . import a\n")
    (package / "a.py").write_text("from tasks import b\n")
    (package / "b.py").write_text("import tasks.a\nfrom typing import TYPE_CHECKING\n")
    (package / "c.py").write_text("if TYPE_CHECKING:\n    from tasks import d\n")
    (package / "d.py").write_text("from .c import x\ndef f():\n    from tasks import e\n")
    (package / "e.py").write_text("from tasks.d import y\n")
    graph = import_graph(["tasks"], root=tmp_path)
    assert graph["tasks"] == {"tasks.a"} and graph["tasks.c"] == set()
    assert graph["tasks.d"] == {"tasks.c"} and graph["tasks.e"] == {"tasks.d"}
    assert import_cycles(graph) == [["tasks.a", "tasks.b"]]
    lazy = import_graph(["tasks"], root=tmp_path, lazy=True)
    assert import_cycles(lazy) == [["tasks.a", "tasks.b"], ["tasks.d", "tasks.e"]]


def test_no_import_cycles_in_tasks() -> None:
    assert import_cycles(import_graph(["tasks"])) == []


def test_no_two_project_modules_import_each_other() -> None:
    """Across every package, at module level and inside functions. (The registry imports a
    method's module by name only when asked, so the engine looking a method up is no loop.)"""
    packages = ["tasks", "trainers", "evaluators", "kinrl"]
    assert import_cycles(import_graph(packages)) == []
    assert import_cycles(import_graph(packages, lazy=True)) == []


def test_tasks_io_and_registry_stay_generic() -> None:
    """tasks.io imports nothing of a task (not even lazily); tasks.registry, nothing of the
    project at module level, and importing either loads no task, numpy or jax."""
    lazy = import_graph(["tasks"], lazy=True)
    assert not [m for m in lazy["tasks.io"] if m.startswith("tasks.kinship")]
    assert import_graph(["tasks"])["tasks.registry"] == set()
    code = (
        "import sys, tasks.registry, tasks.io; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'numpy') "
        "or m.startswith('tasks.kinship')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert loaded.strip() == "[]"


# --- the dataset kinds ---


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """A small dataset folder of every kind of the kinship task, by its short name."""
    folders = {}
    for short in registry.KINDS:
        out = tmp_path_factory.mktemp("kinds") / short
        generate_dataset(out, KinshipConfig.for_level(3), 60, kind=short, progress=False)
        folders[short] = out
    return folders


def test_the_writer_writes_exactly_the_registry_kinds(written: dict[str, Path]) -> None:
    assert tuple(kind.short for kind in registry.get_task("kinship").kinds) == registry.KINDS
    kinds = {}
    for short, folder in written.items():
        kinds[short] = json.loads((folder / "config.json").read_text())["kind"]
        assert is_dataset_folder(folder)
    assert kinds == {kind.short: kind.name for kind in registry.KINSHIP.kinds}
    text_kinds = {kind.name for kind in registry.TEXT_KINDS}  # kinrl tldr prepare's
    assert set(kinds.values()) | text_kinds == set(registry.dataset_kinds())
    assert set(registry.dataset_kinds()) == set(registry.RECORD_FIELDS)
    assert (registry.EXAMPLES_KIND, registry.PREFERENCE_KIND, registry.FEEDBACK_KIND) == (
        "kinship/examples",
        "kinship/preference",
        "kinship/feedback",
    )
    with pytest.raises(ValueError, match="--kind must be one of examples, preference, feedback"):
        generate_dataset(written["examples"].parent / "bad", KinshipConfig(), 5, kind="pairs")


def test_records_have_their_kinds_fields(written: dict[str, Path]) -> None:
    for kind in registry.KINSHIP.kinds:
        records = [
            json.loads(line)
            for path in sorted(written[kind.short].glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()
        ]
        assert len(records) == 60
        missing = {field for r in records for field in kind.fields if field not in r}
        assert not missing, (kind.name, missing)


def test_parquet_schemas_have_the_fields() -> None:
    pytest.importorskip("pyarrow")
    from tasks.kinship.dataset import parquet_schema

    for kind in registry.KINSHIP.kinds:
        assert set(kind.fields) <= set(parquet_schema(kind.short).names), kind.name


def test_trainers_read_the_registry_kinds() -> None:
    from trainers import data

    assert data.RECORD_FIELDS is registry.RECORD_FIELDS
    assert (data.EXAMPLES_KIND, data.PREFERENCE_KIND, data.FEEDBACK_KIND) == (
        registry.EXAMPLES_KIND,
        registry.PREFERENCE_KIND,
        registry.FEEDBACK_KIND,
    )


def test_get_task_loads_the_task_on_demand() -> None:
    task = registry.get_task("kinship")
    assert task.config_class is KinshipConfig
    record = task.make_example(task.config_class.for_level(2), 0, 0, "train")
    assert set(registry.EXAMPLES.fields) <= set(record)
    assert task.score(record, record["completion"]) == 1.0
    with pytest.raises(ValueError, match="task must be one of kinship"):
        registry.get_task("chess")
