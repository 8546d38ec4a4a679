"""`kinrl serve`'s JSON API through FastAPI's TestClient: every endpoint, and bad input (wrong
types, missing fields, unknown runs, puzzles and battles, oversized bodies) answered with a
4xx and one line, never a 500. The runs are the two baselines and a scripted one: no model."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from kinrl.serve.app import ServeState, create_app
from kinrl.serve.puzzles import DataSource
from kinrl.serve.runs import Negative, Reference
from kinrl.serve.store import Store
from tasks.kinship import score
from tests.serve_support import EVIL, EVIL_IMG, Scripted, hostile_data

DROP = object()  # a field left out of the request
ENDPOINTS = {
    "/api/health",
    "/api/config",
    "/api/puzzles",
    "/api/puzzles/{pid}",
    "/api/completions",
    "/api/battles",
    "/api/battles/{battle_id}/skip",
    "/api/votes",
    "/api/votes/export",
    "/api/leaderboard",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return hostile_data(tmp_path_factory.mktemp("hostile") / "data")


@pytest.fixture
def client(tmp_path, data_dir):
    store = Store(tmp_path / "labels.db")
    runs = {"reference": Reference(), "negative": Negative(), "echo": Scripted("echo")}
    state = ServeState(store=store, runs=runs, data=DataSource(data_dir), max_body=64 * 1024)
    with TestClient(create_app(state), raise_server_exceptions=False) as client:
        yield client
    store.close()


def puzzle(client, **body) -> dict:
    response = client.post("/api/puzzles", json={"difficulty": 2, "seed": 1, "index": 7, **body})
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, status: int, words: str = "") -> str:
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error, str) and "\n" not in error and words in error, error
    return error


def test_health_config_page_and_openapi(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["schema_version"] == 2 and health["votes"] == 0
    config = client.get("/api/config").json()
    assert [r["name"] for r in config["runs"]] == ["reference", "negative", "echo"]
    assert {k["name"] for k in config["knobs"]} >= {"max_hops", "shuffle_facts", "locale"}
    assert "difficulty" not in {k["name"] for k in config["knobs"]}
    assert set(config["levels"]) == {str(level) for level in range(1, 11)}
    assert config["data"]["splits"]["test"] > 0 and config["guidelines"]
    paths = set(client.get("/openapi.json").json()["paths"])
    assert paths >= ENDPOINTS
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "innerHTML" not in client.get("/static/app.js").text  # every text set as text
    assert client.get("/static/nothing.js").status_code == 404


def test_puzzles_generated_with_knobs_are_reproducible(client):
    first = puzzle(client)
    assert first == puzzle(client)  # the same (level, seed, index): the same puzzle and id
    record = first["record"]
    assert first["source"] == {
        **first["source"],
        "kind": "generate",
        "difficulty": 2,
        "seed": 1,
        "index": 7,
    }
    assert {n["name"] for n in first["tree"]["nodes"]} == {p["name"] for p in record["people"]}
    assert client.get(f"/api/puzzles/{first['puzzle_id']}").json() == first
    knobs = {
        "max_hops": 1,
        "shuffle_facts": True,
        "question_weights": [1, 0, 0, 0],
        "relation_families": ["parent", "child"],
    }
    tuned = puzzle(client, knobs=knobs)["record"]
    assert tuned["hops"] == 1 and tuned["question_type"] == "relation"
    drawn = client.post("/api/puzzles", json={"difficulty": 1}).json()  # a random index
    assert isinstance(drawn["source"]["index"], int)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"difficulty": "3"}, 422, "difficulty"),
        ({"difficulty": 3.5}, 422, "difficulty"),
        ({"difficulty": True}, 422, "difficulty"),
        ({"difficulty": 0}, 422, "difficulty"),
        ({"difficulty": 11}, 422, "difficulty"),
        ({"seed": -1}, 422, "seed"),
        ({"seed": 2**64}, 422, "seed"),
        ({"index": "7"}, 422, "index"),
        ({"colour": "blue"}, 422, "colour"),
        ({"source": "web"}, 422, "source"),
        ({"knobs": {"max_hopz": 2}}, 422, "unknown knob(s) max_hopz"),
        ({"knobs": {"max_hops": "2"}}, 422, "knob max_hops must be an integer"),
        ({"knobs": {"shuffle_facts": 1}}, 422, "knob shuffle_facts must be true or false"),
        ({"knobs": {"question_weights": [1, 1]}}, 422, "a list of 4 numbers"),
        ({"knobs": {"min_hops": 3, "max_hops": 2}}, 422, "max_hops must be"),
        ({"knobs": {"locale": "xx_XX"}}, 422, "locale"),
        ({"knobs": {"relation_families": ["pets"]}}, 422, "relation_families"),
        ({"knobs": {"difficulty": 2}}, 422, "unknown knob(s) difficulty"),
        ({"knobs": "max_hops=2"}, 422, "knobs"),
        ({"source": "data", "split": "nope"}, 404, "unknown split 'nope'"),
        ({"source": "data", "split": "test", "index": 10**6}, 422, "index must be in 0.."),
    ],
)
def test_bad_puzzle_requests_are_4xx(client, body, status, words):
    refused(client.post("/api/puzzles", json=body), status, words)


def test_a_config_without_puzzles_is_a_422_not_a_500(client):
    knobs = {"min_hops": 9, "max_hops": 9, "generations": 2}
    refused(client.post("/api/puzzles", json={"difficulty": 1, "knobs": knobs}), 422, "hops")


def test_bodies_that_are_not_json_objects(client):
    for endpoint in ("/api/puzzles", "/api/completions", "/api/battles", "/api/votes"):
        headers = {"content-type": "application/json"}
        refused(client.post(endpoint, content=b"{not json", headers=headers), 400, "valid JSON")
        refused(client.post(endpoint, json=[1, 2]), 400, "JSON object")
        refused(client.post(endpoint, content=b"choice=a"), 400, "JSON object")


def test_nan_and_infinity_are_refused(client):
    headers = {"content-type": "application/json"}
    for text in (
        b'{"run": "echo", "prompt": "x", "temperature": NaN}',
        b'{"difficulty": 1, "knobs": {"marriage_prob": Infinity}}',
        b'{"difficulty": 1, "knobs": {"question_weights": [NaN, 1, 1, 1]}}',
    ):
        endpoint = "/api/completions" if b"run" in text else "/api/puzzles"
        response = client.post(endpoint, content=text, headers=headers)
        assert 400 <= response.status_code < 500, response.text


def test_oversized_bodies_are_413(client):
    huge = {"battle_id": "x", "choice": "a", "annotator": "me", "rationale": "y" * 100_000}
    refused(client.post("/api/votes", json=huge), 413, "too large")

    def chunks():  # no Content-Length: the body is counted as it streams in
        for _ in range(100):
            yield b" " * 1024

    headers = {"content-type": "application/json"}
    refused(client.post("/api/puzzles", content=chunks(), headers=headers), 413, "too large")
    bad_length = {"content-type": "application/json", "content-length": "-5"}
    response = client.post("/api/puzzles", content=b"{}", headers=bad_length)
    assert 400 <= response.status_code < 500


def test_completions_are_scored_by_the_gold_reward(client):
    p = puzzle(client)
    ask = {"puzzle_id": p["puzzle_id"]}
    right = client.post("/api/completions", json={"run": "reference", **ask}).json()
    assert right["completions"] == [
        {"text": p["record"]["completion"], "reward": 1.0, "correct": True}
    ]
    wrong = client.post("/api/completions", json={"run": "negative", "n": 3, **ask}).json()
    assert len(wrong["completions"]) == 3
    for c in wrong["completions"]:
        assert c["reward"] == score(p["record"], c["text"]) < 1 and c["correct"] is False
    bare = client.post("/api/completions", json={"run": "echo", "prompt": "Who?\n"}).json()
    assert bare["completions"] == [{"text": "Answer: nobody", "reward": None, "correct": None}]
    record = {k: p["record"][k] for k in ("prompt", "question_type", "answer", "answers", "query")}
    sent = client.post("/api/completions", json={"run": "echo", "record": record}).json()
    assert sent["completions"][0]["reward"] == score(p["record"], "Answer: nobody")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"run": "gpt-5", "prompt": "x"}, 404, "unknown run 'gpt-5'"),
        ({"prompt": "x"}, 422, "run: Field required"),
        ({"run": 3, "prompt": "x"}, 422, "run"),
        ({"run": "echo"}, 422, "exactly one of puzzle_id, record and prompt"),
        ({"run": "echo", "prompt": "x", "puzzle_id": "p1"}, 422, "exactly one"),
        ({"run": "echo", "prompt": ""}, 422, "prompt"),
        ({"run": "echo", "prompt": "x", "n": 0}, 422, "n"),
        ({"run": "echo", "prompt": "x", "n": 17}, 422, "n"),
        ({"run": "echo", "prompt": "x", "n": "2"}, 422, "n"),
        ({"run": "echo", "prompt": "x", "temperature": -1}, 422, "temperature"),
        ({"run": "echo", "prompt": "x", "temperature": "hot"}, 422, "temperature"),
        ({"run": "echo", "puzzle_id": "p404"}, 404, "unknown puzzle 'p404'"),
        ({"run": "reference", "prompt": "Who?"}, 422, "reference completion"),
        ({"run": "echo", "record": {"prompt": "x"}}, 422, "record"),
        (
            {
                "run": "echo",
                "record": {
                    "prompt": "x",
                    "question_type": "poem",
                    "answer": "",
                    "answers": [],
                    "query": {},
                },
            },
            422,
            "question_type",
        ),
        (
            {
                "run": "echo",
                "record": {
                    "prompt": "x",
                    "question_type": "relation",
                    "answer": "a",
                    "answers": "a",
                    "query": {},
                },
            },
            422,
            "answers",
        ),
    ],
)
def test_bad_completion_requests_are_4xx(client, body, status, words):
    refused(client.post("/api/completions", json=body), status, words)


def battle(client, **body) -> dict:
    p = puzzle(client)
    response = client.post("/api/battles", json={"puzzle_id": p["puzzle_id"], **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_battle_is_blind_until_the_vote_and_voted_once(client):
    b = battle(client, runs=["reference", "negative"])
    assert set(b) == {"battle_id", "puzzle_id", "a", "b"}  # no run names, no rewards
    assert set(b["a"]) == {"text"}
    vote = {"battle_id": b["battle_id"], "choice": "a", "annotator": "Ann", "rationale": "why"}
    first = client.post("/api/votes", json=vote)
    assert first.status_code == 201
    body = first.json()
    assert set(body["runs"].values()) == {"reference", "negative"} and not body["duplicate"]
    a_wins = body["rewards"]["a"] > body["rewards"]["b"]
    assert body["gold_agrees"] is a_wins
    again = client.post("/api/votes", json=vote)  # a retried request: stored once
    assert (
        again.status_code == 200 and again.json()["duplicate"] and again.json()["id"] == body["id"]
    )
    refused(client.post("/api/votes", json={**vote, "choice": "b"}), 409, "already has a vote")
    refused(client.post(f"/api/battles/{b['battle_id']}/skip", json={"annotator": "Ann"}), 409)
    assert client.get("/api/health").json()["votes"] == 1
    listed = client.get("/api/votes", params={"annotator": "Ann"}).json()["votes"]
    assert [v["id"] for v in listed] == [body["id"]] and listed[0]["rationale"] == "why"


def test_battle_order_is_random_and_runs_are_drawn(client):
    orders = {
        tuple(
            client.post(
                "/api/votes",
                json={
                    "battle_id": battle(client, runs=["reference", "negative"])["battle_id"],
                    "choice": "tie",
                    "annotator": "Ann",
                },
            )
            .json()["runs"]
            .values()
        )
        for _ in range(24)
    }
    assert orders == {("reference", "negative"), ("negative", "reference")}
    drawn = battle(client)  # two different runs drawn from the three
    runs = client.post(
        "/api/votes", json={"battle_id": drawn["battle_id"], "choice": "a", "annotator": "Ann"}
    ).json()["runs"]
    assert runs["a"] != runs["b"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"battle_id": DROP, "choice": "a", "annotator": "Ann"}, 422, "battle_id: Field required"),
        ({"battle_id": "nope", "choice": "a", "annotator": "Ann"}, 404, "unknown battle"),
        ({"choice": "c", "annotator": "Ann"}, 422, "choice"),
        ({"choice": 1, "annotator": "Ann"}, 422, "choice"),
        ({"choice": "a"}, 422, "annotator"),
        ({"choice": "a", "annotator": "   "}, 422, "annotator"),
        ({"choice": "a", "annotator": "x" * 65}, 422, "annotator"),
        ({"choice": "a", "annotator": "Ann\nBob"}, 422, "annotator"),
        ({"choice": "a", "annotator": ["Ann"]}, 422, "annotator"),
        ({"choice": "a", "annotator": "Ann", "rationale": "y" * 2001}, 422, "rationale"),
        ({"choice": "a", "annotator": "Ann", "rationale": None}, 422, "rationale"),
        ({"choice": "a", "annotator": "Ann", "weight": 2}, 422, "weight"),
    ],
)
def test_bad_votes_are_4xx_and_store_nothing(client, body, status, words):
    b = battle(client, runs=["reference", "negative"])
    payload = {k: v for k, v in {"battle_id": b["battle_id"], **body}.items() if v is not DROP}
    refused(client.post("/api/votes", json=payload), status, words)
    assert client.get("/api/health").json()["votes"] == 0


def test_bad_battles_and_skips(client):
    p = puzzle(client)
    pid = p["puzzle_id"]
    refused(client.post("/api/battles", json={"puzzle_id": "p404"}), 404, "unknown puzzle")
    refused(
        client.post("/api/battles", json={"puzzle_id": pid, "runs": ["echo", "nope"]}),
        404,
        "unknown run 'nope'",
    )
    refused(
        client.post("/api/battles", json={"puzzle_id": pid, "runs": ["echo", "echo"]}),
        422,
        "two different runs",
    )
    refused(client.post("/api/battles", json={"puzzle_id": pid, "runs": ["echo"]}), 422, "runs")
    refused(client.post("/api/battles", json={"puzzle_id": pid, "temperature": 9}), 422)
    refused(client.post("/api/battles/nope/skip", json={"annotator": "Ann"}), 404)
    b = battle(client)
    refused(client.post(f"/api/battles/{b['battle_id']}/skip", json={}), 422, "annotator")
    skipped = client.post(f"/api/battles/{b['battle_id']}/skip", json={"annotator": "Ann"})
    assert skipped.json() == {"battle_id": b["battle_id"], "skipped": True}
    refused(client.get("/api/votes", params={"limit": 0}), 422, "limit")
    refused(client.get("/api/votes/export", params={"validation_fraction": 1}), 422)
    refused(client.get("/api/leaderboard", params={"rounds": "many"}), 422, "rounds")


def test_export_and_leaderboard(client):
    votes = []
    for i in range(8):
        b = battle(client, runs=["reference", "negative"])
        reveal = client.post(
            "/api/votes",
            json={"battle_id": b["battle_id"], "choice": "a", "annotator": f"A{i % 2}"},
        ).json()
        votes.append(reveal)
    b = battle(client, runs=["reference", "echo"])
    client.post(
        "/api/votes", json={"battle_id": b["battle_id"], "choice": "tie", "annotator": "A0"}
    )
    response = client.get("/api/votes/export")
    assert response.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in response.text.splitlines()]
    assert len(records) == 8  # the tie makes no pair
    for record, vote in zip(records, votes, strict=True):
        assert record["id"] == f"vote-{vote['id']}" and record["vote"] == "a"
        assert record["chosen_first"] is True and record["run_a"] == vote["runs"]["a"]
        assert record["chosen_run"] == vote["runs"]["a"] and record["annotator"] in {"A0", "A1"}
        assert record["chosen_reward"] == score(record, record["chosen"])
        assert record["flipped"] == (record["chosen_reward"] < record["rejected_reward"])
        assert record["gold_agrees"] is not record["flipped"]
        assert "completion" not in record and record["labelled_at"].endswith("Z")
    board = client.get("/api/leaderboard").json()
    assert {r["name"] for r in board["runs"]} == {"reference", "negative", "echo"}
    assert board["votes"] == 9
    by = {a["annotator"]: a for a in board["annotators"]}
    agreed = sum(r["gold_agrees"] for r in records if r["annotator"] == "A0")
    # A0's tie between a right and a wrong answer counts against them: 5 votes on unequal gold.
    assert by["A0"]["gold_comparable"] == 5 and by["A0"]["votes"] == 5
    assert by["A0"]["gold_agreement"] == round(agreed / 5, 4)


def test_data_puzzles_keep_hostile_names_as_data(client):
    p = client.post("/api/puzzles", json={"source": "data", "split": "test", "index": 0}).json()
    names = {person["name"] for person in p["record"]["people"]}
    assert {EVIL, EVIL_IMG} <= names and p["source"]["kind"] == "data"
    assert EVIL in {node["name"] for node in p["tree"]["nodes"]}


def test_host_header_is_checked_when_asked(tmp_path):
    store = Store(tmp_path / "x.db")
    app = create_app(ServeState(store=store), allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/health", headers={"host": "evil.example"}).status_code == 400
    store.close()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "run",
        "prompt",
        "puzzle_id",
        "n",
        "temperature",
        "choice",
        "annotator",
        "battle_id",
        "difficulty",
        "knobs",
        "index",
        "source",
        "split",
        "record",
        "runs",
        "seed",
        "rationale",
    ]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    endpoint=st.sampled_from(["/api/puzzles", "/api/completions", "/api/battles", "/api/votes"]),
    body=st.dictionaries(fields, json_values, max_size=5) | json_values,
)
def test_no_input_makes_a_500(client, endpoint, body):
    response = client.post(endpoint, json=body)
    assert response.status_code < 500, (endpoint, body, response.text)
