"""The LLM conformance suite: what every :class:`~antiphon.services.llm.LLM` must do.

A plugin's tests subclass a suite and set ``harness`` — an :class:`LLMHarness` that
gives an LLM whose replies (:class:`~antiphon.testing.openai_chat.Reply`) and faults
(:class:`~antiphon.testing.faults.FaultPlan`) the test controls::

    class TestOpenAILLMConformance(LLMFaultConformance):
        harness = OpenAIHarness()

:class:`LLMConformance` holds the cases any model can be put through (text in deltas, an
argument-free tool call, cancel mid-stream and before the first event, ``aclose`` twice
and from another task, many concurrent streams); it needs only ``chunk_interval`` of the
plan. :class:`LLMFaultConformance` adds the cases that need a server to misbehave (tool
calls streamed in fragments, parallel calls, first-token and idle deadlines, a stream
cut or failing after tokens, garbage, retry before the first token and never after,
auth refused, connect refused or hanging, data after ``[DONE]``, odd chunking, stale
keep-alive connections). Every case is bounded by ``GUARD`` seconds and ends asserting
that no task, thread or socket was left behind (:class:`~antiphon.testing.leaks.LeakCheck`).
Requires pytest and pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from antiphon.errors import AuthError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.services.llm import (
    LLM,
    ChatContext,
    ChatEvent,
    ChatStream,
    LLMDeadlines,
    StreamState,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from antiphon.services.tools import function_tool, run_tools
from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.openai_chat import Reply, ScriptedCall

#: Short deadlines so that faults resolve quickly; GUARD catches real hangs.
FAST = LLMDeadlines(connect=1.0, first_token=1.5, idle=1.0, close=0.5)
GUARD = 20.0
PROMPT = "Tell me something about streaming."
TOOL_PROMPT = "Read the clock: what time is it now?"
LONG = " ".join(f"word{i}" for i in range(40)) + "."
FOREVER = 60.0
HELLO = Reply("Hello there, how are you today?")


@function_tool
def read_clock() -> str:
    """Read the clock: the time now."""
    return "It is noon."


@function_tool
def lookup(city: str, days: int = 1) -> str:
    """Look up the forecast of a city.

    Args:
        city: The city.
        days: How many days ahead.
    """
    return f"{city}: sunny for {days} day(s)"


@dataclass
class LLMRun:
    """An LLM under test, and what its server saw."""

    llm: LLM
    ports: Sequence[int] = ()
    requests: Callable[[], int] = field(default=lambda: 0)
    """Requests the server received so far (retries included)."""
    cancels: Callable[[], int] = field(default=lambda: 0)
    """Responses the server saw abandoned by the client."""


class LLMHarness(ABC):
    """What the suite needs to know about one plugin."""

    @abstractmethod
    def run(
        self,
        replies: Reply | Sequence[Reply],
        plan: FaultPlan,
        deadlines: LLMDeadlines,
        **options: Any,
    ) -> AbstractAsyncContextManager[LLMRun]:
        """Start the server (if any) with ``replies`` and ``plan``; yield the LLM pointed
        at it with valid credentials. ``options``: ``retry_after`` (the server's
        ``Retry-After``), ``reject_requests``, ``base_url`` (another address),
        ``api_key``, ``max_retry_wait``. The suite closes the LLM; the harness stops its
        server afterwards."""


def free_port() -> int:
    """A loopback port nothing listens on (for connect-refused cases)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def drain(stream: ChatStream) -> tuple[list[ChatEvent], ProviderError | None]:
    """Every event of ``stream`` and the error that ended it (None if it did not fail)."""
    events: list[ChatEvent] = []
    try:
        async for e in stream:
            events.append(e)
    except ProviderError as exc:
        return events, exc
    return events, None


def text_of(events: Sequence[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait (bounded) until the server has caught up."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() >= end:
            raise AssertionError("the server did not get there in time")
        await asyncio.sleep(0.01)


class LLMConformance:
    """Cases every LLM must pass; subclasses set ``harness``."""

    harness: ClassVar[LLMHarness]
    #: Run on :class:`~antiphon.testing.vloop.VirtualTimeLoop`: a harness runs its fake in
    #: the test's loop (``antiphon.testing.server.serving``) so deadlines are exact virtual
    #: time. A model that works on threads the loop cannot see sets it False.
    virtual_time: ClassVar[bool] = True
    #: The protocol sends each tool call's arguments whole (Gemini), not in fragments:
    #: a call is then two deltas (id and name, then the arguments).
    whole_tool_calls: ClassVar[bool] = False

    @contextlib.asynccontextmanager
    async def run(
        self,
        replies: Reply | Sequence[Reply] = HELLO,
        plan: FaultPlan | None = None,
        *,
        deadlines: LLMDeadlines = FAST,
        **options: Any,
    ) -> AsyncIterator[LLMRun]:
        async with self.harness.run(replies, plan or FaultPlan(), deadlines, **options) as r:
            leaks = LeakCheck(ports=r.ports)
            try:
                async with asyncio.timeout(GUARD):
                    yield r
            finally:
                await r.llm.aclose()
            await leaks.assert_clean(settle=1.0)
            assert r.llm.active_streams == 0

    # ----------------------------------------------------------------- any model

    async def test_text_streams_in_deltas_and_completes(self) -> None:
        reply = "Streaming sends the answer in pieces, as it is made."
        async with self.run(Reply(reply)) as r:
            s = r.llm.chat(ChatContext().user(PROMPT), generation=7)
            events, error = await drain(s)
            assert error is None
            deltas = [e for e in events if isinstance(e, TextDelta)]
            assert len(deltas) > 1 and all(d.text for d in deltas)
            assert text_of(events) == reply
            result = await s.result()
            assert result.state is StreamState.COMPLETED and result.finish_reason == "stop"
            assert result.text == reply and result.tool_calls == ()
            assert result.usage.completion_tokens > 0
            assert s.generation == 7 and s.time_to_first_token is not None

    async def test_argument_free_tool_call(self) -> None:
        async with self.run(Reply(tool_calls=(ScriptedCall("read_clock", {}),))) as r:
            s = r.llm.chat(ChatContext().user(TOOL_PROMPT), tools=[read_clock])
            events, error = await drain(s)
            assert error is None
            calls = [e for e in events if isinstance(e, ToolCall)]
            assert [c.name for c in calls] == ["read_clock"] and calls[0].args() == {}
            assert isinstance(events[0], ToolCallDelta)
            result = await s.result()
            assert result.finish_reason == "tool_calls" and result.tool_calls == tuple(calls)
            (outcome,) = await run_tools(result.tool_calls, [read_clock])
            assert outcome.output == "It is noon." and outcome.error is None

    async def test_cancel_mid_stream_is_immediate_and_final(self) -> None:
        async with self.run(Reply(LONG), FaultPlan(chunk_interval=0.05)) as r:
            s = r.llm.chat(ChatContext().user(PROMPT))
            first = await anext(s)
            assert isinstance(first, TextDelta)
            s.cancel()
            assert s.state is StreamState.CANCELLED
            assert [e async for e in s] == []
            result = await s.result()
            assert result.finish_reason == "cancelled" and result.state is StreamState.CANCELLED
            assert len(result.text) < len(LONG)
            await s.aclose()

    async def test_cancel_before_the_first_event(self) -> None:
        async with self.run(Reply(LONG), FaultPlan(chunk_interval=0.05)) as r:
            s = r.llm.chat(ChatContext().user(PROMPT))
            s.cancel()
            assert [e async for e in s] == []
            assert (await s.result()).state is StreamState.CANCELLED

    async def test_breaking_out_of_the_loop_and_closing(self) -> None:
        async with self.run(Reply(LONG), FaultPlan(chunk_interval=0.05)) as r:
            async with r.llm.chat(ChatContext().user(PROMPT)) as s:
                async for _ in s:
                    break
            assert s.state is StreamState.CANCELLED

    async def test_aclose_twice_and_from_another_task(self) -> None:
        async with self.run(Reply(LONG), FaultPlan(chunk_interval=0.05)) as r:
            s = r.llm.chat(ChatContext().user(PROMPT))
            await anext(s)
            await asyncio.gather(s.aclose(), asyncio.create_task(s.aclose()))
            assert s.state is StreamState.CANCELLED
            await s.aclose()
            live = r.llm.chat(ChatContext().user(PROMPT))
            await asyncio.gather(r.llm.aclose(), asyncio.create_task(r.llm.aclose()))
            assert live.state is StreamState.CANCELLED and r.llm.closed
            with pytest.raises(StreamClosedError):
                r.llm.chat(ChatContext().user(PROMPT))

    async def test_many_concurrent_streams(self) -> None:
        reply = "Every stream gets the whole answer."
        async with self.run(Reply(reply)) as r:
            streams = [r.llm.chat(ChatContext().user(PROMPT), generation=i) for i in range(30)]
            texts = await asyncio.gather(*(s.collect_text() for s in streams))
            assert texts == [reply] * 30
            assert all(s.state is StreamState.COMPLETED for s in streams)
            assert r.llm.active_streams == 0


class LLMFaultConformance(LLMConformance):
    """Cases that need a server that misbehaves on purpose (a fake with a FaultPlan)."""

    async def _fails(
        self, r: LLMRun, error: type[BaseException] = ProviderError, **chat: Any
    ) -> tuple[list[ChatEvent], ProviderError]:
        s = r.llm.chat(ChatContext().user(PROMPT), **chat)
        events, exc = await drain(s)
        assert exc is not None, f"expected {error.__name__}, the stream completed"
        assert isinstance(exc, error), f"expected {error.__name__}, got {exc!r}"
        result = await s.result()
        assert result.state is StreamState.FAILED and result.error is exc
        assert result.finish_reason == "error"
        return events, exc

    # -- tool calls
    async def test_tool_call_is_assembled_from_fragments(self) -> None:
        args = {"city": "São Paulo", "days": 3}
        async with self.run(Reply(tool_calls=(ScriptedCall("lookup", args, "call_1"),))) as r:
            s = r.llm.chat(ChatContext().user(PROMPT), tools=[lookup, read_clock])
            events, error = await drain(s)
            assert error is None
            deltas = [e for e in events if isinstance(e, ToolCallDelta)]
            assert len(deltas) > (1 if self.whole_tool_calls else 2)
            assert deltas[0].name == "lookup" and deltas[0].id == "call_1"
            assert all(d.index == 0 for d in deltas)
            (call,) = [e for e in events if isinstance(e, ToolCall)]
            assert call == ToolCall("call_1", "lookup", "".join(d.arguments for d in deltas))
            assert call.args() == args
            assert lookup.parse_arguments(call.arguments) == args

    async def test_parallel_tool_calls(self) -> None:
        calls = (
            ScriptedCall("lookup", {"city": "Oslo"}, "call_a"),
            ScriptedCall("lookup", {"city": "Rome", "days": 2}, "call_b"),
            ScriptedCall("read_clock", {}, "call_c"),
        )
        async with self.run(Reply(tool_calls=calls)) as r:
            s = r.llm.chat(ChatContext().user(PROMPT), tools=[lookup, read_clock])
            events, error = await drain(s)
            assert error is None
            got = [e for e in events if isinstance(e, ToolCall)]
            assert [(c.id, c.name) for c in got] == [(c.id, c.name) for c in calls]
            # each call is complete as soon as the next one starts
            assert events.index(got[0]) < next(
                i for i, e in enumerate(events) if isinstance(e, ToolCallDelta) and e.index == 1
            )
            outcomes = await run_tools(got, [lookup, read_clock])
            assert [o.output for o in outcomes] == [
                "Oslo: sunny for 1 day(s)",
                "Rome: sunny for 2 day(s)",
                "It is noon.",
            ]
            assert (await s.result()).finish_reason == "tool_calls"

    async def test_text_then_a_tool_call(self) -> None:
        reply = Reply("Let me check.", (ScriptedCall("read_clock", {}, "call_t"),))
        async with self.run(reply) as r:
            s = r.llm.chat(ChatContext().user(PROMPT), tools=[read_clock])
            events, error = await drain(s)
            assert error is None and text_of(events) == "Let me check."
            result = await s.result()
            assert result.tool_calls == (ToolCall("call_t", "read_clock", "{}"),)
            assert result.finish_reason == "tool_calls"

    # -- deadlines
    async def test_slow_first_token_hits_the_first_token_deadline(self) -> None:
        async with self.run(plan=FaultPlan(first_audio_delay=FOREVER)) as r:
            events, exc = await self._fails(r, ProviderTimeoutError)
            assert events == []
            assert isinstance(exc, ProviderTimeoutError) and exc.stage == "first_token"
            assert r.requests() == 1  # a timeout is never retried

    async def test_silent_server_hits_the_first_token_deadline(self) -> None:
        async with self.run(plan=FaultPlan(silent_after=0)) as r:
            events, exc = await self._fails(r, ProviderTimeoutError)
            assert events == [] and isinstance(exc, ProviderTimeoutError)
            assert exc.stage == "first_token"

    async def test_connect_hangs_hits_a_deadline(self) -> None:
        async with self.run(plan=FaultPlan(hang_connect=True)) as r:
            events, _ = await self._fails(r, ProviderTimeoutError)
            assert events == []

    async def test_stall_mid_answer_hits_the_idle_deadline_after_the_text(self) -> None:
        reply = Reply("First words and then nothing.")
        async with self.run(reply, FaultPlan(chunk_interval=FOREVER)) as r:
            events, exc = await self._fails(r, ProviderTimeoutError)
            assert isinstance(exc, ProviderTimeoutError) and exc.stage == "idle"
            assert text_of(events) == reply.tokens()[0]
            assert r.requests() == 1

    # -- failures after tokens: typed error, what came is kept, never retried
    @pytest.mark.parametrize("code", [ABORT, 1011, 1000], ids=["reset", "closed", "clean-end"])
    async def test_cut_stream_fails_after_delivering_what_came(self, code: int) -> None:
        reply = Reply("One two three four five six.")
        async with self.run(reply, FaultPlan(close_mid_audio=code, close_after_chunks=2)) as r:
            events, _ = await self._fails(r)
            assert text_of(events) == "".join(reply.tokens()[:2])
            assert r.requests() == 1

    async def test_error_event_mid_stream(self) -> None:
        reply = Reply("One two three four five six.")
        async with self.run(reply, FaultPlan(error_mid_stream=True)) as r:
            events, exc = await self._fails(r)
            assert text_of(events) == "".join(reply.tokens()[:2])
            assert "error" in str(exc) and r.requests() == 1

    async def test_garbage_mid_stream_is_a_typed_error(self) -> None:
        reply = Reply("One two three four five six.")
        async with self.run(reply, FaultPlan(malformed_mid_stream=True)) as r:
            events, exc = await self._fails(r)
            assert text_of(events) == reply.tokens()[0]
            assert "malformed" in str(exc) and r.requests() == 1

    # -- retry before the first token, honouring Retry-After
    @pytest.mark.parametrize("status", [429, 500, 503])
    async def test_retry_once_before_the_first_token(self, status: int) -> None:
        reply = "Second time lucky."
        async with self.run(
            Reply(reply), FaultPlan(reject_status=status), reject_requests=1, retry_after="0"
        ) as r:
            assert await r.llm.chat(ChatContext().user(PROMPT)).collect_text() == reply
            assert r.requests() == 2

    async def test_retry_when_the_connection_drops_before_an_answer(self) -> None:
        async with self.run(Reply("Back again."), FaultPlan(drop_before_audio=1)) as r:
            assert await r.llm.chat(ChatContext().user(PROMPT)).collect_text() == "Back again."
            assert r.requests() == 2

    async def test_retry_only_once(self) -> None:
        async with self.run(plan=FaultPlan(reject_status=429), retry_after="0") as r:
            _, exc = await self._fails(r)
            assert exc.retryable and getattr(exc, "code", None) == 429
            assert r.requests() == 2

    async def test_a_retry_after_longer_than_allowed_is_not_waited_for(self) -> None:
        async with self.run(
            plan=FaultPlan(reject_status=429), retry_after="30", max_retry_wait=1.0
        ) as r:
            _, exc = await self._fails(r)
            assert getattr(exc, "retry_after", None) == 30.0
            assert r.requests() == 1

    async def test_cut_before_the_first_token_is_retried_once(self) -> None:
        plan = FaultPlan(close_mid_audio=ABORT, close_after_chunks=0)
        async with self.run(Reply("never heard"), plan) as r:
            events, _ = await self._fails(r)
            assert events == [] and r.requests() == 2

    async def test_auth_rejected_is_not_retried(self) -> None:
        async with self.run(plan=FaultPlan(reject_status=401)) as r:
            _, exc = await self._fails(r, AuthError)
            assert r.requests() == 1 and "401" in str(exc)

    async def test_wrong_key_is_an_auth_error(self) -> None:
        async with self.run(api_key="wrong-key") as r:
            await self._fails(r, AuthError)
            assert r.requests() == 1

    async def test_connect_refused_is_a_typed_error(self) -> None:
        async with self.run(base_url=f"http://127.0.0.1:{free_port()}/v1") as r:
            events, exc = await self._fails(r)
            assert events == [] and exc.stage in ("connect", "request")

    # -- the stream's end
    async def test_data_after_done_is_ignored_and_never_reaches_the_next_stream(self) -> None:
        async with self.run(
            [Reply("First."), Reply("Second.")], FaultPlan(audio_after_done=3)
        ) as r:
            assert await r.llm.chat(ChatContext().user(PROMPT)).collect_text() == "First."
            assert await r.llm.chat(ChatContext().user(PROMPT)).collect_text() == "Second."

    async def test_odd_chunking_changes_nothing(self) -> None:
        reply = 'Ünïcödé, émojis 🎉🎉 and "quotes"\nacross lines.'
        async with self.run(Reply(reply), FaultPlan(odd_chunking=True)) as r:
            assert await r.llm.chat(ChatContext().user(PROMPT)).collect_text() == reply

    async def test_stale_keep_alive_connections_are_not_a_failure(self) -> None:
        plan = FaultPlan(idle_close_after=0.05)
        async with self.run([Reply("One."), Reply("Two.")], plan) as r:
            assert await r.llm.chat(ChatContext().user(PROMPT)).collect_text() == "One."
            await asyncio.sleep(0.2)  # the server closes the idle connection meanwhile
            assert await r.llm.chat(ChatContext().user(PROMPT)).collect_text() == "Two."

    async def test_cancel_abandons_the_response_on_the_server(self) -> None:
        async with self.run(Reply(LONG), FaultPlan(chunk_interval=0.05)) as r:
            s = r.llm.chat(ChatContext().user(PROMPT))
            await anext(s)
            s.cancel()
            await eventually(lambda: r.cancels() == 1)


__all__ = [
    "FAST",
    "GUARD",
    "HELLO",
    "PROMPT",
    "TOOL_PROMPT",
    "LLMConformance",
    "LLMFaultConformance",
    "LLMHarness",
    "LLMRun",
    "drain",
    "eventually",
    "free_port",
    "text_of",
]
