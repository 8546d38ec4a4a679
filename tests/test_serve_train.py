"""The loop `kinrl serve` exists for: a trained run answers puzzles through the API, people
vote, `kinrl labels export` writes the votes, and `kinrl train dpo` trains on that folder."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from kinrl.cli import main
from kinrl.serve.app import ServeState, create_app
from kinrl.serve.runs import Negative, Reference, TrainedRun
from kinrl.serve.store import Store
from tasks.kinship import score
from tests.serve_support import tiny_sft_run
from trainers.data import load_records


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    return tiny_sft_run(tmp_path_factory.mktemp("serve-train"))


def test_votes_on_a_trained_run_train_a_dpo_run(sft_run, tmp_path, capsys):
    store = Store(tmp_path / "labels.db")
    runs = {
        "tiny": TrainedRun("tiny", str(sft_run), max_new_tokens=48),
        "reference": Reference(),
        "negative": Negative(),
    }
    with TestClient(create_app(ServeState(store=store, runs=runs))) as client:
        p = client.post("/api/puzzles", json={"difficulty": 1, "seed": 4, "index": 0}).json()
        asked = client.post(
            "/api/completions",
            json={"run": "tiny", "puzzle_id": p["puzzle_id"], "n": 3, "temperature": 1.0},
        )
        assert asked.status_code == 200, asked.text
        for c in asked.json()["completions"]:
            assert c["reward"] == score(p["record"], c["text"])
        greedy = client.post(
            "/api/completions",
            json={"run": "tiny", "prompt": "Ann is Bob's mother.\nQuestion: Who is Bob's mother?"},
        )
        assert greedy.json()["completions"][0]["reward"] is None
        long = client.post("/api/completions", json={"run": "tiny", "prompt": "Ann " * 200})
        assert long.status_code == 422 and "no room" in long.json()["error"]
        for i in range(12):
            p = client.post("/api/puzzles", json={"difficulty": 1, "seed": 4, "index": i}).json()
            b = client.post(
                "/api/battles", json={"puzzle_id": p["puzzle_id"], "runs": ["tiny", "reference"]}
            ).json()
            vote = {
                "battle_id": b["battle_id"],
                "annotator": "Ann",
                "choice": "a" if "Answer: " + p["record"]["answer"] in b["a"]["text"] else "b",
            }
            assert client.post("/api/votes", json=vote).status_code == 201
    store.close()
    data = tmp_path / "votes"
    assert (
        main(
            [
                "labels",
                "export",
                "--db",
                str(tmp_path / "labels.db"),
                "--out",
                str(data),
                "--validation-fraction",
                "0.2",
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    config = json.loads((data / "config.json").read_text())
    assert (
        config["kind"] == "kinship/preference" and config["votes"]["a"] + config["votes"]["b"] == 12
    )
    train = load_records(data, "train", "kinship/preference")
    assert len(train) + config["counts"].get("validation", 0) == 12
    assert all(r["chosen_run"] == "reference" and r["gold_agrees"] for r in train)
    out = tmp_path / "dpo"
    argv = [
        "train",
        "dpo",
        "--init",
        str(sft_run),
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--warmup-steps",
        "0",
        "--quiet",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.split(": ", 1)[1])
    assert summary["steps"] == 3
    assert (out / "hf").is_dir()
