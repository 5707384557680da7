"""Typed Python functions as LLM tools: ``@function_tool`` builds the JSON schema.

::

    @function_tool
    async def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        \"\"\"The current weather in a city.

        Args:
            city: Name of the city, e.g. "Paris".
            unit: Temperature unit.
        \"\"\"

The schema comes from the type hints — ``str``, ``int``, ``float``, ``bool``, ``Literal``,
``enum.Enum`` subclasses, ``list[X]``, ``X | None`` / ``Optional[X]`` — and the docstring:
its first paragraph describes the tool, an ``Args:`` section describes the parameters.
A parameter without a default is required. :meth:`FunctionTool.call` checks and converts
the model's JSON arguments (refusing bad ones with :class:`ToolArgumentError`, which the
model can be shown) and runs the function, sync or async, within a timeout.

Nothing heavy runs on the event loop (DESIGN rule 14): a synchronous tool runs on a
worker thread of a :class:`ToolThreads` pool, and its timeout is enforced on the loop —
when it expires the call goes on and the tool's result says it timed out. A Python
thread cannot be killed, so the timed-out function keeps its thread until it returns;
the pool is bounded (``max_threads``), a call waiting for a thread counts against its
timeout, and a timeout message says how many threads are still held by calls past their
deadline, so a hung tool cannot exhaust the pool silently. An agent session owns its
pool and shuts it down when it closes; :func:`run_tools` (or :meth:`FunctionTool.call`)
without one runs the batch on a pool of its own (at most 4 threads), shut down when the
batch ends, so no idle thread outlives it.

This module holds the tool (:class:`FunctionTool`, built by :func:`function_tool`) and
the running of calls (:func:`run_tools`); the mapping between type hints and JSON lives
in :mod:`antiphon.services.tool_schema`, the thread pool in
:mod:`antiphon.services.tool_threads`. ``ToolArgumentError``, ``ToolThreads`` and
``ToolTimeoutError`` are re-exported here (import them from this module).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

from antiphon.aio.tasks import TaskGroup
from antiphon.errors import ConfigError
from antiphon.services.tool_schema import (
    ToolArgumentError,
    convert,
    describe,
    json_schema,
    parse_docstring,
)
from antiphon.services.tool_threads import ToolThreads, ToolTimeoutError

__all__ = [
    "FunctionTool",
    "ToolArgumentError",
    "ToolCallLike",
    "ToolOutcome",
    "ToolThreads",
    "ToolTimeoutError",
    "decode_arguments",
    "function_tool",
    "run_tools",
]


_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    annotation: Any
    required: bool
    default: Any


@dataclass(frozen=True)
class FunctionTool:
    """A callable tool with its JSON schema (``parameters``, a JSON Schema object)."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    timeout: float | None = None
    _params: tuple[_Param, ...] = field(default=(), repr=False)

    def schema(self) -> dict[str, Any]:
        """The tool in the OpenAI chat-completions ``tools`` format."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def parse_arguments(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """Check and convert the model's arguments (JSON text or a mapping) to kwargs."""
        raw = decode_arguments(self.name, arguments)
        known = {p.name for p in self._params}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ToolArgumentError(f"{self.name}: unknown argument(s) {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for p in self._params:
            if p.name not in raw:
                if p.required:
                    raise ToolArgumentError(f"{self.name}: missing argument {p.name!r}")
                continue
            kwargs[p.name] = convert(raw[p.name], p.annotation, f"{self.name}.{p.name}")
        return kwargs

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (else it runs on a thread)."""
        fn: Any = self.fn
        while isinstance(fn, functools.partial):
            fn = fn.func
        return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - a callable object's method
        )

    async def call(
        self,
        arguments: str | Mapping[str, Any] = "{}",
        *,
        timeout: float | None = None,
        threads: ToolThreads | None = None,
    ) -> Any:
        """Run the tool with the model's arguments, within its ``timeout`` (and
        ``timeout``, the caller's, if smaller).

        An async function runs on the loop; a synchronous one on a thread of
        ``threads`` (default: a one-thread pool for this call, shut down after it), so it
        never blocks the loop.

        Raises:
            ToolArgumentError: the arguments do not fit the schema.
            ToolTimeoutError: the tool did not return in time (a sync tool's thread
                goes on until the function returns; its result is dropped).
        """
        kwargs = self.parse_arguments(arguments)
        limits = [t for t in (self.timeout, timeout) if t is not None]
        limit = min(limits) if limits else None
        if not self.is_async:
            pool = threads or ToolThreads(1, name=f"tool-{self.name}")
            try:
                result = await pool.run(
                    functools.partial(self.fn, **kwargs), timeout=limit, what=self.name
                )
            finally:
                if threads is None:
                    pool.shutdown()  # an idle thread exits now; a hung one when it returns
            if not inspect.isawaitable(result):
                return result
            # a sync function that returned an awaitable: await it on the loop
        else:
            result = self.fn(**kwargs)
        cm = asyncio.timeout(limit)
        try:
            async with cm:
                return await result
        except TimeoutError:
            if not cm.expired():
                raise  # the tool's own TimeoutError, not our deadline
            assert limit is not None
            raise ToolTimeoutError(
                f"tool {self.name} did not return within {limit:g}s", tool=self.name, timeout=limit
            ) from None


def decode_arguments(tool: str, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    """The model's arguments (JSON text, empty for none, or a mapping) as a dict.

    Raises:
        ToolArgumentError: not JSON, or not a JSON object.
    """
    if isinstance(arguments, str):
        try:
            raw = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolArgumentError(f"{tool}: arguments are not valid JSON ({exc.msg})") from None
    else:
        raw = dict(arguments)
    if not isinstance(raw, dict):
        raise ToolArgumentError(f"{tool}: arguments must be a JSON object")
    return raw


def _build(
    fn: Callable[..., Any], name: str | None, description: str | None, timeout: float | None
) -> FunctionTool:
    if not callable(fn):
        raise ConfigError(f"@function_tool decorates a function, got {fn!r}")
    tool_name = name or getattr(fn, "__name__", "")
    if not tool_name or tool_name == "<lambda>":
        raise ConfigError("give the tool a name: @function_tool(name=...) (lambdas have none)")
    if not isinstance(tool_name, str) or not _NAME.match(tool_name):
        raise ConfigError(
            f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-' (OpenAI's rule)"
        )
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise ConfigError(f"tool timeout must be a positive number of seconds, got {timeout!r}")
    summary, docs = parse_docstring(fn.__doc__)
    try:
        hints = typing.get_type_hints(fn, include_extras=False)
    except (NameError, TypeError) as exc:
        raise ConfigError(f"tool {tool_name}: cannot resolve a type hint ({exc})") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    params: list[_Param] = []
    for p in inspect.signature(fn).parameters.values():
        where = f"tool {tool_name}, parameter {p.name}"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise ConfigError(f"{where}: only named parameters can be tool arguments")
        if p.name not in hints:
            raise ConfigError(f"{where}: add a type hint (the JSON schema is built from it)")
        schema = json_schema(hints[p.name], where)
        if p.name in docs:
            schema["description"] = docs[p.name]
        has_default = p.default is not inspect.Parameter.empty
        if has_default and p.default is not None:
            as_json = p.default.value if isinstance(p.default, enum.Enum) else p.default
            if isinstance(as_json, tuple):
                as_json = list(as_json)
            try:
                convert(as_json, hints[p.name], where)
            except ToolArgumentError:
                raise ConfigError(
                    f"{where}: the default {p.default!r} does not fit the type hint "
                    f"{describe(hints[p.name])}"
                ) from None
        if has_default:
            default = p.default.value if isinstance(p.default, enum.Enum) else p.default
            if default is None or isinstance(default, str | int | float | bool):
                schema["default"] = default
        else:
            required.append(p.name)
        properties[p.name] = schema
        params.append(_Param(p.name, hints[p.name], not has_default, p.default))
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    desc = description if description is not None else summary
    return FunctionTool(tool_name, desc, parameters, fn, timeout, tuple(params))


@overload
def function_tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def function_tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def function_tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Turn a typed function into a :class:`FunctionTool` (bare or with options)."""
    if fn is not None:
        return _build(fn, name, description, timeout)

    def decorate(f: Callable[..., Any]) -> FunctionTool:
        return _build(f, name, description, timeout)

    return decorate


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """The result of one tool call: ``output`` (text for the model) or ``error``."""

    call_id: str
    name: str
    output: str
    error: BaseException | None = None


def _text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, default=str)
    except (TypeError, ValueError):
        return str(result)


class ToolCallLike(Protocol):
    """Anything with a call's ``id``, ``name`` and JSON ``arguments`` (e.g. a ``ToolCall``)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def arguments(self) -> str: ...


async def run_tools(
    calls: Sequence[tuple[str, str, str] | ToolCallLike],
    tools: Sequence[FunctionTool],
    *,
    timeout: float = 10.0,
    threads: ToolThreads | None = None,
) -> list[ToolOutcome]:
    """Run calls (``(call_id, name, arguments)`` or ``ToolCall``s) concurrently, each
    within ``timeout`` seconds (and its tool's own ``timeout``).

    Never raises for a tool's failure: an unknown tool, bad arguments, an exception or a
    timeout becomes an outcome whose ``output`` tells the model what went wrong (and whose
    ``error`` keeps the exception). Results come back in the order of ``calls``.
    Synchronous tools run on ``threads`` (default: a pool of at most 4 threads for this
    batch, shut down when it ends), never on the loop. Cancelling the caller cancels
    every running async tool (a sync tool's thread goes on until its function returns).
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"run_tools timeout must be a positive number of seconds: {timeout!r}")
    by_name = {t.name: t for t in tools}
    plain = [c if isinstance(c, tuple) else (c.id, c.name, c.arguments) for c in calls]
    own_threads: ToolThreads | None = None
    if threads is None and any(
        (t := by_name.get(name)) is not None and not t.is_async for _, name, _ in plain
    ):
        threads = own_threads = ToolThreads(min(4, len(plain)), name="run-tools")

    async def one(call_id: str, name: str, arguments: str) -> ToolOutcome:
        tool = by_name.get(name)
        if tool is None:
            known = ", ".join(sorted(by_name)) or "none"
            err: BaseException = ToolArgumentError(f"no tool named {name!r} (tools: {known})")
            return ToolOutcome(call_id, name, f"error: {err}", err)
        cm = asyncio.timeout(timeout)
        try:
            async with cm:
                result = await tool.call(arguments, timeout=timeout, threads=threads)
        except ToolTimeoutError as exc:
            return ToolOutcome(call_id, name, f"error: {exc}", exc)
        except TimeoutError as exc:
            if not cm.expired():  # the tool's own TimeoutError
                return ToolOutcome(call_id, name, f"error: {exc!r}", exc)
            late = ToolTimeoutError(
                f"tool {name} did not return within {timeout:g}s", tool=name, timeout=timeout
            )
            return ToolOutcome(call_id, name, f"error: {late}", late)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled: let the TaskGroup unwind
            return ToolOutcome(call_id, name, f"error: tool {name} was cancelled", exc)
        except Exception as exc:
            return ToolOutcome(call_id, name, f"error: {exc or type(exc).__name__}", exc)
        return ToolOutcome(call_id, name, _text(result))

    try:
        async with TaskGroup() as tg:
            tasks = [tg.create_task(one(*c)) for c in plain]
    finally:
        if own_threads is not None:
            own_threads.shutdown()  # idle threads exit now; a hung one when it returns
    return [t.result() for t in tasks]
