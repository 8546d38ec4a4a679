"""Load on loopback: 20 concurrent clients make battles and vote against a real `kinrl serve`
process (the baselines as runs: the store and the server are under test, not a model).

Every acknowledged vote must be stored exactly once (each client also retries one of its votes,
which must come back as the same vote), and a server killed with SIGKILL in the middle of the
load must lose none of the votes it acknowledged. The default run loads for a few seconds; the
`slow` one for the issue's 20 seconds (python -m pytest -q -m slow tests/test_serve_load.py -s
prints the figures).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from tests.serve_support import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 20


def start_server(db: Path, port: int) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "kinrl.cli",
        "serve",
        "--baselines",
        "--db",
        str(db),
        "--port",
        str(port),
        "--log-level",
        "error",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
        if server.poll() is not None:
            raise AssertionError(f"the server exited: {server.stderr.read()}")
    server.kill()
    raise AssertionError("the server did not start within 60 s")


def load(base: str, seconds: float, acked: list, errors: list, latencies: list) -> None:
    """CLIENTS threads, each: make a battle on one of a few puzzles, vote on it, repeat."""
    with httpx.Client(base_url=base, timeout=30) as setup:
        puzzles = [
            setup.post("/api/puzzles", json={"difficulty": 3, "seed": 9, "index": i}).json()[
                "puzzle_id"
            ]
            for i in range(5)
        ]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(number: int) -> None:
        retried = False
        with httpx.Client(base_url=base, timeout=30) as http:
            i = 0
            while time.monotonic() < stop:
                i += 1
                try:
                    b = http.post("/api/battles", json={"puzzle_id": puzzles[i % 5]})
                    vote = {
                        "battle_id": b.json()["battle_id"],
                        "annotator": f"client-{number}",
                        "choice": ("a", "b", "tie", "both_bad")[i % 4],
                        "rationale": f"{number}/{i}",
                    }
                    start = time.perf_counter()
                    response = http.post("/api/votes", json=vote)
                    elapsed = time.perf_counter() - start
                except (httpx.TransportError, ValueError, KeyError):  # the server is gone
                    return
                if response.status_code != 201:
                    with lock:
                        errors.append((response.status_code, response.text))
                    continue
                with lock:
                    acked.append((response.json()["id"], vote))
                    latencies.append(elapsed)
                if not retried:  # a retried request: the same vote back, nothing stored twice
                    retried = True
                    try:
                        again = http.post("/api/votes", json=vote)
                    except httpx.TransportError:  # killed in between
                        return
                    if again.status_code != 200 or again.json()["id"] != response.json()["id"]:
                        with lock:
                            errors.append(("retry", again.status_code, again.text))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def stored_votes(db: Path) -> dict[int, tuple]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT id, battle_id, annotator, choice, rationale FROM votes"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def check(acked: list, stored: dict[int, tuple], killed: bool) -> None:
    ids = [vote_id for vote_id, _ in acked]
    assert len(ids) == len(set(ids)), "a vote id was acknowledged twice"
    for vote_id, vote in acked:  # every acknowledged vote is there, as it was sent
        expected = (vote["battle_id"], vote["annotator"], vote["choice"], vote["rationale"])
        assert stored.get(vote_id) == expected, (vote_id, stored.get(vote_id), expected)
    battles = [row[0] for row in stored.values()]
    assert len(battles) == len(set(battles)), "a battle holds two votes"
    if not killed:
        assert len(stored) == len(acked)  # nothing stored that was not acknowledged
    else:  # at most the requests in flight when the server died were stored unacknowledged
        assert len(acked) <= len(stored) <= len(acked) + CLIENTS


def report(label: str, acked: list, latencies: list, seconds: float) -> None:
    ordered = sorted(latencies) or [0.0]
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
    print(
        f"\n{label}: {len(acked)} votes acknowledged in {seconds:.1f} s by {CLIENTS} clients "
        f"({len(acked) / seconds:.0f} votes/s); vote latency p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms"
    )


def run(tmp_path: Path, seconds: float) -> None:
    db, port = tmp_path / "labels.db", free_port()
    server = start_server(db, port)
    acked: list = []
    errors: list = []
    latencies: list = []
    try:
        load(f"http://127.0.0.1:{port}", seconds, acked, errors, latencies)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    assert not errors, errors[:5]
    assert len(acked) > CLIENTS
    check(acked, stored_votes(db), killed=False)
    report("load", acked, latencies, seconds)


def run_killed(tmp_path: Path, seconds: float) -> None:
    db, port = tmp_path / "labels.db", free_port()
    server = start_server(db, port)
    acked: list = []
    errors: list = []
    latencies: list = []
    killer = threading.Timer(seconds / 2, server.send_signal, args=(signal.SIGKILL,))
    killer.start()
    try:
        load(f"http://127.0.0.1:{port}", seconds, acked, errors, latencies)
    finally:
        killer.cancel()
        server.kill()
        server.wait(30)
    assert server.returncode == -signal.SIGKILL
    assert not errors, errors[:5]
    assert len(acked) > CLIENTS
    check(acked, stored_votes(db), killed=True)
    again = start_server(db, port)  # the store opens again after the crash, votes intact
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json()
        assert health["votes"] >= len(acked)
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(30)
    report("killed at half time", acked, latencies, seconds / 2)


def test_short_load_stores_every_vote_once(tmp_path):
    run(tmp_path, seconds=3)


def test_sigkill_during_short_load_loses_no_acknowledged_vote(tmp_path):
    run_killed(tmp_path, seconds=3)


@pytest.mark.slow
def test_load_20_clients_20_seconds(tmp_path):
    run(tmp_path, seconds=20)


@pytest.mark.slow
def test_sigkill_during_20_second_load(tmp_path):
    run_killed(tmp_path, seconds=20)
