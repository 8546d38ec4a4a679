"""Run folders and checkpoints: a crashed run resumes to exactly the metrics and weights of an
uninterrupted one; only the last N checkpoints stay; broken run folders are clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tasks.kinship import KinshipConfig, generate_dataset
from trainers.checkpoint import MetricsLog, load_run
from trainers.config import SFTConfig
from trainers.data import BatchIterator
from trainers.engine import train as train_method
from trainers.model import PRESETS, GPTConfig

TINY = GPTConfig(vocab_size=1, n_positions=64, n_embd=32, n_layer=2, n_head=2)
TIMING = "train/tokens_per_s"


class Crash(Exception):
    """Stands for the process dying (kill -9, power loss) in the middle of a run."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "l1"
    generate_dataset(out, KinshipConfig.for_level(1), 300, seed=5, progress=False)
    return out


@pytest.fixture
def config(monkeypatch) -> SFTConfig:
    monkeypatch.setitem(PRESETS, "tiny", TINY)
    return SFTConfig(
        preset="tiny", steps=12, batch_size=8, warmup_steps=2, learning_rate=3e-3,
        log_interval=1, eval_interval=6, eval_examples=16, save_interval=4, keep_checkpoints=2,
    )  # fmt: skip


def _without_timing(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k != TIMING} for line in lines]


def _crash_at_step_11(config: SFTConfig, data_dir: Path, run: Path, monkeypatch) -> None:
    """Train `run` until it dies fetching the batch of step 11: steps 9 and 10 ran and were
    logged, but the last checkpoint is step 8. The iterator is whole again afterwards."""
    original_next = BatchIterator.__next__

    def dying_next(self):
        if self.position == 10:
            raise Crash
        return original_next(self)

    monkeypatch.setattr(BatchIterator, "__next__", dying_next)
    with pytest.raises(Crash):
        train_method("sft", config, data_dir, run, progress=False)
    monkeypatch.setattr(BatchIterator, "__next__", original_next)


def test_killed_run_resumes_to_the_uninterrupted_metrics(tmp_path, data_dir, config, monkeypatch):
    train_method("sft", config, data_dir, tmp_path / "straight", progress=False)
    expected = MetricsLog(tmp_path / "straight").read()

    _crash_at_step_11(config, data_dir, tmp_path / "crashed", monkeypatch)
    logged = [line["step"] for line in MetricsLog(tmp_path / "crashed").read()]
    assert max(logged) == 10 and not (tmp_path / "crashed" / "hf").exists()
    assert sorted(p.name for p in (tmp_path / "crashed" / "checkpoints").iterdir()) == ["4", "8"]

    summary = train_method("sft", config, data_dir, tmp_path / "crashed", progress=False)
    assert summary["resumed_from"] == 8
    resumed = MetricsLog(tmp_path / "crashed").read()
    assert _without_timing(resumed) == _without_timing(expected)  # no duplicated step lines
    straight = load_file(tmp_path / "straight" / "hf" / "model.safetensors")
    again = load_file(tmp_path / "crashed" / "hf" / "model.safetensors")
    for name, array in straight.items():
        np.testing.assert_array_equal(again[name], array, err_msg=name)
    kept = sorted(int(p.name) for p in (tmp_path / "crashed" / "checkpoints").iterdir())
    assert kept == [8, 12]  # keep_checkpoints=2: the newest two


def test_a_damaged_latest_checkpoint_is_set_aside_and_the_run_resumes_before_it(
    tmp_path, data_dir, config, monkeypatch, capsys
):
    """A crash after checkpoint 8 with checkpoint 8 damaged on disk: the rerun moves it to
    checkpoints-damaged/, says so in one line, resumes from checkpoint 4 and ends with the
    uninterrupted run's weights."""
    train_method("sft", config, data_dir, tmp_path / "straight", progress=False)
    _crash_at_step_11(config, data_dir, tmp_path / "run", monkeypatch)
    model_item = tmp_path / "run" / "checkpoints" / "8" / "model"
    for path in model_item.rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")  # every file of the model item unreadable
    capsys.readouterr()
    summary = train_method("sft", config, data_dir, tmp_path / "run", progress=False)
    warning = capsys.readouterr().err
    assert "checkpoint 8 cannot be read" in warning and "resuming from the one before" in warning
    assert summary["resumed_from"] == 4
    assert (tmp_path / "run" / "checkpoints-damaged" / "8").is_dir()
    straight = load_file(tmp_path / "straight" / "hf" / "model.safetensors")
    again = load_file(tmp_path / "run" / "hf" / "model.safetensors")
    for name, array in straight.items():
        np.testing.assert_array_equal(again[name], array, err_msg=name)


def test_resume_refuses_a_different_config(tmp_path, data_dir, config):
    short = SFTConfig(**{**config.to_dict(), "steps": 4, "save_interval": 2})
    train_method("sft", short, data_dir, tmp_path / "run", progress=False)
    changed = SFTConfig(**{**short.to_dict(), "learning_rate": 1e-2})
    with pytest.raises(ValueError, match=r"--learning-rate 0\.003 -> 0\.01"):
        train_method("sft", changed, data_dir, tmp_path / "run", progress=False)
    # What a run logs and keeps may change on a resume (here: a finished run, nothing to do).
    bookkeeping = {"log_interval": 2, "eval_interval": 0, "save_interval": 1, "keep_checkpoints": 3}
    relogged = SFTConfig(**{**short.to_dict(), **bookkeeping})
    assert (
        train_method("sft", relogged, data_dir, tmp_path / "run", progress=False)["resumed_from"]
        == 4
    )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a run folder"):
        train_method("sft", short, data_dir, tmp_path / "other", progress=False)
    # A broken run folder is reported, never trained over.
    shutil.copytree(tmp_path / "run", tmp_path / "broken")
    for step in (tmp_path / "broken" / "checkpoints").iterdir():
        for item in (step / "model").iterdir():
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()
    with pytest.raises(ValueError, match="cannot be read"):
        load_run(tmp_path / "broken")


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"kind": "kinship/examples"})])
def test_load_run_rejects_missing_and_corrupt_folders(tmp_path, content):
    run = tmp_path / "run"
    if content is not None:
        run.mkdir()
        (run / "config.json").write_text(content)
    with pytest.raises(ValueError, match="run folder"):
        load_run(run)


def test_metrics_log_truncation_drops_later_and_torn_lines(tmp_path):
    log = MetricsLog(tmp_path)
    log.write([{"step": s, "train/loss": 1.0 / s} for s in range(1, 6)])
    with log.path.open("a") as f:
        f.write('{"step": 6, "train/lo')  # a line torn by the crash
    log.truncate_after(3)
    assert [line["step"] for line in log.read()] == [1, 2, 3]


def test_runs_written_before_a_new_field_resume_only_with_its_old_behaviour(tmp_path):
    import pytest

    from trainers.checkpoint import RUN_KIND, check_same_run, write_json_atomic

    run = tmp_path / "old-run"
    run.mkdir()
    write_json_atomic(run / "config.json", {"kind": RUN_KIND, "model": {}, "sft": {"steps": 10}})
    check_same_run(run, {"sft": {"steps": 10, "pack_width": 0}})  # the old behaviour: resumes
    with pytest.raises(ValueError, match=r"--pack-width"):
        check_same_run(run, {"sft": {"steps": 10, "pack_width": 128}})
