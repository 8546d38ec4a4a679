"""The CPU smoke preset end to end, as a user runs it: `kinrl tldr prepare` on the shipped
sample, `kinrl tldr train --smoke` (nano with a BPE trained on the sample: SFT -> RM -> DPO, KTO,
PPO),
`kinrl tldr eval` (ROUGE, win rate, lengths). About a minute and a half on two CPU cores."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "data" / "tldr"


def longer_judge(prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[float]:
    """A judge callable as a user plugs one in: the longer summary wins."""
    return [0.5 if len(x) == len(y) else float(len(y) > len(x)) for x, y in zip(a, b, strict=True)]


def test_smoke_preset_end_to_end(tmp_path: Path, capsys) -> None:
    from kinrl.cli import main

    start = time.perf_counter()
    data, runs, report = tmp_path / "data", tmp_path / "runs", tmp_path / "report"
    prepare = ["tldr", "prepare", "--comparisons", str(LOCAL / "comparisons_batch18.head48.jsonl"),
               str(LOCAL / "comparisons_edit_b2_eval_test.jsonl"),
               "--references", str(LOCAL / "validation_sample_oai1b.head48.csv"),
               "--out", str(data), "--query-tokens", "128", "--holdout", "0.25"]  # fmt: skip
    assert main(prepare) == 0
    assert main(["tldr", "train", "--data", str(data), "--out", str(runs), "--smoke",
                 "--policies", "dpo,kto,ppo", "--quiet"]) == 0  # fmt: skip
    assert main(["tldr", "eval", "--run", f"sft={runs / 'sft'}", "--run", str(runs / "dpo"),
                 "--rm", str(runs / "rm"), "--data", str(data), "--out", str(report),
                 "--limit", "12"]) == 0  # fmt: skip
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "trained" in out and "win rate" in out

    # The smoke model is nano with the sample's own BPE.
    init = json.loads((runs / "init" / "config.json").read_text())
    assert (init["n_embd"], init["n_layer"], init["n_positions"]) == (128, 4, 256)
    # SFT learns: its loss falls.
    losses = [m["train/loss"] for line in (runs / "sft" / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in (m := json.loads(line))]  # fmt: skip
    assert losses[-1] < losses[0] - 1.0, losses
    # KTO trained on the comparisons split into desirable and undesirable completions.
    kto = [json.loads(line) for line in (runs / "kto" / "metrics.jsonl").read_text().splitlines()]
    assert kto[-1]["step"] == 4 and any("eval/rewards/desirable" in m for m in kto)
    # PPO optimised the normalised reward model's score, penalising completions without EOS;
    # TL;DR has no gold reward, so none is logged, and only a reward model may score it.
    ppo = json.loads((runs / "ppo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert ppo["step"] == 3 and "train/reward/proxy" in ppo and "train/reward/gold" not in ppo
    assert ppo["train/reward/mean"] == pytest.approx(
        ppo["train/reward/proxy"] - ppo["train/reward/no_answer"], abs=1e-5
    )
    config = json.loads((runs / "ppo" / "config.json").read_text())
    assert config["ppo"]["reward"] == f"rm:{runs / 'rm'}" and config["ppo"]["temperature"] == 0.7
    assert main(["train", "ppo", "--data", str(data / "sft"), "--init", str(runs / "sft"),
                 "--out", str(tmp_path / "gold"), "--steps", "1"]) == 2  # fmt: skip
    assert "reward must be rm:RUN" in capsys.readouterr().err
    assert not (tmp_path / "gold").exists()
    # The reward model is normalised: the reference summaries score 0 on average.
    from evaluators.tldr import RewardModel
    from trainers.data import load_records

    offset = json.loads((runs / "rm" / "reward_offset.json").read_text())
    assert offset["normalised_on"].startswith("reference summaries")
    references = load_records(data / "sft", "train")
    scores = RewardModel(runs / "rm").scores([r["prompt"] for r in references],
                                             [r["completion"] for r in references])  # fmt: skip
    assert abs(float(np.mean(scores))) < 1e-3
    # The report: ROUGE, win rate and lengths of both runs, every number in results.json.
    results = json.loads((report / "results.json").read_text())
    prompts = min(12, len(load_records(data / "sft", "validation")))
    assert prompts >= 5 and set(results["runs"]) == {"sft", "dpo"}
    assert results["prompts"] == prompts
    for run in results["runs"].values():
        assert 0.0 <= run["rouge"]["rougeL"]["mean"] <= 1.0
        assert 0.0 <= run["win_rate"]["mean"] <= 1.0
        assert run["lengths"]["n"] == prompts
    assert results["references"]["lengths"]["words_mean"] > 10
    assert results["reward_model_agreement"]["n"] > 0
    markdown = (report / "report.md").read_text()
    for text in ("ROUGE-L", "win rate vs reference", "Lengths", "Agreement with the human"):
        assert text in markdown
    log = [json.loads(line) for line in (report / "judgements.jsonl").read_text().splitlines()]
    assert len(log) == 2 * prompts and {e["a"] for e in log} == {"policy", "reference"}

    # Any judge callable plugs in (here by module:function), its verdicts undone from A/B.
    from evaluators.tldr import evaluate

    other = evaluate({"sft": str(runs / "sft")}, data, tmp_path / "judged", limit=12,
                     judge="tests.test_tldr_smoke:longer_judge")  # fmt: skip
    lines = (tmp_path / "judged" / "judgements.jsonl").read_text().splitlines()
    for entry in map(json.loads, lines):
        longer = len(entry["summary"]) > len(entry["reference"])
        shorter = len(entry["summary"]) < len(entry["reference"])
        assert entry["policy_wins"] == (1.0 if longer else 0.0 if shorter else 0.5)
    assert other["judge"] == "tests.test_tldr_smoke:longer_judge"
    assert seconds < 180, f"the smoke run took {seconds:.0f} s"
