"""Command-line options derived from the builder's pydantic config models, so that a config field (its name, type,
default, constraints and docstring) is written once and ``guard-build`` offers it.

A field ``max_int8_diff: float = 0.25`` becomes ``--max-int8-diff MAX_INT8_DIFF`` with ``type=float``, that
default and the first sentence of its docstring as help; a ``Literal`` gives choices; a bool gives ``--x`` when it
defaults to False and ``--x/--no-x`` when it defaults to True; a list gives a repeatable option, comma-separated where
its items are not paths. Validation stays in the model: ``Flags.build`` reports a ``ValidationError`` as a
``BuilderError`` naming the option.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .errors import BuilderError

__all__ = ["Flags", "add_flags"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Flags(Generic[M]):
    """Fields of one config model as command-line options. One option feeds every field of the same option name,
    in this model and its nested ones (``--seed`` sets the data engine's three seeds)."""

    model: type[M]
    fields: Sequence[str] | None = None
    """The fields offered; None: every field but ``exclude`` and ``nested``."""
    exclude: Sequence[str] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    """Field -> option name (without ``--``), where the option keeps an older or shorter spelling."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Defaults of this command that differ from the model's."""
    help: Mapping[str, str] = field(default_factory=dict)
    """Help that differs from the docstring's first sentence (what the option means on this command)."""
    nested: Mapping[str, Flags[Any]] = field(default_factory=dict)
    """A field holding a model -> that model's options. Their defaults, and the values the options do not set, are
    this model's default for the field."""
    unset: bool = False
    """The options default to None and ``values`` leaves out the ones not given (for settings that other sources,
    such as a file or the environment, may set)."""

    def values(self, args: argparse.Namespace, base: BaseModel | None = None) -> dict[str, Any]:
        """The field values: ``base``'s explicitly set fields, overridden by the options (nested models as dicts)."""
        values = {} if base is None else {name: getattr(base, name) for name in base.model_fields_set}
        for name, option in self._options(base):
            value = getattr(args, option.dest)
            if value is not None or not (self.unset or option.repeatable):
                values[name] = value
        for name, nested in self.nested.items():
            values[name] = nested.values(args, self._default(name, base))
        return values

    def build(self, args: argparse.Namespace, **fixed: Any) -> M:
        """The model from the parsed options and ``fixed`` values; its validation errors name the options."""
        try:
            return self.model.model_validate({**self.values(args), **fixed})
        except ValidationError as exc:
            raise BuilderError(self._explain(exc)) from None

    def _field_names(self) -> list[str]:
        if self.fields is not None:
            return list(self.fields)
        return [name for name in self.model.model_fields if name not in self.exclude and name not in self.nested]

    def _default(self, name: str, base: BaseModel | None = None) -> Any:
        if base is not None:
            return getattr(base, name)
        return self.model.model_fields[name].get_default(call_default_factory=True)

    def _options(self, base: BaseModel | None) -> list[tuple[str, _Option]]:
        options = []
        for name in self._field_names():
            info = self.model.model_fields[name]
            default = self.defaults[name] if name in self.defaults else self._default(name, base)
            flag = self.names.get(name, name.replace("_", "-"))
            try:
                option = _Option.of(flag, info, default, unset=self.unset, help=self.help.get(name))
            except TypeError as exc:
                raise TypeError(f"{self.model.__name__}.{name}: {exc}") from None
            options.append((name, option))
        return options

    def _all_options(self, base: BaseModel | None = None) -> list[_Option]:
        options = [option for _, option in self._options(base)]
        for name, nested in self.nested.items():
            options += nested._all_options(self._default(name, base))
        return options

    def _flags_by_location(self, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
        flags = {(*prefix, name): f"--{option.flag}" for name, option in self._options(None)}
        for name, nested in self.nested.items():
            flags |= nested._flags_by_location((*prefix, name))
        return flags

    def _explain(self, exc: ValidationError) -> str:
        flags = self._flags_by_location()
        lines = []
        for error in exc.errors():
            location = tuple(str(part) for part in error["loc"])
            # A list item's location ends in its index: the option is the longest prefix that is a field.
            where = next((flags[location[:n]] for n in range(len(location), 0, -1) if location[:n] in flags), None)
            message = error["msg"].removeprefix("Value error, ")
            if where is None and location:
                where = ".".join(location)
            got = f" (got {error['input']!r})" if where and error["type"] != "missing" else ""
            lines.append(f"{where}: {message}{got}" if where else message)
        return "; ".join(lines)


class _Parser(Protocol):
    """An ``argparse`` parser or argument group."""

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action: ...


def add_flags(parser: _Parser, *flag_sets: Flags[Any]) -> None:
    """Add the options of ``flag_sets`` to ``parser``, each option once; fields sharing an option must share its
    default."""
    added: dict[str, _Option] = {}
    for flags in flag_sets:
        for option in flags._all_options():
            if option.flag in added:
                if added[option.flag].default != option.default:
                    raise ValueError(f"--{option.flag}: fields sharing it have different defaults")
                continue
            added[option.flag] = option
            parser.add_argument(f"--{option.flag}", **option.kwargs)


@dataclass(frozen=True)
class _Option:
    flag: str
    default: Any
    kwargs: dict[str, Any]
    repeatable: bool

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")

    @classmethod
    def of(cls, flag: str, info: FieldInfo, default: Any, *, unset: bool, help: str | None) -> _Option:
        required = default is PydanticUndefined
        default = None if required else default
        kind = _unwrap(info.annotation)
        kwargs: dict[str, Any] = {}
        repeatable = get_origin(kind) is list
        if kind is bool:
            # store_true keeps the flags of the form "--keep-fp32"; a True default needs "--no-x" to turn it off.
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        elif get_origin(kind) is Literal:
            kwargs["choices"] = get_args(kind)
        elif repeatable:
            item = _unwrap(get_args(kind)[0])
            if item is Path:
                kwargs |= {"action": "append", "type": Path}
            else:
                kwargs |= {"action": "extend", "type": _comma_separated}
        elif kind in (int, float, str, Path):
            kwargs["type"] = kind
        else:
            raise TypeError(f"no command-line form for {info.annotation} (leave the field out)")
        text = _help(help or info.description, kind, default, repeatable)
        if text:
            kwargs["help"] = text
        if required:
            kwargs["required"] = True
        # A repeatable option's argparse default would be appended to, and an unset one means "not given".
        kwargs["default"] = None if repeatable or unset else default
        return cls(flag, default, kwargs, repeatable)


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            kinds = [arg for arg in get_args(annotation) if arg is not NoneType]
            if len(kinds) != 1:
                return annotation
            annotation = kinds[0]
        else:
            return annotation


def _comma_separated(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _help(text: str | None, kind: Any, default: Any, repeatable: bool) -> str | None:
    """The docstring's first sentence without reST markup, then the form of a list and the default."""
    if text:
        text = re.split(r"(?<=\.)\s+(?=[A-Z])", " ".join(text.split()), maxsplit=1)[0].replace("``", "")
        text = text.removesuffix(".")
    notes = []
    if repeatable:
        notes.append("repeatable" if _unwrap(get_args(kind)[0]) is Path else "comma-separated or repeated")
    if default not in (None, "", [], {}) and kind is not bool and "default" not in (text or ""):
        notes.append(f"default: {','.join(map(str, default)) if repeatable else default}")
    if notes:
        text = f"{text} ({'; '.join(notes)})" if text else "; ".join(notes)
    return text.replace("%", "%%") if text else None
