"""The OpenAI chat-completions protocol module: bodies, SSE parsing, chunks, errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.errors import AuthError, ConfigError, ProviderError, ProviderTimeoutError
from antiphon.protocols import openai_chat as oc
from antiphon.protocols.retry import retry_delay
from antiphon.services.llm import ChatContext, ToolCall
from antiphon.services.tools import function_tool


@function_tool
def get_time() -> str:
    """The time now."""
    return "noon"


def test_body_with_every_kind_of_message() -> None:
    call = ToolCall("c1", "get_time", "")
    ctx = ChatContext().system("s").user("u").assistant("ok", [call]).tool_result(call, "noon")
    body = oc.build_body(
        ctx.messages, [get_time], model="m", tool_choice="get_time", parallel_tool_calls=False
    )
    assert body["messages"][2] == {
        "role": "assistant",
        "content": "ok",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ],
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "noon"}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert body["parallel_tool_calls"] is False and body["stream"] is True
    assert json.loads(oc.encode_body(body)) == body
    plain = oc.build_body(
        ctx.messages[:2], model="m", include_usage=False, parallel_tool_calls=True
    )
    assert "stream_options" not in plain and "tools" not in plain
    assert "parallel_tool_calls" not in plain  # OpenAI refuses it without tools


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"model": ""}, "model is required"),
        ({"model": "m", "tool_choice": "auto"}, "needs tools"),
        ({"model": "m", "top_p": 0}, "top_p"),
        ({"model": "m", "stop": "x"}, "stop"),
        ({"model": "m", "extra": {"messages": []}}, "messages"),
    ],
)
def test_bad_body_options(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        oc.build_body(ChatContext().user("u").messages, **kwargs)  # type: ignore[arg-type]


def test_urls() -> None:
    assert oc.chat_url("http://localhost:11434/v1/") == "http://localhost:11434/v1/chat/completions"
    assert oc.chat_url("https://x/v1/chat/completions") == "https://x/v1/chat/completions"
    assert oc.azure_chat_url("https://r.openai.azure.com/", "dep", "2024-10-21") == (
        "https://r.openai.azure.com/openai/deployments/dep/chat/completions?api-version=2024-10-21"
    )
    with pytest.raises(ConfigError, match="resource URL"):
        oc.azure_chat_url("r.openai.azure.com", "dep")


# -- SSE

STREAM = (
    b"\xef\xbb\xbf: keep-alive\r\n\r\n"
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"H\xc3\xa9"}}]}\r\n\r\n'
    b'event: message\rid: 7\rdata: {"choices":[{"index":0,\r'
    b'data: "delta":{"content":" \xf0\x9f\x8e\x89"}}]}\r\r'
    b"retry: 100\nunknown: field\n"
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
    b"data: incomplete event at the end"
)


def events_of(chunks: list[bytes]) -> list[oc.SseEvent]:
    parser = oc.SseParser()
    out: list[oc.SseEvent] = []
    for c in chunks:
        out += parser.feed(c)
    return out + parser.close()


def test_sse_parser_whole_stream() -> None:
    events = events_of([STREAM])
    assert [e.data for e in events][-1] == "[DONE]" and len(events) == 6
    assert events[2] == oc.SseEvent(
        '{"choices":[{"index":0,\n"delta":{"content":" \U0001f389"}}]}', "message", "7"
    )
    wire = [w for e in events for w in oc.parse_event(e)]
    assert wire == [
        oc.ContentDelta("Hé"),
        oc.ContentDelta(" \U0001f389"),
        oc.Finish("stop"),
        oc.UsageReport(3, 2),
        oc.Done(),
    ]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert events_of(chunks) == events_of([STREAM])


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=17))
def test_arbitrary_bytes_give_events_or_malformed_in_any_chunking(data: bytes, step: int) -> None:
    def run(chunks: list[bytes]) -> list[oc.SseEvent] | str:
        try:
            return events_of(chunks)
        except oc.Malformed:
            return "malformed"

    whole = run([data])
    assert run([data[i : i + step] for i in range(0, len(data), step)]) == whole


def test_garbage_is_malformed() -> None:
    with pytest.raises(oc.Malformed, match="not UTF-8"):
        oc.SseParser().feed(b"data: \xff\xfe\n\n")
    with pytest.raises(oc.Malformed, match="longer than"):
        oc.SseParser(max_line=10).feed(b"data: " + b"x" * 20)
    for data in ["{not json", "[1, 2]", '{"choices": 3}', '{"choices":[{"delta":"x"}]}']:
        with pytest.raises(oc.Malformed):
            oc.parse_event(oc.SseEvent(data))
    with pytest.raises(oc.Malformed, match="index"):
        oc.parse_event(oc.SseEvent('{"choices":[{"delta":{"tool_calls":[{"index":-1}]}}]}'))


def test_tool_call_chunks_and_unknown_fields() -> None:
    first = {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "hmm",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": None,
            },
            {"index": 1, "delta": {"content": "other choice"}},
        ],
        "usage": None,
        "system_fingerprint": "fp",
    }
    assert oc.parse_event(oc.SseEvent(json.dumps(first))) == [
        oc.ToolCallFragment(0, "call_1", "f", "")
    ]
    # no index (older Ollama) and arguments as an object
    legacy = {
        "choices": [{"delta": {"tool_calls": [{"function": {"name": "g", "arguments": {}}}]}}]
    }
    assert oc.parse_event(oc.SseEvent(json.dumps(legacy))) == [
        oc.ToolCallFragment(0, None, "g", "{}")
    ]
    assert oc.parse_event(oc.SseEvent('{"object": "something.else"}')) == []


def test_in_stream_error() -> None:
    data = '{"error": {"message": "overloaded", "type": "server_error", "code": null}}'
    with pytest.raises(oc.StreamErrorEvent, match="overloaded") as info:
        oc.parse_event(oc.SseEvent(data))
    assert info.value.type == "server_error"


# -- HTTP errors


def test_http_errors_are_typed() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "param": None,
            }
        }
    )
    auth = oc.http_error(401, {}, body, provider="openai")
    assert isinstance(auth, AuthError) and isinstance(auth, oc.ChatAuthError)
    assert "Incorrect API key" in str(auth) and auth.error_code == "invalid_api_key"
    assert not auth.retryable
    limited = oc.http_error(429, {"Retry-After": "2"}, b"{}", provider="openai")
    assert limited.retryable and limited.retry_after == 2.0 and "retry after 2s" in str(limited)
    assert oc.http_error(429, {"retry-after-ms": "150"}, "", provider="x").retry_after == 0.15
    server = oc.http_error(502, {}, b"<html>bad gateway</html>", provider="openai")
    assert server.retryable and "bad gateway" in str(server)
    bad = oc.http_error(
        400,
        {},
        '{"error": {"message": "maximum context length is 128000 tokens", "param": "messages"}}',
        provider="openai",
    )
    assert isinstance(bad, ConfigError) and isinstance(bad, ProviderError)
    assert "maximum context length" in str(bad) and bad.param == "messages"
    ollama = oc.http_error(404, {}, '{"error": "model \\"x\\" not found"}', provider="ollama")
    assert isinstance(ollama, oc.ChatRequestError) and 'model "x" not found' in str(ollama)
    other = oc.http_error(418, {}, "", provider="x")
    assert type(other) is oc.ChatHttpError and not other.retryable


def test_retry_after_forms() -> None:
    assert oc.parse_retry_after({}) is None
    assert oc.parse_retry_after({"retry-after": "nonsense"}) is None
    assert oc.parse_retry_after({"retry-after": "-3"}) == 0.0
    assert oc.parse_retry_after(
        {"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0
    ) == pytest.approx(10.0)


def test_retry_policy() -> None:
    limited = oc.http_error(429, {"retry-after": "0.3"}, "", provider="x")

    def delay(
        error: ProviderError,
        delivered: bool = False,
        attempt: int = 0,
        max_wait: float = 1.0,
        budget: float | None = None,
    ) -> float | None:
        return retry_delay(
            error,
            delivered=delivered,
            attempt=attempt,
            max_retries=1,
            max_wait=max_wait,
            backoff=0.25,
            budget=budget,
        )

    assert delay(limited) == 0.3  # Retry-After honoured
    assert delay(limited, delivered=True) is None  # never after tokens
    assert delay(limited, attempt=1) is None
    assert delay(limited, budget=0.2) is None  # would outlast the first-token deadline
    assert delay(limited, max_wait=0.1) is None
    assert delay(oc.http_error(500, {}, "", provider="x")) == 0.25
    assert delay(oc.http_error(401, {}, "", provider="x")) is None
    timeout = ProviderTimeoutError("slow", provider="x", stage="first_token", timeout=1)
    assert delay(timeout) is None
