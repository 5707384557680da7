"""GeminiLiveState: what each Gemini Live server message means, as pure decisions."""

from __future__ import annotations

import base64
import json

import pytest

from antiphon.errors import ConfigError
from antiphon.protocols import gemini_live as gl
from antiphon.protocols.realtime import (
    AudioDelta,
    ConnectionEnding,
    Dialect,
    FunctionCallReady,
    InputTranscript,
    Malformed,
    ResponseCreated,
    ResponseDone,
    SessionConfig,
    SessionCreated,
    SpeechStarted,
    TranscriptDelta,
    TranscriptDone,
    Unknown,
    Voice,
)
from antiphon.protocols.realtime.state import Act


def audio_msg(pcm: bytes, **content: object) -> str:
    part = {
        "inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(pcm).decode()}
    }
    return json.dumps({"serverContent": {"modelTurn": {"parts": [part]}, **content}})


def test_one_message_with_audio_transcript_and_turn_complete_is_a_whole_response() -> None:
    sm = gl.GeminiLiveState(model="m")
    assert [d.act for d in sm.feed_all('{"setupComplete": {}}')] == [Act.READY]
    sm.user_text("hi")
    assert sm.awaiting
    msg = json.loads(audio_msg(b"\x01\x00" * 4, outputTranscription={"text": "Hello"}))
    msg["serverContent"]["turnComplete"] = True
    msg["usageMetadata"] = {"promptTokenCount": 3, "responseTokenCount": 4}
    ds = sm.feed_all(json.dumps(msg))
    kinds = [type(d.event) for d in ds]
    assert kinds == [ResponseCreated, AudioDelta, TranscriptDelta, TranscriptDone, ResponseDone]
    assert {d.generation for d in ds} == {1} and all(d.act is Act.DELIVER for d in ds)
    done = ds[-1].event
    assert isinstance(done, ResponseDone) and done.status == "completed"
    assert done.usage is not None and done.usage.total_tokens == 7
    assert not sm.awaiting
    assert [(e.role, e.text) for e in sm.journal] == [("user", "hi"), ("assistant", "Hello")]


def test_the_setup_is_ready_not_created() -> None:
    (d,) = gl.GeminiLiveState(model="m").feed_all('{"setupComplete": {}}')
    assert d.act is Act.READY and isinstance(d.event, SessionCreated) and d.event.session_id


def test_garbage_is_dropped_and_unknown_named() -> None:
    sm = gl.GeminiLiveState(model="m")
    (bad,) = sm.feed_all("{nope")
    assert bad.act is Act.DROP and isinstance(bad.event, Malformed)
    (new,) = sm.feed_all('{"somethingNew": {}}')
    assert (
        new.act is Act.DROP and isinstance(new.event, Unknown) and new.event.type == "somethingNew"
    )
    (usage,) = sm.feed_all('{"usageMetadata": {"totalTokenCount": 1}}')
    assert usage.act is Act.NOTICE


def test_server_interruption_cancels_and_says_the_user_spoke() -> None:
    sm = gl.GeminiLiveState(model="m")
    sm.feed_all('{"serverContent": {"inputTranscription": {"text": "stop"}}}')
    sm.feed_all(audio_msg(b"\x00\x00"))
    ds = sm.feed_all('{"serverContent": {"interrupted": true}}')
    kinds = [type(d.event) for d in ds]
    assert kinds == [ResponseDone, SpeechStarted]
    assert isinstance(ds[0].event, ResponseDone) and ds[0].event.status == "cancelled"


def test_user_transcript_is_delivered_before_the_answer() -> None:
    sm = gl.GeminiLiveState(model="m")
    sm.feed_all('{"serverContent": {"inputTranscription": {"text": "book a"}}}')
    sm.feed_all('{"serverContent": {"inputTranscription": {"text": " table"}}}')
    ds = sm.feed_all(audio_msg(b"\x00\x00"))
    assert isinstance(ds[0].event, InputTranscript) and ds[0].event.transcript == "book a table"
    assert isinstance(ds[1].event, ResponseCreated)


def test_local_interrupt_drops_the_rest_and_ends_cancelled_at_turn_complete() -> None:
    sm = gl.GeminiLiveState(model="m")
    sm.say("long answer")
    first = sm.feed_all(audio_msg(b"\x00\x00"))
    gen = first[-1].generation
    assert sm.interrupt(gen, 0) == []  # nothing to send: Gemini has no cancel
    (late,) = sm.feed_all(audio_msg(b"\x00\x00"))
    assert late.act is Act.DROP
    (end,) = sm.feed_all('{"serverContent": {"turnComplete": true}}')
    assert isinstance(end.event, ResponseDone) and end.event.status == "cancelled"
    assert sm.generation > gen


def test_tool_call_ends_the_response_and_the_result_names_the_function() -> None:
    sm = gl.GeminiLiveState(model="m")
    sm.user_text("weather?")
    call = {"functionCalls": [{"id": "c1", "name": "get_weather", "args": {"city": "Paris"}}]}
    ds = sm.feed_all(json.dumps({"toolCall": call}))
    assert [type(d.event) for d in ds] == [ResponseCreated, FunctionCallReady, ResponseDone]
    ready = ds[1].event
    assert isinstance(ready, FunctionCallReady) and json.loads(ready.arguments) == {"city": "Paris"}
    (msg,) = sm.tool_result("c1", '{"sky": "sunny"}')
    fr = json.loads(msg)["toolResponse"]["functionResponses"][0]
    assert fr == {"id": "c1", "name": "get_weather", "response": {"sky": "sunny"}}
    assert sm.awaiting


def test_manual_activity_wraps_the_user_audio() -> None:
    sm = gl.GeminiLiveState(model="m", automatic_activity_detection=False)
    first = [next(iter(json.loads(m)["realtimeInput"])) for m in sm.audio(b"\x00\x00")]
    again = [next(iter(json.loads(m)["realtimeInput"])) for m in sm.audio(b"\x00\x00")]
    end = [next(iter(json.loads(m)["realtimeInput"])) for m in sm.commit()]
    assert (first, again, end) == (["activityStart", "audio"], ["audio"], ["activityEnd"])
    (stale,) = gl.GeminiLiveState(model="m", automatic_activity_detection=False).feed_all(
        audio_msg(b"\x00\x00")
    )
    assert stale.act is Act.DROP  # nobody asked, and the server detects no turns


def test_reconnect_sends_setup_then_the_conversation_then_asks_again() -> None:
    sm = gl.GeminiLiveState(model="m")
    sm.user_text("Remember 42.")
    msgs = [json.loads(m) for m in sm.reconnect(SessionConfig())]
    assert "setup" in msgs[0]
    assert msgs[1]["clientContent"] == {
        "turnComplete": False,
        "turns": [{"role": "user", "parts": [{"text": "Remember 42."}]}],
    }
    assert msgs[2] == {"clientContent": {"turnComplete": True}}
    assert sm.awaiting


def test_go_away_is_a_move_with_the_time_left() -> None:
    sm = gl.GeminiLiveState(model="m")
    (d,) = sm.feed_all('{"goAway": {"timeLeft": "12.5s"}}')
    assert d.act is Act.MOVE and isinstance(d.event, ConnectionEnding)
    assert d.event.time_left == 12.5
    (odd,) = sm.feed_all('{"goAway": {}}')
    assert isinstance(odd.event, ConnectionEnding) and odd.event.time_left == 0.0


def test_resume_needs_a_resumable_handle() -> None:
    sm = gl.GeminiLiveState(model="m")
    assert json.loads(sm.setup(SessionConfig()))["setup"]["sessionResumption"] == {}
    assert sm.resume(SessionConfig()) is None and not sm.can_resume
    sm.feed_all('{"sessionResumptionUpdate": {"newHandle": "h1", "resumable": false}}')
    assert sm.resume(SessionConfig()) is None
    sm.feed_all('{"sessionResumptionUpdate": {"newHandle": "h2", "resumable": true}}')
    assert sm.can_resume and sm.quiet


def test_resume_sends_the_handle_and_what_was_said_since() -> None:
    sm = gl.GeminiLiveState(model="m")
    sm.user_text("Before the handle.")
    sm.feed_all('{"sessionResumptionUpdate": {"newHandle": "h1", "resumable": true}}')
    sm.user_text("After the handle.")
    assert not sm.quiet  # something said since the handle, and an answer owed
    msgs = [json.loads(m) for m in sm.resume(SessionConfig(voice=Voice("Kore", "gemini"))) or []]
    setup = msgs[0]["setup"]
    assert setup["sessionResumption"] == {"handle": "h1"}
    assert setup["generationConfig"]["speechConfig"]["voiceConfig"] == {
        "prebuiltVoiceConfig": {"voiceName": "Kore"}
    }
    assert msgs[1]["clientContent"] == {
        "turnComplete": False,
        "turns": [{"role": "user", "parts": [{"text": "After the handle."}]}],
    }
    assert msgs[2] == {"clientContent": {"turnComplete": True}}  # the unheard answer again
    assert not sm.can_resume  # the new connection gives its own handle


def test_a_gemini_voice_is_a_prebuilt_name() -> None:
    assert Voice("Kore", "gemini").wire() == "Kore"
    with pytest.raises(ConfigError, match="not a Gemini prebuilt voice"):
        Voice("kore", "gemini")
    with pytest.raises(ConfigError, match="own service"):
        SessionConfig(voice=Voice("Kore", "gemini")).check(Dialect.GA)
