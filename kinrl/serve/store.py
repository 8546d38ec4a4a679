"""The label store: puzzles, battles and votes in one SQLite file (the standard library's sqlite3).

    puzzles   a record shown to someone (id = hash of the record), with where it came from
    battles   two runs' completions of one puzzle, in the order shown (A first), with their
              gold rewards; a battle is voted at most once (or skipped)
    votes     one per battle: who, when, a / b / tie / both_bad, an optional rationale

Durability: WAL journal with `synchronous=FULL`, and every vote is one `BEGIN IMMEDIATE`
transaction, so a vote the server acknowledged survives the process being killed at any moment
(and the machine losing power); a crash mid-request leaves every earlier vote intact. Several
writers serialise on SQLite's lock (`busy_timeout`), and the UNIQUE battle of a vote stores no
vote twice: voting again the same way returns the stored vote, voting differently is refused.

Schema: `PRAGMA user_version` is the schema version; `MIGRATIONS[v]` takes a database from
version v to v + 1, each in its own transaction, on opening. A database written by a newer
kinrl (a version above `SCHEMA_VERSION`) is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHOICES = ("a", "b", "tie", "both_bad")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the tables.
    (
        """CREATE TABLE puzzles (
            id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            record TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE battles (
            id TEXT PRIMARY KEY,
            puzzle_id TEXT NOT NULL REFERENCES puzzles(id),
            run_a TEXT NOT NULL,
            run_b TEXT NOT NULL,
            completion_a TEXT NOT NULL,
            completion_b TEXT NOT NULL,
            reward_a REAL NOT NULL,
            reward_b REAL NOT NULL,
            temperature REAL NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE votes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            battle_id TEXT NOT NULL UNIQUE REFERENCES battles(id),
            annotator TEXT NOT NULL,
            choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
            rationale TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        )""",
    ),
    # 1 -> 2: skipped battles, and the indexes the leaderboard and the export read by.
    (
        "ALTER TABLE battles ADD COLUMN skipped_by TEXT",
        "ALTER TABLE battles ADD COLUMN skipped_at TEXT",
        "CREATE INDEX votes_annotator ON votes(annotator)",
        "CREATE INDEX battles_puzzle ON battles(puzzle_id)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(ValueError):
    """The database cannot be used (unreadable, not SQLite, from a newer kinrl)."""


class VoteConflict(ValueError):
    """The battle already has a different vote."""


class NotFound(KeyError):
    """No such battle or puzzle."""


def now() -> str:
    """The current UTC time, ISO 8601 with milliseconds (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Battle:
    id: str
    puzzle_id: str
    run_a: str
    run_b: str
    completion_a: str
    completion_b: str
    reward_a: float
    reward_b: float
    temperature: float
    created_at: str


@dataclass(frozen=True)
class Vote:
    id: int
    battle_id: str
    annotator: str
    choice: str
    rationale: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _connect(path: str) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as error:
        raise StoreError(f"--db {path} cannot be opened ({error})") from None
    return connection


class Store:
    """The store at `path` (created, or migrated to `SCHEMA_VERSION`, on opening). Safe to use
    from several threads: each thread has its own connection."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path in ("", ":memory:"):
            raise StoreError("--db must be a file path (an in-memory database is lost on exit)")
        parent = Path(self.path).parent
        if not parent.is_dir():
            raise StoreError(f"--db {self.path} cannot be created ({parent} is not a folder)")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.migrate()

    # -- connections and schema ------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = _connect(self.path)
            with self._lock:
                self._all.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()
            self._all.clear()
        self._local = threading.local()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (`BEGIN IMMEDIATE`: the write lock up front, so two writers
        never deadlock upgrading read locks), committed on leaving, rolled back on error."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def version(self) -> int:
        return int(self._connection().execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Bring the database to `SCHEMA_VERSION`, one migration per transaction."""
        try:
            connection = self._connection()
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"--db {self.path}: the WAL journal cannot be used (got {mode})")
            version = self.version()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"--db {self.path} has schema version {version}, written by a newer kinrl "
                    f"(this one reads up to {SCHEMA_VERSION})"
                )
            for target in range(version, SCHEMA_VERSION):
                with self.transaction() as tx:
                    for statement in MIGRATIONS[target]:
                        tx.execute(statement)
                    tx.execute(f"PRAGMA user_version = {target + 1}")
        except sqlite3.DatabaseError as error:
            self.close()
            raise StoreError(
                f"--db {self.path} is not a usable SQLite database ({error})"
            ) from None

    # -- puzzles ---------------------------------------------------------------------------

    def add_puzzle(self, puzzle_id: str, source: dict[str, Any], record: dict[str, Any]) -> None:
        """Store a puzzle once (the id is the record's hash, so storing it again is a no-op)."""
        with self.transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO puzzles (id, source, record, created_at) VALUES (?,?,?,?)",
                (puzzle_id, json.dumps(source), json.dumps(record, ensure_ascii=False), now()),
            )

    def puzzle(self, puzzle_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(source, record) of a stored puzzle; NotFound if there is none."""
        row = (
            self._connection()
            .execute("SELECT source, record FROM puzzles WHERE id = ?", (puzzle_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(puzzle_id)
        return json.loads(row["source"]), json.loads(row["record"])

    # -- battles ---------------------------------------------------------------------------

    def add_battle(
        self,
        puzzle_id: str,
        runs: tuple[str, str],
        completions: tuple[str, str],
        rewards: tuple[float, float],
        temperature: float,
    ) -> Battle:
        battle = Battle(secrets.token_urlsafe(12), puzzle_id, runs[0], runs[1], completions[0],
                        completions[1], rewards[0], rewards[1], temperature, now())  # fmt: skip
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO battles (id, puzzle_id, run_a, run_b, completion_a, completion_b, "
                "reward_a, reward_b, temperature, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (battle.id, battle.puzzle_id, battle.run_a, battle.run_b, battle.completion_a,
                 battle.completion_b, battle.reward_a, battle.reward_b, battle.temperature,
                 battle.created_at),
            )  # fmt: skip
        return battle

    def battle(self, battle_id: str) -> Battle:
        row = (
            self._connection()
            .execute(
                "SELECT id, puzzle_id, run_a, run_b, completion_a, completion_b, reward_a, "
                "reward_b, temperature, created_at FROM battles WHERE id = ?",
                (battle_id,),
            )
            .fetchone()
        )
        if row is None:
            raise NotFound(battle_id)
        return Battle(**dict(row))

    def skip(self, battle_id: str, annotator: str) -> bool:
        """Mark an unvoted battle skipped by `annotator`; False if it already has a vote."""
        with self.transaction() as tx:
            if tx.execute("SELECT 1 FROM battles WHERE id = ?", (battle_id,)).fetchone() is None:
                raise NotFound(battle_id)
            if tx.execute("SELECT 1 FROM votes WHERE battle_id = ?", (battle_id,)).fetchone():
                return False
            tx.execute(
                "UPDATE battles SET skipped_by = ?, skipped_at = ? WHERE id = ?",
                (annotator, now(), battle_id),
            )
        return True

    # -- votes -----------------------------------------------------------------------------

    def add_vote(
        self, battle_id: str, annotator: str, choice: str, rationale: str = ""
    ) -> tuple[Vote, bool]:
        """Store the vote of a battle in one transaction: (vote, True) when new; (the stored
        vote, False) when the battle already has this same vote (a retried request);
        VoteConflict when it has another; NotFound for no such battle."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)} (got {choice!r})")
        with self.transaction() as tx:
            if tx.execute("SELECT 1 FROM battles WHERE id = ?", (battle_id,)).fetchone() is None:
                raise NotFound(battle_id)
            row = tx.execute(
                "SELECT id, battle_id, annotator, choice, rationale, created_at FROM votes "
                "WHERE battle_id = ?",
                (battle_id,),
            ).fetchone()
            if row is not None:
                stored = Vote(**dict(row))
                if (stored.annotator, stored.choice, stored.rationale) != (
                    annotator, choice, rationale,
                ):  # fmt: skip
                    raise VoteConflict(
                        f"battle {battle_id} already has a vote ({stored.choice} by "
                        f"{stored.annotator})"
                    )
                return stored, False
            created = now()
            cursor = tx.execute(
                "INSERT INTO votes (battle_id, annotator, choice, rationale, created_at) "
                "VALUES (?,?,?,?,?)",
                (battle_id, annotator, choice, rationale, created),
            )
            vote_id = cursor.lastrowid
        assert vote_id is not None
        return Vote(vote_id, battle_id, annotator, choice, rationale, created), True

    def votes(self, limit: int | None = None, annotator: str | None = None) -> list[dict[str, Any]]:
        """Votes with their battles, newest first (`limit` of them; one annotator's only)."""
        sql = (
            "SELECT v.id, v.battle_id, v.annotator, v.choice, v.rationale, v.created_at, "
            "b.puzzle_id, b.run_a, b.run_b, b.completion_a, b.completion_b, b.reward_a, "
            "b.reward_b, b.temperature FROM votes v JOIN battles b ON b.id = v.battle_id"
        )
        parameters: list[Any] = []
        if annotator is not None:
            sql += " WHERE v.annotator = ?"
            parameters.append(annotator)
        sql += " ORDER BY v.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            parameters.append(limit)
        return [dict(row) for row in self._connection().execute(sql, parameters)]

    def voted_battles(self) -> Iterator[dict[str, Any]]:
        """Every vote with its battle and puzzle record, oldest first (for the export)."""
        rows = self._connection().execute(
            "SELECT v.id AS vote_id, v.battle_id, v.annotator, v.choice, v.rationale, "
            "v.created_at, b.puzzle_id, b.run_a, b.run_b, b.completion_a, b.completion_b, "
            "b.reward_a, b.reward_b, b.temperature, p.record, p.source "
            "FROM votes v JOIN battles b ON b.id = v.battle_id "
            "JOIN puzzles p ON p.id = b.puzzle_id ORDER BY v.id"
        )
        for row in rows:
            out = dict(row)
            out["record"] = json.loads(out["record"])
            out["source"] = json.loads(out["source"])
            yield out

    def counts(self) -> dict[str, int]:
        connection = self._connection()
        return {
            table: int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("puzzles", "battles", "votes")
        }
