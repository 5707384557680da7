"""ElevenLabsSTT (Scribe realtime): the WebSocket STT conformance suite on the fake server,
plugin checks, the session machine, and the official ``elevenlabs`` SDK (its realtime
payload models and ``ScribeRealtime`` client) as the fake's witness."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

import pytest
from elevenlabs.realtime import AudioFormat, CommitStrategy, RealtimeEvents, ScribeRealtime
from elevenlabs.types import (
    CommittedTranscriptPayload,
    CommittedTranscriptWithTimestampsPayload,
    InputAudioChunkPayload,
    PartialTranscriptPayload,
    ScribeTranscriberErrorPayload,
    SessionStartedPayload,
)

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError
from antiphon.plugins.elevenlabs import ElevenLabsSTT
from antiphon.protocols import elevenlabs_stt as xi
from antiphon.testing import FaultPlan, serving
from antiphon.testing.conformance.stt_ws import (
    FAST,
    PHRASES,
    PluginHarness,
    WebSocketSTTConformance,
    speech,
)
from antiphon.testing.elevenlabs_stt import DEFAULT_API_KEY, FakeElevenLabsSTT
from antiphon.testing.witness import WitnessError, check_model

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

HARNESS = PluginHarness(
    ElevenLabsSTT,
    FakeElevenLabsSTT,
    api_key=DEFAULT_API_KEY,
    keepalive=None,
    manual_endpoints=True,
)


class TestElevenLabsSTTConformance(WebSocketSTTConformance):
    harness = HARNESS


# --------------------------------------------------------------------------- plugin-specific


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    monkeypatch.delenv("ELEVEN_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        ElevenLabsSTT()


def test_key_from_environment_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVEN_API_KEY", raising=False)
    monkeypatch.setenv("ELEVENLABS_API_KEY", "from-env")
    stt = ElevenLabsSTT(keyterms=["antiphon", "Claude"], language_code="en")
    assert stt.headers == {"xi-api-key": "from-env"}
    assert stt.url == (
        "wss://api.elevenlabs.io/v1/speech-to-text/realtime?model_id=scribe_v2_realtime"
        "&audio_format=pcm_16000&commit_strategy=manual&language_code=en"
        "&include_timestamps=true&keyterms=antiphon&keyterms=Claude"
    )
    assert stt.sample_rate == 16000
    assert ElevenLabsSTT(api_key="k", audio_format="ulaw_8000").sample_rate == 8000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"audio_format": "pcm_11025"}, "pcm_16000"),
        ({"commit_strategy": "sometimes"}, "manual"),
        ({"keyterms": ["x" * 21]}, "20 characters"),
        ({"vad_threshold": 2.0}, "0.1 to 0.9"),
        ({"model_id": ""}, "model_id"),
        ({"max_reconnects": -1}, "max_reconnects"),
        ({"base_url": "https://x"}, "ws://127.0.0.1:PORT"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ElevenLabsSTT(api_key="k", **kwargs)


async def test_wrong_key_is_an_auth_error() -> None:
    async with (
        serving(FakeElevenLabsSTT()) as fake,
        ElevenLabsSTT(api_key="wrong", base_url=fake.url, deadlines=FAST) as stt,
    ):
        with pytest.raises(AuthError, match="ELEVENLABS_API_KEY"):
            await stt.recognize(speech(PHRASES[0]))


async def test_a_single_use_token_goes_in_the_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    monkeypatch.delenv("ELEVEN_API_KEY", raising=False)
    async with serving(FakeElevenLabsSTT(vocabulary=PHRASES)) as fake:
        async with ElevenLabsSTT(token=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt:
            assert stt.headers == {}
            finals = await stt.recognize(speech(PHRASES[0]))
        assert fake.stats.queries[0]["token"] == [DEFAULT_API_KEY]
        assert "xi-api-key" not in fake.stats.headers[0]
    assert [f.text for f in finals] == [PHRASES[0]]


async def test_errors_are_typed_mid_stream() -> None:
    plan = FaultPlan(error_mid_stream=True, close_after_chunks=10)
    async with (
        serving(FakeElevenLabsSTT(plan, vocabulary=PHRASES)) as fake,
        ElevenLabsSTT(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt,
    ):
        with pytest.raises(ProviderConnectionError, match="transcriber_error") as info:
            await stt.recognize(speech(PHRASES[0]))
        assert info.value.retryable
    auth = xi.error_for(xi.ErrorMessage("auth_error", "bad key"), stage="receive")
    assert isinstance(auth, AuthError) and not auth.retryable


async def test_server_vad_commits_and_ulaw() -> None:
    """With ``commit_strategy="vad"`` the service ends the segment on silence: whether
    its commit or the client's last one answers first, the phrase is heard once."""
    text = PHRASES[1]
    async with serving(FakeElevenLabsSTT(vocabulary=PHRASES)) as fake:
        async with ElevenLabsSTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            audio_format="ulaw_8000",
            commit_strategy="vad",
            vad_silence_threshold_secs=0.5,
            deadlines=FAST,
        ) as stt:
            finals = await stt.recognize(speech(text, pad=0.8))
        assert fake.stats.queries[0]["commit_strategy"] == ["vad"]
        assert fake.stats.queries[0]["audio_format"] == ["ulaw_8000"]
        timed = [m for m in fake.sent if m["message_type"].endswith("_with_timestamps")]
        assert [m["text"] for m in timed] == [text, ""]  # the server's commit, then ours
    assert [f.text for f in finals] == [text]


# --------------------------------------------------------------------------- the machine


def _timed(text: str, *words: tuple[str, float, float]) -> str:
    return json.dumps(
        {
            "message_type": "committed_transcript_with_timestamps",
            "text": text,
            "words": [
                {"text": w, "start": s, "end": e, "type": "word", "logprob": 0.0}
                for w, s, e in words
            ],
        }
    )


def test_machine_owes_one_answer_per_commit_in_order() -> None:
    session = xi.ScribeSession(xi.ScribeOptions())
    session.audio(bytes(16000 * 2))  # one second
    (partial,) = session.feed('{"message_type": "partial_transcript", "text": "hello"}')
    assert partial.transcript is not None and not partial.transcript.is_final
    assert session.flush() == [xi.commit(16000)] and session.awaiting
    assert session.flush() == []  # nothing new to commit
    session.audio(bytes(16000))  # half a second more
    assert session.end_input()[-1] == xi.commit(16000)
    assert list(session.commits) == pytest.approx([1.0, 1.5])
    plain = session.feed('{"message_type": "committed_transcript", "text": "Hello."}')
    assert [a.act for a in plain] == [xi.Act.DROP]  # the timed copy follows
    (first,) = session.feed(_timed("Hello.", ("Hello.", 0.1, 0.5)))
    assert first.transcript is not None and first.transcript.is_final
    assert (first.transcript.text, first.transcript.end) == ("Hello.", 0.5)
    assert first.transcript.confidence == 1.0 and session.committed == pytest.approx(1.0)
    assert not session.done
    acts = session.feed(
        _timed(
            "",
        )
    )
    assert [a.act for a in acts] == [xi.Act.DONE] and session.done


def test_machine_replays_uncommitted_audio_with_one_commit() -> None:
    session = xi.ScribeSession(xi.ScribeOptions(), journal_seconds=5)
    session.audio(bytes(16000 * 2))
    session.flush()
    session.feed(_timed("One.", ("One.", 0.1, 0.4)))
    session.audio(bytes(16000))
    session.end_input()
    assert not session.lost_is_harmless()
    msgs = session.begin_replay()
    assert msgs[-1] == xi.commit(16000) and len(session.commits) == 1
    audio = b"".join(base64.b64decode(json.loads(m)["audio_base_64"]) for m in msgs[:-1])
    assert len(audio) == 16000  # the half second after the answered commit
    (final, done) = session.feed(_timed("Two.", ("Two.", 0.1, 0.3)))
    assert final.transcript is not None and final.transcript.start == pytest.approx(1.1)
    assert done.act is xi.Act.DONE


def test_an_empty_stream_is_done_at_once() -> None:
    session = xi.ScribeSession(xi.ScribeOptions())
    assert session.end_input() == [] and session.done


# --------------------------------------------------------------------------- the witness

_SERVER_MODELS: dict[str, Any] = {
    "session_started": SessionStartedPayload,
    "partial_transcript": PartialTranscriptPayload,
    "committed_transcript": CommittedTranscriptPayload,
    "committed_transcript_with_timestamps": CommittedTranscriptWithTimestampsPayload,
    "transcriber_error": ScribeTranscriberErrorPayload,
}


async def test_every_message_fits_the_sdk_models() -> None:
    async with serving(FakeElevenLabsSTT(vocabulary=PHRASES)) as fake:
        async with (
            ElevenLabsSTT(
                api_key=DEFAULT_API_KEY,
                base_url=fake.url,
                keyterms=["antiphon"],
                language_code="en",
                deadlines=FAST,
            ) as stt,
            stt.stream() as s,
        ):
            for f in speech(PHRASES[0]).split(0.02):
                s.push_audio(f)
            s.flush()
            for f in speech(PHRASES[1]).split(0.02):
                s.push_audio(f)
            s.end_input()
            finals = [t.text async for t in s if t.is_final]
        assert finals == list(PHRASES[:2])
        fake.plan = FaultPlan(error_mid_stream=True, close_after_chunks=10)
        async with ElevenLabsSTT(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt:
            with pytest.raises(ProviderConnectionError):
                await stt.recognize(speech(PHRASES[2]))
    assert {m["message_type"] for m in fake.sent} == set(_SERVER_MODELS)
    for msg in fake.sent:
        check_model(msg, _SERVER_MODELS[msg["message_type"]])
    assert {m["commit"] for m in fake.stats.received} == {True, False}
    for msg in fake.stats.received:
        check_model(msg, InputAudioChunkPayload)
    assert all(h["xi-api-key"] == DEFAULT_API_KEY for h in fake.stats.headers)


def test_the_witness_is_strict() -> None:
    msg = {"message_type": "partial_transcript", "text": "hi"}
    check_model(msg, PartialTranscriptPayload)
    with pytest.raises(WitnessError, match="does not declare"):
        check_model({**msg, "is_final": False}, PartialTranscriptPayload)
    with pytest.raises(WitnessError):
        check_model({"message_type": "partial_transcript"}, PartialTranscriptPayload)


async def test_the_official_client_streams_to_the_fake() -> None:
    async with FakeElevenLabsSTT(vocabulary=PHRASES) as fake:
        scribe = ScribeRealtime(api_key=DEFAULT_API_KEY, base_url=fake.url)
        connection = await scribe.connect(
            {
                "model_id": "scribe_v2_realtime",
                "audio_format": AudioFormat.PCM_16000,
                "sample_rate": 16000,
                "commit_strategy": CommitStrategy.MANUAL,
                "include_timestamps": True,
                "keyterms": ["antiphon"],
            }
        )
        started: list[dict[str, Any]] = []
        partials: list[str] = []
        committed: list[str] = []
        timed: list[dict[str, Any]] = []
        errors: list[Any] = []
        answered = asyncio.Event()
        connection.on(RealtimeEvents.SESSION_STARTED, started.append)
        connection.on(RealtimeEvents.PARTIAL_TRANSCRIPT, lambda m: partials.append(m["text"]))
        connection.on(RealtimeEvents.COMMITTED_TRANSCRIPT, lambda m: committed.append(m["text"]))
        connection.on(RealtimeEvents.ERROR, errors.append)

        def on_timed(m: dict[str, Any]) -> None:
            timed.append(m)
            answered.set()

        connection.on(RealtimeEvents.COMMITTED_TRANSCRIPT_WITH_TIMESTAMPS, on_timed)
        try:
            audio = speech(PHRASES[2]).data
            step = 3200  # 100 ms
            for i in range(0, len(audio), step):
                chunk = base64.b64encode(audio[i : i + step]).decode("ascii")
                await connection.send({"audio_base_64": chunk})
            await connection.commit()
            await asyncio.wait_for(answered.wait(), 5)
        finally:
            with contextlib.suppress(Exception):
                await connection.close()
    assert errors == [] and committed == [PHRASES[2]] and partials
    assert [w["text"] for w in timed[0]["words"] if w["type"] == "word"] == PHRASES[2].split()
    assert fake.stats.queries[0]["keyterms"] == ["antiphon"]
    assert fake.stats.commits == 1
    # what the SDK sends is what the witness checks
    for msg in fake.stats.received:
        check_model({k: v for k, v in msg.items() if v is not None}, InputAudioChunkPayload)


# --------------------------------------------------------------------------- registration


async def test_the_pipeline_builds_it_on_its_fake_by_name() -> None:
    from antiphon.agent.pipeline import PipelineSpec, open_services
    from antiphon.cli import STT_NAMES
    from antiphon.testing.registry import LoopbackFakes

    assert "elevenlabs" in STT_NAMES
    spec = PipelineSpec(
        vad="webrtc", stt="elevenlabs", llm="openai:gpt-4o-mini", tts="deepgram", fake=True
    )
    async with contextlib.AsyncExitStack() as stack:
        services = await open_services(spec, stack, fakes=LoopbackFakes())
        assert isinstance(services.stt, ElevenLabsSTT)
        assert services.stt.url.startswith("ws://127.0.0.1:")
        finals = await services.stt.recognize(speech("what is the weather"))
    assert [f.text for f in finals] == ["unknown"]  # no vocabulary given: heard, not named
