"""The page in a real browser: headless Debian Chromium driven by Playwright (its own browser
downloads are not reachable here, so `executable_path` points at /usr/bin/chromium).

The test generates a puzzle and sees its tree, asks two runs, votes once with a key, finds the
vote in the export, and checks that a dataset puzzle whose names are `<script>` and `<img
onerror>` shows them as text and runs neither. The runs are the two baselines (no model: the
trained-run path is tested through the API in test_serve_train.py). With
KINRL_SCREENSHOT=PATH it also saves a screenshot of the page there (the README's).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api")

from kinrl.serve.app import ServeState, create_app  # noqa: E402
from kinrl.serve.puzzles import DataSource  # noqa: E402
from kinrl.serve.runs import Negative, Reference  # noqa: E402
from kinrl.serve.store import Store  # noqa: E402
from tests.serve_support import EVIL, EVIL_IMG, hostile_data, serving  # noqa: E402

CHROMIUM = os.environ.get("KINRL_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
)


@pytest.fixture
def server(tmp_path):
    data = DataSource(hostile_data(tmp_path / "data"))
    store = Store(tmp_path / "labels.db")
    state = ServeState(
        store=store, runs={"reference": Reference(), "negative": Negative()}, data=data
    )
    with serving(create_app(state, allowed_hosts=["127.0.0.1"])) as url:
        yield url
    store.close()


@pytest.fixture
def page():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


def test_the_page_end_to_end(server, page):
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")

    # A generated puzzle and its tree.
    page.select_option("#difficulty", "3")
    page.fill("#seed", "0")
    page.fill("#index", "5")
    page.click("#new-puzzle")
    page.wait_for_selector("#tree g.person")
    meta = page.text_content("#puzzle-meta")
    assert "level 3, seed 0, index 5" in meta
    people = int(meta.split(" people")[0].rsplit("· ", 1)[1])
    assert page.locator("#tree g.person").count() == people > 2
    assert page.text_content("#question").strip().startswith(("How", "Who", "Is"))

    # Two runs' answers, marked by the gold reward.
    page.select_option("#run-1", "reference")
    page.select_option("#run-2", "negative")
    page.fill("#samples", "1")
    page.click("#ask")
    page.locator("#answers li").nth(3).wait_for()  # (the page's CSP forbids wait_for_function)
    cards = page.locator("#answers .card")
    assert cards.nth(0).locator("li.right").count() == 2  # the reference: greedy and sample
    assert cards.nth(1).locator("li.wrong").count() == 2

    # One blind vote, by keyboard; the annotator's name is asked once.
    page.click("nav.tabs button[data-tab=arena]")
    page.wait_for_selector("#name-dialog[open]")
    page.fill("#name-input", "Tess")
    page.click("#name-form button[type=submit]")
    page.wait_for_selector("#annotator-name:text-is('Tess')")
    page.click("#new-battle")
    page.wait_for_selector("#battle:not([hidden]) #text-a")
    assert page.text_content("#reveal-a") == ""  # blind
    page.fill("#rationale", "A states the right answer")
    page.locator("#rationale").blur()
    page.keyboard.press("1")
    page.wait_for_selector("#vote-result:has-text('stored')")
    revealed = page.text_content("#reveal-a") + page.text_content("#reveal-b")
    assert "reference" in revealed and "negative" in revealed
    vote_id = int(page.text_content("#vote-result").split("vote ", 1)[1].split(" ", 1)[0])
    with urllib.request.urlopen(server + "/api/votes/export") as response:
        records = [json.loads(line) for line in response.read().decode().splitlines()]
    [mine] = [r for r in records if r["vote_id"] == vote_id]
    assert mine["annotator"] == "Tess" and mine["vote"] == "a"
    assert mine["rationale"] == "A states the right answer"
    page.click("nav.tabs button[data-tab=leaderboard]")
    page.wait_for_selector("#board-runs tbody tr")
    assert "Tess" in page.text_content("#board-annotators")

    # A dataset puzzle whose names are HTML: shown as text, never run.
    page.click("nav.tabs button[data-tab=explore]")
    page.select_option("#source", "data")
    page.select_option("#split", "test")
    page.fill("#index", "0")
    page.click("#new-puzzle")
    page.wait_for_selector("#puzzle-meta:has-text('--data test #0')")
    names = page.locator("#tree g.person text").all_text_contents()
    assert EVIL in names and EVIL_IMG in names
    text = page.text_content("#description") + page.text_content("#question")
    assert EVIL in text or EVIL_IMG in text
    assert page.evaluate("window.__xss") is None
    assert page.locator("script").count() == 1 and page.locator("img").count() == 0
    if os.environ.get("KINRL_SCREENSHOT"):
        _screenshot(page, os.environ["KINRL_SCREENSHOT"])
    assert not errors, errors


def _screenshot(page, path: str) -> None:
    """The README's picture: a level-4 puzzle and both runs' answers."""
    page.select_option("#source", "generate")
    page.select_option("#difficulty", "4")
    page.fill("#seed", "0")
    page.fill("#index", "11")
    page.click("#new-puzzle")
    page.wait_for_selector("#puzzle-meta:has-text('level 4')")
    page.fill("#samples", "2")
    page.click("#ask")
    page.locator("#answers li").nth(5).wait_for()
    page.screenshot(path=path, full_page=True)
