"""The report format (evaluators/report.py): tables from results, and no number in report.md
that results.json lacks."""

from __future__ import annotations

import json

import pytest

from evaluators.report import interval, pct, signed_interval, table, unmatched_numbers, write_report


def test_table_formats_cells() -> None:
    md = table(["method", "accuracy", "n"], [["sft", pct(0.41421), 1200], ["dpo", None, 3]])
    assert "| sft | 41.4% | 1,200 |" in md
    assert "| dpo | – | 3 |" in md


def test_intervals() -> None:
    assert interval({"mean": 0.5, "low": 0.4, "high": 0.61}) == "50.0% [40.0%, 61.0%]"
    assert signed_interval({"mean": 0.054, "low": 0.025, "high": 0.083}) == "+5.4 [+2.5, +8.3]"


def test_unmatched_numbers() -> None:
    results = {"acc": 0.4142, "steps": 400, "versions": {"jax": "0.7.2"}, "gain": -0.031}
    assert (
        unmatched_numbers("41.4% after 400 steps with jax 0.7.2, gain -3.1 points", results) == []
    )
    assert unmatched_numbers("0.414", results) == []
    assert unmatched_numbers("41.5%", results) == ["41.5%"]
    assert unmatched_numbers("401 steps, jax 0.7.3", results) == ["401", "0.7.3"]


def test_write_report_refuses_untraceable_numbers(tmp_path) -> None:
    with pytest.raises(ValueError, match="77"):
        write_report(tmp_path / "r", "accuracy 77%", {"accuracy": 0.5})
    assert not (tmp_path / "r").exists()
    out = write_report(tmp_path / "r", "accuracy 50.0%", {"accuracy": 0.5, "nan": float("nan")})
    assert json.loads((out / "results.json").read_text()) == {"accuracy": 0.5, "nan": None}
    assert (out / "report.md").read_text() == "accuracy 50.0%\n"


def test_numbers_in_names_and_scientific_notation() -> None:
    results = {"learning_rate": 1e-05, "k": 4}
    assert unmatched_numbers("k1, k2 and pass@4 at lr 1e-05", results) == []
    assert unmatched_numbers("lr 3e-05", results) == ["3e-05"]


def test_a_number_is_never_matched_as_a_piece_of_another() -> None:
    results = {"a": 1299.75, "b": 0.4389, "name": "version 0.7.2", "by_hops": {"3": 0.5}}
    assert unmatched_numbers("99.7% and 0.43", results) == ["99.7%", "0.43"]
    assert unmatched_numbers("0.44, 0.7.2 and hops 3", results) == []
