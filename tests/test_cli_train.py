"""`kinrl train sft`, `kinrl eval`, `kinrl sample`: a tiny run end to end, and bad input as one
line on stderr with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinrl.cli import main
from tasks.kinship import KinshipConfig, generate_dataset
from trainers.model import PRESETS, GPTConfig

TINY = GPTConfig(vocab_size=1, n_positions=64, n_embd=32, n_layer=2, n_head=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "l1"
    generate_dataset(out, KinshipConfig.for_level(1), 200, seed=11, progress=False)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    """A tiny run trained through the CLI (module-scoped: several tests read it)."""
    run = tmp_path_factory.mktemp("runs") / "sft"
    PRESETS["tiny"] = TINY
    try:
        argv = ["train", "sft", "--data", str(data_dir), "--out", str(run), "--preset", "tiny"]
        argv += ["--steps", "6", "--batch-size", "8", "--warmup-steps", "1", "--quiet"]
        assert main(argv) == 0
    finally:
        del PRESETS["tiny"]
    return run


def test_train_eval_and_sample(run_dir, data_dir, tmp_path, capsys):
    capsys.readouterr()
    report_path = tmp_path / "report.json"
    argv = ["eval", "--run", str(run_dir), "--data", str(data_dir), "--split", "test"]
    assert main([*argv, "--limit", "8", "--step", "6", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["n"] == 8 and 0.0 <= report["accuracy"] <= 1.0
    assert sum(cell["n"] for cell in report["by_question_type"].values()) == 8
    assert set(report) >= {"by_difficulty", "by_hops", "by_family", "mean_score"}
    assert len(report["correct"]) == 8 and report["interval"]["n"] == 8
    headline = json.loads(capsys.readouterr().out.splitlines()[0])
    assert headline["n"] == 8 and "correct" not in headline  # the per-item list: --json only
    prompt = "Ann is Bob's mother.\\nQuestion: Who is Bob's mother?"
    assert main(["sample", "--run", str(run_dir), "--prompt", prompt, "--max-new-tokens", "5"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) <= 6  # 5 tokens at most
    assert captured.err == ""  # every word known


def test_sample_warns_about_words_outside_the_vocabulary(run_dir, capsys):
    capsys.readouterr()
    prompt = "Zqxv is Bob's mother.\\nQuestion: Who is Wrrzl's mother?"
    assert main(["sample", "--run", str(run_dir), "--prompt", prompt, "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kinrl: warning: --prompt has words"), err
    assert err[0].endswith(": Zqxv, Wrrzl")

    many = " ".join(f"Qq{chr(97 + i)}zz" for i in range(12)) + " is Bob's mother."
    assert main(["sample", "--run", str(run_dir), "--prompt", many, "--max-new-tokens", "1"]) == 0
    err = capsys.readouterr().err
    assert "Qqazz, Qqbzz" in err and "Qqkzz" not in err and err.rstrip().endswith("and 2 more")


def test_bad_input_is_one_line_and_status_2(tmp_path, data_dir, run_dir, capsys, usage_error):
    train = ["train", "sft", "--data", str(data_dir), "--out", str(tmp_path / "new")]
    assert "--preset must be one of nano" in usage_error([*train, "--preset", "huge"])
    assert "--batch-size must be an integer >= 1" in usage_error([*train, "--batch-size", "0"])
    wrong_kind = ["train", "sft", "--data", str(run_dir), "--out", str(tmp_path / "x")]
    assert "expected 'kinship/examples'" in usage_error(wrong_kind)
    missing = ["eval", "--run", str(tmp_path / "nothing"), "--data", str(data_dir)]
    assert "does not exist" in usage_error(missing)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{truncated")
    assert "not a run folder" in usage_error(["sample", "--run", str(corrupt), "--prompt", "x"])
    no_step = ["eval", "--run", str(run_dir), "--data", str(data_dir), "--step", "5"]
    assert "has no checkpoint 5 (it has [6])" in usage_error(no_step)
    assert "no split 'dev'" in usage_error(
        ["eval", "--run", str(run_dir), "--data", str(data_dir), "--split", "dev"]
    )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("not a run")
    assert "not a run folder" in usage_error([*train[:-1], str(busy)])


def test_rejected_commands_leave_nothing_that_blocks_the_corrected_one(
    tmp_path, data_dir, capsys, usage_error
):
    """A train command refused for its input (too few examples for a step, a folder that
    cannot be written, bad several-hosts options) exits 2 with one line and creates no run
    folder; eval checks --json's folder before decoding anything."""
    out = tmp_path / "run"
    train = ["train", "sft", "--data", str(data_dir), "--out", str(out), "--preset", "nano"]
    assert "exceeds the" in usage_error([*train, "--batch-size", "5000"])
    assert "is a dataset folder" in usage_error([*train, "--init", str(data_dir)])
    assert not out.exists()
    unwritable = ["train", "sft", "--data", str(data_dir), "--out", "/proc/kinrl-run"]
    assert "--out /proc/kinrl-run: cannot write there" in usage_error(unwritable)
    assert "--coordinator-address must be HOST:PORT" in usage_error(
        [*train, "--num-processes", "2"]
    )
    hosts = ["--coordinator-address", "localhost:1234", "--num-processes", "2"]
    assert "--process-id must be in 0..1" in usage_error([*train, *hosts, "--process-id", "5"])
    ev = ["eval", "--run", str(tmp_path), "--data", str(data_dir), "--json", "no/such/r.json"]
    assert "--json no/such/r.json: its folder" in usage_error(ev)
    sample = ["sample", "--run", str(tmp_path), "--prompt", "x", "--temperature", "nan"]
    assert "--temperature must be a finite number >= 0" in usage_error(sample)


def test_a_default_warm_up_shrinks_to_fit_a_short_run():
    from trainers.config import DPOConfig, SFTConfig

    assert SFTConfig.from_options(steps=5).warmup_steps == 4
    assert SFTConfig.from_options(steps=5000).warmup_steps == 100
    assert DPOConfig.from_options(steps=1).warmup_steps == 0
    with pytest.raises(ValueError, match=r"warmup_steps must be in 0\.\.steps-1"):
        SFTConfig.from_options(steps=5, warmup_steps=5)  # given: kept
