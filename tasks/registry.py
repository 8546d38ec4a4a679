"""Task registry: name -> (config class, record maker, gold reward)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks import kinship


@dataclass(frozen=True)
class TaskSpec:
    name: str
    config_class: type
    make_example: Callable[..., dict[str, Any]]
    score: Callable[[dict[str, Any], str], float]


REGISTRY: dict[str, TaskSpec] = {
    "kinship": TaskSpec("kinship", kinship.KinshipConfig, kinship.make_example, kinship.score),
}


def get_task(name: str) -> TaskSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"task must be one of {', '.join(REGISTRY)} (got {name!r})") from None
