"""The pieces of `kinrl serve` without a server: the SQLite store (WAL, schema version,
migration from version 1, concurrent votes), the Bradley-Terry leaderboard, the tree layout,
and the commands (`kinrl labels export`, `kinrl serve`'s one-line errors, a light --help)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kinrl.serve import ranking
from kinrl.serve.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, VoteConflict
from kinrl.serve.tree import layout
from tasks.kinship import KinshipConfig, make_example
from trainers.data import load_records

REPO = Path(__file__).resolve().parents[1]


def add_battle(store: Store, runs=("x", "y"), rewards=(1.0, 0.0)) -> str:
    record = make_example(KinshipConfig.for_level(1), 0, 1)
    store.add_puzzle("p1", {"kind": "generate", "config": {"locale": "en_US"}}, record)
    return store.add_battle("p1", runs, ("Answer: a", "Answer: b"), rewards, 0.0).id


def test_store_is_wal_versioned_and_votes_once(tmp_path):
    store = Store(tmp_path / "s.db")
    assert store.version() == SCHEMA_VERSION == 2
    mode = store._connection().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    battle = add_battle(store)
    vote, new = store.add_vote(battle, "Ann", "a", "because")
    assert new and store.add_vote(battle, "Ann", "a", "because") == (vote, False)
    with pytest.raises(VoteConflict):
        store.add_vote(battle, "Bob", "a")
    assert store.counts() == {"puzzles": 1, "battles": 1, "votes": 1}
    store.close()


def test_a_version_1_database_is_migrated_with_its_votes(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        for statement in MIGRATIONS[0]:
            old.execute(statement)
        old.execute("INSERT INTO puzzles VALUES ('p', '{}', '{}', 't')")
        old.execute("INSERT INTO battles VALUES ('b', 'p', 'x', 'y', 'A', 'B', 1, 0, 0, 't')")
        old.execute(
            "INSERT INTO votes (battle_id, annotator, choice, rationale, created_at) "
            "VALUES ('b', 'Ann', 'a', '', 't')"
        )
        old.execute("PRAGMA user_version = 1")
    store = Store(path)
    assert store.version() == 2
    assert [v["annotator"] for v in store.votes()] == ["Ann"]
    store.add_puzzle("p2", {}, {})
    new = store.add_battle("p2", ("x", "y"), ("A", "B"), (0, 0), 0.0)
    assert store.skip(new.id, "Ann") and not store.skip("b", "Ann")  # the new columns work
    store.close()


def test_newer_or_foreign_databases_are_refused(tmp_path):
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer kinrl"):
        Store(newer)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a database"):
        Store(junk)
    with pytest.raises(StoreError, match="not a folder"):
        Store(tmp_path / "missing" / "x.db")


def test_concurrent_votes_are_each_stored_once(tmp_path):
    store = Store(tmp_path / "c.db")
    battles = [add_battle(store) for _ in range(80)]
    results: list = []

    def worker(k: int) -> None:
        for battle in battles[k::4] + battles[:10]:  # the first ten are raced by every thread
            try:
                results.append(store.add_vote(battle, "Ann", "a")[1])
            except VoteConflict:
                results.append(None)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 80 and store.counts()["votes"] == 80
    store.close()


def test_bradley_terry_orders_runs_and_brackets_them():
    votes = []
    for i in range(60):  # strong beats mid 3 in 4, mid beats weak 3 in 4
        votes.append(
            {
                "run_a": "strong",
                "run_b": "mid",
                "choice": "a" if i % 4 else "b",
                "annotator": "Ann",
                "reward_a": 1.0,
                "reward_b": 0.0,
            }
        )
        votes.append(
            {
                "run_a": "weak",
                "run_b": "mid",
                "choice": "b" if i % 4 else "tie",
                "annotator": "Bob",
                "reward_a": 0.0,
                "reward_b": 0.0,
            }
        )
    board = ranking.leaderboard(votes, ["unused"], rounds=100)
    names = [r["name"] for r in board["runs"]]
    assert names == ["strong", "mid", "weak", "unused"]
    for row in board["runs"][:3]:
        assert row["low"] <= row["rating"] <= row["high"]
    assert board["runs"][3]["rating"] is None
    strong, mid = board["runs"][0], board["runs"][1]
    assert 150 < strong["rating"] - mid["rating"] < 250  # 3:1 odds is 191 Elo points
    by = {a["annotator"]: a for a in board["annotators"]}
    assert by["Ann"]["gold_agreement"] == 0.75 and by["Ann"]["gold_comparable"] == 60
    assert by["Bob"]["gold_agreement"] is None and by["Bob"]["consistent"] == 0.25
    assert ranking.leaderboard([], rounds=10)["runs"] == []


def test_tree_layout_puts_children_below_parents_and_keeps_rows_apart():
    for level in (1, 5, 10):
        record = make_example(KinshipConfig.for_level(level), 3, level)
        tree = layout(record)
        at = {n["name"]: n for n in tree["nodes"]}
        assert set(at) == {p["name"] for p in record["people"]}
        for parent, child in record["parents"]:
            assert at[child]["y"] > at[parent]["y"]
        for a, b in record["spouses"]:
            assert at[a]["y"] == at[b]["y"]
        spots = [(n["x"], n["y"]) for n in tree["nodes"]]
        assert len(spots) == len(set(spots))
    assert layout({"people": [{"name": "A"}], "parents": [["A", "Z"]]})["nodes"][0]["y"] == 0


def test_labels_export_writes_a_preference_folder(tmp_path, usage_error, capsys):
    from kinrl.cli import main

    db = tmp_path / "v.db"
    store = Store(db)
    for choice in ("a", "b", "tie", "both_bad", "a"):
        store.add_vote(add_battle(store), "Ann", choice)
    store.close()
    out = tmp_path / "out"
    argv = ["labels", "export", "--db", str(db), "--out", str(out), "--validation-fraction", "0"]
    assert main(argv) == 0
    assert "train 3" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["votes"] == {"a": 2, "b": 1, "tie": 1, "both_bad": 1}
    assert config["config"] == {"locale": "en_US"} and (out / "README.md").is_file()
    records = load_records(out, "train", "kinship/preference")
    assert [r["vote"] for r in records] == ["a", "b", "a"]
    assert [r["flipped"] for r in records] == [False, True, False]
    assert main([*argv, "--overwrite", "--format", "parquet"]) == 0
    assert len(load_records(out, "train", "kinship/preference")) == 3
    assert "is not empty" in usage_error(argv)
    assert "--validation-fraction must be in [0, 1)" in usage_error(
        [
            "labels",
            "export",
            "--db",
            str(db),
            "--out",
            str(tmp_path / "o2"),
            "--validation-fraction",
            "1",
        ]
    )
    assert "does not exist" in usage_error(
        ["labels", "export", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "o3")]
    )
    empty = tmp_path / "empty.db"
    Store(empty).close()
    assert "no A or B vote" in usage_error(
        ["labels", "export", "--db", str(empty), "--out", str(tmp_path / "o4")]
    )
    assert not (tmp_path / "o4").exists()


def test_serve_refuses_bad_input_in_one_line(tmp_path, usage_error):
    assert "must look like NAME=RUN" in usage_error(["serve", "--run", "nonsense"])
    assert "--run name" in usage_error(["serve", "--run", "<b>=runs/x"])
    assert "does not exist" in usage_error(["serve", "--run", f"a={tmp_path}/none"])
    assert "given twice" in usage_error(["serve", "--baselines", "--run", "reference=x"])
    assert "not a dataset folder" in usage_error(["serve", "--data", str(tmp_path)])
    assert "--port: must be an integer in 0..65535" in usage_error(["serve", "--port", "70000"])
    assert "--db" in usage_error(["serve", "--db", str(tmp_path / "no" / "x.db")])


def test_help_and_usage_errors_import_no_web_or_jax_package(tmp_path):
    code = (
        "import sys; from kinrl.cli import main\n"
        "rc = main(['serve', '--port', 'x'])\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'jax', 'starlette') if m in sys.modules]\n"
        "assert rc == 2 and not heavy, (rc, heavy)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
