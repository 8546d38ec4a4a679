"""tasks.kinship.draws makes exactly the draws of random.Random's own methods."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.kinship import draws

seeds = st.integers(0, 2**32)


def _pair(seed: int) -> tuple[random.Random, random.Random]:
    return random.Random(seed), random.Random(seed)


def _same_state_after(theirs: random.Random, ours: random.Random) -> None:
    assert theirs.getstate() == ours.getstate()


@given(seeds, st.integers(1, 2**70))
def test_below_is_randrange(seed: int, n: int) -> None:
    theirs, ours = _pair(seed)
    assert [theirs.randrange(n) for _ in range(5)] == [draws.below(ours, n) for _ in range(5)]
    _same_state_after(theirs, ours)


@given(seeds, st.integers(-50, 50), st.integers(0, 100))
def test_randint(seed: int, low: int, span: int) -> None:
    theirs, ours = _pair(seed)
    assert theirs.randint(low, low + span) == draws.randint(ours, low, low + span)
    _same_state_after(theirs, ours)


@given(seeds, st.lists(st.integers(), min_size=1, max_size=40))
def test_choice_and_shuffle(seed: int, items: list[int]) -> None:
    theirs, ours = _pair(seed)
    assert theirs.choice(items) == draws.choice(ours, items)
    mine, yours = list(items), list(items)
    theirs.shuffle(yours)
    draws.shuffle(ours, mine)
    assert mine == yours
    _same_state_after(theirs, ours)


@given(seeds, st.integers(0, 400), st.data())
def test_sample_small_and_large_populations(seed: int, n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    theirs, ours = _pair(seed)
    population = list(range(n))
    assert theirs.sample(population, k) == draws.sample(ours, population, k)
    _same_state_after(theirs, ours)


def test_empty_ranges_are_refused() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError):
        draws.below(rng, 0)
    with pytest.raises(ValueError):
        draws.randint(rng, 3, 2)
    with pytest.raises(IndexError):
        draws.choice(rng, [])
    with pytest.raises(ValueError):
        draws.sample(rng, [1, 2], 3)
