"""One definition per parameter: a step's config fields carry type, default and help.

Each step declares its parameters once, as fields of its frozen config dataclass written with
`option(default, help)`. `add_arguments` derives the step's command-line options from those
fields and `from_args` builds the config back from the parsed arguments, so the CLI cannot
drift from the config; a test checks the KFP components and the pipeline against them.

"Unset" has one spelling in every layer (config, CLI, component, pipeline): the empty string
for text ("no weights", "no fine-tuning"), 0 for numbers ("the model's default size", "all
images", "off") and () for tuples. None is not a parameter value.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from typing import Any


class ConfigError(ValueError):
    """A bad parameter; the message names the parameter and the problem."""


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    flag: str = "",
    aliases: tuple[str, ...] = (),
    choices: tuple[str, ...] = (),
    parse: Callable[[str], Any] | None = None,
    cli: bool = True,
) -> Any:
    """A config field with its help; `flag` overrides the option name derived from the field.

    `aliases` are older spellings still accepted; `parse` turns the command-line text into the
    field's value (for tuples); `cli=False` keeps the field off the command line.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "aliases": aliases,
        "choices": choices,
        "parse": parse,
        "cli": cli,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default value of a config class (without constructing it)."""
    return {
        item.name: defaults_of_field(item)
        for item in dataclasses.fields(cls)
        if item.default is not dataclasses.MISSING
        or item.default_factory is not dataclasses.MISSING
    }


def field_types(cls: type) -> dict[str, type]:
    """Field name -> resolved type of a config class."""
    hints = typing.get_type_hints(cls)
    return {item.name: hints[item.name] for item in dataclasses.fields(cls)}


def flag_of(item: dataclasses.Field) -> str:
    """The command-line option of a field: `--dataset-uri` for `dataset_uri`."""
    return item.metadata.get("flag") or "--" + item.name.replace("_", "-")


def _add_field(
    parser: argparse.ArgumentParser, item: dataclasses.Field, kind: type, required: bool, default
) -> None:
    meta = item.metadata
    names = [flag_of(item), *meta.get("aliases", ())]
    help_text = meta.get("help", "")
    if kind is bool:
        if default:
            names = ["--no-" + flag_of(item)[2:]]
            help_text = f"turn off: {help_text}"
            parser.add_argument(*names, dest=item.name, action="store_false", help=help_text)
        else:
            parser.add_argument(*names, dest=item.name, action="store_true", help=help_text)
        return
    parse = meta.get("parse") or kind
    extra: dict[str, Any] = {"choices": meta["choices"]} if meta.get("choices") else {}
    if required:
        extra["required"] = True
    else:
        extra["default"] = default
        help_text = f"{help_text} (default: {default!r})" if help_text else ""
    parser.add_argument(*names, dest=item.name, type=parse, help=help_text, **extra)


def defaults_of_field(item: dataclasses.Field) -> Any:
    """A field's default (calling its factory)."""
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    required: tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Add one option per command-line field of `cls`.

    `required` names fields the command line must give; `overrides` replaces field defaults
    (for a subcommand that picks, say, the model).
    """
    types = field_types(cls)
    values = {**defaults(cls), **(overrides or {})}
    for item in dataclasses.fields(cls):
        if item.metadata.get("cli", True):
            required_here = item.name in required
            _add_field(parser, item, types[item.name], required_here, values.get(item.name))


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The config the parsed arguments describe; `overrides` set fields the CLI does not."""
    values = {
        item.name: getattr(args, item.name)
        for item in dataclasses.fields(cls)
        if item.metadata.get("cli", True) and hasattr(args, item.name)
    }
    return cls(**{**values, **overrides})


def names(text: str) -> tuple[str, ...]:
    """Parse `a,b,c` into a tuple of names (empty text: ())."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
