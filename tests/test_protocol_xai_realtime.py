"""XAIRealtimeState and the encoders: what differs from OpenAI Realtime GA, as pure
decisions and messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from antiphon.protocols import xai_realtime as xr
from antiphon.protocols.realtime import (
    Act,
    AudioDelta,
    Ignored,
    Malformed,
    SessionConfig,
    SessionCreated,
    Voice,
)


def test_the_greeting_is_conversation_created_and_pings_are_notices() -> None:
    sm = xr.XAIRealtimeState(output_rate=24000)
    greeting = {
        "type": "conversation.created",
        "event_id": "e1",
        "conversation": {"id": "conv_1", "object": "realtime.conversation"},
    }
    d = sm.feed(json.dumps(greeting))
    assert d.act is Act.CREATED and d.event == SessionCreated("conv_1")
    ping = sm.feed(json.dumps({"type": "ping", "event_id": "e2", "timestamp": 1}))
    assert ping.act is Act.NOTICE and ping.event == Ignored("ping")
    updated = {"type": "conversation.item.input_audio_transcription.updated", "event_id": "e3"}
    assert sm.feed(json.dumps(updated)).act is Act.NOTICE


@pytest.mark.parametrize(
    "greeting",
    [
        {"type": "conversation.created", "event_id": "e1"},
        {"type": "conversation.created", "conversation": None},
        {"type": "conversation.created", "conversation": {"object": "realtime.conversation"}},
        {"type": "conversation.created", "conversation": {"id": 7}},
    ],
)
def test_a_greeting_without_a_conversation_id_still_opens_the_session(
    greeting: dict[str, Any],
) -> None:
    d = xr.XAIRealtimeState(output_rate=24000).feed(json.dumps(greeting))
    assert d.act is Act.CREATED and d.event == SessionCreated("")


def test_each_frame_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The greeting, an event of the shared schema and an xAI notice: one JSON decode each;
    garbage is still Malformed, never an exception."""
    sm = xr.XAIRealtimeState(output_rate=24000)
    calls: list[str] = []
    loads = json.loads

    def counting(s: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(s)
        return loads(s, *args, **kwargs)

    greeting = json.dumps({"type": "conversation.created", "conversation": {"id": "c9"}})
    created = json.dumps({"type": "response.created", "response": {"id": "r1"}})
    delta = json.dumps(
        {"type": "response.output_audio.delta", "response_id": "r1", "delta": "AAAA"}
    )
    ping = json.dumps({"type": "ping", "timestamp": 1})
    monkeypatch.setattr(json, "loads", counting)
    assert sm.feed(greeting).event == SessionCreated("c9")
    sm.feed(created)
    d = sm.feed(delta)
    assert d.act is Act.DELIVER and isinstance(d.event, AudioDelta) and d.event.audio == b"\0" * 3
    assert sm.feed(ping).event == Ignored("ping")
    assert calls == [greeting, created, delta, ping]
    for garbage in ("{not json", "[]", '{"type": 1}', b"{}"):
        assert isinstance(sm.feed(garbage).event, Malformed)


def test_reconnect_restores_the_session_in_xai_shape() -> None:
    sm = xr.XAIRealtimeState(output_rate=24000)
    sm.user_text("Remember 42.")
    cfg = SessionConfig(voice=Voice("leo", "xai"), transcription=None)
    msgs = [json.loads(m) for m in sm.reconnect(cfg)]
    assert msgs[0]["type"] == "session.update" and msgs[0]["session"]["voice"] == "leo"
    assert "transcription" not in msgs[0]["session"]["audio"]["input"]
    assert msgs[1]["item"]["content"] == [{"type": "input_text", "text": "Remember 42."}]
    assert msgs[2] == {"type": "response.create"}


def test_force_message_shape() -> None:
    assert json.loads(xr.encode_force_message("Hi.")) == {
        "type": "conversation.item.create",
        "item": {
            "type": "force_message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi."}],
        },
    }
