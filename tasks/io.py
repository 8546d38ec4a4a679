"""Writing task datasets: JSONL or Parquet per split, `config.json`, and a dataset card.

Records are made in fixed-size chunks of item indices, in one process or many; the chunks are
written in index order, so the files are byte-identical whatever the number of processes.
Memory stays flat however many records are written (one chunk per worker in flight). Output
goes to a temporary folder beside the target that is renamed into place only when complete,
so an interrupted or failed run leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from tqdm import tqdm

from tasks.registry import dataset_kinds

FORMATS = ("jsonl", "parquet")
CHUNK_SIZE = 500


class RecordStats(Protocol):
    """A per-record statistics accumulator (the task's): each chunk fills a fresh one in its
    worker, `add` once per record in index order, and the writer merges the chunks' into one."""

    def add(self, record: dict[str, Any]) -> None: ...

    def merge(self, other: Any) -> None: ...


@dataclass
class Chunk:
    """A finished chunk: serialised rows plus what the card and the leak check need."""

    split: str
    lines: list[str]
    records: list[dict[str, Any]] | None
    fingerprints: list[int]
    stats: RecordStats


@dataclass(frozen=True)
class ChunkJob:
    split: str
    start: int
    stop: int
    make: Callable[[int], dict[str, Any]]
    new_stats: Callable[[], RecordStats]
    fingerprint: Callable[[dict[str, Any]], int]
    keep_records: bool


def json_line(record: dict[str, Any]) -> str:
    """A record as one compact JSON line: the bytes of `json.dumps(record, ensure_ascii=False,
    separators=(",", ":"))`, made by orjson, several times faster. The two differ only on
    floats below 1e-4 or from 1e16 on (orjson writes 0.00001 and 1e16, json.dumps 1e-05 and
    1e+16) and on NaN, none of which a record holds (its floats are rewards and fractions in
    [0, 1] on a coarse grid); what orjson refuses (integers beyond 64 bits, keys that are not
    strings) goes to json.dumps. `tests/test_dataset_cli.py` compares the two on every kind
    and level, and on arbitrary strings and integers."""
    try:
        return orjson.dumps(record).decode()
    except TypeError:  # an integer beyond 64 bits, a key that is not a string
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def run_chunk(job: ChunkJob) -> Chunk:
    """Make records job.start..job.stop-1 (runs in a worker process)."""
    lines, records, fingerprints = [], [], []
    stats = job.new_stats()
    add = stats.add
    for index in range(job.start, job.stop):
        record = job.make(index)
        lines.append(json_line(record))
        if job.keep_records:
            records.append(record)
        fingerprints.append(job.fingerprint(record))
        add(record)
    return Chunk(job.split, lines, records if job.keep_records else None, fingerprints, stats)


def chunk_jobs(
    splits: list[tuple[str, int, int, Callable[[int], dict[str, Any]]]],
    new_stats: Callable[[], RecordStats],
    fingerprint: Callable[[dict[str, Any]], int],
    keep_records: bool,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[ChunkJob]:
    """Fixed chunks of (split, first index, size, maker); independent of the process count."""
    for split, start, size, make in splits:
        for first in range(start, start + size, chunk_size):
            yield ChunkJob(
                split,
                first,
                min(first + chunk_size, start + size),
                make,
                new_stats,
                fingerprint,
                keep_records,
            )


class OutputError(ValueError):
    """The output folder cannot be written or replaced (a one-line message naming --out)."""


def is_dataset_folder(folder: Path) -> bool:
    """True if `folder` holds a config.json whose "kind" is a dataset kind of the registry."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("kind") in dataset_kinds()


def _is_empty(out: Path) -> bool:
    try:
        return not any(out.iterdir())
    except OSError as error:
        raise OutputError(f"--out {out} cannot be read: {error.strerror or error}") from None


def _replaceable(out: Path) -> None:
    """Raise OutputError unless the existing folder `out` is empty or a dataset folder."""
    if not _is_empty(out) and not is_dataset_folder(out):
        raise OutputError(
            f"--out folder {out} is not a kinrl dataset (no config.json of a dataset kind), "
            "so it will not be replaced"
        )


def _probe(out: Path, folder: Path) -> None:
    """Create and remove an empty folder in `folder` (the only test that holds for root)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kinrl-probe-", dir=folder))
    except OSError as error:
        reason = f"cannot create a folder in {folder}: {error.strerror or error}"
        raise OutputError(f"--out {out} is not writable ({reason})") from None


def check_output_folder(out: str | Path, overwrite: bool) -> Path:
    """Raise OutputError (a ValueError naming --out) unless `out` can be created or replaced.

    A non-empty folder is only replaced with `overwrite`, and only if it is a kinrl dataset
    folder: a mistyped --out (".", "~", a project folder) must never lose anyone's files.
    """
    if str(out) == "":
        raise OutputError("--out must be a folder path (got an empty string)")
    out = Path(out).resolve()
    if not out.name:
        raise OutputError(f"--out must be a folder below the file system root (got {out})")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out must be a folder (got the file {out})")
    if out.is_dir():
        if not overwrite and not _is_empty(out):
            raise OutputError(f"--out folder {out} is not empty (pass --overwrite to replace it)")
        _replaceable(out)
        if os.path.ismount(out):
            raise OutputError(f"--out {out} is a mount point, so it cannot be replaced")
        _probe(out, out)
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"--out {out} cannot be created ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out} is not writable (no write permission on {parent})")
    _probe(out, parent)
    return out


def prepare_output(out: str | Path, overwrite: bool) -> Path:
    """Check the target can be written and return a fresh temporary folder beside it."""
    out = check_output_folder(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as error:
        raise OutputError(f"--out {out} cannot be created: {error.strerror or error}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output should not be
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def commit_output(tmp: Path, out: Path) -> None:
    """Move the finished temporary folder into place, replacing any old output.

    Only an empty folder or a dataset folder is replaced (checked again: the folder may have
    changed during the run). On failure the old output is left as it was and OutputError is
    raised; the caller removes `tmp`.
    """
    out = out.resolve()
    old = None
    try:
        if out.is_dir():
            _replaceable(out)
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
    except OSError as error:
        if old is not None and not out.exists():
            with contextlib.suppress(OSError):
                old.rename(out)  # put the old output back
        raise OutputError(f"--out {out} could not be replaced: {error.strerror or error}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class SplitWriters:
    """One open file per split, in the chosen format."""

    def __init__(self, folder: Path, fmt: str, schema: Any = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
        self.folder, self.fmt, self.schema = folder, fmt, schema
        self._files: dict[str, Any] = {}
        self.counts: Counter = Counter()

    def write(self, chunk: Chunk) -> None:
        self.counts[chunk.split] += len(chunk.lines)
        if self.fmt == "jsonl":
            handle = self._files.get(chunk.split)
            if handle is None:
                path = self.folder / f"{chunk.split}.jsonl"
                handle = self._files[chunk.split] = path.open("w", encoding="utf-8")
            handle.write("\n".join(chunk.lines) + "\n")
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(chunk.records, schema=self.schema)
        writer = self._files.get(chunk.split)
        if writer is None:
            path = self.folder / f"{chunk.split}.parquet"
            writer = self._files[chunk.split] = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def _ignore_sigint() -> None:
    """Pool initializer: Ctrl-C is the parent's to handle (it shuts the pool down); a worker
    interrupted mid-send would leave the pool's result handler blocked, and print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_pool(num_proc: int) -> Any:
    """A spawn pool whose workers ignore SIGINT from their first instruction: an ignored signal
    stays ignored through exec, so a Ctrl-C while they start up is not a traceback either (the
    parent ignores it too for the moment it takes to launch them)."""
    context = multiprocessing.get_context("spawn")
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread, which alone handles signals
        return context.Pool(num_proc, initializer=_ignore_sigint)
    try:
        return context.Pool(num_proc, initializer=_ignore_sigint)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def run_jobs(jobs: list[ChunkJob], num_proc: int, total: int, progress: bool) -> Iterator[Chunk]:
    """Run chunk jobs in order, in this process or a pool, with a progress bar (rate, ETA)."""
    bar = tqdm(
        total=total,
        unit="ex",
        disable=not progress,
        smoothing=0.1,
        mininterval=0.5,
        dynamic_ncols=True,
    )
    try:
        if num_proc <= 1:
            results: Iterator[Chunk] = map(run_chunk, jobs)
            for chunk in results:
                bar.update(len(chunk.lines))
                yield chunk
            return
        with _start_pool(num_proc) as pool:
            for chunk in pool.imap(run_chunk, jobs):
                bar.update(len(chunk.lines))
                yield chunk
    finally:
        bar.close()
