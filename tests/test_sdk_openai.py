"""The ``openai`` SDK as witness of the realtime (GA) fake, the chat fake and their plugins.

The realtime conformance suite runs again with :class:`~sdk_witness.Wire` recording both
directions; every frame the fake sends must be a strict ``RealtimeServerEvent`` and every
frame the plugin sends a strict ``RealtimeClientEvent`` (the fault plan's deliberate
garbage excepted). Then the official clients run against the fakes: ``AsyncOpenAI``'s
realtime connection for one spoken turn, and chat completions (streamed and not).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

from antiphon.plugins.openai import OpenAILLM
from antiphon.services.llm import ChatContext, ToolCall
from antiphon.testing.conformance.realtime import RealtimeConformance
from antiphon.testing.openai_chat import FakeOpenAIChat, Reply, ScriptedCall
from antiphon.testing.realtime import DEFAULT_API_KEY, FakeRealtimeServer
from sdk_witness import Wire, assert_all_valid, wire
from test_openai_llm import get_weather
from test_openai_realtime import OpenAIHarness

__all__ = ["wire"]

#: Frames a fault plan sends on purpose to test the client's tolerance.
GARBAGE = ("{this is not json", '"response.something_new"')


def deliberate(text: str) -> bool:
    return any(g in text for g in GARBAGE)


#: The session object's ``id``, ``object`` and ``expires_at``: in the API reference's
#: ``session.created`` example and sent by the service, absent from the SDK's type.
SESSION_GAPS = frozenset({"$.session.id", "$.session.object", "$.session.expires_at"})


def check_realtime_wire(w: Wire) -> None:
    server = w.messages("server", skip=deliberate)
    assert_all_valid(RealtimeServerEvent, server, "fake", sdk_gaps=SESSION_GAPS)
    assert_all_valid(RealtimeClientEvent, w.messages("client", skip=deliberate), "plugin")


class TestRealtimeConformanceUnderWitness(RealtimeConformance[FakeRealtimeServer]):
    """Every scenario of the suite (healthy and faulty), its wire checked by the SDK."""

    harness = OpenAIHarness()

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire) -> Iterator[None]:
        yield
        check_realtime_wire(wire)


def test_the_witness_refuses_what_the_fake_used_to_send() -> None:
    """The strict check finds each divergence the GA fake once had."""
    from sdk_witness import strict_errors

    no_session_type = {"type": "session.created", "event_id": "e", "session": {"id": "s"}}
    assert strict_errors(RealtimeServerEvent, no_session_type)
    no_usage = {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": "e",
        "item_id": "i",
        "content_index": 0,
        "transcript": "hi",
    }
    assert any("usage" in e for e in strict_errors(RealtimeServerEvent, no_usage))
    no_part = {
        "type": "response.content_part.added",
        "event_id": "e",
        "response_id": "r",
        "item_id": "i",
        "output_index": 0,
        "content_index": 0,
    }
    assert any("part" in e for e in strict_errors(RealtimeServerEvent, no_part))
    invented_reason = {
        "type": "response.done",
        "event_id": "e",
        "response": {"id": "r", "status": "failed", "status_details": {"reason": "error"}},
    }
    assert strict_errors(RealtimeServerEvent, invented_reason)
    extra_field = {**no_usage, "usage": {"type": "duration", "seconds": 1.0}, "surprise": 1}
    assert strict_errors(RealtimeServerEvent, extra_field) == [
        "$.surprise: not a field of ConversationItemInputAudioTranscriptionCompletedEvent"
    ]


async def test_official_realtime_client_runs_a_spoken_turn_against_the_fake(wire: Wire) -> None:
    """``AsyncOpenAI().realtime.connect`` against the fake: a session, a voice turn, a reply."""
    async with FakeRealtimeServer(dialect="ga") as fake:
        client = AsyncOpenAI(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url.replace("ws://", "http://") + "/v1",
            websocket_base_url=fake.url + "/v1",
        )
        seen: list[str] = []
        transcript = ""
        audio = bytearray()
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(
                session={"type": "realtime", "output_modalities": ["audio"], "tools": []}
            )
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "What time is it?"}],
                }
            )
            await conn.response.create()
            async for event in conn:
                seen.append(event.type)
                if event.type == "response.output_audio.delta":
                    audio.extend(base64.b64decode(event.delta))
                elif event.type == "response.output_audio_transcript.done":
                    transcript = event.transcript
                elif event.type == "response.done":
                    assert event.response.status == "completed"
                    assert event.response.usage is not None
                    break
        await client.close()
    assert seen[0] == "session.created"
    assert "session.updated" in seen and "response.content_part.added" in seen
    assert transcript == fake.expected_reply("What time is it?")
    assert len(audio) == fake.stats.audio_out_bytes > 0
    check_realtime_wire(wire)


async def test_failed_response_reaches_the_official_client_with_its_error() -> None:
    from antiphon.testing.faults import FaultPlan

    async with FakeRealtimeServer(FaultPlan(error_mid_stream=True), dialect="ga") as fake:
        client = AsyncOpenAI(api_key=DEFAULT_API_KEY, websocket_base_url=fake.url + "/v1")
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime"})
            await conn.response.create(response={"instructions": "Say: ok one two three"})
            async for event in conn:
                if event.type == "response.done":
                    details = event.response.status_details
                    assert event.response.status == "failed" and details is not None
                    assert details.type == "failed" and details.reason is None
                    assert details.error is not None and details.error.type == "server_error"
                    break
        await client.close()


async def test_official_chat_client_streams_from_the_fake() -> None:
    """``AsyncOpenAI().chat.completions.create(stream=True)`` against the fake."""
    async with FakeOpenAIChat() as fake:
        client = AsyncOpenAI(api_key=fake.api_key, base_url=fake.base_url)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "What time is it?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        await client.close()
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: What time is it?"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None


def sse_data(body: bytes) -> list[Any]:
    events = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.mark.parametrize(
    "reply",
    [
        Reply("Hello there, how are you?"),
        Reply(tool_calls=(ScriptedCall("get_weather", {"city": "Paris"}),)),
    ],
    ids=["text", "tool-call"],
)
async def test_chat_plugin_requests_and_fake_chunks_are_sdk_types(reply: Reply) -> None:
    """The plugin's request body is a strict ``CompletionCreateParamsStreaming``; each
    chunk the fake streams is a strict ``ChatCompletionChunk``."""
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    ctx = (
        ChatContext()
        .system("Be brief.")
        .user("Weather in Oslo?")
        .assistant("", [call])
        .tool_result(call, "sunny")
        .user("And in Paris?")
    )
    async with FakeOpenAIChat(replies=reply) as fake:
        async with OpenAILLM(
            "gpt-4o-mini", api_key=fake.api_key, base_url=fake.base_url, tool_choice="auto"
        ) as llm:
            await llm.chat(ctx, tools=[get_weather]).result()
        request = fake.stats.requests[-1]
        assert_all_valid(CompletionCreateParamsStreaming, [request.json], "plugin")
        async with httpx.AsyncClient() as http:
            raw = await http.post(
                fake.base_url + "/chat/completions",
                json=request.json,
                headers={"Authorization": f"Bearer {fake.api_key}"},
            )
    chunks = sse_data(raw.content)
    assert len(chunks) > 2
    assert_all_valid(ChatCompletionChunk, chunks, "fake")


async def test_the_wire_records_both_directions(wire: Wire) -> None:
    """The recorder the witnesses rely on sees the fake's and the plugin's frames."""
    from antiphon.plugins.openai import OpenAIRealtime
    from antiphon.testing.conformance.realtime import FAST, turn

    async with (
        FakeRealtimeServer(dialect="ga") as fake,
        OpenAIRealtime(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as model,
        model.session() as s,
    ):
        s.say("ok")
        await turn(s)
    assert {"session.created", "response.done"} <= wire.types("server")
    assert {"session.update", "response.create"} <= wire.types("client")
