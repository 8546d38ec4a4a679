"""The kinship task: family trees in text, questions with exact answers (docs/spec/kinship.md).

Public API:
    KinshipConfig, LEVELS        the knobs and the ten difficulty presets
    make_example(config, seed, index, split)   one record, random access by (seed, index)
    KinshipTask                  a dataset-like view: task[index] -> record
    parse_answer, score          the gold reward, (record, completion) -> [0, 1]
    relatives, relation          the relation engine over a KinGraph
    generate_dataset             write a dataset folder (what `kinrl generate` runs)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# First: decides whether the compiled or the source modules are imported (tasks.kinship.native).
from tasks.kinship.native import ENGINE  # isort: skip
from tasks.kinship.config import LEVELS, QUESTION_TYPES, GenerationError, KinshipConfig
from tasks.kinship.generator import make_example
from tasks.kinship.graph import KinGraph
from tasks.kinship.relations import relation, relatives
from tasks.kinship.scoring import parse_answer, score, score_answer
from tasks.kinship.terms import FAMILIES


@dataclass(frozen=True)
class KinshipTask:
    """Random-access view of a kinship split: `task[i]` is item `offset + i` under `seed`."""

    config: KinshipConfig
    seed: int = 0
    size: int = 1000
    split: str = "train"
    offset: int = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a task of size {self.size}")
        return make_example(self.config, self.seed, self.offset + index, self.split)

    @staticmethod
    def score(record: dict[str, Any], completion: str) -> float:
        return score(record, completion)


def generate_dataset(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See `tasks.kinship.dataset.generate_dataset` (imported lazily: it pulls in tqdm/pyarrow)."""
    from tasks.kinship.dataset import generate_dataset as _generate

    return _generate(*args, **kwargs)


__all__ = [
    "ENGINE",
    "FAMILIES",
    "LEVELS",
    "QUESTION_TYPES",
    "GenerationError",
    "KinGraph",
    "KinshipConfig",
    "KinshipTask",
    "generate_dataset",
    "make_example",
    "parse_answer",
    "relation",
    "relatives",
    "score",
    "score_answer",
]
