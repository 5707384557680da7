"""Strict checks of wire messages against an official SDK's own types (rule 16).

Vendors' SDKs describe requests as ``TypedDict``\\ s and responses as pydantic models, and
both are lenient on purpose: a ``TypedDict`` is only a type hint, and SDK models accept
unknown fields for forward compatibility. A witness must be strict instead, so that a fake
or a plugin that invents a field, misspells one or leaves a required one out is caught:

- :func:`check_typed_dict` walks a JSON value against a type: ``TypedDict`` (every key
  known, every required key present), unions (one branch must fit), ``Literal``,
  ``list``/``Iterable``/``Sequence``, ``dict``, ``str``/``int``/``float``/``bool``,
  ``None``, ``Annotated`` and aliases. It returns the problems found, as paths.
- :func:`check_model` validates a JSON object with a pydantic model (or a
  ``TypeAdapter``) and then refuses any field the model did not declare, at any depth.

Only for tests; it needs ``typing_extensions`` (as every such SDK does) and imports
pydantic lazily.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any

import typing_extensions

__all__ = ["WitnessError", "assert_typed_dict", "check_model", "check_typed_dict"]


class WitnessError(AssertionError):
    """A message does not fit the SDK's type."""


_ITERABLES = {
    list,
    tuple,
    collections.abc.Iterable,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
}


_WRAPPERS = {
    typing.Annotated,
    typing.Required,
    typing.NotRequired,
    typing_extensions.Annotated,
    typing_extensions.Required,
    typing_extensions.NotRequired,
    typing_extensions.ReadOnly,
}


def _strip(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin in _WRAPPERS:
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, typing_extensions.TypeAliasType):
            tp = tp.__value__
        else:
            return tp


def _required_keys(tp: Any, hints: dict[str, Any]) -> set[str]:
    """The required keys of a TypedDict. ``__required_keys__`` misses ``Required[...]``
    written as a string (``from __future__ import annotations``), so the resolved hints
    decide where they say."""
    keys = set(getattr(tp, "__required_keys__", ()))
    for key, hint in hints.items():
        origin = typing.get_origin(hint)
        if origin is typing.Annotated or origin is typing_extensions.Annotated:
            origin = typing.get_origin(typing.get_args(hint)[0])
        if origin in (typing.Required, typing_extensions.Required):
            keys.add(key)
        elif origin in (typing.NotRequired, typing_extensions.NotRequired):
            keys.discard(key)
    return keys


def check_typed_dict(value: Any, tp: Any, path: str = "$") -> list[str]:
    """The problems of ``value`` as an instance of ``tp`` (empty: it fits)."""
    tp = _strip(tp)
    if tp is Any or tp is object:
        return []
    if tp is None or tp is type(None):
        return [] if value is None else [f"{path}: expected null, got {value!r:.60}"]
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        branches = [check_typed_dict(value, arg, path) for arg in typing.get_args(tp)]
        if any(not b for b in branches):
            return []
        best = min(branches, key=len)
        return [f"{path}: fits no branch of {tp}; nearest: {'; '.join(best[:3])}"]
    if origin in (typing.Literal, typing_extensions.Literal):
        return [] if value in typing.get_args(tp) else [f"{path}: {value!r} not in {tp}"]
    if typing_extensions.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({tp.__name__}), got {type(value).__name__}"]
        hints = typing_extensions.get_type_hints(tp, include_extras=True)
        problems = [f"{path}.{k}: unknown field of {tp.__name__}" for k in value if k not in hints]
        required = _required_keys(tp, hints)
        problems += [f"{path}.{k}: missing ({tp.__name__})" for k in required if k not in value]
        for key, item in value.items():
            if key in hints:
                problems += check_typed_dict(item, hints[key], f"{path}.{key}")
        return problems
    if origin in _ITERABLES or tp in _ITERABLES:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return [
            p for i, v in enumerate(value) for p in check_typed_dict(v, item_tp, f"{path}[{i}]")
        ]
    if origin in (dict, collections.abc.Mapping) or tp in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        args = typing.get_args(tp)
        if len(args) == 2:
            return [
                p for k, v in value.items() for p in check_typed_dict(v, args[1], f"{path}.{k}")
            ]
        return []
    if origin is not None and getattr(origin, "__name__", "") == "SequenceNotStr":
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        (item_tp,) = typing.get_args(tp)
        return [
            p for i, v in enumerate(value) for p in check_typed_dict(v, item_tp, f"{path}[{i}]")
        ]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r:.60}"]
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an integer, got {value!r:.60}"]
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {value!r:.60}"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r:.60}"]
    if isinstance(tp, type):
        return [] if isinstance(value, tp) else [f"{path}: expected {tp.__name__}"]
    return [f"{path}: cannot check against {tp!r}"]


def assert_typed_dict(value: Any, tp: Any) -> None:
    """Raise :class:`WitnessError` listing every problem of ``value`` as a ``tp``."""
    problems = check_typed_dict(value, tp)
    if problems:
        raise WitnessError(f"{len(problems)} problem(s): " + "; ".join(problems[:10]))


def check_model(value: Any, model: Any) -> Any:
    """Validate ``value`` with pydantic ``model`` (a class or an annotated type), refusing
    undeclared fields at any depth; returns the validated object."""
    from pydantic import BaseModel, TypeAdapter, ValidationError

    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            parsed: Any = model.model_validate(value)
        else:
            parsed = TypeAdapter(model).validate_python(value)
    except ValidationError as exc:
        raise WitnessError(str(exc)) from None
    extras: list[str] = []

    def walk(obj: Any, raw: Any, path: str) -> None:
        # Models that ignore extra fields drop them silently: compare with the raw input.
        if isinstance(obj, BaseModel):
            fields = type(obj).model_fields
            names = {f.alias or n: n for n, f in fields.items()}
            if isinstance(raw, dict):
                extras.extend(f"{path}.{k}" for k in raw if k not in names)
                for key, name in names.items():
                    if key in raw:
                        walk(getattr(obj, name), raw[key], f"{path}.{key}")
            else:
                extras.extend(f"{path}.{k}" for k in (obj.model_extra or {}))
        elif isinstance(obj, list | tuple) and isinstance(raw, list | tuple):
            for i, (item, raw_item) in enumerate(zip(obj, raw, strict=False)):
                walk(item, raw_item, f"{path}[{i}]")
        elif isinstance(obj, dict) and isinstance(raw, dict):
            for k, item in obj.items():
                walk(item, raw.get(k), f"{path}.{k}")

    walk(parsed, value, "$")
    if extras:
        raise WitnessError(f"fields the SDK does not declare: {', '.join(extras)}")
    return parsed
