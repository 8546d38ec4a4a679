"""The TL;DR preprocessing of the reproduction (Huang et al., 2024, its
`summarize_from_feedback_details`).

* The query is `SUBREDDIT: r/{subreddit}\\n\\nTITLE: {title}\\n\\nPOST: {post}\\n\\nTL;DR:`
  (`QUERY_FORMAT`); a subreddit written with its `r/` prefix loses it first.
* A query longer than the budget (512 GPT-2 tokens) has its post cut at the post's last
  newline, and again, until it fits; a post without a newline left loses its last character
  instead (the reproduction's `_get_query_tokens`: `rindex("\\n")`, else -1).
* A response is its text with exactly one leading space (`" " + text.strip()`); the trainers
  append the EOS. A response whose tokens with that EOS exceed its cap (53 GPT-2 tokens for
  SFT, 169 for the reward model) is cut to cap - 1 tokens, as the reproduction's
  `truncation=True` does, and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.tldr import gpt2

QUERY_FORMAT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
QUERY_TOKENS = 512
SFT_RESPONSE_TOKENS = 53
RM_RESPONSE_TOKENS = 169
_QUERY = re.compile(
    r"\ASUBREDDIT: r/(?P<subreddit>.*?)\n\nTITLE: (?P<title>.*?)\n\nPOST: (?P<post>.*)\n\nTL;DR:\Z",
    re.DOTALL,
)


def subreddit_name(subreddit: str) -> str:
    """'r/AskReddit' and 'AskReddit' -> 'AskReddit'."""
    name = subreddit.strip()
    return name[2:] if name.startswith("r/") else name


def format_query(subreddit: str, title: str, post: str) -> str:
    return QUERY_FORMAT.format(subreddit=subreddit_name(subreddit), title=title, post=post)


def parse_query(query: str) -> dict[str, str] | None:
    """{subreddit, title, post} of a query in `QUERY_FORMAT` (leading white space ignored), or
    None for text of another shape."""
    match = _QUERY.match(query.lstrip())
    return match.groupdict() if match else None


@dataclass(frozen=True)
class Query:
    text: str
    tokens: int  # GPT-2 tokens
    cut: bool  # the post was shortened to fit


def fit_query(subreddit: str, title: str, post: str, budget: int = QUERY_TOKENS) -> Query:
    """The formatted query, its post cut at its last newline until it fits `budget` GPT-2
    tokens. ValueError when even an empty post does not fit (a title too long)."""
    text = format_query(subreddit, title, post)
    tokens, cut = gpt2.count(text), False
    while tokens > budget:
        if not post:
            raise ValueError(f"the query does not fit {budget} GPT-2 tokens even with no post")
        index = post.rfind("\n")
        post = post[:index] if index >= 0 else post[:-1]
        text = format_query(subreddit, title, post)
        tokens, cut = gpt2.count(text), True
    return Query(text, tokens, cut)


def fit_formatted_query(query: str, budget: int = QUERY_TOKENS) -> Query:
    """A query already in `QUERY_FORMAT` (a CSV's), re-formatted and cut like `fit_query`.
    ValueError for a query of another shape that does not fit."""
    fields = parse_query(query)
    if fields is None:
        tokens = gpt2.count(query)
        if tokens > budget:
            raise ValueError(f"the query is not in the TL;DR format and has {tokens} GPT-2 "
                             f"tokens, more than {budget}")  # fmt: skip
        return Query(query, tokens, False)
    return fit_query(fields["subreddit"], fields["title"], fields["post"], budget)


def response(text: str) -> str:
    """The response as trained on: one leading space, no trailing white space."""
    return " " + text.strip()


def cap_response(text: str, cap: int) -> tuple[str, bool]:
    """(`text` cut to `cap` - 1 GPT-2 tokens, so that it and the EOS fit `cap`; whether it was
    cut). `text` is a `response`."""
    ids = gpt2.encode(text)
    if len(ids) + 1 <= cap:
        return text, False
    return gpt2.decode(ids[: cap - 1]).rstrip(), True
