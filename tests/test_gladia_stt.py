"""GladiaSTT (live v2): the WebSocket STT conformance suite on the fake (``POST /v2/live``
and the session WebSocket), the session machine, and plugin checks. The SDK witness is
``tests/test_sdk_gladia.py``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from antiphon.audio.wav import read_wav, write_wav
from antiphon.cli import main
from antiphon.errors import AuthError, ConfigError, ProviderError
from antiphon.plugins.gladia import GladiaSTT
from antiphon.protocols import gladia_stt as gl
from antiphon.protocols.stt_session import Act, Phase
from antiphon.services.stt import StreamState
from antiphon.testing import FaultPlan, serving
from antiphon.testing.conformance.stt_ws import (
    FAST,
    PHRASES,
    PluginHarness,
    WebSocketSTTConformance,
    speech,
)
from antiphon.testing.gladia_stt import DEFAULT_API_KEY, FakeGladiaSTT

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

HARNESS = PluginHarness(
    GladiaSTT,
    FakeGladiaSTT,
    api_key=DEFAULT_API_KEY,
    scheme="http",
    keepalive=None,
    sessions=lambda fake: len(fake.stats.sessions),
)


class TestGladiaSTTConformance(WebSocketSTTConformance):
    harness = HARNESS


# --------------------------------------------------------------------------- plugin-specific


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLADIA_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GLADIA_API_KEY"):
        GladiaSTT()


def test_key_from_environment_and_the_session_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLADIA_API_KEY", "from-env")
    stt = GladiaSTT(keyterms=["antiphon", "Claude"], endpointing=0.5, languages=["fr"])
    assert stt.url == "https://api.gladia.io/v2/live"
    assert stt._init_headers["x-gladia-key"] == "from-env"
    body = stt.options.init_request()
    assert (body["encoding"], body["bit_depth"], body["sample_rate"], body["channels"]) == (
        "wav/pcm",
        16,
        16000,
        1,
    )
    assert body["realtime_processing"] == {
        "custom_vocabulary": True,
        "custom_vocabulary_config": {"vocabulary": ["antiphon", "Claude"]},
    }
    assert body["language_config"]["languages"] == ["fr"]
    assert body["messages_config"]["receive_partial_transcripts"] is True
    assert gl.options_from_init(body) == stt.options  # what the fake reads back


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 22050}, "8000, 16000"),
        ({"encoding": "opus"}, "wav/pcm"),
        ({"endpointing": 0}, "0.01 to 10"),
        ({"maximum_duration_without_endpointing": 100}, "5 to 60"),
        ({"keyterms": [" "]}, "non-blank"),
        ({"languages": "en"}, "ISO 639-1"),
        ({"max_reconnects": -1}, "max_reconnects"),
        ({"base_url": "wss://api.gladia.io"}, "http://127.0.0.1:PORT"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GladiaSTT(api_key="k", **kwargs)


async def test_wrong_key_is_an_auth_error_from_the_session_request() -> None:
    async with (
        serving(FakeGladiaSTT()) as fake,
        GladiaSTT(api_key="wrong", base_url=fake.url, deadlines=FAST) as stt,
    ):
        with pytest.raises(AuthError, match="GLADIA_API_KEY") as info:
            await stt.recognize(speech(PHRASES[0]))
        assert info.value.code == 401 and not info.value.retryable
        assert fake.stats.connections == 0  # no WebSocket without a session


async def test_keyterms_and_mulaw_reach_the_session() -> None:
    async with (
        serving(FakeGladiaSTT(vocabulary=PHRASES)) as fake,
        GladiaSTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            deadlines=FAST,
            sample_rate=8000,
            encoding="wav/ulaw",
            keyterms=["antiphon"],
        ) as stt,
    ):
        finals = await stt.recognize(speech(PHRASES[1]))
        assert [f.text for f in finals] == [PHRASES[1]]
        (session,) = fake.stats.sessions
        assert session["encoding"] == "wav/ulaw" and session["bit_depth"] == 8
        assert session["realtime_processing"]["custom_vocabulary_config"] == {
            "vocabulary": ["antiphon"]
        }


async def test_flush_sends_silence_past_endpointing_and_its_final_answers_it() -> None:
    async with (
        serving(FakeGladiaSTT(vocabulary=PHRASES)) as fake,
        GladiaSTT(
            api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST, endpointing=0.8
        ) as stt,
        stt.stream() as s,
    ):
        audio = speech(PHRASES[0], pad=0.2)  # less trailing silence than endpointing
        for f in audio.split(0.02):
            s.push_audio(f)
        await anext(s)  # a partial: the utterance is open
        s.flush()
        final = await anext(s)
        while not final.is_final:
            final = await anext(s)
        assert final.text == PHRASES[0] and final.flushed
        s.end_input()
        assert [t async for t in s] == []
        assert s.state is StreamState.COMPLETED
        # the flush's silence is on the stream's timeline: endpointing and the margin
        expected = audio.duration + 0.8 + gl.FLUSH_MARGIN
        assert fake.stats.audio_bytes == pytest.approx(expected * 16000 * 2, abs=2)


async def test_error_message_is_a_provider_error_with_its_text() -> None:
    plan = FaultPlan(error_mid_stream=True, close_after_chunks=5)
    async with (
        serving(FakeGladiaSTT(plan, vocabulary=PHRASES)) as fake,
        GladiaSTT(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt,
    ):
        with pytest.raises(ProviderError, match="Internal server error"):
            await stt.recognize(speech(PHRASES[0]))


# --------------------------------------------------------------------------- the machine


def _transcript(id_: str, text: str, start: float, end: float, *, final: bool) -> str:
    words = [{"word": text, "start": start, "end": end, "confidence": 0.9}]
    utterance = {
        "start": start,
        "end": end,
        "confidence": 0.9,
        "channel": 0,
        "words": words,
        "text": text,
        "language": "en",
    }
    return json.dumps(
        {"type": "transcript", "data": {"id": id_, "is_final": final, "utterance": utterance}}
    )


def test_session_partials_finals_and_the_end() -> None:
    s = gl.LiveSession(gl.LiveOptions())
    msgs = s.audio(bytes(16000 * 2))  # one second: 20 messages of 50 ms
    assert len(msgs) == 20 and all(isinstance(m, bytes) and len(m) == 1600 for m in msgs)
    (a,) = s.feed(_transcript("u1", "Hello", 0.1, 0.5, final=False))
    assert a.act is Act.EMIT and a.transcript is not None and not a.transcript.is_final
    assert s.utterance_open
    (b,) = s.feed(_transcript("u1", "Hello there.", 0.1, 0.8, final=True))
    assert b.transcript is not None and b.transcript.is_final and b.transcript.utterance == 0
    assert s.finalized == pytest.approx(0.8) and not s.utterance_open
    (dup,) = s.feed(_transcript("u1", "Hello there.", 0.1, 0.8, final=True))
    assert dup.act is Act.DROP  # an utterance is final once
    (speech_end,) = s.feed(json.dumps({"type": "speech_end", "data": {"time": 0.9}}))
    assert speech_end.act is Act.NOTICE
    assert s.stop_recording()[-1] == gl.STOP_RECORDING and s.phase is Phase.CLOSING
    (done,) = s.feed(json.dumps({"type": "end_recording", "data": {"recording_duration": 1}}))
    assert done.act is Act.DONE and s.done
    (late,) = s.feed(_transcript("u2", "late", 0.9, 1.0, final=True))
    assert late.act is Act.DROP


def test_flush_is_owed_only_while_an_utterance_is_open() -> None:
    s = gl.LiveSession(gl.LiveOptions(endpointing=0.3))
    assert s.flush() == []  # nothing sent: nothing to end
    assert s.audio(bytes(1000)) == []  # less than a message: held back
    msgs = s.flush()
    silence = round((0.3 + gl.FLUSH_MARGIN) * 16000) * 2
    assert sum(len(m) for m in msgs) == 1000 + silence
    assert not s.awaiting  # no utterance open: no answer owed
    s.audio(bytes(3200))
    s.feed(_transcript("u1", "Hi", 0.5, 0.6, final=False))
    s.flush()
    assert s.forced and s.awaiting
    s.feed(_transcript("u1", "Hi", 0.5, 0.6, final=True))
    assert not s.awaiting


def test_replay_starts_a_new_session_with_the_unanswered_audio() -> None:
    s = gl.LiveSession(gl.LiveOptions())
    s.audio(bytes(16000 * 2))
    s.feed(_transcript("u1", "One", 0.0, 0.5, final=True))
    s.stop_recording()
    replay = s.begin_replay()
    assert replay[-1] == gl.STOP_RECORDING
    assert sum(len(m) for m in replay[:-1]) == 16000  # the half second after the final
    assert s.offset == pytest.approx(0.5) and s.connections == 2
    (a,) = s.feed(_transcript("u1", "Two", 0.1, 0.4, final=True))  # ids restart per session
    assert a.transcript is not None and a.transcript.start == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("{not json", gl.Malformed),
        ('{"type": "transcript", "data": {}}', gl.Malformed),
        ('{"type": "post_summarization"}', gl.Unknown),
        ('{"type": "error", "error": {"message": "boom"}}', gl.ErrorMessage),
        ('{"type": "audio_chunk", "acknowledged": false, "error": {"message": "x"}}', gl.Ack),
        ('{"type": "start_session"}', gl.Lifecycle),
    ],
)
def test_parse_never_raises(frame: str, kind: type) -> None:
    assert isinstance(gl.parse(frame), kind)


def test_close_codes_are_typed() -> None:
    assert isinstance(gl.close_error(1008, "", stage="receive"), AuthError)
    lost = gl.close_error(1011, "boom", stage="receive")
    assert lost.retryable and lost.code == 1011
    assert not gl.close_error(4000, "bad", stage="receive").retryable


def test_init_answer_without_a_websocket_url_is_an_error() -> None:
    assert gl.parse_init_response('{"id": "x", "url": "wss://h/v2/live?token=x"}').id == "x"
    with pytest.raises(ProviderError, match="no WebSocket URL"):
        gl.parse_init_response('{"id": "x", "url": "https://h"}')


# --------------------------------------------------------------------------- registration


async def test_the_pipeline_builds_it_on_its_fake_by_name() -> None:
    from antiphon.agent.pipeline import PipelineSpec, open_services
    from antiphon.cli import STT_NAMES
    from antiphon.testing.registry import LoopbackFakes

    assert "gladia" in STT_NAMES
    spec = PipelineSpec(
        vad="webrtc", stt="gladia", llm="openai:gpt-4o-mini", tts="deepgram", fake=True
    )
    async with contextlib.AsyncExitStack() as stack:
        services = await open_services(spec, stack, fakes=LoopbackFakes())
        assert isinstance(services.stt, GladiaSTT)
        assert services.stt.url.startswith("http://127.0.0.1:")
        finals = await services.stt.recognize(speech("what is the weather"))
    assert [f.text for f in finals] == ["unknown"]  # no vocabulary given: heard, not named


@pytest.mark.realtime
def test_cli_talk_runs_with_gladia_on_its_fake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``antiphon talk --stt gladia --fake``: the whole pipeline on loopback fakes."""
    question = tmp_path / "q.wav"
    write_wav(str(question), speech("what is the weather", pad=0.5))
    out = tmp_path / "a.wav"
    argv = ["talk", str(question), "--out", str(out), "--vad", "webrtc", "--stt", "gladia"]
    argv += ["--llm", "openai:gpt-4o-mini", "--tts", "deepgram", "--fake"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "stt=gladia llm=openai:gpt-4o-mini tts=deepgram" in printed
    assert "user:  unknown" in printed
    assert out.exists() and read_wav(out).duration > 0.5
