"""MCP tools (plugins/mcp): a local MCP server's tools as antiphon tools.

The server (tests/mcp_server.py, the official SDK's ``MCPServer``) runs as a subprocess
on stdio, and in the test's loop over streamable HTTP on loopback; no network.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.plugins.mcp import MCPToolError, MCPTools
from antiphon.services.tools import ToolArgumentError, run_tools

SERVER = Path(__file__).with_name("mcp_server.py")

pytestmark = pytest.mark.realtime  # a subprocess and the SDK's own threads of time


def stdio(**options: Any) -> MCPTools:
    return MCPTools.stdio(sys.executable, [str(SERVER)], connect_timeout=60.0, **options)


async def test_stdio_tools_are_listed_called_and_checked() -> None:
    async with stdio(call_timeout=30.0) as server:
        by_name = {t.name: t for t in server.tools}
        assert set(by_name) == {"add", "notes_search", "fail", "slow"}
        add = by_name["add"]
        assert add.description == "Add two integers."
        assert add.parameters["required"] == ["a", "b"]
        assert add.schema()["function"]["name"] == "add"
        assert await add.call('{"a": 2, "b": 40}') == "42"
        search = by_name["notes_search"]
        assert by_name["notes_search"].mcp_name == "notes.search"
        assert await search.call({"word": "milk", "limit": 1}) == "buy milk"
        with pytest.raises(ToolArgumentError, match="'b' is a required property"):
            await add.call('{"a": 2}')  # refused before anything is sent
        with pytest.raises(ToolArgumentError, match="not of type 'integer'"):
            add.parse_arguments({"a": "two", "b": 1})
        with pytest.raises(MCPToolError, match="the printer is on fire"):
            await by_name["fail"].call({"reason": "the printer is on fire"})
        outcomes = await run_tools(
            [
                ("c1", "add", '{"a": 1, "b": 2}'),
                ("c2", "fail", '{"reason": "no"}'),
                ("c3", "missing", "{}"),
            ],
            server.tools,
            timeout=30.0,
        )
        assert outcomes[0].output == "3"
        assert outcomes[1].output.startswith("error: ") and outcomes[1].output.endswith(": no")
        assert isinstance(outcomes[1].error, MCPToolError)
        assert outcomes[2].output.startswith("error: no tool named 'missing'")
    assert server.tools == []
    with pytest.raises(MCPToolError, match="closed"):
        await add.call({"a": 1, "b": 1})


async def test_a_call_past_its_timeout_is_reported_and_the_server_still_answers() -> None:
    async with stdio(call_timeout=1.0, prefix="t_", allowed={"slow", "add"}) as server:
        assert sorted(t.name for t in server.tools) == ["t_add", "t_slow"]
        [late] = await run_tools([("c1", "t_slow", '{"seconds": 30}')], server.tools, timeout=1.0)
        assert late.output.startswith("error:") and "1s" in late.output
        [ok] = await run_tools([("c2", "t_add", '{"a": 1, "b": 1}')], server.tools, timeout=30.0)
        assert ok.output == "2"


async def test_a_server_that_cannot_start_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="could not be reached") as err:
        async with MCPTools.stdio(
            sys.executable, ["-c", "raise SystemExit(3)"], connect_timeout=60.0
        ):
            pass
    assert err.value.stage == "connect"


async def test_a_server_that_never_answers_times_out_on_connect() -> None:
    silent = MCPTools.stdio(
        sys.executable, ["-c", "import time; time.sleep(60)"], connect_timeout=0.5
    )
    with pytest.raises(ProviderTimeoutError) as err:
        async with silent:
            pass
    assert err.value.timeout == 0.5


async def test_streamable_http_tools() -> None:
    from antiphon.testing.asgi import serve_app

    sys.path.insert(0, str(SERVER.parent))
    try:
        import mcp_server
    finally:
        sys.path.remove(str(SERVER.parent))
    app = mcp_server.server.streamable_http_app()
    seen: list[bytes | None] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope["headers"]).get(b"authorization"))
        await app(scope, receive, send)

    async with serve_app(recording) as address:
        async with MCPTools.http(f"http://{address}/mcp", call_timeout=30.0) as server:
            add = next(t for t in server.tools if t.name == "add")
            assert await add.call({"a": 20, "b": 22}) == "42"
        assert seen and set(seen) == {None}
        seen.clear()
        headers = {"Authorization": "Bearer test"}
        async with MCPTools.http(f"http://{address}/mcp", headers=headers) as server:
            assert {t.name for t in server.tools} >= {"add", "notes_search"}
        assert seen and set(seen) == {b"Bearer test"}


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="URL"):
        MCPTools.http("ftp://example.invalid/mcp")
    with pytest.raises(ConfigError, match="connect_timeout"):
        MCPTools.stdio("true", connect_timeout=0)
    with pytest.raises(ConfigError, match="prefix"):
        MCPTools.stdio("true", prefix="bad prefix")


async def test_an_mcp_tool_answers_a_caller_through_ws_agent() -> None:
    """A caller's question reaches the LLM, which calls the MCP server's ``add`` tool; the
    result comes back through the session and is spoken on the real ``/ws/agent``."""
    import asyncio
    import contextlib
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from antiphon.agent import AgentOptions, AgentSession, TurnOptions
    from antiphon.server.agents import CallableAgent
    from antiphon.server.app import create_app
    from antiphon.services.llm import ChatContext
    from antiphon.services.vad import VADOptions
    from antiphon.testing.agent import (
        EnergyVAD,
        ScriptedLLM,
        ScriptedSTT,
        ToneTTS,
        ToolCallScript,
        silence,
        speech,
    )
    from antiphon.testing.asgi import serve_app
    from antiphon.testing.poll import until

    def say_result(ctx: ChatContext) -> str:
        return f"It is {ctx.messages[-1].content}."

    async with stdio(call_timeout=30.0) as tools:
        stt = ScriptedSTT(["what is twenty plus twenty two"])
        llm = ScriptedLLM([[ToolCallScript("add", {"a": 20, "b": 22})], say_result])
        tts = ToneTTS()

        def make() -> AgentSession:
            vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3))
            return AgentSession(
                vad=vad,
                stt=stt,
                llm=llm,
                tts=tts,
                tools=tools.tools,
                options=AgentOptions(turn=TurnOptions(preemptive=False)),
            )

        async def stop() -> None:
            for service in (stt, llm, tts):
                await service.aclose()

        app = create_app(CallableAgent(make, stop=stop))
        events: list[dict[str, Any]] = []
        async with serve_app(app) as host, connect(f"ws://{host}/ws/agent") as ws:

            async def collect() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for message in ws:
                        if isinstance(message, str):
                            events.append(json.loads(message))

            reader = asyncio.create_task(collect())
            for audio in (silence(0.3), speech(0.8), silence(0.6)):
                for frame in audio.split(0.02):
                    await ws.send(frame.data)
                    await asyncio.sleep(0.02)

            def agent_lines() -> list[str]:
                return [
                    e["text"] for e in events if e["type"] == "transcript" and e["role"] == "agent"
                ]

            await until(lambda: agent_lines(), timeout=60)
            assert agent_lines() == ["It is 42."]
            await until(lambda: [e for e in events if e["type"] == "turn"], timeout=30)
            [turn] = [e for e in events if e["type"] == "turn"]
            assert turn["metrics"]["tool_calls"] == ["add"]
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.wait_for(reader, 30)
