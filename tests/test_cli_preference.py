"""`kinrl train rm|dpo|kto`: tiny runs from an SFT run through the command line, and bad input
as one line on stderr with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinrl.cli import main
from tasks.kinship import KinshipConfig, generate_dataset
from tasks.kinship.pairs import FeedbackConfig
from trainers.checkpoint import load_run, read_run_config
from trainers.model import PRESETS, GPTConfig

TINY = GPTConfig(vocab_size=1, n_positions=64, n_embd=32, n_layer=2, n_head=2)
SHORT = ["--steps", "3", "--batch-size", "4", "--warmup-steps", "0", "--quiet"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    level = KinshipConfig.for_level(1)
    generate_dataset(root / "examples", level, 60, seed=2, progress=False)
    generate_dataset(root / "pairs", level, 60, seed=2, kind="preference",
                     feedback=FeedbackConfig(), progress=False)  # fmt: skip
    generate_dataset(root / "feedback", level, 60, seed=2, kind="feedback",
                     feedback=FeedbackConfig(desirable_fraction=0.2), progress=False)  # fmt: skip
    return {"examples": root / "examples", "pairs": root / "pairs", "feedback": root / "feedback"}


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, folders) -> Path:
    run = tmp_path_factory.mktemp("runs") / "sft"
    PRESETS["tiny"] = TINY
    try:
        argv = ["train", "sft", "--data", str(folders["examples"]), "--out", str(run)]
        assert main([*argv, "--preset", "tiny", *SHORT]) == 0
    finally:
        del PRESETS["tiny"]
    return run


@pytest.mark.parametrize(
    ("method", "data", "extra"),
    [("dpo", "pairs", ["--loss", "ipo", "--beta", "0.5"]), ("rm", "pairs", []),
     ("kto", "feedback", ["--desirable-weight", "4"])],
)  # fmt: skip
def test_train_from_an_sft_run(method, data, extra, folders, sft_run, tmp_path, capsys):
    out = tmp_path / method
    argv = ["train", method, "--data", str(folders[data]), "--out", str(out)]
    assert main([*argv, "--init", str(sft_run), *SHORT, *extra]) == 0
    summary = json.loads(capsys.readouterr().out.split(": ", 1)[1])
    assert summary["steps"] == 3 and "eval/loss" in summary
    config = read_run_config(out)
    assert config["method"] == method and config["init"] == str(sft_run)
    _, cfg, _ = load_run(out)
    assert cfg.n_embd == TINY.n_embd and cfg.value_head == (method == "rm")
    if method == "rm":
        assert (out / "reward_offset.json").exists()
    else:
        assert (out / "reference_logps.npz").exists()


def test_bad_input_is_one_line_and_status_2(folders, tmp_path, usage_error):
    dpo = ["train", "dpo", "--data", str(folders["pairs"]), "--out", str(tmp_path / "new")]
    assert "--loss must be one of sigmoid" in usage_error([*dpo, "--loss", "kto"])
    assert "--beta must be a number > 0" in usage_error([*dpo, "--beta", "0"])
    assert "--label-smoothing must be 0 unless" in usage_error([*dpo, "--label-smoothing", ".1"])
    robust = [*dpo, "--loss", "robust", "--label-smoothing", "0.5"]
    assert "--label-smoothing must be in [0, 0.5)" in usage_error(robust)
    wrong = ["train", "rm", "--data", str(folders["examples"]), "--out", str(tmp_path / "x")]
    assert "expected 'kinship/preference'" in usage_error(wrong)
    kto = ["train", "kto", "--data", str(folders["pairs"]), "--out", str(tmp_path / "y")]
    assert "expected 'kinship/feedback'" in usage_error(kto)
    init = [*dpo, "--init", str(tmp_path / "nothing")]
    assert "--init" in usage_error(init)
