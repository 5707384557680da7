"""GeminiLLM: the LLM conformance suite on the fake server, protocol and plugin checks,
and the official ``google-genai`` SDK as the fake's witness."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from antiphon.errors import AuthError, ConfigError
from antiphon.plugins.gemini import GeminiLLM
from antiphon.plugins.gemini.llm import GeminiChatStream
from antiphon.protocols import gemini_generate as gg
from antiphon.protocols.openai_chat import ChatHttpError, ChatRequestError, SseEvent
from antiphon.services.llm import ChatContext, LLMDeadlines, StreamState, ToolCall
from antiphon.services.tools import function_tool
from antiphon.testing.conformance.llm import (
    FAST,
    LLMFaultConformance,
    LLMHarness,
    LLMRun,
    lookup,
    read_clock,
)
from antiphon.testing.faults import FaultPlan
from antiphon.testing.gemini_generate import (
    DEFAULT_API_KEY,
    STATUSES,
    FakeGeminiGenerate,
    check_body,
    error_body,
)
from antiphon.testing.openai_chat import Reply, ScriptedCall
from antiphon.testing.server import serving
from antiphon.testing.witness import WitnessError, check_model

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

MODEL = "gemini-2.5-flash"


class GeminiHarness(LLMHarness):
    @contextlib.asynccontextmanager
    async def run(
        self,
        replies: Reply | Sequence[Reply],
        plan: FaultPlan,
        deadlines: LLMDeadlines,
        **options: Any,
    ) -> AsyncIterator[LLMRun]:
        fake = FakeGeminiGenerate(
            plan,
            replies=replies,
            retry_after=options.pop("retry_after", "1"),
            reject_requests=options.pop("reject_requests", None),
        )
        async with serving(fake):
            llm = GeminiLLM(
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


class TestGeminiLLMConformance(LLMFaultConformance):
    harness = GeminiHarness()
    whole_tool_calls = True


# -- configuration


def test_missing_key_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GOOGLE_API_KEY or GEMINI_API_KEY"):
        GeminiLLM(MODEL)


async def test_key_from_the_environment_google_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
    async with GeminiLLM(MODEL) as llm:
        assert llm.headers["x-goog-api-key"] == "gemini-key"
        assert llm.url == (
            "https://generativelanguage.googleapis.com/v1beta/models/"
            "gemini-2.5-flash:streamGenerateContent?alt=sse"
        )
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    async with GeminiLLM("models/" + MODEL, base_url="http://proxy:8080/") as llm:
        assert llm.headers["x-goog-api-key"] == "google-key" and llm.model == MODEL
        assert llm.url.startswith("http://proxy:8080/v1beta/models/gemini-2.5-flash:")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "model"),
        ({"model": "a b"}, "model"),
        ({"model": "m", "base_url": "generativelanguage.googleapis.com"}, "http"),
        ({"model": "m", "temperature": 2.5}, "temperature"),
        ({"model": "m", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "thinking_budget": -2}, "thinking_budget"),
        ({"model": "m", "max_retries": -1}, "max_retries"),
        ({"model": "m", "max_signatures": 0}, "max_signatures"),
        ({"model": "m", "extra_body": {"contents": []}}, "contents"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        GeminiLLM(api_key="k", **kwargs)


# -- on the wire


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: Name of the city.
    """
    return "sunny"


def _history(first: str = "fc_1") -> ChatContext:
    call = ToolCall(first, "get_weather", '{"city": "Oslo"}')
    other = ToolCall("fc_2", "get_weather", '{"city": "Rome"}')
    return (
        ChatContext()
        .system("Be brief.")
        .user("Weather in Oslo and Rome?")
        .assistant("Checking.", [call, other])
        .tool_result(call, "sunny")
        .tool_result(other, "rain")
        .user("And tomorrow?")
    )


async def test_request_on_the_wire_with_history_and_tools() -> None:
    async with (
        serving(FakeGeminiGenerate(replies=Reply("Sunny, then rain."))) as fake,
        GeminiLLM(
            MODEL,
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            temperature=0.2,
            max_output_tokens=300,
            thinking_budget=0,
            tool_choice="get_weather",
            deadlines=FAST,
        ) as llm,
    ):
        s = llm.chat(_history(), tools=[get_weather, read_clock])
        r = await s.result()
        assert r.text == "Sunny, then rain." and r.usage.prompt_tokens > 0
        assert isinstance(s, GeminiChatStream) and s.gemini_reason == "STOP"
    (req,) = fake.stats.requests
    assert req.path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert req.query == {"alt": ["sse"]}
    assert req.headers["x-goog-api-key"] == DEFAULT_API_KEY
    body = req.json
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "maxOutputTokens": 300,
        "thinkingConfig": {"thinkingBudget": 0},
    }
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": get_weather.description,
                    "parametersJsonSchema": get_weather.parameters,
                },
                {"name": "read_clock", "description": read_clock.description},
            ]
        }
    ]
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Oslo and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {"functionCall": {"id": "fc_1", "name": "get_weather", "args": {"city": "Oslo"}}},
                {"functionCall": {"id": "fc_2", "name": "get_weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": "fc_1",
                        "name": "get_weather",
                        "response": {"output": "sunny"},
                    }
                },
                {
                    "functionResponse": {
                        "id": "fc_2",
                        "name": "get_weather",
                        "response": {"output": "rain"},
                    }
                },
                {"text": "And tomorrow?"},
            ],
        },
    ]


async def test_thought_signatures_go_back_with_their_calls() -> None:
    """Gemini 3 refuses a replayed call without its signature: the LLM remembers them,
    and a call the API sent without an id keeps a local id that is never sent."""
    replies = [
        Reply(tool_calls=(ScriptedCall("get_weather", {"city": "Oslo"}, "fc_api"),)),
        Reply(tool_calls=(ScriptedCall("read_clock", {}),)),  # no id from the API
        Reply("Done."),
    ]
    async with (
        serving(FakeGeminiGenerate(replies=replies)) as fake,
        GeminiLLM(MODEL, api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as llm,
    ):
        ctx = ChatContext().user("Weather in Oslo, and the time?")
        for _ in range(2):
            result = await llm.chat(ctx, tools=[get_weather, read_clock]).result()
            assert result.state is StreamState.COMPLETED and result.finish_reason == "tool_calls"
            (call,) = result.tool_calls
            ctx.assistant("", [call]).tool_result(call, "ok")
        assert result.tool_calls[0].id.startswith(gg.GENERATED_ID_PREFIX)
        assert await llm.chat(ctx, tools=[get_weather, read_clock]).collect_text() == "Done."
        # without the memory, the fake refuses the replayed call as the API does
        llm._signatures.clear()
        with pytest.raises(ChatRequestError, match="thought_signature"):
            await llm.chat(ctx, tools=[get_weather, read_clock]).collect_text()
    last = fake.stats.requests[2].json["contents"]
    (first_call,) = [p for p in last[1]["parts"] if "functionCall" in p]
    assert first_call["functionCall"]["id"] == "fc_api"
    assert first_call["thoughtSignature"] == fake.signatures["fc_api"]
    (second_call,) = [p for p in last[3]["parts"] if "functionCall" in p]
    assert "id" not in second_call["functionCall"]
    assert "thoughtSignature" in second_call  # the API's first call always carries one
    (response,) = [p for p in last[4]["parts"] if "functionResponse" in p]
    assert "id" not in response["functionResponse"]


def test_signature_memory_is_bounded() -> None:
    llm = GeminiLLM(MODEL, api_key="k", max_signatures=2)
    for i in range(3):
        llm.remember_signature(f"c{i}", f"s{i}")
    assert list(llm._signatures) == ["c1", "c2"]


def test_empty_turns_are_dropped_and_turns_of_one_role_merge() -> None:
    ctx = ChatContext().user("one").user("two").assistant("").user("three")
    body = gg.build_body(ctx.messages)
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}, {"text": "three"}]}
    ]
    with pytest.raises(ConfigError, match="non-empty"):
        gg.build_body(ChatContext().system("only a system prompt").messages)
    with pytest.raises(ConfigError, match="tool_choice"):
        gg.build_body(ChatContext().user("hi").messages, tool_choice="any")


def test_the_stream_machine() -> None:
    machine = gg.GenerateStream(new_id=lambda: "antiphon-fc-1")
    assert machine.feed(gg.TextPart("Hi")) == [gg.TextOut("Hi")]
    assert machine.feed(gg.CallPart(None, "read_clock", "{}", "sig")) == [
        gg.ToolCallOut(0, "antiphon-fc-1", "read_clock", "{}", "sig")
    ]
    assert machine.feed(gg.CallPart("x", "lookup", '{"city": "Oslo"}')) == [
        gg.ToolCallOut(1, "x", "lookup", '{"city": "Oslo"}')
    ]
    assert machine.feed(gg.FinishEvent("STOP")) == [gg.Finish("tool_calls", "STOP"), gg.Done()]
    assert machine.feed(gg.TextPart("late")) == []
    with pytest.raises(gg.StreamErrorEvent, match="MALFORMED_FUNCTION_CALL"):
        gg.GenerateStream().feed(gg.FinishEvent("MALFORMED_FUNCTION_CALL"))
    assert gg.finish_reason("SAFETY", calls=False) == "content_filter"
    assert gg.finish_reason("MAX_TOKENS", calls=True) == "length"


def test_parse_event_skips_thoughts_and_reads_usage_then_finish() -> None:
    data = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "hmm", "thought": True}, {"text": "Yes."}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 4,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 3,
        },
    }
    assert gg.parse_event(SseEvent(json.dumps(data))) == [
        gg.TextPart("Yes."),
        gg.UsageEvent(4, 5),
        gg.FinishEvent("STOP"),
    ]
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}}
    with pytest.raises(gg.StreamErrorEvent, match="blocked"):
        gg.parse_event(SseEvent(json.dumps(blocked)))
    with pytest.raises(gg.Malformed):
        gg.parse_event(SseEvent('{"candidates": {}}'))


def test_an_error_mid_stream_parses_as_data_or_as_bare_json_lines() -> None:
    for framing in (
        b"data: " + json.dumps(json.loads(error_body(503))).encode() + b"\n\n",
        error_body(503).encode() + b"\r\n",
    ):
        parser = gg.GeminiSseParser()
        events = parser.feed(framing[:20]) + parser.feed(framing[20:])
        (event,) = events
        with pytest.raises(gg.StreamErrorEvent) as info:
            gg.parse_event(event)
        assert info.value.type == "UNAVAILABLE"


@pytest.mark.parametrize(
    ("status", "reason", "kind", "retryable"),
    [
        (400, "API_KEY_INVALID", AuthError, False),
        (403, None, AuthError, False),
        (429, None, ChatHttpError, True),
        (503, None, ChatHttpError, True),
        (404, None, ChatRequestError, False),
    ],
)
def test_http_errors_are_typed(
    status: int, reason: str | None, kind: type[Exception], retryable: bool
) -> None:
    body = error_body(status, reason=reason, retry_delay="7s" if retryable else None)
    error = gg.http_error(status, {}, body, provider="gemini")
    assert isinstance(error, kind) and error.retryable is retryable and error.status == status
    assert error.retry_after == (7.0 if retryable else None)
    assert gg.http_error(429, {"retry-after": "2"}, "", provider="g").retry_after == 2.0


# -- the witness: the official SDK's types and client


def _replies() -> list[Reply]:
    return [
        Reply("Hello there, how are you today?"),
        Reply("Let me check.", (ScriptedCall("lookup", {"city": "Oslo", "days": 2}, "fc_a"),)),
        Reply(tool_calls=(ScriptedCall("read_clock", {}), ScriptedCall("lookup", {"city": "R"}))),
    ]


def _check_request(body: dict[str, Any]) -> None:
    """Each part of a request body against the SDK's model of it (strict)."""
    for content in body["contents"]:
        check_model(content, gtypes.Content)
    if "systemInstruction" in body:
        check_model(body["systemInstruction"], gtypes.Content)
    for tool in body.get("tools", []):
        check_model(tool, gtypes.Tool)
    if "toolConfig" in body:
        check_model(body["toolConfig"], gtypes.ToolConfig)
    if "generationConfig" in body:
        check_model(body["generationConfig"], gtypes.GenerationConfig)
    assert set(body) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}


async def test_every_request_and_event_fits_the_sdk_types() -> None:
    async with (
        serving(FakeGeminiGenerate(replies=_replies())) as fake,
        GeminiLLM(
            MODEL,
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            temperature=0.3,
            top_p=0.9,
            top_k=20,
            stop_sequences=["###"],
            thinking_budget=0,
            tool_choice="auto",
            deadlines=FAST,
        ) as llm,
    ):
        for ctx in (_history(), ChatContext().user("hi"), ChatContext().system("x").user("y")):
            result = await llm.chat(ctx, tools=[get_weather, lookup, read_clock]).result()
            assert result.state is StreamState.COMPLETED
    assert len(fake.stats.requests) == 3
    for request in fake.stats.requests:
        _check_request(request.json)
        assert check_body(request.json) is None
    assert len(fake.sent_events) > 5
    for event in fake.sent_events:
        check_model(event, gtypes.GenerateContentResponse)


def test_error_bodies_fit_the_sdk_and_the_witness_is_strict() -> None:
    for status in STATUSES:
        body = json.loads(error_body(status, reason="R", retry_delay="1s"))
        with pytest.raises(genai_errors.APIError) as info:
            genai_errors.APIError.raise_for_response(httpx.Response(status, json=body))
        assert info.value.code == status and info.value.status == STATUSES[status][0]
    check_model({"role": "user", "parts": [{"text": "hi"}]}, gtypes.Content)
    with pytest.raises(WitnessError):
        check_model({"role": "user", "parts": [{"txt": "hi"}]}, gtypes.Content)


async def test_the_official_client_streams_from_the_fake() -> None:
    async with FakeGeminiGenerate(replies=_replies()) as fake:
        client = genai.Client(
            api_key=DEFAULT_API_KEY,
            http_options=gtypes.HttpOptions(base_url=fake.url),
        )
        aio = client.aio
        try:
            text: list[str] = []
            stream = await aio.models.generate_content_stream(
                model=MODEL,
                contents="hi",
                config=gtypes.GenerateContentConfig(system_instruction="Be brief."),
            )
            async for chunk in stream:
                text.append(chunk.text or "")
            assert "".join(text) == "Hello there, how are you today?"
            calls: list[gtypes.FunctionCall] = []
            stream = await aio.models.generate_content_stream(
                model=MODEL,
                contents="Weather?",
                config=gtypes.GenerateContentConfig(
                    tools=[
                        gtypes.Tool(
                            function_declarations=[
                                gtypes.FunctionDeclaration(
                                    name="lookup",
                                    description=lookup.description,
                                    parameters_json_schema=lookup.parameters,
                                )
                            ]
                        )
                    ],
                    automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
                ),
            )
            async for chunk in stream:
                calls.extend(chunk.function_calls or [])
            (call,) = calls
            assert call.id == "fc_a" and call.name == "lookup"
            assert call.args == {"city": "Oslo", "days": 2}
            fake.plan = FaultPlan(reject_status=429)
            fake.retry_after = "0"
            with pytest.raises(genai_errors.ClientError) as info:
                async for _ in await aio.models.generate_content_stream(model=MODEL, contents="x"):
                    pass
            assert info.value.code == 429
        finally:
            await aio.aclose()
            client.close()
