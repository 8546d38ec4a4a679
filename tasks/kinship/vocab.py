"""Every word the kinship task can write, for word-level tokenizers.

Built from the same templates and term rules the generator uses (so it cannot drift from them),
plus the name pools of the requested locales and the numbers a count can take.
"""

from __future__ import annotations

import re

from tasks.kinship.names import name_pool
from tasks.kinship.render import _POSSESSIVE, _WORDS, BOTH, TEMPLATES
from tasks.kinship.terms import all_terms, plural

# Words of the question, reasoning and answer templates (generator.py, render.py).
FIXED_WORDS = [
    "How",
    "is",
    "related",
    "to",
    "Who",
    "many",
    "does",
    "have",
    "Is",
    "Question",
    "Answer",
    "So",
    "not",
    "yes",
    "no",
    "married",
    "and",
    "are",
    "the",
    "of",
    "full",
    "siblings",
    "has",
    "a",
]
PUNCTUATION = (".", ",", "?", ":", "'s", "\n")
MAX_COUNT = 100


def _template_words() -> set[str]:
    words: set[str] = set()
    for text in [t for options in TEMPLATES.values() for t, _ in options] + list(BOTH.values()):
        words.update(re.sub(r"\{\w+\}", " ", text).replace("'s", " ").replace(".", " ").split())
    for mine, theirs in _WORDS.values():
        words.update(mine + theirs)
    words.update(_POSSESSIVE)
    return words


def vocabulary(locales: str = "en_US", max_generations: int = 8) -> list[str]:
    """Sorted task words: template words, relation terms and their plurals (split on spaces),
    names of the locales' pools, numbers 0..MAX_COUNT and punctuation tokens."""
    words = set(FIXED_WORDS) | _template_words() | set(PUNCTUATION)
    for term in all_terms(max_generations):
        words.update(term.split())
        words.update(plural(term).split())
    pool = name_pool(locales, "all")
    words.update(pool.female)
    words.update(pool.male)
    words.update(str(n) for n in range(MAX_COUNT + 1))
    return sorted(words)
