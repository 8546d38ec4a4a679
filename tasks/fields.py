"""`documented(help, default=...)`: a dataclass field whose one-line doc the CLI shows in --help."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def documented(text: str, **kwargs: Any) -> Any:
    """A dataclass field carrying `text` as metadata["help"] (kwargs go to `field`)."""
    return field(metadata={"help": text}, **kwargs)
