"""XAIRealtimeState and the encoders: what differs from OpenAI Realtime GA, as pure
decisions and messages."""

from __future__ import annotations

import json

from antiphon.protocols import xai_realtime as xr
from antiphon.protocols.realtime import Act, Ignored, SessionConfig, SessionCreated, Voice


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
