"""The web app: FastAPI, one page and a JSON API (OpenAPI schema at /openapi.json).

    GET  /                          the page (static/index.html, app.js, style.css)
    GET  /api/health                liveness, schema version, counts
    GET  /api/config                runs, knobs and level presets, data splits, guidelines
    POST /api/puzzles               a generated puzzle (level + knobs) or one from --data
    GET  /api/puzzles/{id}          a stored puzzle
    POST /api/completions           a run's completions of a puzzle, record or prompt, scored
    POST /api/battles               two runs' completions of a puzzle, blind, in random order
    POST /api/battles/{id}/skip     skip a battle
    POST /api/votes                 vote on a battle (a, b, tie, both_bad); reveals the runs
    GET  /api/votes                 the latest votes
    GET  /api/votes/export          the preference records of the votes, as JSON lines
    GET  /api/leaderboard           Bradley-Terry ratings with bootstrap intervals, agreement

Input errors are 4xx with {"error": "<one line>"}: 400 unreadable JSON, 404 unknown run,
puzzle or battle, 409 a battle voted differently, 413 a body over `max_body` bytes, 422 a
field of the wrong type, missing, or out of range. Everything the page shows is set as text
(never parsed as HTML), and the responses carry a Content-Security-Policy that allows no
inline script, so a name like `<script>` in a dataset stays text.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kinrl.serve import ranking, tree
from kinrl.serve.export import preference_records
from kinrl.serve.puzzles import DataSource, generate, knob_fields, puzzle_id
from kinrl.serve.runs import NeedsRecord, Policy
from kinrl.serve.store import CHOICES, SCHEMA_VERSION, NotFound, Store, VoteConflict
from tasks.io import json_line
from tasks.kinship.config import LEVELS, MAX_LEVEL, QUESTION_TYPES

log = logging.getLogger("kinrl.serve")

MAX_BODY = 256 * 1024  # bytes; a puzzle record of level 10 is ~10 KB
MAX_COMPLETIONS = 16
MAX_SEED = 2**63 - 1
GUIDELINES = """\
Read the description and the question, and use the family tree to check the answer.
Judge the final answer first: the line "Answer: ...". A right answer beats a wrong one.
Between two right answers, prefer the one whose reasoning lines are true; between two wrong
ones, prefer the nearer miss (grandparent for grandmother is nearer than cousin).
A: the left answer is better. B: the right one is better. Tie: equally good.
Both bad: both are wrong and neither is nearer. Skip when you cannot tell.
Keys: 1 or A, 2 or B, 3 or T (tie), 4 or X (both bad), S (skip), N (next battle)."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64,
                                        pattern=r"^[^\x00-\x1f\x7f]+$")]  # fmt: skip
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PuzzleRequest(Strict):
    source: Literal["generate", "data"] = "generate"
    difficulty: Annotated[int, Field(ge=1, le=MAX_LEVEL)] = 3
    knobs: dict[str, Any] = Field(default_factory=dict, max_length=40)
    seed: Seed = 0
    index: Seed | None = None  # None: a random one
    split: Annotated[str, Field(max_length=100)] = "test"


class QueryIn(BaseModel):
    model_config = ConfigDict(strict=True)
    subject: str | None = None
    object: str | None = None
    term: str | None = None


class Person(BaseModel):
    model_config = ConfigDict(strict=True)
    name: Annotated[str, Field(max_length=200)]
    gender: Annotated[str, Field(max_length=20)] = ""


class RecordIn(BaseModel):
    """A kinship record sent by the client: the fields scoring and drawing read."""

    model_config = ConfigDict(strict=True, extra="allow")
    prompt: Annotated[str, Field(min_length=1, max_length=20000)]
    question_type: Literal[QUESTION_TYPES]  # type: ignore[valid-type]
    answer: Annotated[str, Field(max_length=2000)]
    answers: Annotated[list[Annotated[str, Field(max_length=2000)]], Field(max_length=200)]
    query: QueryIn
    people: Annotated[list[Person], Field(max_length=500)] = Field(default_factory=list)
    parents: Annotated[list[tuple[str, str]], Field(max_length=2000)] = Field(default_factory=list)
    spouses: Annotated[list[tuple[str, str]], Field(max_length=2000)] = Field(default_factory=list)


class CompletionRequest(Strict):
    run: Name
    puzzle_id: Annotated[str, Field(max_length=64)] | None = None
    record: RecordIn | None = None
    prompt: Annotated[str, Field(min_length=1, max_length=20000)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_COMPLETIONS)] = 1
    temperature: Annotated[float, Field(ge=0.0, le=5.0)] = 0.0
    seed: Seed = 0


class BattleRequest(Strict):
    puzzle_id: Annotated[str, Field(max_length=64)]
    runs: Annotated[list[Name], Field(min_length=2, max_length=2)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=5.0)] = 0.0


class SkipRequest(Strict):
    annotator: Name


class VoteRequest(Strict):
    battle_id: Annotated[str, Field(min_length=1, max_length=64)]
    choice: Literal[CHOICES]  # type: ignore[valid-type]
    annotator: Name
    rationale: Annotated[str, Field(max_length=2000)] = ""


@dataclass
class ServeState:
    store: Store
    runs: dict[str, Policy] = field(default_factory=dict)
    data: DataSource | None = None
    guidelines: str = GUIDELINES
    max_body: int = MAX_BODY


class InputError(Exception):
    """A request the server understands but refuses: a status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, whether it says so in
    Content-Length or streams it in chunks."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.limit:
                    await self._refuse(send, declared)
                    return
        # Read the body here, at most `limit` bytes of it, then hand it on: the app never
        # sees a body over the limit, however it was sent.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(send, len(body))
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int) -> None:
        what = "a bad Content-Length" if size < 0 else f"{size} bytes"
        response = JSONResponse(
            {"error": f"request body too large ({what}; the limit is {self.limit} bytes)"},
            status_code=413,
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def _validation_message(error: RequestValidationError) -> tuple[int, str]:
    errors = error.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "request body is not valid JSON"
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return 400, "request body must be a JSON object (sent as application/json)"
    parts = []
    for e in errors[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return 422, "; ".join(parts) + more


def _get_run(state: ServeState, name: str) -> Policy:
    policy = state.runs.get(name)
    if policy is None:
        known = ", ".join(state.runs) or "none (start kinrl serve with --run or --baselines)"
        raise InputError(404, f"unknown run {name!r} (runs: {known})")
    return policy


def _get_puzzle(state: ServeState, pid: str) -> tuple[dict, dict]:
    try:
        return state.store.puzzle(pid)
    except NotFound:
        raise InputError(404, f"unknown puzzle {pid!r} (make one with POST /api/puzzles)") from None


def _score(record: Mapping[str, Any] | None, completion: str) -> float | None:
    from tasks.kinship import score

    if record is None:
        return None
    try:
        return float(score(record, completion))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(422, f"the record cannot be scored ({type(error).__name__}: "
                         f"{str(error)[:100]})") from None  # fmt: skip


def _complete(policy: Policy, prompt: str, record: Mapping[str, Any] | None, n: int,
              temperature: float, seed: int) -> list[str]:  # fmt: skip
    try:
        return policy.complete(prompt, record, n, temperature, seed)
    except NeedsRecord as error:
        raise InputError(422, str(error)) from None
    except ValueError as error:  # e.g. a prompt longer than the run's context
        raise InputError(422, str(error).splitlines()[0]) from None


def _puzzle_response(pid: str, source: dict, record: dict) -> dict[str, Any]:
    return {"puzzle_id": pid, "source": source, "record": record, "tree": tree.layout(record)}


def create_app(state: ServeState, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app over `state`. `allowed_hosts`: the Host headers accepted (None: any), which
    keeps a page on another site from reaching a loopback server through DNS rebinding."""
    app = FastAPI(title="kinrl serve", version=str(SCHEMA_VERSION),
                  description="Explore kinship puzzles, compare runs blind, collect votes.",
                  docs_url="/docs", redoc_url=None)  # fmt: skip
    app.state.serve = state
    static = resources.files("kinrl.serve") / "static"

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(error)
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail if isinstance(error.detail, str) else "request refused"
        return JSONResponse({"error": message}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error (see the server's log)"}, status_code=500)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Awaitable[Any]]) -> Any:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """The server is up: its store's schema version and counts."""
        return {"status": "ok", "schema_version": state.store.version(),
                "runs": list(state.runs), **state.store.counts()}  # fmt: skip

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        """What the page needs: runs, knobs, level presets, data splits, guidelines, limits."""
        return {
            "runs": [policy.describe() for policy in state.runs.values()],
            "knobs": knob_fields(),
            "levels": {level: cfg.to_dict() for level, cfg in LEVELS.items()},
            "data": None if state.data is None else {
                "folder": str(state.data.folder), "kind": state.data.kind,
                "splits": state.data.splits(),
            },
            "choices": list(CHOICES),
            "guidelines": state.guidelines,
            "limits": {"max_body": state.max_body, "max_completions": MAX_COMPLETIONS},
        }  # fmt: skip

    @app.post("/api/puzzles")
    def make_puzzle(request: PuzzleRequest) -> dict[str, Any]:
        """A puzzle with its family graph and tree layout: generated from a difficulty level
        with knobs overridden (`kinrl generate`'s), or record `index` of a `--data` split. A
        missing index is drawn at random (the response says which)."""
        index = secrets.randbelow(2**31) if request.index is None else request.index
        if request.source == "data":
            if state.data is None:
                raise InputError(422, "no --data folder was given to kinrl serve")
            splits = state.data.splits()
            if request.split not in splits:
                raise InputError(404, f"unknown split {request.split!r} (splits: "
                                 f"{', '.join(splits)})")  # fmt: skip
            if not splits[request.split]:
                raise InputError(422, f"split {request.split!r} is empty")
            if request.index is None:
                index = secrets.randbelow(splits[request.split])
            try:
                source, record = state.data.get(request.split, index)
            except (IndexError, ValueError) as error:
                raise InputError(422, str(error)) from None
        else:
            try:
                source, record = generate(request.difficulty, request.knobs, request.seed, index)
            except ValueError as error:
                raise InputError(422, str(error).splitlines()[0]) from None
        pid = puzzle_id(record)
        state.store.add_puzzle(pid, source, record)
        return _puzzle_response(pid, source, record)

    @app.get("/api/puzzles/{pid}")
    def get_puzzle(pid: str) -> dict[str, Any]:
        """A stored puzzle."""
        source, record = _get_puzzle(state, pid)
        return _puzzle_response(pid, source, record)

    @app.post("/api/completions")
    def completions(request: CompletionRequest) -> dict[str, Any]:
        """`n` completions by one run (greedy at temperature 0) of a stored puzzle, a record or
        a bare prompt, each with its gold reward (null for a bare prompt) and `correct`."""
        policy = _get_run(state, request.run)
        given = [x is not None for x in (request.puzzle_id, request.record, request.prompt)]
        if sum(given) != 1:
            raise InputError(422, "give exactly one of puzzle_id, record and prompt")
        record: dict[str, Any] | None = None
        if request.puzzle_id is not None:
            record = _get_puzzle(state, request.puzzle_id)[1]
        elif request.record is not None:
            record = request.record.model_dump()
        prompt = record["prompt"] if record is not None else request.prompt
        assert isinstance(prompt, str)
        texts = _complete(policy, prompt, record, request.n, request.temperature, request.seed)
        out = []
        for text in texts:
            reward = _score(record, text)
            out.append({"text": text, "reward": reward,
                        "correct": None if reward is None else reward == 1.0})  # fmt: skip
        return {"run": policy.name, "temperature": request.temperature, "completions": out}

    @app.post("/api/battles")
    def battle(request: BattleRequest) -> dict[str, Any]:
        """A blind battle: two runs (given, or two drawn at random) answer a stored puzzle; they
        are shown as A and B in random order. The runs and rewards are revealed by the vote."""
        _, record = _get_puzzle(state, request.puzzle_id)
        if request.runs is not None:
            names = list(request.runs)
            for name in names:
                _get_run(state, name)
            if names[0] == names[1]:
                raise InputError(422, "runs must name two different runs")
        else:
            if len(state.runs) < 2:
                raise InputError(422, "a battle needs two runs (start kinrl serve with two "
                                 "--run, or --baselines)")  # fmt: skip
            pool = list(state.runs)
            first = pool.pop(secrets.randbelow(len(pool)))
            names = [first, pool[secrets.randbelow(len(pool))]]
        if secrets.randbelow(2):
            names.reverse()
        seed = secrets.randbelow(2**31)
        texts, rewards = [], []
        for name in names:
            [text] = _complete(state.runs[name], record["prompt"], record, 1,
                               request.temperature, seed)  # fmt: skip
            texts.append(text)
            rewards.append(_score(record, text) or 0.0)
        stored = state.store.add_battle(request.puzzle_id, (names[0], names[1]),
                                        (texts[0], texts[1]), (rewards[0], rewards[1]),
                                        request.temperature)  # fmt: skip
        return {"battle_id": stored.id, "puzzle_id": stored.puzzle_id,
                "a": {"text": texts[0]}, "b": {"text": texts[1]}}  # fmt: skip

    @app.post("/api/battles/{battle_id}/skip")
    def skip(battle_id: str, request: SkipRequest) -> dict[str, Any]:
        """Skip a battle (it stays unvoted)."""
        try:
            skipped = state.store.skip(battle_id, request.annotator)
        except NotFound:
            raise InputError(404, f"unknown battle {battle_id!r}") from None
        if not skipped:
            raise InputError(409, f"battle {battle_id!r} already has a vote")
        return {"battle_id": battle_id, "skipped": True}

    @app.post("/api/votes", status_code=201)
    def vote(request: VoteRequest) -> JSONResponse:
        """Vote on a battle, in one transaction. The answer reveals the runs and their gold
        rewards. Sending the same vote again (a retry) returns the stored one with status 200;
        a different vote on a voted battle is refused (409)."""
        try:
            stored, new = state.store.add_vote(request.battle_id, request.annotator,
                                               request.choice, request.rationale)  # fmt: skip
        except NotFound:
            raise InputError(404, f"unknown battle {request.battle_id!r}") from None
        except VoteConflict as error:
            raise InputError(409, str(error)) from None
        battle = state.store.battle(stored.battle_id)
        body = {
            **stored.to_dict(), "duplicate": not new,
            "runs": {"a": battle.run_a, "b": battle.run_b},
            "rewards": {"a": battle.reward_a, "b": battle.reward_b},
            "gold_agrees": ranking.gold_agrees(stored.choice, battle.reward_a, battle.reward_b),
        }  # fmt: skip
        return JSONResponse(body, status_code=201 if new else 200)

    @app.get("/api/votes")
    def votes(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        annotator: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """The latest votes (newest first), with their battles."""
        return {"votes": state.store.votes(limit=limit, annotator=annotator)}

    @app.get("/api/votes/export")
    def export(validation_fraction: Annotated[float, Query(ge=0.0, lt=1.0)] = 0.0) -> Response:
        """Every A or B vote as a preference record (the spec's preference kind plus who, when,
        which runs, the order shown and gold agreement), one JSON object per line: what
        `kinrl labels export` writes to the splits."""
        # Read whole in this thread: the store's connections belong to their threads.
        lines = [json_line(r) + "\n" for r in preference_records(state.store, validation_fraction)]
        return Response("".join(lines), media_type="application/x-ndjson")

    @app.get("/api/leaderboard")
    def leaderboard(rounds: Annotated[int, Query(ge=0, le=1000)] = 200) -> dict[str, Any]:
        """Bradley-Terry ratings (Elo scale) of the runs from the votes, 95% bootstrap
        intervals over `rounds` resamples, and each annotator's agreement with the gold."""
        return ranking.leaderboard(state.store.votes(), state.runs, rounds=rounds)

    wrapped: Any = app
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(BodyLimit, limit=state.max_body)
    return wrapped
