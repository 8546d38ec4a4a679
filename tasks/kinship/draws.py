"""Random draws on a `random.Random`, written out so that compiled code calls them natively.

Each is, bit for bit, the draw CPython's own method makes (`Random._randbelow`, `choice`,
`shuffle`, `sample`, `randrange(n)`, `randint`): every stream and every generated dataset
stays what it was, and no longer hangs on a private method of the standard library
(`tests/test_draws.py` compares them with the methods).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def below(rng: random.Random, n: int) -> int:
    """A uniform integer in [0, n) for n >= 1: `getrandbits(n.bit_length())` until one fits
    (CPython's `_randbelow_with_getrandbits`; also `randrange(n)`)."""
    if n <= 0:
        raise ValueError(f"empty range for below({n})")
    k = n.bit_length()
    r = rng.getrandbits(k)
    while r >= n:
        r = rng.getrandbits(k)
    return r


def randint(rng: random.Random, low: int, high: int) -> int:
    """A uniform integer in [low, high], as `rng.randint(low, high)` draws it."""
    if high < low:
        raise ValueError(f"empty range for randint({low}, {high})")
    return low + below(rng, high - low + 1)


def choice(rng: random.Random, seq: Sequence[T]) -> T:
    """A uniform element of a non-empty sequence, as `rng.choice(seq)` draws it."""
    if not seq:
        raise IndexError("cannot choose from an empty sequence")
    return seq[below(rng, len(seq))]


def shuffle(rng: random.Random, x: list[T]) -> None:
    """Shuffle x in place, as `rng.shuffle(x)` does."""
    for i in range(len(x) - 1, 0, -1):
        j = below(rng, i + 1)
        x[i], x[j] = x[j], x[i]


def sample(rng: random.Random, population: Sequence[T], k: int) -> list[T]:
    """k distinct elements in selection order, as `rng.sample(population, k)` draws them: a
    partial shuffle of a copy for small populations, rejection of repeats for large ones."""
    n = len(population)
    if not 0 <= k <= n:
        raise ValueError("sample larger than population or is negative")
    result: list[T] = []
    setsize = 21  # CPython's cut-over between the two methods, kept for the same draws
    if k > 5:
        setsize += 4 ** math.ceil(math.log(k * 3, 4))
    if n <= setsize:
        pool = list(population)
        for i in range(k):
            j = below(rng, n - i)
            result.append(pool[j])
            pool[j] = pool[n - i - 1]
    else:
        selected: set[int] = set()
        for _ in range(k):
            j = below(rng, n)
            while j in selected:
                j = below(rng, n)
            selected.add(j)
            result.append(population[j])
    return result
