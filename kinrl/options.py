"""Command-line options from config dataclasses: the one mechanism every `kinrl` command uses.

`add_config_options(group, config_class)` adds one `--option-name` per field, with the field's
doc as its help and its default shown; `given(args, config_class)` collects the options the
user actually gave (the others keep the dataclass's defaults). A config's `ValueError` names a
field ("max_hops must be ..."); `as_option` turns that into the option ("--max-hops must be
...") for any option the parser has, so no list of names is kept by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any, NoReturn


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2."""


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help lines end with "(default: X)" where there is a default worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if action.required or default is None or default is False or default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are `UsageError`s and whose help shows defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _ShowDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def integer(low: int, high: int | None, allowed: str) -> Any:
    """An argparse type for integers in low..high (None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed} (got {text!r})")
        return value

    return parse


def key_values(text: str) -> dict[str, float]:
    """An argparse type for `a=1,b=2.5` -> {"a": 1.0, "b": 2.5}."""
    out = {}
    for part in csv(text):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must look like gender_swap=2,inverse=1 (got {text!r})"
            ) from None
    return out


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_config_options(
    group: Any, config_class: type, skip: tuple[str, ...] = (), show_defaults: bool = True
) -> None:
    """One option per field of the flat dataclass `config_class` (but `skip`): bool fields as
    --x/--no-x, numbers and strings typed, tuples of numbers as N values, other tuples as
    comma-separated lists. Options left out are absent from the parsed namespace."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if f.name in skip:
            continue
        kind, default = hints[f.name], f.default
        help_text = f.metadata.get("help", "")
        if show_defaults and default is not dataclasses.MISSING:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            help_text += f" (default {shown})" if shown != "" else " (default none)"
        common = {"help": help_text, "default": argparse.SUPPRESS}
        if kind is bool:
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **common)
        elif kind in (int, float, str):
            group.add_argument(flag(f.name), type=kind, metavar=f.name.upper(), **common)
        elif typing.get_args(kind) and all(a is float for a in typing.get_args(kind)):
            group.add_argument(flag(f.name), type=float, nargs=len(typing.get_args(kind)),
                               metavar="W", **common)  # fmt: skip
        else:
            group.add_argument(flag(f.name), type=csv, metavar="A,B", **common)


def given(args: argparse.Namespace, config_class: type, skip: tuple[str, ...] = ()) -> dict:
    """The fields of `config_class` the user gave as options, by field name."""
    names = {f.name for f in dataclasses.fields(config_class)} - set(skip)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}


def as_option(message: str, parser: argparse.ArgumentParser) -> str:
    """A config's error as the user typed it: 'max_hops must be ...' -> '--max-hops must be
    ...', every field name that is an option of `parser` (the first word, and names with an
    underscore elsewhere); the message cut to its first line."""
    message = (message.strip().splitlines() or [""])[0]
    options = parser._option_string_actions

    def option(match: re.Match[str]) -> str:
        word = match.group(0)
        first = match.start() == 0
        return flag(word) if (first or "_" in word) and flag(word) in options else word

    # Whole words only: not inside a path, a quoted value or `0..steps-1`.
    return re.sub(r"(?<![^\s(])[a-z][a-z0-9_]*(?=[\s,;:)]|$)", option, message)
