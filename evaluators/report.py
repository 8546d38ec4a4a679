"""The report format every comparison writes (`kinrl compare`, `kinrl tldr eval`): a folder with

    report.md       the tables, for a person (and a paper)
    results.json    every number the tables show, and more, for a program
    *.png           the plots (matplotlib), linked from report.md

The tables are built from `results` by the helpers below, never typed by hand, and
`write_report` refuses a report whose markdown shows a number that `results.json` does not hold
(`unmatched_numbers`): a figure in the report can always be traced to the data.

    md = "\n".join([heading("Leaderboard"), table(["method", "accuracy"], rows)])
    write_report("reports/quickstart", md, results)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

DASH = "–"  # a missing value in a table


def fmt(value: Any, digits: int = 3) -> str:
    """A number as a table shows it: ints as they are (thousands separated), floats to
    `digits` decimals, None/NaN as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction in 0..1 as a percentage: 0.4142 -> '41.4%'."""
    if value is None or not math.isfinite(value):
        return DASH
    return f"{100.0 * value:.{digits}f}%"


def interval(result: dict[str, Any] | None, digits: int = 1, percent: bool = True) -> str:
    """{"mean", "low", "high"} as 'mean [low, high]' (percentages by default)."""
    if not result:
        return DASH
    show = (lambda v: pct(v, digits)) if percent else (lambda v: fmt(v, digits))
    return f"{show(result['mean'])} [{show(result['low'])}, {show(result['high'])}]"


def signed_interval(result: dict[str, Any] | None, digits: int = 1) -> str:
    """A difference of fractions in percentage points: '+5.4 [+2.5, +8.3]'."""
    if not result:
        return DASH
    show = lambda v: DASH if v is None else f"{100.0 * v:+.{digits}f}"  # noqa: E731
    return f"{show(result['mean'])} [{show(result['low'])}, {show(result['high'])}]"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table; cells that are not strings go through `fmt`."""
    cell = lambda v: v if isinstance(v, str) else fmt(v)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def heading(text: str, level: int = 2) -> str:
    return f"\n{'#' * level} {text}\n"


def plain(value: Any) -> Any:
    """`value` made JSON-safe: NumPy scalars and arrays to Python, NaN/inf to None, tuples and
    sets to lists, keys to strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# A number as the tables write one: optional sign, digits with thousands commas, decimals;
# versions and dates (1.2.3, 2026-12-06) come whole so they can be found as text.
# A number in a name (k1, pass@4, gpt2) is part of the name; 1e-05 is one number.
_NUMBER = re.compile(r"(?<![A-Za-z_@\d.])[-+]?\d[\d,]*(?:\.\d+)*(?:e[-+]?\d+)?%?")


def _numbers(tree: Any) -> list[float]:
    out: list[float] = []
    if isinstance(tree, dict):
        for value in tree.values():
            out += _numbers(value)
    elif isinstance(tree, list):
        for value in tree:
            out += _numbers(value)
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        out.append(float(tree))
    return out


_WRITTEN = re.compile(r"\d[\d,]*(?:\.\d+)*(?:e[-+]?\d+)?")


def _written(tree: Any) -> set[str]:
    """Every number written inside a string of `tree` (keys and values: versions, dates,
    names, split values such as hops "2"), as written."""
    out: set[str] = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            out |= set(_WRITTEN.findall(str(key))) | _written(value)
    elif isinstance(tree, list):
        for value in tree:
            out |= _written(value)
    elif isinstance(tree, str):
        out |= set(_WRITTEN.findall(tree))
    return out


def unmatched_numbers(markdown: str, results: dict[str, Any]) -> list[str]:
    """The numbers `markdown` shows that `results` does not hold: each must be a number written
    whole in one of the results' strings (a version, a date, a hops value used as a key), or
    equal a number of `results` rounded as shown (a percentage: the number times 100; a
    signed difference in points likewise). A number is never matched as a piece of a longer
    one (99.7 is not in 1299.75)."""
    written = _written(plain(results))
    values = _numbers(plain(results))
    missing = []
    for token in _NUMBER.findall(markdown):
        bare = token.rstrip("%")
        if bare.lstrip("+-") in written:
            continue
        if "e" in bare:  # scientific notation, as written: compared as a float
            shown = float(bare)
            if not any(abs(v - shown) <= 1e-9 * abs(shown) for v in values):
                missing.append(token)
            continue
        parts = bare.replace(",", "").lstrip("+").split(".")
        if len(parts) > 2:  # a version or dotted name that is not in the JSON
            missing.append(token)
            continue
        shown = float(".".join(parts))
        decimals = len(parts[1]) if len(parts) == 2 else 0
        tolerance = 0.5 * 10.0**-decimals + 1e-9
        scales = (1.0, 100.0) if (token.endswith("%") or token.startswith("+") or
                                  decimals <= 1) else (1.0,)  # fmt: skip
        if not any(abs(v * s - shown) <= tolerance for v in values for s in scales):
            missing.append(token)
    return missing


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report(out_dir: str | os.PathLike[str], markdown: str, results: dict[str, Any]) -> Path:
    """Write OUT/report.md and OUT/results.json, each whole or not at all. ValueError, before
    anything is written, when the markdown shows a number `results` does not hold."""
    missing = unmatched_numbers(markdown, results)
    if missing:
        raise ValueError(f"report.md shows numbers that results.json lacks: {missing[:10]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(plain(results), indent=2) + "\n")
    write_text_atomic(out / "report.md", markdown if markdown.endswith("\n") else markdown + "\n")
    return out
