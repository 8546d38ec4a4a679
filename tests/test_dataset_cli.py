"""`kinrl generate` end to end: files, determinism across processes, loading, splits, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinrl.cli import main
from tasks.kinship.splits import find_leaks


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "l3"
    assert main(["generate", "--out", str(out), "--n", "600", "--difficulty", "3", "--quiet"]) == 0
    return out


def test_generate_writes_splits_config_and_card(dataset: Path) -> None:
    names = sorted(p.name for p in dataset.iterdir())
    assert names == ["README.md", "config.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    summary = json.loads((dataset / "config.json").read_text())
    assert summary["counts"] == {"train": 480, "validation": 60, "test": 60}
    assert summary["config"]["difficulty"] == 3
    card = (dataset / "README.md").read_text()
    assert "| 3 | 600 |" in card and "Leak check: 600 distinct families" in card
    records = read_jsonl(dataset / "train.jsonl")
    assert len(records) == 480 and len({r["id"] for r in records}) == 480
    assert all(r["split"] == "train" for r in records)


def test_byte_identical_whatever_num_proc(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "two"
    args = ["generate", "--out", str(out), "--n", "600", "--difficulty", "3", "--quiet"]
    assert main([*args, "--num-proc", "2"]) == 0
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "config.json", "README.md"):
        assert (out / name).read_bytes() == (dataset / name).read_bytes(), name


def test_loads_with_datasets_unchanged(dataset: Path) -> None:
    datasets = pytest.importorskip("datasets")
    files = {s: str(dataset / f"{s}.jsonl") for s in ("train", "validation", "test")}
    ds = datasets.load_dataset("json", data_files=files)
    assert ds["train"].num_rows == 480
    row = ds["test"][0]
    assert {"prompt", "completion", "answer", "answers", "query", "facts"} <= set(row)


def test_parquet_output_loads_with_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "pq"
    args = ["generate", "--out", str(out), "--n", "50", "--format", "parquet", "--quiet"]
    assert main(args) == 0
    ds = datasets.load_dataset("parquet", data_files={"train": str(out / "train.parquet")})
    assert ds["train"].num_rows == 40
    assert ds["train"][0]["completion"].splitlines()[-1].startswith("Answer: ")


def test_generalisation_splits_and_leak_check(tmp_path: Path) -> None:
    out = tmp_path / "holdout"
    args = ["generate", "--out", str(out), "--n", "300", "--difficulty", "5", "--quiet"]
    args += ["--holdout-hops", "3", "--holdout-relations", "cousin,step-sibling", "--holdout-names"]
    assert main(args) == 0
    splits = {p.stem: read_jsonl(p) for p in out.glob("*.jsonl")}
    assert set(splits) == {
        "train",
        "validation",
        "test",
        "test_hops",
        "test_relations",
        "test_names",
    }
    train = splits["train"]
    assert all(r["hops"] <= 3 for r in train)
    assert all(r["hops"] > 3 for r in splits["test_hops"])
    assert all("cousin" not in r["completion"] for r in train)
    assert all("step" not in r["answer"] for r in train)
    train_names = {p["name"] for r in train for p in r["people"]}
    heldout_names = {p["name"] for r in splits["test_names"] for p in r["people"]}
    assert train_names and heldout_names and not train_names & heldout_names
    assert find_leaks(r for records in splits.values() for r in records) == []


def test_leak_check_finds_a_planted_leak(dataset: Path) -> None:
    train = read_jsonl(dataset / "train.jsonl")
    planted = dict(train[0], split="test")
    assert len(find_leaks([*train, planted])) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--difficulty", "0"], "--difficulty"),
        (["--difficulty", "11"], "--difficulty"),
        (["--n", "-5"], "--n"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--max-hops", "0"], "--max-hops"),
        (["--format", "csv"], "--format"),
        (["--locale", "xx_XX"], "--locale"),
        (["--holdout-relations", "in-law"], "--holdout-relations"),
        (["--n", "3", "--holdout-names"], "--test-fraction * n must come to at least one"),
        (["--noise", "0.1"], "--noise applies to --kind preference or feedback only"),
        (["--kind", "preference", "--desirable-ratio", "1:4"], "applies to --kind feedback only"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys, args, message) -> None:
    out = tmp_path / "bad"
    code, _, stderr = run(capsys, "generate", "--out", str(out), "--quiet", *args)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and message in stderr
    assert "Traceback" not in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    code, _, stderr = run(capsys, "generate", "--out", str(locked / "x"), "--quiet")
    assert code == 2 and "--out" in stderr and len(stderr.strip().splitlines()) == 1


def test_output_that_is_a_file_or_not_empty(tmp_path: Path, capsys) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    code, _, stderr = run(capsys, "generate", "--out", str(target), "--quiet")
    assert code == 2 and "--out" in stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    code, _, stderr = run(capsys, "generate", "--out", str(full), "--quiet", "--n", "10")
    assert code == 2 and "--overwrite" in stderr
    assert (full / "keep.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["generate", "--out", str(empty), "--quiet", "--n", "10"]) == 0
    assert (empty / "train.jsonl").exists()


def one_line(stderr: str, *parts: str) -> bool:
    lines = stderr.strip().splitlines()
    return len(lines) == 1 and all(part in lines[0] for part in parts) and "Traceback" not in stderr


def test_empty_out_is_rejected_and_the_current_folder_kept(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "keep.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run(capsys, "generate", "--out", "", "--n", "10", "--overwrite", "--quiet")
    assert code == 2 and one_line(stderr, "--out", "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("config", [None, {"kind": "kinrl/run"}, "not json"])
def test_overwrite_keeps_a_folder_that_is_not_a_dataset(tmp_path, capsys, monkeypatch, config):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "keep.txt").write_text("x")
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (project / "config.json").write_text(text)
    before = sorted(p.name for p in project.rglob("*"))
    monkeypatch.chdir(project)
    for out in (str(project), "."):
        code, _, stderr = run(capsys, "generate", "--out", out, "--n", "10", "--overwrite")
        assert code == 2 and one_line(stderr, "--out", "not a kinrl dataset", "not be replaced")
    assert sorted(p.name for p in project.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


@pytest.mark.parametrize("kind", ["examples", "feedback"])
def test_overwrite_replaces_a_previous_dataset(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "data"
    args = ["generate", "--out", str(out), "--quiet", "--kind", kind]
    assert main([*args, "--n", "10"]) == 0
    (out / "notes.txt").write_text("x")
    assert main([*args, "--n", "20", "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["n"] == 20
    assert not (out / "notes.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary or old folder


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("out", ["/proc/kinrl-test", "/proc/kinrl-test/data", "/proc/self"])
def test_unwritable_location_exits_2_with_one_line(capsys, out: str) -> None:
    code, _, stderr = run(capsys, "generate", "--out", out, "--n", "10", "--quiet", "--overwrite")
    assert code == 2 and one_line(stderr, "--out")


def test_failure_to_replace_the_output_exits_2_and_keeps_it(tmp_path, capsys, monkeypatch):
    out = tmp_path / "data"
    assert main(["generate", "--out", str(out), "--n", "10", "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = Path.rename

    def rename(self, target):
        if Path(target).name.startswith(".data.old-"):  # the commit moving the old output away
            raise PermissionError(1, "Operation not permitted")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    args = ["--n", "20", "--overwrite", "--quiet"]
    code, _, stderr = run(capsys, "generate", "--out", str(out), *args)
    assert code == 2 and one_line(stderr, "--out", "could not be replaced")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def start_generate(out: Path, num_proc: int):
    """`kinrl generate` in its own process group, returned once it has written a chunk."""
    import subprocess
    import sys
    import time

    args = ["generate", "--out", str(out), "--n", "200000", "--difficulty", "3", "--quiet"]
    process = subprocess.Popen(
        [sys.executable, "-m", "kinrl.cli", *args, "--num-proc", str(num_proc)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(out.parent.glob(f".{out.name}.tmp-*/train.jsonl")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    return process


@pytest.mark.parametrize(
    ("name", "num_proc", "code", "message"),
    [("SIGTERM", 1, 143, "terminated"), ("SIGINT", 2, 130, "interrupted")],
)
def test_signal_mid_run_exits_cleanly_and_leaves_nothing(tmp_path, name, num_proc, code, message):
    """SIGTERM, or Ctrl-C (SIGINT to the whole process group, as a terminal sends it, so pool
    workers get it too): one line, no worker tracebacks, no hang, no temporary folder."""
    import signal
    import subprocess

    out = tmp_path / "data"
    process = start_generate(out, num_proc)
    os.killpg(process.pid, getattr(signal, name))
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"kinrl generate hung after {name}") from None
    assert process.returncode == code and one_line(stderr, message), stderr
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_run_leaves_no_output(tmp_path: Path, monkeypatch) -> None:
    import tasks.kinship.dataset as dataset_module

    calls = {"n": 0}
    real = dataset_module.make_example

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 30:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "make_example", flaky)
    out = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["generate", "--out", str(out), "--n", "100", "--quiet"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_families_drawn_into_two_splits_stay_only_in_the_later_one(tmp_path, fmt):
    from tasks.kinship import KinshipConfig
    from tasks.kinship.dataset import _resolve_leaks
    from tasks.kinship.generator import make_example
    from tasks.kinship.splits import LeakCheck, family_fingerprint

    config = KinshipConfig.for_level(1)
    a, b, c = (make_example(config, 0, i, "train") for i in range(3))
    splits = {"train": [a, b, a], "validation": [c, a], "test": [dict(a, split="test")]}
    for name, records in splits.items():
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records), tmp_path / f"{name}.parquet")
        else:
            lines = "".join(json.dumps(r) + "\n" for r in records)
            (tmp_path / f"{name}.jsonl").write_text(lines, encoding="utf-8")
    check = LeakCheck()
    for name, records in splits.items():
        check.add(name, [family_fingerprint(r) for r in records])
    removed = _resolve_leaks(tmp_path, fmt, check.leaks, list(splits))
    assert removed == {"train": 2, "validation": 1}
    remaining = {name: load(tmp_path / f"{name}.{fmt}") for name in splits}
    assert [r["id"] for r in remaining["train"]] == [b["id"]]
    assert [r["id"] for r in remaining["validation"]] == [c["id"]]
    assert [r["id"] for r in remaining["test"]] == [a["id"]]


def load(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _stdlib_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def test_json_lines_are_the_bytes_the_standard_library_writes() -> None:
    """`kinrl generate` writes lines with orjson; they must be json.dumps' bytes exactly."""
    from tasks.io import json_line
    from tasks.kinship import KinshipConfig, make_example
    from tasks.kinship.pairs import FeedbackConfig, make_binary, make_pair

    feedback = FeedbackConfig()
    for level in range(1, 11):
        config = KinshipConfig.for_level(level, reasoning=level % 2 == 0)
        records = [make_example(config, 11, i) for i in range(20)]
        records += [make_pair(config, feedback, 11, i) for i in range(10)]
        records += [make_binary(config, feedback, 11, i) for i in range(10)]
        for record in records:
            assert json_line(record) == _stdlib_line(record)


@given(
    st.dictionaries(
        st.text(),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.just(0.0)
            | st.floats(min_value=1e-4, max_value=1.0)  # rewards, fractions
            | st.text(),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=8,
        ),
        max_size=5,
    )
)
def test_json_line_matches_the_standard_library_on_any_strings(record: dict) -> None:
    """Names may hold any character (apostrophes, hyphens, accents, control characters);
    integers of any size; floats where records have them."""
    from tasks.io import json_line

    assert json_line(record) == _stdlib_line(record)


def test_json_line_hands_what_orjson_refuses_to_the_standard_library() -> None:
    from tasks.io import json_line

    for record in ({"seed": 2**70, "n": -(2**65)}, {"keys": {1: "a", 2.5: "b"}}):
        assert json_line(record) == _stdlib_line(record)


def test_seed_beyond_int64_is_refused(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "generate", "--out", str(tmp_path / "d"), "--seed", str(2**63))
    assert code == 2 and "--seed" in err and "2**63-1" in err
    assert not (tmp_path / "d").exists()
