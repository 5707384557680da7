"""The ``azure-ai-voicelive`` SDK as witness of the Voice Live fake and plugin.

The realtime conformance suite runs in the beta dialect with every frame recorded: each
one the fake sends must be a strict ``ServerEvent`` of the SDK's models, each one the
plugin sends a strict ``ClientEvent`` (the SDK's models, made strict by
:func:`~sdk_witness.azure_type`). Then the SDK's own client (``azure.ai.voicelive.aio.connect``,
on aiohttp), its endpoint at the fake, runs one spoken answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.ai.voicelive.aio import connect
from azure.ai.voicelive.models import (
    ClientEvent,
    InputTextContentPart,
    Modality,
    RequestSession,
    ServerEvent,
    ServerEventResponseAudioDelta,
    ServerEventResponseAudioTranscriptDone,
    ServerEventResponseDone,
    UserMessageItem,
)
from azure.core.credentials import AzureKeyCredential

from antiphon.plugins.azure.voicelive import DEFAULT_API_VERSION
from antiphon.testing.conformance.realtime import RealtimeConformance
from antiphon.testing.realtime import DEFAULT_API_KEY, FakeRealtimeServer
from sdk_witness import Wire, assert_all_valid, azure_type, strict_errors, wire
from test_azure_voicelive import AzureHarness

__all__ = ["wire"]

GARBAGE = ("{this is not json", '"response.something_new"')


def deliberate(text: str) -> bool:
    return any(g in text for g in GARBAGE)


#: The SDK's ``InputAudioContentPart`` requires ``audio`` in the server's copy of a user's
#: audio item too; the service (like OpenAI's, whose reference shows ``{"type":
#: "input_audio", "transcript": null}``) does not echo the user's audio back.
AUDIO_GAP = frozenset({"$.item.message.content[0].input_audio.audio"})


def check_voicelive_wire(w: Wire) -> None:
    server: list[Any] = w.messages("server", skip=deliberate)
    assert_all_valid(azure_type(ServerEvent), server, "fake", sdk_gaps=AUDIO_GAP)
    assert_all_valid(azure_type(ClientEvent), w.messages("client", skip=deliberate), "plugin")


class TestVoiceLiveConformanceUnderWitness(RealtimeConformance[FakeRealtimeServer]):
    """Every scenario of the suite (healthy and faulty), its wire checked by the SDK."""

    harness = AzureHarness()

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire) -> Iterator[None]:
        yield
        check_voicelive_wire(wire)


def test_the_witness_refuses_what_the_fake_used_to_send() -> None:
    """The strict check finds each divergence the Voice Live fake once had."""
    server = azure_type(ServerEvent)
    added = {
        "type": "response.output_item.added",
        "event_id": "e",
        "response_id": "r",
        "output_index": 0,
        "item": {"id": "i", "type": "message", "role": "assistant", "content": []},
    }
    assert any("status" in e for e in strict_errors(server, added))
    usage = {
        "total_tokens": 3,
        "input_tokens": 1,
        "output_tokens": 2,
        "input_token_details": {"audio_tokens": 1, "text_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"audio_tokens": 2, "text_tokens": 0},
    }
    done: dict[str, Any] = {
        "type": "response.done",
        "event_id": "e",
        "response": {"id": "r", "object": "realtime.response", "status": "completed"},
    }
    assert any(
        "cached_tokens_details" in e
        for e in strict_errors(server, {**done, "response": {**done["response"], "usage": usage}})
    )
    output: dict[str, Any] = {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "c", "output": "{}"},
    }
    assert strict_errors(azure_type(ClientEvent), output) == []
    item = {**output["item"], "id": "i", "object": "realtime.item"}
    created = {"type": "conversation.item.created", "event_id": "e", "item": item}
    assert strict_errors(server, created) == []
    created["item"] = {**item, "status": "completed"}
    assert any("status" in e for e in strict_errors(server, created))


async def test_official_client_gets_a_spoken_answer_from_the_fake(wire: Wire) -> None:
    """``connect(endpoint=..., credential=AzureKeyCredential(...))`` against the fake."""
    async with FakeRealtimeServer(dialect="beta") as fake:
        kinds: list[str] = []
        audio = bytearray()
        transcript = ""
        async with connect(
            endpoint=fake.url.replace("ws://", "http://"),
            credential=AzureKeyCredential(DEFAULT_API_KEY),
            model="gpt-realtime",
        ) as conn:
            await conn.session.update(
                session=RequestSession(modalities=[Modality.TEXT, Modality.AUDIO])
            )
            item = UserMessageItem(content=[InputTextContentPart(text="What time is it?")])
            await conn.conversation.item.create(item=item)
            await conn.response.create()
            async for event in conn:
                kinds.append(str(event.type))
                if isinstance(event, ServerEventResponseAudioDelta):
                    audio.extend(event.delta)  # the SDK decodes the base64
                elif isinstance(event, ServerEventResponseAudioTranscriptDone):
                    transcript = event.transcript
                elif isinstance(event, ServerEventResponseDone):
                    assert event.response.status == "completed"
                    break
    assert kinds[0] == "session.created" and "conversation.item.created" in kinds
    assert transcript == fake.expected_reply("What time is it?")
    assert len(audio) == fake.stats.audio_out_bytes > 0
    # the SDK's own api-version is the plugin's default
    assert fake.stats.queries[0]["api-version"] == DEFAULT_API_VERSION
    check_voicelive_wire(wire)
