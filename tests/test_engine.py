"""The training engine and the thin command line: one loop, one registry, one-line errors for
what a new user hit (a checkpoint without a tokenizer, a run of the wrong role, a --json that
is a folder, Ctrl-C), and the command line's own fixes (--version, help, fast usage errors)."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kinrl.cli import main
from tasks.kinship import KinshipConfig, generate_dataset
from tasks.kinship.pairs import FeedbackConfig
from trainers.config import SFTConfig
from trainers.model import PRESETS, GPTConfig
from trainers.registry import METHODS, get_method

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny_gpt2"
TINY = GPTConfig(vocab_size=1, n_positions=64, n_embd=32, n_layer=2, n_head=2)
SHORT = ["--preset", "tiny", "--steps", "3", "--batch-size", "8", "--eval-examples", "8",
         "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    generate_dataset(root / "l1", KinshipConfig.for_level(1), 120, seed=3, progress=False)
    generate_dataset(root / "pairs", KinshipConfig.for_level(1), 120, seed=3, kind="preference",
                     feedback=FeedbackConfig(), progress=False)  # fmt: skip
    return {"examples": root / "l1", "pairs": root / "pairs"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, folders) -> dict[str, Path]:
    """A tiny SFT run and a reward model trained from it, through the command line."""
    root = tmp_path_factory.mktemp("runs")
    PRESETS["tiny"] = TINY
    try:
        sft = ["train", "sft", "--data", str(folders["examples"]), "--out", str(root / "sft")]
        assert main([*sft, *SHORT]) == 0
        rm = ["train", "rm", "--data", str(folders["pairs"]), "--out", str(root / "rm")]
        assert main([*rm, *SHORT, "--init", str(root / "sft")]) == 0
    finally:
        del PRESETS["tiny"]
    return {"sft": root / "sft", "rm": root / "rm"}


def test_every_registered_method_is_a_method_of_the_engine():
    for name, (config_class, module, _) in METHODS.items():
        method = get_method(name)
        assert method.name == name and method.config_class is config_class, module
    with pytest.raises(ValueError, match="method must be one of sft, rm, dpo, kto, grpo"):
        get_method("a2c")


def test_one_training_loop_in_the_code_base():
    """Only `trainers/engine.py` loops over training steps (calls a jitted step per batch)."""
    loops = []
    for path in (REPO / "trainers").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.For) and "config.steps" in ast.unparse(node.iter):
                loops.append(path.name)
    assert loops == ["engine.py"], loops


def test_a_checkpoint_without_a_tokenizer_is_refused_before_any_work(
    folders, tmp_path, usage_error
):
    out = tmp_path / "run"
    argv = ["train", "sft", "--data", str(folders["examples"]), "--out", str(out)]
    line = usage_error([*argv, "--init", str(FIXTURE), "--steps", "2"])
    assert "--init" in line and "tokenizer" in line, line
    assert not out.exists()


def test_a_run_of_the_wrong_role_is_refused(folders, runs, tmp_path, usage_error):
    dpo = ["train", "dpo", "--data", str(folders["pairs"]), "--out", str(tmp_path / "dpo")]
    assert "is a reward model" in usage_error([*dpo, "--init", str(runs["rm"])])
    assert not (tmp_path / "dpo").exists()
    evaluate = ["eval", "--run", str(runs["rm"]), "--data", str(folders["examples"])]
    assert "is a reward model" in usage_error(evaluate)
    sample = ["sample", "--run", str(runs["rm"]), "--prompt", "Ann is Bob's mother."]
    assert "is a reward model" in usage_error(sample)


def test_an_init_whose_context_is_too_short_is_refused(folders, runs, tmp_path, usage_error):
    """TINY has 64 positions: preference pairs of level 1 fit, so this stays a clean start;
    an SFT run made with 64 positions refuses data with longer records."""
    long = tmp_path / "long"
    generate_dataset(long, KinshipConfig.for_level(3), 60, seed=1, progress=False)
    argv = ["train", "sft", "--data", str(long), "--out", str(tmp_path / "x")]
    line = usage_error([*argv, "--init", str(runs["sft"]), "--steps", "2", "--batch-size", "4"])
    assert "context" in line, line


def test_eval_json_that_is_a_folder_is_refused_before_decoding(
    folders, runs, tmp_path, usage_error
):
    argv = ["eval", "--run", str(runs["sft"]), "--data", str(folders["examples"])]
    assert "is a folder" in usage_error([*argv, "--json", str(tmp_path)])
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unloadable_init_is_one_complete_sentence(folders, tmp_path, usage_error):
    argv = ["train", "sft", "--data", str(folders["examples"]), "--out", str(tmp_path / "r")]
    line = usage_error([*argv, "--init", "gpt2-not-on-this-machine"])
    assert "--init gpt2-not-on-this-machine is not a run folder or a GPT-2 checkpoint" in line
    assert line.count("(") == line.count(")") and line.count("[") == line.count("]"), line
    assert len(line) <= 220, line


def test_a_refused_resume_names_the_differing_options_only(folders, runs, usage_error):
    argv = ["train", "sft", "--data", str(folders["examples"]), "--out", str(runs["sft"])]
    PRESETS["tiny"] = TINY
    try:
        line = usage_error([*argv, *SHORT, "--learning-rate", "0.5"])
    finally:
        del PRESETS["tiny"]
    assert "--learning-rate 0.003 -> 0.5" in line and "{" not in line


def test_ctrl_c_saves_a_checkpoint_and_names_the_step_to_resume_from(folders, tmp_path):
    """SIGINT mid-run: exit 130, a checkpoint of the last finished step although the save
    interval is far off, and the same command resumes from exactly that step."""
    out = tmp_path / "run"
    argv = ["train", "sft", "--data", str(folders["examples"]), "--out", str(out), "--quiet",
            "--steps", "300", "--batch-size", "8", "--save-interval", "1000",
            "--log-interval", "1", "--eval-interval", "0"]  # fmt: skip
    code = "import sys; from kinrl.cli import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=str(REPO), KINRL_COMPILATION_CACHE="off")
    child = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, cwd=REPO,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    saved = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    assert len(saved) == 1 and 3 <= saved[0] < 300, saved
    assert f"resume from step {saved[0]}" in err
    again = subprocess.run([sys.executable, "-c", code, *argv], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.split(": ", 1)[1])
    assert summary["resumed_from"] == saved[0] and summary["steps"] == 300


def test_usage_errors_come_before_jax_is_imported(tmp_path):
    """`kinrl train ... --beta -1` answers without importing JAX (a fraction of a second)."""
    code = (
        "import sys; from kinrl.cli import main\n"
        "rc = main(['train', 'dpo', '--data', 'x', '--out', 'y', '--beta', '-1'])\n"
        "assert rc == 2 and 'jax' not in sys.modules and 'flax' not in sys.modules, rc\n"
        "rc = main(['train', 'sft', '--data', 'x', '--out', 'y', '--stepz', '3'])\n"
        "assert rc == 2 and 'jax' not in sys.modules, rc\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--beta must be a number > 0" in result.stderr


def test_version_help_and_generate_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("kinrl ")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "laboratory for comparing RLHF methods" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 1000)" in text and "(default: 3)" in text
    with pytest.raises(SystemExit):
        main(["train", "sft", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 4500)" in text and "(default 1.0)" in text  # the documented recipe


def test_sample_takes_top_k_top_p_and_step_and_refuses_an_empty_prompt(runs, usage_error):
    sample = ["sample", "--run", str(runs["sft"]), "--max-new-tokens", "3"]
    prompt = ["--prompt", "Ann is Bob's mother.\\nQuestion: Who is Bob's mother?"]
    assert main([*sample, *prompt, "--temperature", "1", "--top-k", "5", "--top-p", "0.9",
                 "--step", "3"]) == 0  # fmt: skip
    assert "--prompt must hold some text" in usage_error([*sample, "--prompt", " \\n "])
    assert "--top-p must be in (0, 1]" in usage_error([*sample, *prompt, "--top-p", "0"])


def test_sft_defaults_are_the_documented_recipe():
    config = SFTConfig()
    assert (config.steps, config.learning_rate, config.prompt_loss_weight) == (4500, 3e-3, 1.0)
    assert (config.batch_size, config.pack_width, config.warmup_steps) == (32, 128, 100)


def test_error_messages_name_options_but_leave_paths_and_values_alone():
    from kinrl.cli import build_parser
    from kinrl.options import as_option

    dpo = build_parser().parse_args(["train", "dpo", "--data", "d", "--out", "o"]).parser
    assert as_option("batch_size * grad_accum = 64 exceeds", dpo) == (
        "--batch-size * --grad-accum = 64 exceeds"
    )
    kept = "data/l1 holds 'kinship/examples' data; runs/batch_size (got 'pack_pairs') 0..steps-1"
    assert as_option(kept, dpo) == kept
    args = build_parser().parse_args(["generate", "--out", "x", "--holdout-relations", "a, b"])
    assert args.holdout_relations == ("a", "b")


def test_load_records_limit_is_the_prefix(folders, tmp_path):
    from trainers.data import load_records

    whole = load_records(folders["examples"], "train")
    assert load_records(folders["examples"], "train", limit=5) == whole[:5]
    parquet = tmp_path / "parquet"
    generate_dataset(parquet, KinshipConfig.for_level(1), 40, seed=3, fmt="parquet", progress=False)
    assert load_records(parquet, "train", limit=5) == load_records(parquet, "train")[:5]
