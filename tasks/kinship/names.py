"""Name pools drawn from Faker's locale data, split into a training and a held-out part.

Faker is read once per locale (its person providers' first-name lists), then names are drawn
with the record's own random generator: calling Faker per name would be slow and would tie the
data to Faker's global random state.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import re
from dataclasses import dataclass

from tasks.kinship.terms import all_terms

# One word: letters, with inner apostrophes or hyphens (D'Arcy, Anne-Marie). No spaces or
# dots, so a name is one token and never disturbs the "Answer:" line's normalisation.
_NAME = re.compile(r"^[^\W\d_](?:[^\W\d_]|['’-](?=[^\W\d_]))*$")
POOLS = ("all", "train", "heldout")
HELDOUT_PERCENT = 20


@dataclass(frozen=True, slots=True)
class NamePool:
    female: tuple[str, ...]
    male: tuple[str, ...]


def _is_heldout(name: str) -> bool:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100 < HELDOUT_PERCENT


def valid_name(name: str) -> bool:
    """A usable name: one word of letters, apostrophes and hyphens, not a task word."""
    return bool(_NAME.match(name)) and name.lower() not in _reserved_words()


@functools.cache
def _reserved_words() -> frozenset[str]:
    words = {"answer", "question", "yes", "no", "and", "is", "who", "how", "the"}
    for term in all_terms(4):
        words.update(term.replace("-", " ").split())
    return frozenset(words)


def _provider_names(locale: str) -> tuple[list[str], list[str]]:
    try:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    except ModuleNotFoundError:
        raise ValueError(f"locale must be a Faker locale such as en_US (got {locale!r})") from None
    female = list(getattr(provider, "first_names_female", ()))
    male = list(getattr(provider, "first_names_male", ()))
    if not female or not male:
        raise ValueError(f"locale {locale!r} has no gendered first names in Faker")
    return female, male


@functools.cache
def name_pool(locales: str = "en_US", part: str = "all") -> NamePool:
    """Gendered first names of one or more comma-separated Faker locales.

    `part` selects all names, the training part, or the held-out part (a fixed ~20% chosen by
    a hash of the name, so it is the same on every machine and for every seed). A name that
    appears in both gendered lists is kept only for the first, so gender follows from a name.
    """
    if part not in POOLS:
        raise ValueError(f"name pool must be one of {', '.join(POOLS)} (got {part!r})")
    female: dict[str, None] = {}
    male: dict[str, None] = {}
    for locale in locales.split(","):
        f, m = _provider_names(locale.strip())
        female.update(dict.fromkeys(n for n in f if valid_name(n)))
        male.update(dict.fromkeys(n for n in m if valid_name(n)))
    ambiguous = female.keys() & male.keys()
    pools = []
    for names in (female, male):
        kept = [n for n in names if n not in ambiguous or names is female]
        if part != "all":
            kept = [n for n in kept if _is_heldout(n) == (part == "heldout")]
        pools.append(tuple(sorted(kept)))
    return NamePool(*pools)
