"""AnthropicLLM: the LLM conformance suite on the fake server, plugin checks, and the
official ``anthropic`` SDK as the fake's witness."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anthropic
import pytest
from anthropic.types import RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsStreaming
from anthropic.types.shared.error_response import ErrorResponse

from antiphon.errors import AuthError, ConfigError
from antiphon.plugins.anthropic import AnthropicLLM
from antiphon.plugins.anthropic.llm import AnthropicChatStream
from antiphon.protocols import anthropic_messages as am
from antiphon.protocols.openai_chat import ChatHttpError, ChatRequestError, SseEvent
from antiphon.services.llm import ChatContext, LLMDeadlines, StreamState, ToolCall
from antiphon.services.tools import function_tool
from antiphon.testing.anthropic_messages import (
    DEFAULT_API_KEY,
    ERRORS,
    FakeAnthropicMessages,
    check_body,
    error_body,
)
from antiphon.testing.conformance.llm import (
    FAST,
    LLMFaultConformance,
    LLMHarness,
    LLMRun,
    lookup,
    read_clock,
)
from antiphon.testing.faults import FaultPlan
from antiphon.testing.openai_chat import Reply, ScriptedCall
from antiphon.testing.server import serving
from antiphon.testing.witness import (
    WitnessError,
    assert_typed_dict,
    check_model,
)

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


MODEL = "claude-sonnet-4-5"


class AnthropicHarness(LLMHarness):
    @contextlib.asynccontextmanager
    async def run(
        self,
        replies: Reply | Sequence[Reply],
        plan: FaultPlan,
        deadlines: LLMDeadlines,
        **options: Any,
    ) -> AsyncIterator[LLMRun]:
        fake = FakeAnthropicMessages(
            plan,
            replies=replies,
            retry_after=options.pop("retry_after", "1"),
            reject_requests=options.pop("reject_requests", None),
        )
        async with serving(fake):
            llm = AnthropicLLM(
                MODEL,
                api_key=options.pop("api_key", DEFAULT_API_KEY),
                base_url=options.pop("base_url", fake.url),
                deadlines=deadlines,
                **options,
            )
            yield LLMRun(
                llm,
                ports=[fake.port],
                requests=lambda: len(fake.stats.requests),
                cancels=lambda: fake.stats.cancels,
            )


class TestAnthropicLLMConformance(LLMFaultConformance):
    harness = AnthropicHarness()


# -- configuration


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicLLM(MODEL)


async def test_key_from_the_environment_and_the_version_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    async with AnthropicLLM(MODEL, beta=["prompt-caching-2024-07-31"]) as llm:
        assert llm.url == "https://api.anthropic.com/v1/messages"
        assert llm._headers["x-api-key"] == "from-env"
        assert llm._headers["anthropic-version"] == "2023-06-01"
        assert llm._headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    async with AnthropicLLM(MODEL, base_url="http://proxy:8080/v1/") as proxied:
        assert proxied.url == "http://proxy:8080/v1/messages"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "model"),
        ({"model": "m", "base_url": "api.anthropic.com"}, "http"),
        ({"model": "m", "temperature": 1.5}, "temperature"),
        ({"model": "m", "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "top_k": 0}, "top_k"),
        ({"model": "m", "max_retries": -1}, "max_retries"),
        ({"model": "m", "extra_body": {"system": "x"}}, "system"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        AnthropicLLM(api_key="k", **kwargs)


# -- on the wire


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: Name of the city.
    """
    return "sunny"


def _history() -> ChatContext:
    call = ToolCall("toolu_1", "get_weather", '{"city": "Oslo"}')
    other = ToolCall("toolu_2", "get_weather", '{"city": "Rome"}')
    return (
        ChatContext()
        .system("Be brief.")
        .user("Weather in Oslo and Rome?")
        .assistant("Checking.", [call, other])
        .tool_result(call, "sunny")
        .tool_result(other, "rain")
        .user("And tomorrow?")
    )


async def test_request_on_the_wire_with_history_tools_and_caching() -> None:
    async with (
        serving(FakeAnthropicMessages(replies=Reply("Sunny, then rain."))) as fake,
        AnthropicLLM(
            MODEL,
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            temperature=0.2,
            max_tokens=300,
            tool_choice="auto",
            cache_system=True,
            cache_tools=True,
            deadlines=FAST,
        ) as llm,
    ):
        s = llm.chat(_history(), tools=[get_weather])
        r = await s.result()
        assert r.text == "Sunny, then rain." and r.usage.prompt_tokens > 0
        assert r.finish_reason == "stop" and isinstance(s, AnthropicChatStream)
        assert s.stop_reason == "end_turn"
    (req,) = fake.stats.requests
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == DEFAULT_API_KEY
    assert req.headers["anthropic-version"] == am.API_VERSION
    body = req.json
    assert body["model"] == MODEL and body["stream"] is True and body["max_tokens"] == 300
    assert body["system"] == [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": get_weather.description,
            "input_schema": get_weather.parameters,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    assert body["tool_choice"] == {"type": "auto"} and body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


def test_caching_is_opt_in_and_the_system_prompt_is_plain_text_by_default() -> None:
    body = am.build_body(_history().messages, [get_weather], model=MODEL)
    assert body["system"] == "Be brief." and "cache_control" not in body["tools"][0]
    assert "tool_choice" not in body
    single = am.build_body(
        ChatContext().user("hi").messages, [get_weather], model=MODEL, parallel_tool_calls=False
    )
    assert single["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    named = am.build_body(
        ChatContext().user("hi").messages, [get_weather], model=MODEL, tool_choice="get_weather"
    )
    assert named["tool_choice"] == {"type": "tool", "name": "get_weather"}
    with pytest.raises(ConfigError, match="tool_choice"):
        am.build_body(ChatContext().user("hi").messages, [], model=MODEL, tool_choice="any")


async def test_a_request_the_server_refuses_is_a_config_error_with_its_message() -> None:
    call = ToolCall("toolu_1", "get_weather", "{}")
    ctx = ChatContext().user("hi").assistant("", [call]).user("well?")  # no tool result
    async with (
        serving(FakeAnthropicMessages()) as fake,
        AnthropicLLM(MODEL, api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as llm,
    ):
        with pytest.raises(ChatRequestError, match="tool_result") as info:
            await llm.chat(ctx).collect_text()
        assert isinstance(info.value, ConfigError) and info.value.status == 400
        assert info.value.error_type == "invalid_request_error"


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (401, "authentication_error", False),
        (429, "rate_limit_error", True),
        (529, "overloaded_error", True),
    ],
)
async def test_http_errors_are_typed(status: int, kind: str, retryable: bool) -> None:
    plan = FaultPlan(reject_status=status)
    async with (
        serving(FakeAnthropicMessages(plan, retry_after="7")) as fake,
        AnthropicLLM(
            MODEL, api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST, max_retries=0
        ) as llm,
    ):
        s = llm.chat(ChatContext().user("hi"))
        result = await s.result()
    assert result.state is StreamState.FAILED
    error = result.error
    assert isinstance(error, ChatHttpError) and error.status == status
    assert error.error_type == kind and error.retryable is retryable
    assert isinstance(error, AuthError) is (status == 401)
    assert error.retry_after == (7.0 if retryable else None)
    check_model(json.loads(error_body(status)), ErrorResponse)


async def test_an_overloaded_error_event_before_the_first_token_is_retried_once() -> None:
    plan = FaultPlan(error_mid_stream=True, close_after_chunks=0)
    async with (
        serving(FakeAnthropicMessages(plan)) as fake,
        AnthropicLLM(
            MODEL, api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST, retry_backoff=0
        ) as llm,
    ):
        s = llm.chat(ChatContext().user("hi"))
        result = await s.result()
    assert result.state is StreamState.FAILED and result.text == ""
    assert result.error is not None and result.error.code == "overloaded_error"
    assert result.error.retryable and len(fake.stats.requests) == 2


def test_the_stream_machine_refuses_events_out_of_order() -> None:
    machine = am.MessageStream()
    with pytest.raises(am.Malformed, match="before message_start"):
        machine.feed(am.TextChunk(0, "early"))
    machine.feed(am.MessageStart("msg_1", MODEL, 3, 1))
    with pytest.raises(am.Malformed, match="not open"):
        machine.feed(am.TextChunk(0, "no block"))
    machine.feed(am.BlockStart(0, "text"))
    with pytest.raises(am.Malformed, match="input_json_delta in a text block"):
        machine.feed(am.InputJsonChunk(0, "{"))
    assert machine.feed(am.TextChunk(0, "hi")) == [am.TextOut("hi")]
    machine.feed(am.BlockStop(0))
    assert machine.feed(am.BlockStart(1, "tool_use", "toolu_9", "read_clock")) == [
        am.ToolStartOut(0, "toolu_9", "read_clock")
    ]
    assert machine.feed(am.BlockStop(1)) == [am.ToolArgsOut(0, "{}")]
    assert machine.feed(am.Unknown("future_event")) == []
    actions = machine.feed(am.MessageDelta("tool_use", 7))
    assert actions == [am.UsageOut(3, 7), am.Finish("tool_calls", "tool_use")]
    assert machine.feed(am.MessageStop()) == [am.Done()]
    assert machine.feed(am.TextChunk(0, "late")) == []


def test_an_error_event_is_raised_with_its_type() -> None:
    data = '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    with pytest.raises(am.StreamErrorEvent) as info:
        am.parse_event(SseEvent(data, "error"))
    assert info.value.type == "overloaded_error" and info.value.message == "Overloaded"


# -- the witness: the official SDK's types and client


def _replies() -> list[Reply]:
    return [
        Reply("Hello there, how are you today?"),
        Reply("Let me check.", (ScriptedCall("lookup", {"city": "Oslo", "days": 2}, "toolu_a"),)),
        Reply(
            tool_calls=(ScriptedCall("read_clock", {}), ScriptedCall("lookup", {"city": "Rome"}))
        ),
    ]


async def test_every_request_and_event_fits_the_sdk_types() -> None:
    async with (
        serving(FakeAnthropicMessages(replies=_replies())) as fake,
        AnthropicLLM(
            MODEL,
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            cache_system=True,
            cache_tools=True,
            parallel_tool_calls=False,
            stop_sequences=["###"],
            user_id="user-1",
            deadlines=FAST,
        ) as llm,
    ):
        for ctx in (_history(), ChatContext().user("hi"), ChatContext().system("x").user("y")):
            result = await llm.chat(ctx, tools=[get_weather, lookup, read_clock]).result()
            assert result.state is StreamState.COMPLETED
    assert len(fake.stats.requests) == 3
    for request in fake.stats.requests:
        assert_typed_dict(request.json, MessageCreateParamsStreaming)
        assert check_body(request.json) is None
    kinds = {e["type"] for e in fake.sent_events}
    assert kinds == {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
    }
    for event in fake.sent_events:
        if event["type"] != "ping":  # the SDK skips pings before typing events
            check_model(event, RawMessageStreamEvent)


async def test_error_bodies_and_the_in_stream_error_fit_the_sdk() -> None:
    for status in ERRORS:
        check_model(json.loads(error_body(status)), ErrorResponse)
    plan = FaultPlan(error_mid_stream=True)
    async with (
        serving(FakeAnthropicMessages(plan, replies=_replies())) as fake,
        AnthropicLLM(MODEL, api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as llm,
    ):
        result = await llm.chat(ChatContext().user("hi")).result()
    assert result.state is StreamState.FAILED and result.error is not None
    assert result.error.code == "overloaded_error"
    (error,) = [e for e in fake.sent_events if e["type"] == "error"]
    check_model(error, ErrorResponse)
    for event in fake.sent_events:
        if event["type"] not in ("ping", "error"):
            check_model(event, RawMessageStreamEvent)


def test_the_witness_is_strict() -> None:
    good = am.build_body(ChatContext().user("hi").messages, [], model=MODEL)
    assert_typed_dict(good, MessageCreateParamsStreaming)
    with pytest.raises(WitnessError, match="unknown field"):
        assert_typed_dict({**good, "stream_options": {}}, MessageCreateParamsStreaming)
    with pytest.raises(WitnessError, match="max_tokens: missing"):
        assert_typed_dict(
            {k: v for k, v in good.items() if k != "max_tokens"}, MessageCreateParamsStreaming
        )
    event = {"type": "message_stop"}
    check_model(event, RawMessageStreamEvent)
    with pytest.raises(WitnessError, match="does not declare"):
        check_model({**event, "surprise": 1}, RawMessageStreamEvent)


async def test_the_official_client_streams_from_the_fake() -> None:
    async with FakeAnthropicMessages(replies=_replies()) as fake:
        client = anthropic.AsyncAnthropic(api_key=DEFAULT_API_KEY, base_url=fake.url, max_retries=0)
        try:
            text: list[str] = []
            stream = await client.messages.create(
                model=MODEL,
                max_tokens=100,
                system="Be brief.",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
            )
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text.append(event.delta.text)
            assert "".join(text) == "Hello there, how are you today?"
            async with client.messages.stream(
                model=MODEL,
                max_tokens=100,
                messages=[{"role": "user", "content": "Weather?"}],
                tools=[
                    {
                        "name": "lookup",
                        "description": lookup.description,
                        "input_schema": lookup.parameters,
                    }
                ],
            ) as helper:
                message = await helper.get_final_message()
            assert message.stop_reason == "tool_use"
            (tool,) = [b for b in message.content if b.type == "tool_use"]
            assert tool.id == "toolu_a" and tool.input == {"city": "Oslo", "days": 2}
            fake.plan = FaultPlan(reject_status=529)
            with pytest.raises(anthropic.InternalServerError) as info:
                await client.messages.create(
                    model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
                )
            assert info.value.status_code == 529
        finally:
            await client.close()
