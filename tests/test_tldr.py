"""TL;DR loading, preprocessing and `kinrl tldr prepare` (no JAX): tasks/tldr/, the text kinds
of the registry, evaluators/tldr.py's pieces that need no model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tasks.tldr import gpt2, preprocess
from tasks.tldr.prepare import prepare
from tasks.tldr.sources import MalformedLine, Skipped, read_comparisons, read_references

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "data" / "tldr"
SHARED = ROOT.parent / "shared" / "data" / "tldr"
BATCH18 = LOCAL / "comparisons_batch18.head48.jsonl"
EDITS = LOCAL / "comparisons_edit_b2_eval_test.jsonl"
CSV = LOCAL / "validation_sample_oai1b.head48.csv"
needs_shared = pytest.mark.skipif(
    not (SHARED / "comparisons_batch18.jsonl").is_file(),
    reason=f"the full TL;DR samples are not in {SHARED} (a clone without ../shared/)",
)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_gpt2_bpe_matches_gpt2_tokenizer() -> None:
    # The ids GPT-2's own tokenizer gives (../shared/data/gpt2/README.md).
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(" TL;DR:") == [24811, 26, 7707, 25]
    assert gpt2.decode(gpt2.encode(" naïve\n\ntext")) == " naïve\n\ntext"


def test_query_format_and_newline_truncation() -> None:
    query = preprocess.format_query("r/AskReddit", "A title", "line one\nline two")
    assert query == "SUBREDDIT: r/AskReddit\n\nTITLE: A title\n\nPOST: line one\nline two\n\nTL;DR:"
    post = "first paragraph\nsecond paragraph " + "word " * 40 + "\nthird " + "x " * 40
    full = preprocess.fit_query("tifu", "t", post, budget=10_000)
    assert not full.cut and full.text == preprocess.format_query("tifu", "t", post)
    # A budget between the two cuts keeps the post up to its second-to-last newline...
    first_cut = post[: post.rfind("\n")]
    budget = gpt2.count(preprocess.format_query("tifu", "t", first_cut))
    fitted = preprocess.fit_query("tifu", "t", post, budget=budget)
    assert fitted.cut and fitted.text == preprocess.format_query("tifu", "t", first_cut)
    assert fitted.tokens <= budget
    # ...and one token less cuts again, at the next newline back.
    smaller = preprocess.fit_query("tifu", "t", post, budget=budget - 1)
    assert smaller.text == preprocess.format_query("tifu", "t", "first paragraph")
    # Without a newline left, characters go one at a time (the reproduction's rindex -> -1).
    tight = preprocess.fit_query("tifu", "t", "first paragraph", budget=budget - 40)
    assert tight.tokens <= budget - 40 and "POST: first" in tight.text


def test_responses_get_one_space_and_caps() -> None:
    assert preprocess.response("  already spaced ") == " already spaced"
    long = preprocess.response("word " * 100)
    capped, cut = preprocess.cap_response(long, 53)
    assert cut and gpt2.count(capped) + 1 <= 53 and capped.startswith(" word")
    assert preprocess.cap_response(" short", 53) == (" short", False)


def test_comparisons_load_with_the_tolerated_variations() -> None:
    rows = read_comparisons(EDITS)
    assert len(rows) == 5
    for row, raw in zip(rows, lines(EDITS), strict=True):
        assert "id" not in raw["info"] and row.post_id.startswith("sha256:")
        assert raw["info"]["subreddit"].startswith("r/")
        assert all(s.note is None for s in row.summaries)
        query = preprocess.fit_query(row.subreddit, row.title, row.post).text
        assert query.startswith(f"SUBREDDIT: r/{raw['info']['subreddit'][2:]}\n\nTITLE: ")
        assert "r/r/" not in query


def check_preference_rows(out: Path, sources: list[Path]) -> int:
    """Every preference record against its source line: the exact prompt, chosen at `choice`."""
    raw = [row for path in sources for row in lines(path)]
    records = []
    for split in ("train", "validation"):
        path = out / "preference" / f"{split}.jsonl"
        if path.exists():
            records += lines(path)
    assert len(records) == len(raw)
    by_key = {(r["prompt"], r["chosen"], r["rejected"], r["worker"]) for r in records}
    for row in raw:
        info = row["info"]
        subreddit = info["subreddit"].removeprefix("r/")
        prompt = (f"SUBREDDIT: r/{subreddit}\n\nTITLE: {info['title']}\n\nPOST: {info['post']}"
                  "\n\nTL;DR:")  # fmt: skip
        assert gpt2.count(prompt) <= 512  # none of these posts needs cutting
        chosen = " " + row["summaries"][row["choice"]]["text"].strip()
        rejected = " " + row["summaries"][1 - row["choice"]]["text"].strip()
        assert (prompt, chosen, rejected, row["worker"]) in by_key
    return len(records)


def test_prepare_writes_the_three_folders(tmp_path: Path) -> None:
    out = tmp_path / "prep"
    summary = prepare([BATCH18, EDITS], [CSV], out)
    assert check_preference_rows(out, [BATCH18, EDITS]) == 53
    record = lines(out / "preference" / "validation.jsonl")[0]
    first = lines(BATCH18)[0]
    assert record["choice"] == first["choice"] and record["confidence"] == 2
    assert record["chosen_policy"] == first["summaries"][first["choice"]]["policy"]
    assert record["split"] == "valid2" and record["reference_side"] == "rejected"
    config = json.loads((out / "preference" / "config.json").read_text())
    assert config["kind"] == "tldr/preference" and config["counts"] == {"validation": 53}
    feedback = lines(out / "feedback" / "validation.jsonl")
    assert len(feedback) == 106 and sum(r["label"] for r in feedback) == 53
    # SFT: the CSV's 48 references (queries unchanged) and the comparisons' `ref` summaries.
    sft = lines(out / "sft" / "validation.jsonl")
    with CSV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    from_csv = [r for r in sft if "validation_sample" in r["source"]]
    assert [r["prompt"] for r in from_csv] == [row["query"] for row in rows]
    assert [r["completion"] for r in from_csv] == [
        " " + row["reference_responses"].strip() for row in rows
    ]
    assert summary["filtered"]["repeated references"] > 0  # one post, many comparisons
    card = (out / "sft" / "README.md").read_text()
    assert "repeated references" in card and "CC BY 4.0" in card
    # datasets reads the folders unchanged.
    import datasets

    ds = datasets.load_dataset("json", data_files={"validation": str(out / "sft/validation.jsonl")})
    assert ds["validation"].num_rows == len(sft)


def test_trainers_read_the_folders_and_exact_readers_refuse_them(tmp_path: Path) -> None:
    from tasks.registry import EXAMPLES_KIND, FEEDBACK_KIND, PREFERENCE_KIND
    from trainers.data import load_records

    prepare([BATCH18], [CSV], tmp_path / "p", holdout=0.3)
    assert load_records(tmp_path / "p" / "sft", "train", EXAMPLES_KIND)
    assert load_records(tmp_path / "p" / "preference", "train", PREFERENCE_KIND)
    assert load_records(tmp_path / "p" / "feedback", "validation", FEEDBACK_KIND)
    with pytest.raises(ValueError, match=r"expected 'kinship/examples'$"):
        load_records(tmp_path / "p" / "sft", "train", EXAMPLES_KIND, exact=True)
    with pytest.raises(ValueError, match="holds 'tldr/examples' data"):
        load_records(tmp_path / "p" / "sft", "train", PREFERENCE_KIND)


def test_holdout_keeps_each_post_on_one_side(tmp_path: Path) -> None:
    # A reference CSV naming the comparisons' posts by their queries only (no ids).
    refs = tmp_path / "refs.csv"
    with refs.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "reference_responses"])
        for row in lines(BATCH18):
            info = row["info"]
            query = preprocess.format_query(info["subreddit"], info["title"], info["post"])
            writer.writerow([query, " another reference"])
    prepare([BATCH18], [refs], tmp_path / "p", holdout=0.3)
    sides: dict[str, set[str]] = {}
    for folder in ("preference", "sft"):
        for split in ("train", "validation"):
            for r in lines(tmp_path / "p" / folder / f"{split}.jsonl"):
                sides.setdefault(r["prompt"], set()).add(split)
    assert all(len(s) == 1 for s in sides.values())
    assert {s for v in sides.values() for s in v} == {"train", "validation"}


def test_cnndm_batches_are_kept_apart(tmp_path: Path) -> None:
    rows = lines(BATCH18)[:4]
    rows[0]["batch"] = "cnndm2"
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = prepare([path], [], tmp_path / "p")
    assert summary["counts"]["preference"] == {"validation": 3, "validation_cnndm": 1}


def test_empty_and_identical_summaries_are_filtered_and_counted(tmp_path: Path) -> None:
    rows = lines(BATCH18)[:5]
    rows[1]["summaries"][0]["text"] = "  "
    rows[2]["summaries"][1]["text"] = rows[2]["summaries"][0]["text"]
    rows.append(rows[3])  # the same line twice
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = prepare([path], [], tmp_path / "p")
    assert summary["counts"]["preference"] == {"validation": 3}
    assert summary["filtered"] == {
        "pairs with an empty summary": 1,
        "pairs of two identical summaries": 1,
        "repeated comparisons": 1,
    } | {k: v for k, v in summary["filtered"].items() if k == "repeated references"}


def test_a_malformed_line_fails_naming_file_and_line_or_is_skipped(tmp_path: Path) -> None:
    good = BATCH18.read_text(encoding="utf-8").splitlines()[:6]
    bad = [*good[:3], '{"info": {"post": "p"', good[3], '{"info": {}, "summaries": []}', *good[4:]]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(bad) + "\n", encoding="utf-8")
    with pytest.raises(MalformedLine, match=rf"^{path} line 4: not valid JSON"):
        read_comparisons(path)
    skipped = Skipped()
    assert len(read_comparisons(path, skipped)) == 6 and skipped.count == 2
    assert "line 6" in skipped.examples[1]
    summary = prepare([path], [], tmp_path / "p", skip_malformed=True)
    assert summary["skipped"]["count"] == 2 and summary["counts"]["preference"] == {"validation": 6}
    assert "| malformed lines skipped | 2 |" in (tmp_path / "p/preference/README.md").read_text()
    with pytest.raises(MalformedLine):
        prepare([path], [], tmp_path / "q")
    assert not (tmp_path / "q" / "preference").exists()  # nothing half-written


def test_csv_missing_columns_and_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("query,summary\nq,s\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) reference_responses"):
        read_references(path)
    path.write_text('query,reference_responses\n"a\nb", ref\n,x\n', encoding="utf-8")
    with pytest.raises(MalformedLine, match=rf"^{path} line 4: needs a query"):
        read_references(path)
    assert len(read_references(path, Skipped())) == 1


@needs_shared
def test_full_batch18_yields_674_rows(tmp_path: Path) -> None:
    full = SHARED / "comparisons_batch18.jsonl"
    summary = prepare([full], [SHARED / "validation_sample_oai1b.csv"], tmp_path / "p")
    assert summary["counts"]["preference"] == {"validation": 674}
    assert check_preference_rows(tmp_path / "p", [full]) == 674
    with (SHARED / "validation_sample_oai1b.csv").open(encoding="utf-8", newline="") as f:
        references = list(csv.DictReader(f))
    sft = lines(tmp_path / "p" / "sft" / "validation.jsonl")
    pairs = {(r["prompt"], r["completion"]) for r in sft}
    assert len(references) == 300  # each one there, once (a comparison's `ref` may hold it too)
    for row in references:
        assert (row["query"], " " + row["reference_responses"].strip()) in pairs
    assert len(sft) == len(pairs)


def test_cli_prepare_and_usage_errors(tmp_path: Path, usage_error, capsys) -> None:
    from kinrl.cli import main

    out = tmp_path / "p"
    assert main(["tldr", "prepare", "--comparisons", str(EDITS), "--out", str(out)]) == 0
    assert "preference: validation 5" in capsys.readouterr().out
    assert "is not empty" in usage_error(["tldr", "prepare", "--comparisons", str(EDITS),
                                          "--out", str(out)])  # fmt: skip
    assert main(["tldr", "prepare", "--comparisons", str(EDITS), "--out", str(out),
                 "--overwrite"]) == 0  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text(EDITS.read_text().splitlines()[0] + "\nnot json\n", encoding="utf-8")
    line = usage_error(["tldr", "prepare", "--comparisons", str(bad), "--out", str(tmp_path / "x")])
    assert f"{bad} line 2: not valid JSON" in line
    assert main(["tldr", "prepare", "--comparisons", str(bad), "--out", str(tmp_path / "x"),
                 "--skip-malformed"]) == 0  # fmt: skip
    assert "skipped 1 malformed" in capsys.readouterr().out
    assert "--holdout" in usage_error(["tldr", "prepare", "--comparisons", str(EDITS),
                                       "--out", str(tmp_path / "y"), "--holdout", "1"])  # fmt: skip
    assert "--hub must be one of" in usage_error(["tldr", "prepare", "--hub", "x/y",
                                                  "--out", str(tmp_path / "y")])  # fmt: skip
    assert "no sft/ folder" in usage_error(["tldr", "train", "--data", str(tmp_path),
                                            "--out", str(tmp_path / "r"), "--smoke"])  # fmt: skip
    assert "not a run folder" in usage_error(["tldr", "eval", "--run", str(tmp_path),
                                              "--data", str(out), "--out", str(tmp_path / "e"),
                                              "--rm", str(tmp_path)])  # fmt: skip


def test_win_rate_order_is_random_logged_and_undone() -> None:
    from evaluators.tldr import bootstrap, rouge, win_rate

    prompts = [f"p{i}" for i in range(40)]
    policy = ["a much longer policy summary"] * 40
    references = ["short"] * 40

    def longer(prompts, a, b):  # a judge callable: the longer summary wins
        return [float(len(y) > len(x)) for x, y in zip(a, b, strict=True)]

    wins, log = win_rate(longer, prompts, policy, references, seed=3)
    assert wins == [1.0] * 40  # the policy wins whichever side it was shown on
    shown_first = [entry["a"] for entry in log]
    assert 5 < shown_first.count("policy") < 35  # the order was drawn, and logged
    assert all((e["verdict"] == "A") == (e["a"] == "policy") for e in log)
    assert win_rate(longer, prompts, policy, references, seed=3)[1] == log  # seeded
    tie = win_rate(lambda p, a, b: [0.5] * len(p), prompts, policy, references)[0]
    assert tie == [0.5] * 40
    with pytest.raises(ValueError, match="must return 0"):
        win_rate(lambda p, a, b: [2] * len(p), prompts, policy, references)
    scores = rouge(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert scores["rouge1"][0] == pytest.approx(5 / 6) and scores["rougeL"][0] > 0.6
    interval = bootstrap([0.0, 1.0] * 50)
    assert interval["low"] < 0.5 < interval["high"] and interval["mean"] == 0.5


def test_eval_of_a_csv_of_summaries(tmp_path: Path, capsys) -> None:
    """`kinrl tldr eval --responses CSV`: a model's summaries from a CSV, no run, no judge."""
    from evaluators.report import unmatched_numbers
    from evaluators.tldr import rouge
    from kinrl.cli import main

    assert main(["tldr", "eval", "--responses", str(CSV), "--out", str(tmp_path / "r")]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    with CSV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = rouge([r["postprocessed_response"].strip() for r in rows],
                     [r["reference_responses"].strip() for r in rows])["rougeL"]  # fmt: skip
    entry = results["runs"]["responses"]
    assert entry["rouge"]["rougeL"]["mean"] == pytest.approx(sum(expected) / len(expected))
    assert entry["win_rate"] is None and results["prompts"] == 48
    assert entry["lengths"]["n"] == 48 and entry["lengths"]["empty"] == 0
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert not unmatched_numbers(markdown, results)
    assert "responses: ROUGE-L" in capsys.readouterr().out


def test_hub_rows_map_to_the_same_records(tmp_path: Path, monkeypatch) -> None:
    """The hub readers' mapping, on rows shaped as the hub's (datasets.load_dataset replaced:
    no network in the tests; the live hub was not reached here)."""
    import datasets

    from tasks.tldr import sources

    tldr_rows = lines(BATCH18)[:3]
    cnndm = {**lines(BATCH18)[3], "batch": "cnndm0",
             "info": {"id": "a1", "post": None, "title": None, "subreddit": None,
                      "article": "An article.\nIt goes on."}}  # fmt: skip
    hub = {
        sources.HUB_COMPARISONS: {"train": tldr_rows, "validation": [cnndm]},
        sources.HUB_REFERENCES: {
            "train": [
                {
                    "id": "t3_x",
                    "subreddit": "tifu",
                    "title": "T",
                    "post": "P",
                    "summary": "a summary",
                }
            ]
        },
        sources.HUB_TRL_SFT: {
            "test": [
                {"prompt": "SUBREDDIT: r/a\n\nTITLE: t\n\nPOST: p\n\nTL;DR:", "completion": " done"}
            ]
        },
    }
    calls = []

    def load_dataset(name, config=None):
        calls.append((name, config))
        if name not in hub:
            raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")
        return hub[name]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    comparisons = sources.hub_comparisons()
    assert calls[0] == (sources.HUB_COMPARISONS, "comparisons")
    assert [c.post_id for c in comparisons] == [r["info"]["id"] for r in tldr_rows] + ["a1"]
    assert comparisons[-1].post.startswith("An article.")
    references = sources.hub_references() | sources.hub_references(sources.HUB_TRL_SFT)
    assert references["train"][0].query == preprocess.format_query("tifu", "T", "P")
    assert references["test"][0].reference == " done"
    summary = prepare([], [], tmp_path / "p", hub_comparisons=comparisons,
                      hub_references=references)  # fmt: skip
    assert summary["counts"]["preference"] == {"validation": 3, "validation_cnndm": 1}
    assert summary["counts"]["sft"]["train"] == 1 and summary["counts"]["sft"]["test"] == 1
    with pytest.raises(ValueError, match=r"^--hub nobody/nothing cannot be loaded: Couldn't"):
        sources.hub_references("nobody/nothing")


def test_recipes_and_stage_options(tmp_path: Path, usage_error) -> None:
    from trainers.tldr import GPU_RECIPE, SMOKE_RECIPE, stage_config

    prepare([BATCH18], [CSV], tmp_path / "p", holdout=0.3)
    sft = stage_config("sft", GPU_RECIPE, tmp_path / "p" / "sft")
    assert (sft.learning_rate, sft.batch_size, sft.steps) == (3e-6, 128, 1)  # one epoch
    rm = stage_config("rm", GPU_RECIPE, tmp_path / "p" / "preference", {"batch_size": 8})
    train_pairs = len(lines(tmp_path / "p" / "preference" / "train.jsonl"))
    assert (rm.learning_rate, rm.steps) == (3e-6, round(train_pairs / 8))
    assert GPU_RECIPE.options["rm"]["batch_size"] == 64
    dpo = stage_config("dpo", GPU_RECIPE, tmp_path / "p" / "preference")
    assert (dpo.beta, dpo.batch_size) == (0.05, 64)
    ppo = stage_config("ppo", GPU_RECIPE, tmp_path / "p" / "sft", {"reward": "rm:runs/rm"})
    assert ppo.prompts_per_step * ppo.group_size == 512  # episodes per update
    assert (ppo.temperature, ppo.beta, ppo.learning_rate) == (0.7, 0.05, 3e-6)
    assert ppo.max_new_tokens == 53
    assert stage_config("sft", SMOKE_RECIPE, tmp_path / "p" / "sft", {"steps": 3}).steps == 3
    base = ["tldr", "train", "--data", str(tmp_path / "p"), "--out", str(tmp_path / "r"),
            "--init", "gpt2"]  # fmt: skip
    assert "sft stage: grad_accum must be" in usage_error([*base, "--set", "sft.grad_accum=0"])
    assert "has no option 'nope'" in usage_error([*base, "--set", "rm.nope=1"])
    assert "--set: must look like" in usage_error([*base, "--set", "grpo.beta=1"])
    assert "dpo stage: loss must be one of" in usage_error([*base, "--dpo-loss", "x"])
    assert not (tmp_path / "r").exists()  # nothing started


def test_api_judge_prompt_and_verdicts(monkeypatch) -> None:
    """The API judge against a local OpenAI-compatible server (no network): the prompt holds
    the post and both summaries, and the reply's `Preferred:` line is the verdict."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from evaluators import tldr_judge

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers["Authorization"], body))
            prompt = body["messages"][0]["content"]
            a = prompt.split("Summary A:\n")[1].split("\n")[0]
            b = prompt.split("Summary B:\n")[1].split("\n")[0]
            verdict = "" if a == b else ("A" if len(a) > len(b) else "B")
            content = f"Comparison: the longer one.\nPreferred: {verdict}" if verdict else "?"
            reply = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("KINRL_JUDGE_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
        query = preprocess.format_query("tifu", "A title", "The post.\nMore of it.")
        verdicts = tldr_judge.api_judge([query] * 3, ["long summary", "x", "same"],
                                        ["short", "longer summary", "same"])  # fmt: skip
    finally:
        server.shutdown()
    assert verdicts == [0.0, 1.0, 0.5]
    path, auth, body = seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer test-key"
    assert body["model"] == "gpt-4o" and body["temperature"] == 0
    prompt = body["messages"][0]["content"]
    assert "Post:\nThe post.\nMore of it.\n\nSummary A:\nlong summary\n" in prompt
    assert "TITLE" not in prompt and prompt.endswith('Preferred: <"A" or "B">')
    assert tldr_judge.parse_verdict('Comparison: ...\nPreferred: "B"') == 1.0
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        tldr_judge.api_judge([query], ["a"], ["b"])
