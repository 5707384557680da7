"""@function_tool: JSON schema from type hints and docstrings; argument checking; running."""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Sequence
from typing import Literal, Optional

import pytest

from antiphon.errors import AntiphonError, ConfigError
from antiphon.services.tools import (
    FunctionTool,
    ToolArgumentError,
    ToolThreads,
    ToolTimeoutError,
    function_tool,
    run_tools,
)
from antiphon.testing.poll import until

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


@function_tool
async def weather(
    city: str,
    days: int = 1,
    unit: Unit = Unit.C,
    detail: Literal["short", "long"] = "short",
    tags: list[str] | None = None,
    ratio: float = 0.5,
    alerts: Optional[bool] = None,  # noqa: UP045 - Optional is what we test here
) -> str:
    """Forecast for a city.

    More text that is not the summary.

    Args:
        city: Name of the city,
            e.g. "Paris".
        days: How many days ahead.
    """
    return f"{city}:{days}:{unit.value}:{detail}:{tags}:{ratio}:{alerts}"


def test_schema_from_hints_and_docstring() -> None:
    assert isinstance(weather, FunctionTool)
    assert weather.name == "weather"
    assert weather.description == "Forecast for a city."
    p = weather.parameters
    assert p["type"] == "object" and p["additionalProperties"] is False
    assert p["required"] == ["city"]
    props = p["properties"]
    assert props["city"] == {"type": "string", "description": 'Name of the city, e.g. "Paris".'}
    assert props["days"] == {"type": "integer", "description": "How many days ahead.", "default": 1}
    assert props["unit"] == {
        "type": "string",
        "enum": ["celsius", "fahrenheit"],
        "default": "celsius",
    }
    assert props["detail"] == {"type": "string", "enum": ["short", "long"], "default": "short"}
    assert props["tags"] == {
        "type": ["array", "null"],
        "items": {"type": "string"},
        "default": None,
    }
    assert props["ratio"] == {"type": "number", "default": 0.5}
    assert props["alerts"] == {"type": ["boolean", "null"], "default": None}
    assert weather.schema()["function"]["name"] == "weather"
    assert weather.schema()["type"] == "function"


async def test_call_converts_and_checks_arguments() -> None:
    out = await weather.call('{"city": "Oslo", "days": 3.0, "unit": "fahrenheit", "tags": ["a"]}')
    assert out == "Oslo:3:fahrenheit:short:['a']:0.5:None"
    assert await weather.call({"city": "Rome", "ratio": 2}) == "Rome:1:celsius:short:None:2.0:None"
    for bad, message in [
        ("{}", "missing argument 'city'"),
        ('{"city": 5}', "expected str"),
        ('{"city": "x", "days": 1.5}', "expected int"),
        ('{"city": "x", "days": true}', "expected int"),
        ('{"city": "x", "unit": "kelvin"}', "expected Unit"),
        ('{"city": "x", "detail": "medium"}', "expected"),
        ('{"city": "x", "tags": "a"}', "expected"),
        ('{"city": "x", "nope": 1}', "unknown argument"),
        ("not json", "not valid JSON"),
        ("[1]", "JSON object"),
    ]:
        with pytest.raises(ToolArgumentError, match=message):
            await weather.call(bad)


async def test_sync_tool_and_options() -> None:
    @function_tool(name="add-numbers", description="Add.", timeout=1.0)
    def add(a: int, b: int = 2) -> int:
        return a + b

    assert add.name == "add-numbers" and add.description == "Add."
    assert await add.call('{"a": 1}') == 3


async def test_async_tool_timeout() -> None:
    @function_tool(timeout=0.05)
    async def slow() -> str:
        """Never returns in time."""
        await asyncio.sleep(30)
        return "late"

    with pytest.raises(ToolTimeoutError, match=r"0\.05s"):
        await slow.call()


def test_bad_tools_are_refused() -> None:
    with pytest.raises(ConfigError, match="type hint"):

        @function_tool
        def untyped(x) -> None:  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(ConfigError, match="unsupported type"):

        @function_tool
        def dicts(x: dict[str, int]) -> None:
            pass

    with pytest.raises(ConfigError, match="named parameters"):

        @function_tool
        def star(*args: int) -> None:
            pass

    with pytest.raises(ConfigError, match="tool name"):
        function_tool(name="has space")(lambda: None)


async def test_run_tools_concurrently_in_order_with_errors() -> None:
    started: list[str] = []
    gate = asyncio.Event()

    @function_tool
    async def first() -> str:
        """Waits for the second to start: only passes if they run concurrently."""
        started.append("first")
        await gate.wait()
        return "one"

    @function_tool
    async def second() -> dict[str, int]:
        """Releases the first."""
        started.append("second")
        gate.set()
        return {"n": 2}

    @function_tool
    async def hang() -> str:
        """Never returns."""
        await asyncio.sleep(30)
        return ""

    async with asyncio.timeout(5):
        out = await run_tools(
            [("1", "first", "{}"), ("2", "second", ""), ("3", "hang", "{}"), ("4", "nope", "{}")],
            [first, second, hang],
            timeout=0.2,
        )
    assert [o.call_id for o in out] == ["1", "2", "3", "4"]
    assert out[0].output == "one" and out[1].output == '{"n": 2}'
    assert isinstance(out[2].error, ToolTimeoutError) and out[2].output.startswith("error:")
    assert isinstance(out[3].error, ToolArgumentError)
    assert set(started) == {"first", "second"}


async def test_run_tools_takes_tool_calls_and_keeps_a_tools_own_timeout_error() -> None:
    from antiphon.services.llm import ToolCall

    @function_tool
    async def own_timeout() -> str:
        """Raises a TimeoutError of its own, at once."""
        raise TimeoutError("upstream timed out")

    @function_tool(timeout=0.05)
    async def slow() -> str:
        """Exceeds its own timeout."""
        await asyncio.sleep(30)
        return ""

    @function_tool
    async def cancels_itself() -> str:
        """Raises CancelledError without being cancelled."""
        raise asyncio.CancelledError

    async with asyncio.timeout(5):
        out = await run_tools(
            [
                ToolCall("a", "own_timeout", "{}"),
                ToolCall("b", "slow", ""),
                ToolCall("c", "cancels_itself", "{}"),
            ],
            [own_timeout, slow, cancels_itself],
            timeout=5.0,
        )
    assert [o.call_id for o in out] == ["a", "b", "c"]
    assert not isinstance(out[0].error, ToolTimeoutError) and "upstream" in out[0].output
    assert isinstance(out[1].error, ToolTimeoutError) and "0.05s" in out[1].output
    assert isinstance(out[2].error, asyncio.CancelledError) and "cancelled" in out[2].output
    with pytest.raises(ConfigError, match="positive"):
        await run_tools([], [], timeout=0)


async def test_cancelling_run_tools_cancels_every_tool() -> None:
    started = asyncio.Event()
    cancelled: list[str] = []

    @function_tool
    async def forever() -> str:
        """Runs until cancelled."""
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("forever")
            raise
        return ""

    async with asyncio.timeout(5):
        task = asyncio.create_task(run_tools([("1", "forever", "{}")], [forever]))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cancelled == ["forever"]


async def test_tool_call_with_no_timeout_reports_its_own_timeout_error() -> None:
    @function_tool
    async def raises() -> str:
        """No timeout set; raises TimeoutError itself."""
        raise TimeoutError("inner")

    with pytest.raises(TimeoutError, match="inner") as info:
        await raises.call()
    assert not isinstance(info.value, ToolTimeoutError)


async def test_literal_and_enum_errors_list_the_allowed_values() -> None:
    with pytest.raises(ToolArgumentError, match=r"one of 'celsius', 'fahrenheit'"):
        await weather.call('{"city": "x", "unit": "kelvin"}')
    with pytest.raises(ToolArgumentError, match=r"one of 'short', 'long'"):
        await weather.call('{"city": "x", "detail": "medium"}')
    out = await weather.call('{"city": "x", "unit": "celsius", "alerts": null}')
    assert out.endswith(":None")


def test_more_bad_declarations_are_refused_at_decoration() -> None:
    with pytest.raises(ConfigError, match="default"):

        @function_tool
        def wrong_default(days: int = "two") -> None:  # type: ignore[assignment]
            pass

    with pytest.raises(ConfigError, match="lambdas"):
        function_tool(lambda: None)
    with pytest.raises(ConfigError, match="decorates a function"):
        function_tool(42)  # type: ignore[call-overload]

    def named() -> None:
        pass

    with pytest.raises(ConfigError, match="timeout"):
        function_tool(timeout=0)(named)
    with pytest.raises(ConfigError, match="list\\[str\\]"):

        @function_tool
        def bare(items: list) -> None:  # type: ignore[type-arg]
            pass

    with pytest.raises(ConfigError, match="unsupported type"):

        @function_tool
        def union(x: int | str) -> None:
            pass


def test_sequence_and_tuple_schemas() -> None:
    @function_tool
    def many(names: Sequence[str], pair: tuple[int, ...] = ()) -> str:
        """Lists."""
        return ""

    props = many.parameters["properties"]
    assert props["names"] == {"type": "array", "items": {"type": "string"}}
    assert props["pair"]["items"] == {"type": "integer"}
    assert many.parse_arguments('{"names": ["a"], "pair": [1, 2]}') == {
        "names": ["a"],
        "pair": (1, 2),
    }
    with pytest.raises(ToolArgumentError, match=r"many.names\[1\]"):
        many.parse_arguments('{"names": ["a", 3]}')


@pytest.mark.realtime  # tool threads the virtual clock cannot see
async def test_a_blocking_sync_tool_runs_off_the_loop_and_its_timeout_holds() -> None:
    """A tool that blocks until released, with timeout 0.5: the loop keeps running meanwhile (a
    concurrent task makes progress while the tool's thread is blocked), and the call
    returns a timeout outcome while the thread is still inside the tool."""
    inside = threading.Event()
    release = threading.Event()
    threads = ToolThreads(2, name="test-tool")

    @function_tool(timeout=0.5)
    def blocking() -> str:
        """Blocks its thread until released (the test releases it)."""
        inside.set()
        release.wait(60.0)
        return "late"

    ticks_while_blocked = 0

    async def ticker() -> None:
        nonlocal ticks_while_blocked
        while True:
            await asyncio.sleep(0.002)
            if inside.is_set() and not release.is_set():
                ticks_while_blocked += 1

    tick = asyncio.create_task(ticker())
    try:
        async with asyncio.timeout(10):
            [out] = await run_tools([("1", "blocking", "{}")], [blocking], threads=threads)
        # the call went on while the tool's thread is still blocked inside the tool
        assert inside.is_set() and not release.is_set()
        assert threads.running == 1 and threads.overdue == 1
    finally:
        tick.cancel()
        release.set()
    assert isinstance(out.error, ToolTimeoutError)
    assert out.error.timeout == 0.5 and out.error.tool == "blocking"
    assert out.output.startswith("error: tool blocking did not return within 0.5s")
    assert "1 of 2 tool threads" in out.output
    assert ticks_while_blocked > 0  # the loop was never blocked by the tool
    await threads.aclose(timeout=5.0)
    assert threads.running == 0
    with pytest.raises(ConfigError, match="shut down"):
        await threads.run(lambda: None, timeout=1.0, what="x")


@pytest.mark.realtime  # tool threads the virtual clock cannot see
async def test_sync_tools_run_concurrently_on_the_pool_and_queue_beyond_it() -> None:
    barrier = threading.Barrier(2, timeout=5)
    threads = ToolThreads(2, name="test-tool")
    names: list[str] = []

    @function_tool
    def meet(n: int) -> int:
        """Both calls must be in their threads at once to pass the barrier."""
        names.append(threading.current_thread().name)
        barrier.wait()
        return n

    try:
        async with asyncio.timeout(10):
            out = await run_tools(
                [("1", "meet", '{"n": 1}'), ("2", "meet", '{"n": 2}')], [meet], threads=threads
            )
    finally:
        await threads.aclose()
    assert [o.output for o in out] == ["1", "2"]
    assert all(n.startswith("test-tool") for n in names)
    assert threading.current_thread().name not in names


@pytest.mark.realtime  # tool threads the virtual clock cannot see
async def test_a_call_that_cannot_get_a_thread_in_time_says_so() -> None:
    release = threading.Event()
    threads = ToolThreads(1, name="test-tool")

    @function_tool
    def hold() -> str:
        """Holds the only thread."""
        release.wait(5.0)
        return "held"

    try:
        async with asyncio.timeout(10):
            first = asyncio.create_task(hold.call(threads=threads))
            await until(lambda: threads.running == 1, every=0.005)
            with pytest.raises(ToolTimeoutError, match="waited for a free tool thread"):
                await hold.call(timeout=0.05, threads=threads)
            release.set()
            assert await first == "held"
    finally:
        release.set()
        await threads.aclose()


def test_tool_timeout_error_is_typed_and_no_builtin_timeout() -> None:
    err = ToolTimeoutError("x", tool="t", timeout=1.0)
    assert isinstance(err, AntiphonError) and not isinstance(err, TimeoutError)
