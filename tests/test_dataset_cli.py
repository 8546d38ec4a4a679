"""`kinrl generate` end to end: files, determinism across processes, loading, splits, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

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
    assert main(["generate", "--out", str(full), "--quiet", "--n", "10", "--overwrite"]) == 0
    assert not (full / "keep.txt").exists() and (full / "train.jsonl").exists()


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
