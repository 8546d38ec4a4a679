"""`kinrl compare` (issue 17): one command, a complete report whose every number is in
results.json; a comparison killed mid-run and run again redoes no finished stage; stage keys
change only with what a stage depends on; bad input in one line."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluators.report import unmatched_numbers
from kinrl.compare.presets import PRESETS, method_config, resolve
from kinrl.compare.stages import STAGE_FILE, Stages, stage_key

ROOT = Path(__file__).resolve().parents[1]


def _stage_done(work: Path, prefix: str) -> bool:
    return any((d / STAGE_FILE).exists() for d in (work / "stages").glob(f"{prefix}-*"))


def test_compare_killed_midway_resumes_and_reports_every_number(tmp_path) -> None:
    """The tiny preset in a child process, SIGKILLed once the SFT stage has finished; the same
    command again finishes without redoing data or SFT, and the report's numbers are all in
    results.json; a third run takes every stage from the cache."""
    out, work = tmp_path / "report", tmp_path / "work"
    argv = [sys.executable, "-m", "kinrl.cli", "compare", "--preset", "tiny", "--out", str(out),
            "--work", str(work), "--quiet"]  # fmt: skip
    env = {**os.environ, "KINRL_COMPILATION_CACHE": "off"}
    log = (tmp_path / "stderr.txt").open("w")
    child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 240
        while not _stage_done(work, "sft") and time.monotonic() < deadline:
            assert child.poll() is None, "compare ended before the SFT stage finished"
            time.sleep(0.2)
        assert _stage_done(work, "sft")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        log.close()
    lines = (tmp_path / "stderr.txt").read_text()
    assert "kinrl compare [1/" in lines and "data: done" in lines and "ETA" in lines
    assert not (out / "report.md").exists()
    sft_record = next((work / "stages").glob("sft-*")) / STAGE_FILE
    written = sft_record.stat().st_mtime_ns

    from kinrl.compare.pipeline import compare

    results = compare(PRESETS["tiny"], out, work, progress=False, lines=False)
    assert {"data", "sft"} <= set(results["cached_stages"])
    assert sft_record.stat().st_mtime_ns == written  # not redone
    markdown = (out / "report.md").read_text(encoding="utf-8")
    on_disk = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert unmatched_numbers(markdown, on_disk) == []
    for plot in ("accuracy_by_difficulty.png", "gold_vs_kl.png", "overoptimisation.png",
                 "calibration.png", "training_curves.png"):  # fmt: skip
        assert (out / plot).stat().st_size > 1000
    assert [r["method"] for r in on_disk["leaderboard"]] == ["sft", "dpo", "grpo"]
    assert (
        len(on_disk["grids"]["dpo"]) == 2 and sum(g["chosen"] for g in on_disk["grids"]["dpo"]) == 1
    )
    assert on_disk["kl_drift"]["grpo"][-1]["step"] == PRESETS["tiny"].steps
    assert "## Leaderboard" in markdown and "## Reward over-optimisation" in markdown

    again = compare(PRESETS["tiny"], out, work, progress=False, lines=False)
    assert set(again["cached_stages"]) == set(again["stages"])
    assert again["leaderboard"] == results["leaderboard"]


def test_stage_keys_follow_their_inputs(tmp_path, capsys) -> None:
    assert stage_key("sft", {"steps": 1}) == stage_key("sft", {"steps": 1})
    assert stage_key("sft", {"steps": 1}) != stage_key("sft", {"steps": 2})
    calls = []
    stages = Stages(tmp_path, {"a": 1.0, "b": 1.0})

    def work(folder: Path) -> dict:
        calls.append(folder)
        return {"value": len(calls)}

    assert stages.run("a", {"x": 1}, work)["value"] == 1
    assert stages.run("a", {"x": 1}, work)["value"] == 1  # recalled, not rerun
    assert stages.run("a", {"x": 2}, work)["value"] == 2  # a changed input reruns
    assert len(calls) == 2
    assert "[1/2] a: done" in capsys.readouterr().err


def test_budget_is_equal_across_methods() -> None:
    preset = dataclasses.replace(PRESETS["quickstart"], methods=("dpo", "kto", "grpo", "ppo"))
    for method in preset.methods:
        config = method_config(preset, method, {}, 0, "runs/rm")
        assert config.steps == preset.steps
        assert config.step_examples() == preset.prompts_per_step
    grpo = method_config(preset, "grpo", {"learning_rate": 2e-5}, 0, "runs/rm")
    assert grpo.learning_rate == 2e-5 and grpo.reward == "rm:runs/rm"


def test_bad_input_is_one_line(usage_error) -> None:
    assert "--preset must be one of" in usage_error(["compare", "--preset", "nope"])
    assert "unknown rlhf" in usage_error(["compare", "--methods", "dpo,rlhf"])
    assert "--seeds" in usage_error(["compare", "--seeds", "0"])
    with pytest.raises(ValueError, match="--preset"):
        resolve("nope")
