"""The LLM contract (ChatStream): deltas, tool-call assembly, deadlines, one terminal state,
cancellation — on a scripted in-test model — and the offline responder behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import pytest

from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.services.llm import (
    LLM,
    ChatContext,
    ChatMessage,
    ChatStream,
    LLMDeadlines,
    StreamState,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from antiphon.services.tools import FunctionTool, function_tool
from antiphon.testing.leaks import LeakCheck

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

FAST = LLMDeadlines(connect=1.0, first_token=0.3, idle=0.3, close=1.0)


@dataclass(frozen=True)
class Step:
    """One scripted action: sleep, then text / a tool delta / an error."""

    sleep: float = 0.0
    text: str = ""
    tool: tuple[int, str | None, str | None, str] | None = None
    error: ProviderError | None = None


class ScriptedStream(ChatStream):
    def __init__(self, script: Sequence[Step], **kw: object) -> None:
        self.script = script
        super().__init__(**kw)  # type: ignore[arg-type]

    async def _run(self) -> None:
        for step in self.script:
            if step.sleep:
                await asyncio.sleep(step.sleep)
            if step.error:
                raise step.error
            if step.text:
                self._text(step.text)
            if step.tool:
                i, cid, name, args = step.tool
                self._tool_delta(i, id=cid, name=name, arguments=args)
        self._usage(Usage(3, len(self.script)))


class ScriptedLLM(LLM):
    provider: ClassVar[str] = "scripted"

    def __init__(self, script: Sequence[Step], deadlines: LLMDeadlines = FAST) -> None:
        super().__init__(deadlines=deadlines)
        self.script = script

    def _new_stream(
        self, context: ChatContext, tools: tuple[FunctionTool, ...], generation: int
    ) -> ChatStream:
        return ScriptedStream(
            self.script,
            provider=self.provider,
            context=context,
            tools=tools,
            generation=generation,
            deadlines=self.deadlines,
            owner=self._tasks,
        )


CTX = ChatContext().system("Be brief.").user("Hi")


async def test_text_streams_and_completes() -> None:
    leaks = LeakCheck()
    async with ScriptedLLM([Step(text="Hello"), Step(text=" there.")]) as llm:
        s = llm.chat(CTX, generation=4)
        events = [e async for e in s]
        assert events == [TextDelta("Hello"), TextDelta(" there.")]
        r = await s.result()
        assert r.text == "Hello there." and r.finish_reason == "stop"
        assert r.state is StreamState.COMPLETED and r.usage == Usage(3, 2)
        assert s.generation == 4 and s.time_to_first_token is not None
    await leaks.assert_clean()


async def test_tool_calls_are_assembled_from_deltas() -> None:
    script = [
        Step(tool=(0, "c1", "get_weather", "")),
        Step(tool=(0, None, None, '{"city": ')),
        Step(tool=(0, None, None, '"Oslo"}')),
        Step(tool=(1, "c2", "get_time", "{}")),
    ]
    async with ScriptedLLM(script) as llm:
        s = llm.chat(CTX)
        events = [e async for e in s]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(deltas) == 4
    assert calls == [
        ToolCall("c1", "get_weather", '{"city": "Oslo"}'),
        ToolCall("c2", "get_time", "{}"),
    ]
    # the first call is complete as soon as the second begins, before the stream ends
    assert events.index(calls[0]) < events.index(deltas[3]) + 1
    assert calls[0].args() == {"city": "Oslo"}
    r = await s.result()
    assert r.finish_reason == "tool_calls" and r.tool_calls == tuple(calls)


async def test_slow_first_token_fails_with_a_typed_timeout() -> None:
    async with ScriptedLLM([Step(sleep=5.0, text="late")]) as llm:
        s = llm.chat(CTX)
        with pytest.raises(ProviderTimeoutError) as info:
            [e async for e in s]
        assert info.value.stage == "first_token" and info.value.timeout == FAST.first_token
        r = await s.result()
        assert r.state is StreamState.FAILED and r.finish_reason == "error"
        assert r.error is info.value


async def test_stall_mid_stream_fails_with_idle_timeout_after_the_text() -> None:
    async with ScriptedLLM([Step(text="Hel"), Step(sleep=5.0, text="lo")]) as llm:
        s = llm.chat(CTX)
        got: list[object] = []
        with pytest.raises(ProviderTimeoutError) as info:
            async for e in s:
                got.append(e)
        assert got == [TextDelta("Hel")] and info.value.stage == "idle"


async def test_events_spaced_under_idle_never_time_out() -> None:
    script = [Step(sleep=0.1, text=str(i)) for i in range(6)]  # 0.6 s in all > first_token
    async with ScriptedLLM(script) as llm:
        assert await llm.chat(CTX).collect_text() == "012345"


async def test_provider_error_mid_stream() -> None:
    err = ProviderError("boom", provider="scripted", stage="stream", code=500)
    async with ScriptedLLM([Step(text="a"), Step(error=err)]) as llm:
        s = llm.chat(CTX)
        with pytest.raises(ProviderError, match="boom"):
            await s.collect_text()
        assert s.state is StreamState.FAILED and s.error is err and s.text == "a"


async def test_tool_call_without_name_is_a_provider_error() -> None:
    async with ScriptedLLM([Step(tool=(0, "x", None, "{}"))]) as llm:
        s = llm.chat(CTX)
        with pytest.raises(ProviderError, match="no name"):
            [e async for e in s]


async def test_cancel_is_immediate_and_final() -> None:
    leaks = LeakCheck()
    async with ScriptedLLM([Step(text="a")] + [Step(sleep=0.05, text="b")] * 50) as llm:
        s = llm.chat(CTX)
        assert await anext(s) == TextDelta("a")
        s.cancel()
        assert s.state is StreamState.CANCELLED
        assert [e async for e in s] == []
        r = await s.result()
        assert r.finish_reason == "cancelled"
        await asyncio.gather(s.aclose(), s.aclose(), asyncio.create_task(s.aclose()))
    await leaks.assert_clean()


async def test_aclose_cancels_live_streams_and_refuses_new_ones() -> None:
    llm = ScriptedLLM([Step(sleep=0.2, text="x")] * 10)
    streams = [llm.chat(CTX) for _ in range(20)]
    await asyncio.gather(llm.aclose(), asyncio.create_task(llm.aclose()))
    assert all(s.state is StreamState.CANCELLED for s in streams)
    assert llm.active_streams == 0
    with pytest.raises(StreamClosedError, match="closed"):
        llm.chat(CTX)


async def test_context_is_copied_and_validated() -> None:
    ctx = ChatContext().user("one")
    async with ScriptedLLM([Step(text="ok")]) as llm:
        s = llm.chat(ctx)
        ctx.user("two")
        assert len(s.context) == 1
        await s.collect_text()
        with pytest.raises(ConfigError, match="at least one"):
            llm.chat([])
        with pytest.raises(ConfigError, match="FunctionTool"):
            llm.chat(ctx, tools=[lambda: None])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="role"):
        ChatMessage("robot", "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tool_call_id"):
        ChatMessage("tool", "x")
    with pytest.raises(ConfigError, match="positive"):
        LLMDeadlines(idle=0)


def test_chat_context_helpers() -> None:
    call = ToolCall("c1", "get_time", "{}")
    ctx = ChatContext().system("s").user("u").assistant("", [call]).tool_result(call, "noon")
    assert [m.role for m in ctx.messages] == ["system", "user", "assistant", "tool"]
    assert ctx.last("tool") == ChatMessage("tool", "noon", tool_call_id="c1", name="get_time")
    assert ctx.last("user") is not None and ctx.copy().messages == ctx.messages


# -- the offline responder


async def test_offline_answers_from_the_faq_word_by_word() -> None:
    from antiphon.plugins.offline import OfflineLLM

    async with OfflineLLM() as llm:
        s = llm.chat(ChatContext().user("What can you do?"))
        events = [e async for e in s]
        r = await s.result()
    assert len(events) > 5 and all(isinstance(e, TextDelta) for e in events)
    assert r.text.startswith("I am the offline demo agent") and r.finish_reason == "stop"
    assert r.usage.completion_tokens == len(events)


async def test_offline_calls_the_time_tool_then_says_its_result() -> None:
    from antiphon.plugins.offline import OfflineLLM, get_time

    async with OfflineLLM() as llm:
        ctx = ChatContext().user("What time is it?")
        r = await llm.chat(ctx, tools=[get_time]).result()
        assert r.finish_reason == "tool_calls" and r.text == ""
        (call,) = r.tool_calls
        assert call.name == "get_time" and call.args() == {}
        output = await get_time.call(call.arguments)
        assert output.startswith("It is ")
        ctx.assistant("", [call]).tool_result(call, output)
        r2 = await llm.chat(ctx, tools=[get_time]).result()
        assert r2.text == output and r2.finish_reason == "stop"


async def test_offline_falls_back_and_ignores_tools_that_need_arguments() -> None:
    from antiphon.plugins.offline import FaqEntry, OfflineLLM

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    faq = [FaqEntry("What are your opening hours?", "Nine to five.")]
    async with OfflineLLM(faq=faq, fallback="No idea.") as llm:
        assert await llm.chat([ChatMessage("user", "opening hours?")]).collect_text() == (
            "Nine to five."
        )
        r = await llm.chat(ChatContext().user("weather in Paris"), tools=[weather]).result()
        assert r.text == "No idea." and not r.tool_calls
        assert await llm.chat(ChatContext().user("how do I cook pasta")).collect_text() == (
            "No idea."
        )


async def test_offline_cancel_mid_answer() -> None:
    from antiphon.plugins.offline import OfflineLLM

    leaks = LeakCheck()
    async with OfflineLLM(token_interval=0.05) as llm:
        s = llm.chat(ChatContext().user("What is antiphon?"))
        first = await anext(s)
        assert isinstance(first, TextDelta)
        s.cancel()
        assert [e async for e in s] == []
        assert (await s.result()).finish_reason == "cancelled"
    await leaks.assert_clean()


def test_offline_refuses_bad_settings(tmp_path: object) -> None:
    from pathlib import Path

    from antiphon.plugins.offline import OfflineLLM

    assert isinstance(tmp_path, Path)
    bad = tmp_path / "faq.json"
    bad.write_text('{"q": 1}')
    with pytest.raises(ConfigError, match="JSON list"):
        OfflineLLM(faq=bad)
    with pytest.raises(ConfigError, match="cannot read"):
        OfflineLLM(faq=tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="threshold"):
        OfflineLLM(threshold=0)


async def test_a_plugins_own_typed_timeout_is_kept() -> None:
    err = ProviderTimeoutError("could not connect", provider="scripted", stage="connect", timeout=1)
    async with ScriptedLLM([Step(error=err)]) as llm:
        s = llm.chat(CTX)
        with pytest.raises(ProviderTimeoutError) as info:
            await s.collect_text()
        assert info.value is err and info.value.stage == "connect"
        assert not s.has_output


async def test_a_tool_call_continued_after_a_later_one_started_is_refused() -> None:
    script = [
        Step(tool=(0, "a", "f", "{}")),
        Step(tool=(1, "b", "g", "{}")),
        Step(tool=(0, None, None, "more")),
    ]
    async with ScriptedLLM(script) as llm:
        s = llm.chat(CTX)
        events: list[object] = []
        with pytest.raises(ProviderError, match="continued"):
            async for e in s:
                events.append(e)
        assert ToolCall("a", "f", "{}") in events and s.has_output


def test_chat_message_tool_calls_are_checked_and_kept_as_a_tuple() -> None:
    call = ToolCall("c1", "f", "{}")
    m = ChatMessage("assistant", "", [call])  # type: ignore[arg-type]
    assert m.tool_calls == (call,)
    with pytest.raises(ConfigError, match="ToolCall"):
        ChatMessage("assistant", "", ({"id": "c1"},))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="only assistant"):
        ChatMessage("user", "x", (call,))
    with pytest.raises(ConfigError, match="not JSON"):
        ToolCall("c", "f", "{oops").args()
    assert ToolCall("c", "f", "  ").args() == {}


async def test_tool_names_must_be_unique() -> None:
    @function_tool
    def same() -> str:
        """One."""
        return ""

    async with ScriptedLLM([Step(text="x")]) as llm:
        with pytest.raises(ConfigError, match="unique"):
            llm.chat(CTX, tools=[same, same])
