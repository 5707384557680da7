"""Type hints as JSON Schema, and the model's JSON arguments back as Python values.

The typing half of :mod:`antiphon.services.tools`: :func:`json_schema` maps a parameter's
type hint (``str``, ``int``, ``float``, ``bool``, ``Literal``, ``enum.Enum`` subclasses,
``list[X]``/``Sequence[X]``/``tuple[X, ...]``, ``X | None``) to its JSON Schema, refusing
any other with a :class:`ConfigError` when the tool is built; :func:`convert` checks one
argument the model sent against the same hint and converts it (an ``int`` from ``3.0``, an
Enum member from its value), refusing it with :class:`ToolArgumentError`, which the model
can be shown; :func:`parse_docstring` reads a tool's description and its ``Args:`` section.
Both directions walk the hint the same way, so what the schema allows is what conversion
accepts. Pure functions of the hint, no state: split from the tool object and the running of
calls so each reads on its own; ``tools`` re-exports :class:`ToolArgumentError`.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from antiphon.errors import AntiphonError, ConfigError

__all__ = ["ToolArgumentError", "convert", "describe", "json_schema", "parse_docstring"]


class ToolArgumentError(AntiphonError, ValueError):
    """The model called a tool with arguments that do not fit its schema."""


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def json_schema(annotation: Any, where: str) -> dict[str, Any]:
    """The JSON Schema of a type hint; ``ConfigError`` (naming ``where``) if unsupported."""
    inner, optional = _unwrap_optional(annotation)
    if optional:
        schema = json_schema(inner, where)
        kind = schema.get("type")
        if isinstance(kind, str):
            schema = {**schema, "type": [kind, "null"]}
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
        return schema
    if annotation is str:
        return {"type": "string"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [m.value for m in annotation]
        return {"type": _literal_type(values, where), "enum": values}
    origin = typing.get_origin(annotation)
    if origin is Literal:
        values = list(typing.get_args(annotation))
        return {"type": _literal_type(values, where), "enum": values}
    if origin in (list, Sequence, tuple) or annotation is list:
        args = typing.get_args(annotation)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise ConfigError(f"{where}: use list[X] or tuple[X, ...], not {annotation!r}")
        if not args:
            raise ConfigError(f"{where}: give the item type, e.g. list[str]")
        return {"type": "array", "items": json_schema(args[0], f"{where}[]")}
    raise ConfigError(
        f"{where}: unsupported type {annotation!r}; use str, int, float, bool, Literal, "
        "an Enum, list[X] or X | None"
    )


def _literal_type(values: list[Any], where: str) -> str:
    kinds = {type(v) for v in values}
    if kinds <= {str}:
        return "string"
    if kinds <= {int}:
        return "integer"
    if kinds <= {int, float}:
        return "number"
    if kinds <= {bool}:
        return "boolean"
    raise ConfigError(f"{where}: Literal/Enum values must all be str, int, float or bool")


def convert(value: Any, annotation: Any, where: str) -> Any:
    """``value`` (decoded JSON) as the hint's type; ``ToolArgumentError`` if it does not fit."""
    inner, optional = _unwrap_optional(annotation)
    if optional:
        return None if value is None else convert(value, inner, where)
    bad = ToolArgumentError(f"{where}: expected {describe(annotation)}, got {value!r}")
    if annotation is str:
        if not isinstance(value, str):
            raise bad
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise bad
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        allowed = ", ".join(repr(m.value) for m in annotation)
        for member in annotation:
            if member.value == value and type(member.value) is type(value):
                return member
        raise ToolArgumentError(
            f"{where}: expected {annotation.__name__} (one of {allowed}), got {value!r}"
        )
    origin = typing.get_origin(annotation)
    if origin is Literal:
        options = typing.get_args(annotation)
        for option in options:
            if option == value and type(option) is type(value):
                return option
        allowed = ", ".join(repr(o) for o in options)
        raise ToolArgumentError(f"{where}: expected one of {allowed}, got {value!r}")
    if origin in (list, Sequence, tuple):
        if not isinstance(value, list):
            raise bad
        item = typing.get_args(annotation)[0]
        items = [convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    raise bad


def describe(annotation: Any) -> str:
    """A hint's name for a message (``int``, ``Color``)."""
    return getattr(annotation, "__name__", None) or repr(annotation)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """First paragraph, and ``name: text`` entries of an ``Args:`` section."""
    if not doc:
        return "", {}
    text = inspect.cleandoc(doc)
    paragraphs = re.split(r"\n\s*\n", text)
    summary = " ".join(paragraphs[0].split()) if paragraphs else ""
    if summary.lower().startswith(("args:", "arguments:", "parameters:")):
        summary = ""
    params: dict[str, str] = {}
    match = re.search(r"^(?:Args|Arguments|Parameters):\s*\n((?:[ \t]+.*\n?)+)", text, re.M)
    if match:
        current: str | None = None
        for line in match.group(1).splitlines():
            m = re.match(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if m:
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
    return summary, params
