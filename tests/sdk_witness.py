"""The official SDKs as witnesses of the fakes and plugins (rule 16 of DESIGN.md).

Two tools for the ``test_sdk_*`` modules:

- :class:`Wire`, a recorder of every WebSocket text frame in both directions: it wraps
  ``send`` of websockets' asyncio server and client connections, which every fake and
  every plugin (through ``antiphon.net``) use, so a scenario's whole conversation is
  captured without a hook in the code under test.
- :func:`strict_errors`, a strict check of a JSON value against an SDK type. The SDKs'
  pydantic models allow unknown fields (``extra="allow"``) so that old clients survive
  new servers; a witness must not, so after pydantic validates the value (types, required
  fields, literals, discriminators), the value is walked beside the validated object and
  every key the type does not declare is an error. TypedDicts (the SDKs' request params)
  go through a ``TypeAdapter`` and the same walk.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Annotated, Any, Literal, NotRequired, Required, Union, get_args, get_origin

import pydantic
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection

__all__ = ["Frame", "Wire", "strict_errors", "wire"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One text frame: ``server`` (fake → client) or ``client`` (plugin → fake)."""

    sender: str
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Wire:
    """Text frames seen on every WebSocket of the process while installed."""

    frames: list[Frame] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, sender: str, message: object) -> None:
        if isinstance(message, str):
            with self.lock:
                self.frames.append(Frame(sender, message))

    def sent_by(self, sender: str) -> list[Frame]:
        with self.lock:
            return [f for f in self.frames if f.sender == sender]

    def messages(self, sender: str, *, skip: Callable[[str], bool] = lambda _: False) -> list[Any]:
        """The JSON messages of ``sender``; ``skip(text)`` names deliberate garbage."""
        return [f.json() for f in self.sent_by(sender) if not skip(f.text)]

    def types(self, sender: str) -> set[str]:
        out = set()
        for f in self.sent_by(sender):
            try:
                msg = f.json()
            except ValueError:
                continue
            if isinstance(msg, dict) and isinstance(msg.get("type"), str):
                out.add(msg["type"])
        return out


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Wire]:
    """Record every text frame sent by a fake (``server``) or a plugin (``client``)."""
    w = Wire()
    server_send = ServerConnection.send
    client_send = ClientConnection.send

    async def on_server(self: ServerConnection, message: Any, text: bool | None = None) -> None:
        w.record("server", message)
        await server_send(self, message, text=text)

    async def on_client(self: ClientConnection, message: Any, text: bool | None = None) -> None:
        w.record("client", message)
        await client_send(self, message, text=text)

    monkeypatch.setattr(ServerConnection, "send", on_server)
    monkeypatch.setattr(ClientConnection, "send", on_client)
    yield w


def strict_errors(tp: Any, value: object) -> list[str]:
    """What is wrong with ``value`` as a ``tp``: pydantic's errors, then unknown fields."""
    tp = _member_for(tp, value)
    if tp is None:
        kind = value.get("type") if isinstance(value, Mapping) else None
        return [f"$.type: {kind!r} is not a message of the SDK"]
    try:
        parsed = pydantic.TypeAdapter(tp).validate_python(value)
    except pydantic.ValidationError as exc:
        return [f"{_path(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
    return _unknown_fields(parsed, value, "$")


def _path(loc: tuple[int | str, ...]) -> str:
    """``$.a.b[0].c`` of a pydantic error location (union members' names included)."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def _member_for(tp: Any, value: object) -> Any:
    """The member of a union of messages that ``value``'s ``type`` names (``None``: no
    such member), so that errors speak of that message and not of every other one."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) not in (Union, UnionType) or not isinstance(value, Mapping):
        return tp
    kind = value.get("type")
    tagged = [m for m in get_args(tp) if _type_literals(m) is not None]
    if not tagged:
        return tp
    named = [m for m in tagged if kind in (_type_literals(m) or ())]
    if not named:
        return None
    return named[0] if len(named) == 1 else Union[tuple(named)]  # noqa: UP007


def _type_literals(member: Any) -> tuple[Any, ...] | None:
    fields = getattr(member, "model_fields", None) or getattr(member, "__annotations__", None)
    if not isinstance(fields, Mapping) or "type" not in fields:
        return None
    info = fields["type"]
    ann = getattr(info, "annotation", info)
    while get_origin(ann) in (Annotated, Required, NotRequired):
        ann = get_args(ann)[0]
    if get_origin(ann) is not Literal:
        return None
    return tuple(getattr(a, "value", a) for a in get_args(ann))


def _unknown_fields(parsed: object, raw: object, path: str) -> list[str]:
    errors: list[str] = []
    if isinstance(parsed, pydantic.BaseModel) and isinstance(raw, Mapping):
        by_key: dict[str, str] = {}
        for name, info in type(parsed).model_fields.items():
            by_key[info.alias or name] = name  # on the wire, a field has its alias only
        for key, sub in raw.items():
            if key in by_key:
                errors += _unknown_fields(getattr(parsed, by_key[key]), sub, f"{path}.{key}")
            else:
                errors.append(f"{path}.{key}: not a field of {type(parsed).__name__}")
    elif isinstance(parsed, list | tuple) and isinstance(raw, list):
        for i, (p, r) in enumerate(zip(parsed, raw, strict=False)):
            errors += _unknown_fields(p, r, f"{path}[{i}]")
    elif isinstance(parsed, Mapping) and isinstance(raw, Mapping):
        for key, sub in raw.items():
            if key in parsed:
                errors += _unknown_fields(parsed[key], sub, f"{path}.{key}")
            else:
                errors.append(f"{path}.{key}: not a key of the type")
    return errors


def assert_all_valid(
    tp: Any, messages: list[Any], what: str, *, sdk_gaps: frozenset[str] = frozenset()
) -> None:
    """Every message is a valid, strict ``tp``; the failure lists each bad one.

    ``sdk_gaps``: paths (``$.session.id``) of fields the provider's API reference documents
    and sends but the SDK's type omits; each one is named in ``docs/testing.md``.
    """
    bad = []
    for msg in messages:
        errs = [e for e in strict_errors(tp, msg) if e.split(":", 1)[0] not in sdk_gaps]
        if errs:
            bad.append(f"{json.dumps(msg)[:300]}\n    " + "\n    ".join(errs))
    assert not bad, f"{len(bad)} {what} message(s) the SDK rejects:\n" + "\n".join(bad)


# -- Azure's SDK models (``azure.ai.voicelive.models``) are not pydantic: each is a
# MutableMapping with ``rest_field`` descriptors, typed by class annotations, polymorphic
# through a ``__mapping__`` of discriminator values. The witness turns each into a strict
# pydantic model (``extra="forbid"``; a field is required unless its type admits None).


class _AzureModels:
    def __init__(self) -> None:
        self.built: dict[type, Any] = {}
        self.building: set[type] = set()
        self.namespace: dict[str, Any] = {}
        self.sdk_ns: dict[str, Any] = {}

    def of(self, cls: type) -> Any:
        if cls in self.built:
            return self.built[cls]
        if cls in self.building:
            return cls.__name__  # a forward reference, resolved by model_rebuild
        self.building.add(cls)
        mapping = cls.__dict__.get("__mapping__")
        if mapping:
            # the discriminator this class opens (a subclass also pins its parent's one)
            key = next(
                rf._rest_name_input or attr
                for attr, rf in vars(cls).items()
                if getattr(rf, "_is_discriminator", False)
                and "Literal" not in str(cls.__annotations__.get(attr, ""))
            )
            tagged = tuple(
                Annotated[self.of(sub), pydantic.Tag(tag)] for tag, sub in mapping.items()
            )
            built: Any = Annotated[
                Union[tagged],  # noqa: UP007
                pydantic.Discriminator(_Tagger(key)),
            ]
        else:
            built = self._model(cls)
        self.building.discard(cls)
        self.built[cls] = built
        self.namespace[cls.__name__] = built
        return built

    def _model(self, cls: type) -> type[pydantic.BaseModel]:
        import sys

        from azure.ai.voicelive import _types as azure_types
        from azure.ai.voicelive import _unions as azure_unions
        from azure.ai.voicelive import models as azure_models

        fields: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for attr, rf in vars(klass).items():
                if attr.startswith("_") or not hasattr(rf, "_is_discriminator"):
                    continue
                self.sdk_ns = {
                    **vars(sys.modules[klass.__module__]),
                    "_models": azure_models,
                    "_unions": azure_unions,
                    "_types": azure_types,
                }
                name = rf._rest_name_input or attr
                tp = self._convert(klass.__annotations__[attr])
                optional = type(None) in get_args(tp) or tp is Any
                fields[name] = (tp, None if optional else ...)
        model: type[pydantic.BaseModel] = pydantic.create_model(
            cls.__name__, __config__=pydantic.ConfigDict(extra="forbid"), **fields
        )
        return model

    def _convert(self, ann: Any) -> Any:
        import enum
        import typing

        if isinstance(ann, typing.ForwardRef):
            ann = ann.__forward_arg__
        if isinstance(ann, str):  # the SDK's own annotation text, in the SDK's own module
            ann = eval(ann, self.sdk_ns)

        from azure.ai.voicelive._utils.model_base import Model

        origin, args = get_origin(ann), get_args(ann)
        if origin is Literal:
            return Literal[tuple(getattr(a, "value", a) for a in args)]
        if origin in (Union, UnionType):
            return Union[tuple(self._convert(a) for a in args)]  # noqa: UP007
        if origin in (list, list):
            return list[self._convert(args[0]) if args else Any]  # type: ignore[misc]
        if origin in (dict, dict):
            return dict[str, self._convert(args[1]) if args else Any]  # type: ignore[misc]
        if isinstance(ann, type) and issubclass(ann, Model):
            return self.of(ann)
        if isinstance(ann, type) and issubclass(ann, enum.Enum):
            return Literal[tuple(m.value for m in ann)]
        return ann

    def finish(self) -> None:
        for built in list(self.built.values()):
            if isinstance(built, type) and issubclass(built, pydantic.BaseModel):
                built.model_rebuild(_types_namespace=self.namespace)


class _Tagger:
    """The discriminator of a polymorphic Azure model: its value under ``key``."""

    __name__ = "tag"

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return value.get(self.key)
        return getattr(value, self.key, None)


_AZURE = _AzureModels()


def azure_type(cls: type) -> Any:
    """A strict pydantic type for the Azure SDK model ``cls`` (a union if polymorphic)."""
    built = _AZURE.of(cls)
    _AZURE.finish()
    return built
