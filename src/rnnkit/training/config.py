"""Configuration: a dataclass per task, the command line generated from it.

Each field of a config dataclass is written as ``name: type = default  # help``; the comment
becomes the ``--help`` text, so the dataclass is the only place a setting is described
(the char-rnn and nanoGPT habit of one table of defaults). A config is saved in the run as
``config.json`` and a run is rebuilt from it with :func:`from_dict`, which checks types and
rejects keys it does not know.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import types
import typing
from pathlib import Path

from rnnkit.data.files import atomic_write, read_json

_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


class ConfigError(ValueError):
    """A setting with the wrong name or type; the message says which and what was expected."""


def field_help(cls) -> dict[str, str]:
    """The one-line comment after each field, for every class in the dataclass's bases."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = _FIELD_COMMENT.match(line)
            if match:
                helps[match.group(1)] = match.group(2)
    return helps


def _base_type(hint):
    """Split ``T | None`` into (T, True); anything else into (hint, False)."""
    args = typing.get_args(hint)
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if is_union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def check_value(name: str, value, hint):
    """Return ``value`` converted to the field's type, or raise ConfigError saying why not."""
    base, optional = _base_type(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: expected {base.__name__}, got null")
    if typing.get_origin(base) is typing.Literal:
        if value not in typing.get_args(base):
            raise ConfigError(
                f"{name}: expected one of {list(typing.get_args(base))}, got {value!r}"
            )
        return value
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (base is int and isinstance(value, bool)) or not isinstance(value, base):
        raise ConfigError(f"{name}: expected {base.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls, values: dict):
    """Build ``cls`` from a dict, rejecting unknown keys and values of the wrong type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {unknown} for {cls.__name__}; known: {sorted(names)}"
        )
    return cls(**{k: check_value(k, v, hints[k]) for k, v in values.items()})


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def save(config, path: Path, **extra) -> None:
    """Write the whole config (plus ``extra`` keys such as the task name) as JSON, atomically:
    a run killed mid-write, or processes under torchrun writing it together, leave it whole."""
    text = json.dumps({**extra, **to_dict(config)}, indent=2) + "\n"
    atomic_write(Path(path), text.encode())


def load(cls, path: Path, drop: tuple[str, ...] = ("task",)):
    """Rebuild a config saved by :func:`save`; the keys in ``drop`` are not config fields."""
    values = read_json(Path(path))
    return from_dict(cls, {k: v for k, v in values.items() if k not in drop})


def _argument(parser, name: str, hint, default, help_text: str) -> None:
    base, optional = _base_type(hint)
    flag = "--" + name.replace("_", "-")
    kwargs = {
        "dest": name,
        "default": argparse.SUPPRESS,
        "help": f"{help_text} (default: {default})",
    }
    if base is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(base) is typing.Literal:
        parser.add_argument(flag, choices=typing.get_args(base), **kwargs)
    else:
        parser.add_argument(flag, type=base, metavar=base.__name__.upper(), **kwargs)


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one ``--flag`` per field of ``cls``; unset flags are left out of the namespace."""
    hints = typing.get_type_hints(cls, include_extras=True)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        _argument(parser, f.name, hints[f.name], default, helps.get(f.name, ""))


def given(namespace: argparse.Namespace, cls) -> dict:
    """The fields set explicitly on the command line (argparse already checked their types)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(namespace).items() if k in names}
