"""OpenAISTT (realtime transcription): the WebSocket STT conformance suite on the fake,
the protocol machine, and plugin checks. The SDK witness is ``test_sdk_openai_stt.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from antiphon.audio.wav import read_wav, write_wav
from antiphon.cli import main
from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.openai import OpenAISTT
from antiphon.plugins.openai.stt import OpenAIRecognizeStream
from antiphon.protocols import openai_transcription as ot
from antiphon.services.stt import StreamState
from antiphon.testing import serving
from antiphon.testing.conformance.stt_ws import (
    FAST,
    PHRASES,
    PluginHarness,
    WebSocketSTTConformance,
    speech,
)
from antiphon.testing.openai_transcription import DEFAULT_API_KEY, FakeOpenAITranscription

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

#: The suite's speech has 0.4 s of silence around each phrase: a VAD window below it.
VAD = {"type": "server_vad", "silence_duration_ms": 300}


HARNESS = PluginHarness(
    OpenAISTT,
    FakeOpenAITranscription,
    api_key=DEFAULT_API_KEY,
    keepalive=None,
    sessions=lambda fake: len(fake.stats.sessions),
    turn_detection=VAD,
)


class TestOpenAISTTConformance(WebSocketSTTConformance):
    harness = HARNESS


# --------------------------------------------------------------------------- plugin-specific


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAISTT()


def test_key_from_environment_url_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    stt = OpenAISTT()
    assert stt.url == "wss://api.openai.com/v1/realtime?intent=transcription"
    assert stt.headers == {"Authorization": "Bearer sk-env"}
    assert "OpenAI-Beta" not in stt.headers  # GA: no beta header
    assert stt.sample_rate == 24000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": ""}, "model"),
        ({"turn_detection": {"type": "vad"}}, "turn_detection"),
        ({"noise_reduction": {"type": "loud"}}, "noise_reduction"),
        ({"max_reconnects": -1}, "max_reconnects"),
        ({"journal_seconds": -1}, "journal_seconds"),
        ({"base_url": "https://api.openai.com"}, "base_url"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        OpenAISTT(api_key="k", **kwargs)


def test_session_update_carries_the_options() -> None:
    options = ot.TranscriptionOptions(
        model="gpt-4o-mini-transcribe",
        language="en",
        prompt="antiphon",
        turn_detection=None,
        noise_reduction={"type": "near_field"},
        logprobs=True,
    )
    assert json.loads(ot.session_update(options)) == {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {
                        "model": "gpt-4o-mini-transcribe",
                        "language": "en",
                        "prompt": "antiphon",
                    },
                    "turn_detection": None,
                    "noise_reduction": {"type": "near_field"},
                }
            },
            "include": ["item.input_audio_transcription.logprobs"],
        },
    }


def _event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": "e", **fields})


def test_machine_without_vad_commits_on_flush_and_owes_the_transcript() -> None:
    session = ot.TranscriptionSession(ot.TranscriptionOptions(turn_detection=None))
    session.audio(bytes(ot.BYTES_PER_SECOND))  # one second
    assert session.flush() == [ot.COMMIT] and session.awaiting
    assert session.flush() == []  # nothing new: no second commit
    session.feed(_event("input_audio_buffer.committed", item_id="i1"))
    assert session.awaiting and "i1" in session.owed
    (delta,) = session.feed(
        _event("conversation.item.input_audio_transcription.delta", item_id="i1", delta="Hi")
    )
    assert delta.transcript is not None and not delta.transcript.is_final
    (final,) = session.feed(
        _event(
            "conversation.item.input_audio_transcription.completed",
            item_id="i1",
            content_index=0,
            transcript="Hi there.",
            usage={"type": "duration", "seconds": 1.0},
        )
    )
    rec = final.transcript
    assert rec is not None and rec.is_final and rec.text == "Hi there."
    assert (rec.start, rec.end, rec.utterance) == (0.0, 1.0, 0)
    assert not session.awaiting
    # a delta of an item never committed (stale) is dropped
    (stale,) = session.feed(
        _event("conversation.item.input_audio_transcription.delta", item_id="x", delta="a")
    )
    assert stale.act is ot.Act.DROP
    assert session.end_input() == [] and session.done  # nothing left: complete at once


def test_machine_with_vad_takes_the_servers_runs_and_times() -> None:
    session = ot.TranscriptionSession(ot.TranscriptionOptions())
    session.audio(bytes(2 * ot.BYTES_PER_SECOND))
    session.feed(_event("input_audio_buffer.speech_started", item_id="a", audio_start_ms=300))
    assert session.flush() == [ot.COMMIT]  # speech in progress: the flush commits it
    session.feed(_event("input_audio_buffer.committed", item_id="a"))
    (final,) = session.feed(
        _event(
            "conversation.item.input_audio_transcription.completed",
            item_id="a",
            content_index=0,
            transcript="Hello.",
            usage={"type": "duration", "seconds": 1.7},
        )
    )
    assert final.transcript is not None
    assert (final.transcript.start, final.transcript.end) == (0.3, 2.0)
    session.audio(bytes(ot.BYTES_PER_SECOND))
    session.feed(_event("input_audio_buffer.speech_started", item_id="b", audio_start_ms=2100))
    session.feed(_event("input_audio_buffer.speech_stopped", item_id="b", audio_end_ms=2600))
    assert session.flush() == []  # the server commits the run it heard
    assert session.owed == {"b"} and session.awaiting
    session.feed(_event("input_audio_buffer.committed", item_id="b"))
    (second,) = session.feed(
        _event(
            "conversation.item.input_audio_transcription.completed",
            item_id="b",
            content_index=0,
            transcript="Again.",
            usage={"type": "duration", "seconds": 0.5},
        )
    )
    assert second.transcript is not None
    assert (second.transcript.start, second.transcript.end) == (2.1, 2.6)
    assert second.transcript.utterance == 1
    # the end commits what is left (0.4 s after the run); an empty answer completes it
    assert session.end_input() == [ot.COMMIT] and not session.done
    out = session.feed(
        _event(
            "error",
            error={"type": "invalid_request_error", "code": ot.COMMIT_EMPTY, "message": "small"},
        )
    )
    assert [a.act for a in out] == [ot.Act.NOTICE, ot.Act.DONE] and session.done


def test_machine_replays_what_no_transcript_covered() -> None:
    session = ot.TranscriptionSession(ot.TranscriptionOptions(turn_detection=None))
    session.audio(bytes(ot.BYTES_PER_SECOND))
    session.flush()
    session.feed(_event("input_audio_buffer.committed", item_id="i1"))
    msgs = session.begin_replay()
    assert json.loads(msgs[0])["type"] == "session.update"
    assert msgs[-1] == ot.COMMIT and session.awaiting
    assert len(msgs) == 2 + 2  # the update, two appends of 0.5 s, the commit
    assert session.connections == 2 and session.offset == 0.0


async def test_error_event_fails_the_stream_with_the_servers_message() -> None:
    async with (
        serving(FakeOpenAITranscription(vocabulary=PHRASES)) as fake,
        OpenAISTT(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt,
        stt.stream() as s,
    ):
        assert isinstance(s, OpenAIRecognizeStream)
        s._send_control(json.dumps({"type": "input_audio_buffer.bogus"}))
        with pytest.raises(ProviderError, match="bogus"):
            [t async for t in s]
        assert s.state is StreamState.FAILED


async def test_without_vad_each_flush_is_one_commit_and_one_final() -> None:
    texts = PHRASES[:2]
    async with serving(FakeOpenAITranscription(vocabulary=PHRASES)) as fake:
        async with (
            OpenAISTT(
                api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST, server_vad=False
            ) as stt,
            stt.stream() as s,
        ):
            for i, text in enumerate(texts):
                if i:
                    s.flush()
                for f in speech(text).split(0.02):
                    s.push_audio(f)
            s.end_input()
            finals = await s.finals()
        assert fake.stats.commits == 2
        assert fake.stats.sessions[0]["audio"]["input"]["turn_detection"] is None
    assert [(f.text, f.utterance) for f in finals] == [(texts[0], 0), (texts[1], 1)]


@pytest.mark.realtime
def test_cli_talk_runs_with_the_openai_stt_on_its_fake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``antiphon talk --stt openai --fake``: the whole pipeline on loopback fakes."""
    question = tmp_path / "q.wav"
    # a phrase whose tone the WebRTC voice detector hears as speech (as in
    # tests/test_provider_pipeline.py)
    write_wav(str(question), speech("what is the weather", pad=0.5))
    out = tmp_path / "a.wav"
    argv = ["talk", str(question), "--out", str(out), "--vad", "webrtc", "--stt", "openai"]
    argv += ["--llm", "openai:gpt-4o-mini", "--tts", "deepgram", "--fake"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "stt=openai llm=openai:gpt-4o-mini tts=deepgram" in printed
    # the CLI gives the fake STT no vocabulary: it hears the tone as "unknown"
    assert "user:  unknown" in printed
    assert out.exists() and read_wav(out).duration > 0.5
