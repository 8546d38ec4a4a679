"""An API judge for `kinrl tldr eval --judge evaluators.tldr_judge:api_judge`: the TL;DR
comparison prompt of the DPO paper (Rafailov et al. 2023, its GPT-4 win-rate prompt for
TL;DR; not checked word for word against the reproduction's own judge), sent to an
OpenAI-compatible chat-completions endpoint.

Configuration (environment): `OPENAI_API_KEY` (required), `KINRL_JUDGE_MODEL` (default
`gpt-4o`), `KINRL_JUDGE_BASE_URL` (default `https://api.openai.com/v1`). Each prompt is one
request at temperature 0; the reply's last `Preferred: A|B` line is the verdict, and a reply
without one counts as a tie (0.5). `kinrl tldr eval` randomises and logs the A/B order; the
replies are kept in `ChatJudge.replies`. Standard library only (urllib).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence

from tasks.tldr.preprocess import parse_query

PROMPT = """Which of the following summaries does a better job of summarizing the most \
important points in the given forum post, without including unimportant or irrelevant \
details? A good summary is both precise and concise.

Post:
{post}

Summary A:
{a}

Summary B:
{b}

FIRST provide a one-sentence comparison of the two summaries, explaining which you prefer \
and why. SECOND, on a new line, state only "A" or "B" to indicate your choice. Your response \
should use the format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"A" or "B">"""
_VERDICT = re.compile(r"^\s*Preferred:\s*\"?([AB])\"?\s*$", re.MULTILINE)


def judge_prompt(query: str, a: str, b: str) -> str:
    """The judge's prompt for a TL;DR query (its post only) and summaries A and B."""
    fields = parse_query(query)
    post = fields["post"] if fields else query
    return PROMPT.format(post=post, a=a.strip(), b=b.strip())


def parse_verdict(reply: str) -> float:
    """0 for A, 1 for B (the last `Preferred:` line), 0.5 when the reply has none."""
    found = _VERDICT.findall(reply)
    return 0.5 if not found else float(found[-1] == "B")


class ChatJudge:
    """A judge callable over an OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(self, model: str, base_url: str, api_key: str, timeout: float = 60.0) -> None:
        self.model, self.url = model, base_url.rstrip("/") + "/chat/completions"
        self.api_key, self.timeout = api_key, timeout
        self.replies: list[str] = []

    def ask(self, prompt: str) -> str:
        body = {"model": self.model, "temperature": 0,
                "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.api_key}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, TimeoutError) as error:
            raise ValueError(f"the judge at {self.url} did not answer: {error}") from None
        try:
            return str(answer["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"the judge at {self.url} gave no chat completion") from None

    def __call__(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[float]:
        verdicts = []
        for query, first, second in zip(prompts, a, b, strict=True):
            reply = self.ask(judge_prompt(query, first, second))
            self.replies.append(reply)
            verdicts.append(parse_verdict(reply))
        return verdicts


def api_judge(prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[float]:
    """`--judge evaluators.tldr_judge:api_judge`: a `ChatJudge` configured from the
    environment (see the module docstring)."""
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise ValueError("the API judge needs OPENAI_API_KEY in the environment")
    judge = ChatJudge(
        os.environ.get("KINRL_JUDGE_MODEL", "gpt-4o"),
        os.environ.get("KINRL_JUDGE_BASE_URL", "https://api.openai.com/v1"),
        key,
    )
    return judge(prompts, a, b)
