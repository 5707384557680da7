"""The Anthropic Messages protocol module on its own: any chunking of a stream gives the
same actions, and the conversation mapping keeps the API's turn rules."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from antiphon.protocols import anthropic_messages as am
from antiphon.protocols.openai_chat import SseParser
from antiphon.services.llm import ChatContext, ToolCall
from antiphon.testing.anthropic_messages import check_body


def _sse(obj: dict[str, Any]) -> bytes:
    return f"event: {obj['type']}\ndata: {json.dumps(obj, ensure_ascii=False)}\r\n\r\n".encode()


EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 30},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Héllo 🎉"},
    },
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "future_event", "whatever": True},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ""},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 9},
    },
    {"type": "message_stop"},
]
STREAM = b"".join(_sse(e) for e in EVENTS)


def _actions(chunks: list[bytes]) -> list[am.Action]:
    parser, machine = SseParser(), am.MessageStream()
    out: list[am.Action] = []
    for chunk in chunks:
        for sse in parser.feed(chunk):
            out += machine.feed(am.parse_event(sse))
    return out


EXPECTED = [
    am.TextOut("Héllo 🎉"),
    am.TextOut(" there."),
    am.ToolStartOut(0, "toolu_1", "lookup"),
    am.ToolArgsOut(0, '{"city": '),
    am.ToolArgsOut(0, '"Oslo"}'),
    am.UsageOut(42, 9),
    am.Finish("tool_calls", "tool_use"),
    am.Done(),
]


def test_a_whole_stream() -> None:
    assert _actions([STREAM]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_chunking_gives_the_same_actions(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    assert _actions([STREAM[a:b] for a, b in itertools.pairwise(points)]) == EXPECTED


def test_conversation_keeps_the_turn_rules() -> None:
    call = ToolCall("toolu_1", "lookup", "")
    ctx = (
        ChatContext()
        .system("One.")
        .user("Hi")
        .user("again")
        .assistant("")  # empty: nothing to send
        .assistant("", [call])
        .user("by the way")
        .tool_result(call, "done")
        .system("Two.")
    )
    body = am.build_body(ctx.messages, model="claude-x")
    assert body["system"] == "One.\n\nTwo."
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "again"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"},
                {"type": "text", "text": "by the way"},
            ],
        },
    ]
    assert check_body(body) is None


def test_errors_by_status() -> None:
    body = '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    error = am.http_error(529, {"retry-after": "3"}, body, provider="anthropic")
    assert error.retryable and error.retry_after == 3.0 and error.error_type == "overloaded_error"
    assert "overloaded" in str(error).lower()
    bad = am.http_error(
        400, {}, body.replace("overloaded_error", "invalid_request_error"), provider="anthropic"
    )
    assert not bad.retryable and bad.status == 400
