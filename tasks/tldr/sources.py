"""Reading TL;DR data: OpenAI's comparison batches (JSON lines), reference CSVs, or the hub.

A comparison line holds `info{id, post, title, subreddit}`, `summaries` (two `{text, policy,
note}`), `choice` (the index of the preferred summary), `worker`, `batch`, `split` and
`extra{confidence}`. Tolerated: no `info.id` (the post's own id is then a hash of its text), an
`r/` prefix on the subreddit, a null `note`, no `extra` or no confidence (None), and a CNN/DM
comparison's `info.article` in place of a post (the hub's rows). A line that is
not such an object is an error naming the file and the line (`MalformedLine`), unless the caller
asks to skip malformed lines; they are then counted (`Skipped`).

A reference CSV has the columns `query` (a formatted query) and `reference_responses` (the
human TL;DR); other columns (an unnamed index, `postprocessed_response`) are ignored.

The hub (`load_hub`, through `datasets.load_dataset`) gives the same records:
`openai/summarize_from_feedback` (config `comparisons`) comparison rows, and
`vwxyzjn/summarize_from_feedback_tldr_3_filtered` and `trl-lib/tldr` rows as references.
(`trl-lib/tldr-preference` is not read: it drops the workers, confidences and policies; its
source is `openai/summarize_from_feedback`.)
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The comparison batches on CNN/DM articles, kept apart from TL;DR (as the reproduction does).
CNNDM_BATCHES = ("batch0_cnndm", "cnndm0", "cnndm2")
REFERENCE_POLICY = "ref"


class MalformedLine(ValueError):
    """A line of a data file is not a record of its format (the message names file and line)."""


@dataclass(frozen=True)
class Summary:
    text: str
    policy: str
    note: str | None


@dataclass(frozen=True)
class Comparison:
    """One human comparison of two summaries of a post."""

    post_id: str
    subreddit: str
    title: str
    post: str
    summaries: tuple[Summary, Summary]
    choice: int
    worker: str
    batch: str
    split: str
    confidence: int | None
    source: str  # "FILE line N" or "HUB-NAME row N"


@dataclass(frozen=True)
class Reference:
    """A formatted query and its human reference summary."""

    query: str
    reference: str
    source: str


@dataclass
class Skipped:
    """Malformed lines left out at the user's request: how many, and the first few reasons."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.examples) < 10:
            self.examples.append(reason)


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise MalformedLine(f"{where}: {name} is not a string")
    return value


def post_id(info: dict[str, Any]) -> str:
    """`info.id`, or a hash of the post's title and text when there is none."""
    given = info.get("id")
    if isinstance(given, str) and given:
        return given
    digest = hashlib.sha256(f"{info.get('title')}\n{info.get('post')}".encode()).hexdigest()
    return f"sha256:{digest[:16]}"


def comparison(row: Any, where: str) -> Comparison:
    """A comparison row (a parsed JSON line or a hub row); MalformedLine naming `where`."""
    if not isinstance(row, dict):
        raise MalformedLine(f"{where}: not a JSON object")
    missing = [
        k for k in ("info", "summaries", "choice", "worker", "batch", "split") if k not in row
    ]
    if missing:
        raise MalformedLine(f"{where}: lacks {', '.join(missing)}")
    info = row["info"]
    if not isinstance(info, dict):
        raise MalformedLine(f"{where}: info is not an object")
    summaries = row["summaries"]
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise MalformedLine(f"{where}: summaries is not a list of two")
    parsed = []
    for i, s in enumerate(summaries):
        if not isinstance(s, dict):
            raise MalformedLine(f"{where}: summaries[{i}] is not an object")
        note = s.get("note")
        if note is not None and not isinstance(note, str):
            raise MalformedLine(f"{where}: summaries[{i}].note is not a string or null")
        text = _text(s.get("text"), where, f"summaries[{i}].text")
        parsed.append(Summary(text, _text(s.get("policy"), where, f"summaries[{i}].policy"), note))
    choice = row["choice"]
    if isinstance(choice, bool) or choice not in (0, 1):
        raise MalformedLine(f"{where}: choice is not 0 or 1 (got {choice!r})")
    extra = row.get("extra") or {}
    confidence = extra.get("confidence") if isinstance(extra, dict) else None
    if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, int)):
        raise MalformedLine(f"{where}: extra.confidence is not an integer")
    if info.get("post") is None and isinstance(info.get("article"), str):
        # A CNN/DM comparison (the hub's rows): an article, no subreddit or title.
        info = {**info, "post": info["article"], "title": info.get("title") or "",
                "subreddit": info.get("subreddit") or ""}  # fmt: skip
    return Comparison(
        post_id=post_id(info),
        subreddit=_text(info.get("subreddit"), where, "info.subreddit"),
        title=_text(info.get("title"), where, "info.title"),
        post=_text(info.get("post"), where, "info.post"),
        summaries=(parsed[0], parsed[1]),
        choice=int(choice),
        worker=_text(row["worker"], where, "worker"),
        batch=_text(row["batch"], where, "batch"),
        split=_text(row["split"], where, "split"),
        confidence=confidence,
        source=where,
    )


def read_comparisons(path: str | Path, skipped: Skipped | None = None) -> list[Comparison]:
    """The comparisons of a JSON-lines file. A malformed line raises MalformedLine naming the
    file and line, or, with `skipped`, is counted there and left out. Blank lines are ignored."""
    path = Path(path)
    out = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"--comparisons {path} cannot be read: {error.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise MalformedLine(f"{where}: not valid JSON ({error.msg})") from None
                out.append(comparison(row, where))
            except MalformedLine as error:
                if skipped is None:
                    raise
                skipped.add(str(error))
    return out


def read_references(path: str | Path, skipped: Skipped | None = None) -> list[Reference]:
    """The (query, reference) rows of a CSV with `query` and `reference_responses` columns. A
    row with an empty or missing cell raises MalformedLine naming the file and line (or is
    counted in `skipped`)."""
    path = Path(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as error:
        raise ValueError(f"--references {path} cannot be read: {error.strerror}") from None
    out = []
    with handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in ("query", "reference_responses") if c not in columns]
        if missing:
            raise ValueError(f"--references {path} lacks the column(s) {', '.join(missing)}")
        start = reader.line_num + 1
        try:
            for row in reader:
                where = f"{path} line {start}"
                start = reader.line_num + 1
                query, reference = row.get("query"), row.get("reference_responses")
                if not query or not query.strip() or reference is None or None in row:
                    error = MalformedLine(f"{where}: needs a query and a reference_responses cell")
                    if skipped is None:
                        raise error
                    skipped.add(str(error))
                    continue
                out.append(Reference(query, reference, where))
        except csv.Error as error:
            raise MalformedLine(f"{path} line {reader.line_num}: not valid CSV ({error})") from None
    return out


# ----------------------------------------------------------------------------- the hub

HUB_COMPARISONS = "openai/summarize_from_feedback"
HUB_REFERENCES = "vwxyzjn/summarize_from_feedback_tldr_3_filtered"
HUB_TRL_SFT = "trl-lib/tldr"
HUB_NAMES = (HUB_COMPARISONS, HUB_REFERENCES, HUB_TRL_SFT)


def _hub_rows(name: str, config: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(split, row) of every split of a hub dataset (`datasets.load_dataset`)."""
    import datasets

    try:
        loaded = datasets.load_dataset(name, config) if config else datasets.load_dataset(name)
    except Exception as error:  # no network, no such dataset: many exception kinds
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"--hub {name} cannot be loaded: {first}") from None
    for split, rows in loaded.items():
        for row in rows:
            yield split, row


def hub_comparisons(name: str = HUB_COMPARISONS) -> list[Comparison]:
    """The comparisons of `openai/summarize_from_feedback` (config `comparisons`)."""
    return [comparison(row, f"{name} {split} row {i}")
            for i, (split, row) in enumerate(_hub_rows(name, "comparisons"))]  # fmt: skip


def hub_references(name: str = HUB_REFERENCES) -> dict[str, list[Reference]]:
    """{split: references} of the filtered TL;DR (`subreddit`, `title`, `post`, `summary`) or
    of `trl-lib/tldr` (`prompt`, `completion`)."""
    from tasks.tldr.preprocess import format_query

    out: dict[str, list[Reference]] = {}
    for i, (split, row) in enumerate(_hub_rows(name)):
        where = f"{name} {split} row {i}"
        if "prompt" in row:
            out.setdefault(split, []).append(Reference(row["prompt"], row["completion"], where))
        else:
            query = format_query(row["subreddit"], row["title"], row["post"])
            out.setdefault(split, []).append(Reference(query, row["summary"], where))
    return out
