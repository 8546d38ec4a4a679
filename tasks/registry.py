"""The tasks, the dataset kinds they write, and the fields every record of a kind has.

The one place these names are declared: `kinrl generate` writes a kind's full name as
config.json's "kind", the trainers and evaluators check it on reading, and `RECORD_FIELDS`
is what they rely on finding in every record. Cheap to import (the standard library only):
a task's implementation (its config class, record maker and gold reward, which pull in the
generator) is imported only when a `TaskSpec` is asked for one of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DatasetKind:
    """A kind of dataset folder: `name` is config.json's "kind" ("kinship/examples"), `short`
    the task's own name for it (`kinrl generate --kind examples`), `fields` the fields every
    record of the kind has."""

    name: str
    short: str
    fields: tuple[str, ...]


EXAMPLES = DatasetKind(
    "kinship/examples",
    "examples",
    ("prompt", "completion", "answer", "answers", "question_type", "hops"),
)
PREFERENCE = DatasetKind(
    "kinship/preference", "preference", ("prompt", "chosen", "rejected", "flipped")
)
FEEDBACK = DatasetKind("kinship/feedback", "feedback", ("prompt", "completion", "label"))

EXAMPLES_KIND = EXAMPLES.name
PREFERENCE_KIND = PREFERENCE.name
FEEDBACK_KIND = FEEDBACK.name


def _load(target: str) -> Any:
    """The object named by "package.module:attribute", imported on first use."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class TaskSpec:
    """A task: its name, the dataset kinds it writes, and where its config class, record maker
    `(config, seed, index, split) -> record` and gold reward `(record, completion) -> [0, 1]`
    live ("module:attribute", imported when first read)."""

    name: str
    kinds: tuple[DatasetKind, ...]
    config_target: str
    make_example_target: str
    score_target: str

    @property
    def config_class(self) -> type:
        return _load(self.config_target)

    @property
    def make_example(self) -> Callable[..., dict[str, Any]]:
        return _load(self.make_example_target)

    @property
    def score(self) -> Callable[[dict[str, Any], str], float]:
        return _load(self.score_target)

    def kind(self, short: str) -> DatasetKind:
        """The kind of this task called `short`; ValueError naming the kinds there are."""
        for kind in self.kinds:
            if kind.short == short:
                return kind
        names = ", ".join(kind.short for kind in self.kinds)
        raise ValueError(f"--kind must be one of {names} (got {short!r})")


KINSHIP = TaskSpec(
    "kinship",
    (EXAMPLES, PREFERENCE, FEEDBACK),
    "tasks.kinship:KinshipConfig",
    "tasks.kinship:make_example",
    "tasks.kinship:score",
)

REGISTRY: dict[str, TaskSpec] = {KINSHIP.name: KINSHIP}

# Text datasets without a gold reward (`kinrl tldr prepare`, `tasks/tldr/`): records of the same
# shape as the kinship kinds of the same short name, with only the fields the trainers read.
# The online methods train on their prompts only with a reward model (`--reward rm:RUN`), and
# `kinrl eval` (the kinship gold reward) refuses them.
TLDR_EXAMPLES = DatasetKind("tldr/examples", "examples", ("prompt", "completion"))
TLDR_PREFERENCE = DatasetKind("tldr/preference", "preference", ("prompt", "chosen", "rejected"))
TLDR_FEEDBACK = DatasetKind("tldr/feedback", "feedback", ("prompt", "completion", "label"))
TEXT_KINDS = (TLDR_EXAMPLES, TLDR_PREFERENCE, TLDR_FEEDBACK)

KINDS = tuple(kind.short for kind in KINSHIP.kinds)  # the kinship kinds, as `--kind` names them

# The fields every record of a dataset kind has, by the kind's full name.
RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    kind.name: kind.fields for spec in REGISTRY.values() for kind in spec.kinds
}
RECORD_FIELDS.update({kind.name: kind.fields for kind in TEXT_KINDS})

# The dataset kinds a trainer of a kind reads: its own, and the text kinds of the same shape.
READS: dict[str, tuple[str, ...]] = {
    kind.name: (kind.name, *(text.name for text in TEXT_KINDS if text.short == kind.short))
    for spec in REGISTRY.values()
    for kind in spec.kinds
}


def reads(kind: str) -> tuple[str, ...]:
    """The folder kinds a trainer of data kind `kind` accepts (`kind` itself at least)."""
    return READS.get(kind, (kind,))


def dataset_kinds() -> tuple[str, ...]:
    """The full names of every task's dataset kinds (the "kind"s a dataset config.json has)."""
    return tuple(RECORD_FIELDS)


def get_task(name: str) -> TaskSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"task must be one of {', '.join(REGISTRY)} (got {name!r})") from None
