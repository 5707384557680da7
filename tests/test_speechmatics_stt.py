"""SpeechmaticsSTT: the WebSocket STT conformance suite on the fake server, plugin checks,
the session machine, and the official ``speechmatics-rt`` SDK as the fake's witness."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from speechmatics.rt import (
    AsyncClient,
    AudioEncoding,
    AudioFormat,
    ClientMessageType,
    ConversationConfig,
    ServerMessageType,
    TranscriptionConfig,
    TranscriptResult,
)
from speechmatics.rt._models import RecognitionMetadata, RecognitionResult
from speechmatics.rt._utils.message import build_start_recognition_message

from antiphon.errors import AuthError, ConfigError, ProviderError, ProviderTimeoutError
from antiphon.plugins.speechmatics import SpeechmaticsSTT
from antiphon.protocols import speechmatics_stt as sm
from antiphon.testing import FaultPlan, serving
from antiphon.testing.conformance.stt_ws import (
    FAST,
    PHRASES,
    PluginHarness,
    WebSocketSTTConformance,
    speech,
)
from antiphon.testing.speechmatics_stt import DEFAULT_API_KEY, FakeSpeechmaticsSTT

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

HARNESS = PluginHarness(
    SpeechmaticsSTT,
    FakeSpeechmaticsSTT,
    api_key=DEFAULT_API_KEY,
    path="/v2",
    keepalive=None,
    sessions=lambda fake: fake.stats.count_message("StartRecognition"),
)


class TestSpeechmaticsSTTConformance(WebSocketSTTConformance):
    harness = HARNESS


# --------------------------------------------------------------------------- plugin-specific


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEECHMATICS_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="SPEECHMATICS_API_KEY"):
        SpeechmaticsSTT()


def test_key_from_environment_url_and_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECHMATICS_API_KEY", "from-env")
    stt = SpeechmaticsSTT(additional_vocab=["antiphon"], max_delay=1.0)
    assert stt.headers == {"Authorization": "Bearer from-env"}
    assert stt.url == "wss://eu2.rt.speechmatics.com/v2"
    start = json.loads(stt.options.start_recognition())
    assert start["audio_format"] == {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}
    assert start["transcription_config"] == {
        "language": "en",
        "enable_partials": True,
        "max_delay": 1.0,
        "additional_vocab": [{"content": "antiphon"}],
        "conversation_config": {"end_of_utterance_silence_trigger": 0.5},
    }
    assert sm.options_from_start(start) == stt.options


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 100}, "8000 and 48000"),
        ({"encoding": "opus"}, "pcm_s16le"),
        ({"model": "huge"}, "standard"),
        ({"max_delay": 10}, "0.7 to 4"),
        ({"end_of_utterance_silence": 3}, "at most 2"),
        ({"language": " "}, "language"),
        ({"max_reconnects": -1}, "max_reconnects"),
        ({"base_url": "https://x"}, "ws://127.0.0.1:PORT"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SpeechmaticsSTT(api_key="k", **kwargs)


async def test_wrong_key_is_an_auth_error() -> None:
    async with (
        serving(FakeSpeechmaticsSTT()) as fake,
        SpeechmaticsSTT(api_key="wrong", base_url=fake.url, deadlines=FAST) as stt,
    ):
        with pytest.raises(AuthError, match="SPEECHMATICS_API_KEY"):
            await stt.recognize(speech(PHRASES[0]))


async def test_a_temporary_key_goes_in_the_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEECHMATICS_API_KEY", raising=False)
    async with serving(FakeSpeechmaticsSTT(vocabulary=PHRASES)) as fake:
        async with SpeechmaticsSTT(token=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt:
            assert stt.headers == {}
            finals = await stt.recognize(speech(PHRASES[0]))
        assert fake.stats.paths[0] == f"/v2?jwt={DEFAULT_API_KEY}"
        assert "Authorization" not in fake.stats.headers[0]
    assert [f.text for f in finals] == [PHRASES[0]]


async def test_no_recognition_started_fails_the_connect_in_its_deadline() -> None:
    async with serving(FakeSpeechmaticsSTT(vocabulary=PHRASES, answer_start=False)) as fake:
        async with SpeechmaticsSTT(
            api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST
        ) as stt:
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(ProviderTimeoutError) as info:
                await stt.recognize(speech(PHRASES[0]))
            assert info.value.stage == "connect" and info.value.timeout == FAST.connect
            assert loop.time() - began <= FAST.connect + 1e-9
        assert fake.stats.audio_messages == 0  # no audio before RecognitionStarted


@pytest.mark.parametrize(
    ("kind", "error", "retryable"),
    [
        ("not_authorised", AuthError, False),
        ("quota_exceeded", ProviderError, True),
        ("invalid_config", ProviderError, False),
    ],
)
def test_errors_are_typed(kind: str, error: type[ProviderError], retryable: bool) -> None:
    err = sm.error_for(sm.ErrorMessage(kind, "why"), stage="connect")
    assert type(err) is error or isinstance(err, error)
    assert err.retryable is retryable and kind in str(err)


@pytest.mark.parametrize(("code", "auth", "retryable"), [(4001, True, False), (4005, False, True)])
def test_close_codes_are_typed(code: int, auth: bool, retryable: bool) -> None:
    err = sm.close_error(code, "", stage="receive")
    assert isinstance(err, AuthError) is auth
    assert err.retryable is retryable and sm.CLOSE_CODES[code] in str(err)


async def test_mulaw_at_8k_and_utterances_ended_by_silence() -> None:
    text = PHRASES[1]
    async with serving(FakeSpeechmaticsSTT(vocabulary=PHRASES)) as fake:
        async with SpeechmaticsSTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            encoding="mulaw",
            sample_rate=8000,
            deadlines=FAST,
        ) as stt:
            frame = speech(text, 16000, pad=0.8)  # long enough silence for EndOfUtterance
            finals = await stt.recognize(frame)
        start = fake.stats.received[0]
        assert start["audio_format"] == {"type": "raw", "encoding": "mulaw", "sample_rate": 8000}
        assert [m["message"] for m in fake.sent].count("EndOfUtterance") == 1
        assert fake.stats.closes_sent == [1000]
    assert [f.text for f in finals] == [text]


# --------------------------------------------------------------------------- the machine


def _segment(final: bool, *words: tuple[str, float, float]) -> str:
    results: list[dict[str, Any]] = []
    for content, start, end in words:
        kind = "punctuation" if content in ".,?!" else "word"
        results.append(
            {
                "type": kind,
                "start_time": start,
                "end_time": end,
                "alternatives": [{"content": content, "confidence": 0.8}],
            }
        )
    text = sm.join_segments([w[0] for w in words])
    return json.dumps(
        {
            "message": "AddTranscript" if final else "AddPartialTranscript",
            "format": "2.9",
            "metadata": {
                "start_time": words[0][1] if words else 0.0,
                "end_time": words[-1][2] if words else 0.0,
                "transcript": text,
            },
            "results": results,
        }
    )


def test_machine_joins_segments_into_one_final_per_utterance() -> None:
    session = sm.RealtimeSession(sm.RealtimeOptions())
    session.audio(bytes(2 * 16000 * 2))  # two seconds sent
    (a,) = session.feed(_segment(False, ("hello", 0.1, 0.4)))
    assert a.transcript is not None and a.transcript.text == "hello"
    assert not a.transcript.is_final and session.utterance_open
    (b,) = session.feed(_segment(True, ("Hello", 0.1, 0.4), (",", 0.4, 0.4)))
    assert b.transcript is not None and b.transcript.text == "Hello,"
    (c,) = session.feed(_segment(False, ("wor", 0.5, 0.7)))
    assert c.transcript is not None and c.transcript.text == "Hello, wor"
    assert session.force_end_of_utterance()[-1] == sm.force_end_of_utterance(2.0)
    assert session.awaiting
    session.feed(_segment(True, ("world", 0.5, 0.9), (".", 0.9, 0.9)))
    (final,) = session.feed(json.dumps({"message": "EndOfUtterance", "metadata": {}}))
    assert final.transcript is not None and final.transcript.is_final
    assert final.transcript.text == "Hello, world."
    assert (final.transcript.start, final.transcript.end) == (0.1, 0.9)
    assert final.transcript.utterance == 0 and not session.awaiting
    assert session.finalized == 0.9
    # an EndOfUtterance with nothing open ends nothing
    assert session.feed(json.dumps({"message": "EndOfUtterance", "metadata": {}})) == []
    assert session.end_of_stream() == [sm.end_of_stream(40)]  # 40 messages of 50 ms
    acts = [x.act for x in session.feed('{"message": "EndOfTranscript"}')]
    assert acts == [sm.Act.DONE] and session.done
    assert [x.act for x in session.feed(_segment(False, ("late", 0, 1)))] == [sm.Act.DROP]


def test_machine_replays_unfinalized_audio_with_times_shifted() -> None:
    session = sm.RealtimeSession(sm.RealtimeOptions(), journal_seconds=5)
    session.audio(bytes(16000 * 2))  # one second
    session.feed(_segment(True, ("one", 0.1, 0.5)))
    session.end_of_stream()
    assert not session.lost_is_harmless()
    msgs = session.begin_replay()
    assert msgs[-1] == sm.end_of_stream(len(msgs) - 1)
    assert sum(len(m) for m in msgs[:-1]) == round(0.5 * 16000) * 2  # from 0.5 s on
    assert session.offset == pytest.approx(0.5) and session.seq == len(msgs) - 1
    session.feed(_segment(True, ("two", 0.1, 0.4)))
    actions = session.feed('{"message": "EndOfTranscript"}')
    final = actions[0].transcript
    assert final is not None and final.text == "one two"
    assert final.end == pytest.approx(0.9)
    assert actions[-1].act is sm.Act.DONE


def test_error_and_unknown_messages() -> None:
    session = sm.RealtimeSession(sm.RealtimeOptions())
    (err,) = session.feed('{"message": "Error", "type": "job_error", "reason": "x"}')
    assert err.act is sm.Act.FAIL and err.note == "job_error: x"
    (unknown,) = session.feed('{"message": "SomethingNew"}')
    assert unknown.act is sm.Act.DROP
    (bad,) = session.feed('{"message": "AddTranscript", "metadata": {}, "results": []}')
    assert bad.act is sm.Act.DROP
    (notice,) = session.feed('{"message": "Warning", "type": "duration_limit_exceeded"}')
    assert notice.act is sm.Act.NOTICE


# --------------------------------------------------------------------------- the witness


def _strict(value: Any, cls: Any, path: str = "$") -> list[str]:
    """Validate ``value`` as the SDK dataclass ``cls`` and list the keys it does not declare
    (pydantic ignores them on dataclasses), at any depth."""
    try:
        obj = TypeAdapter(cls).validate_python(value)
    except ValidationError as exc:
        return [f"{path}: {exc}"]
    problems: list[str] = []

    def walk(o: Any, raw: Any, p: str) -> None:
        if dataclasses.is_dataclass(o) and isinstance(raw, dict):
            names = {f.name for f in dataclasses.fields(o)}
            problems.extend(f"{p}.{k}" for k in raw if k not in names)
            for k in names & raw.keys():
                walk(getattr(o, k), raw[k], f"{p}.{k}")
        elif isinstance(o, list) and isinstance(raw, list):
            for i, (item, raw_item) in enumerate(zip(o, raw, strict=False)):
                walk(item, raw_item, f"{p}[{i}]")

    walk(obj, value, path)
    return problems


def _check_server_message(msg: dict[str, Any]) -> None:
    kind = ServerMessageType(msg["message"])  # a message type the SDK knows
    if kind in (ServerMessageType.ADD_TRANSCRIPT, ServerMessageType.ADD_PARTIAL_TRANSCRIPT):
        assert set(msg) <= {"message", "format", "metadata", "results"}, msg
        problems = _strict(msg["metadata"], RecognitionMetadata)
        problems += _strict(msg["results"], list[RecognitionResult])
        assert not problems, problems
        result = TranscriptResult.from_message(msg)
        assert result.is_final is (kind is ServerMessageType.ADD_TRANSCRIPT)
    elif kind is ServerMessageType.AUDIO_ADDED:
        assert set(msg) == {"message", "seq_no"} and isinstance(msg["seq_no"], int)
    elif kind is ServerMessageType.ERROR:
        assert set(msg) == {"message", "type", "reason"}


def _check_client_message(msg: dict[str, Any]) -> None:
    kind = ClientMessageType(msg["message"])
    if kind is ClientMessageType.START_RECOGNITION:
        config = dict(msg["transcription_config"])
        conversation = config.pop("conversation_config", None)
        sdk = build_start_recognition_message(
            TranscriptionConfig(
                **config,
                model=config.pop("model", "enhanced"),
                conversation_config=ConversationConfig(**conversation) if conversation else None,
            ),
            AudioFormat(
                encoding=AudioEncoding(msg["audio_format"]["encoding"]),
                sample_rate=msg["audio_format"]["sample_rate"],
            ),
        )
        expected = json.loads(json.dumps(sdk))
        expected["transcription_config"].pop("model")  # the SDK names its default
        assert msg == expected
    elif kind is ClientMessageType.FORCE_END_OF_UTTERANCE:
        assert set(msg) <= {"message", "timestamp"} and isinstance(msg.get("timestamp", 0.0), float)
    elif kind is ClientMessageType.END_OF_STREAM:
        assert set(msg) == {"message", "last_seq_no"} and isinstance(msg["last_seq_no"], int)
    else:  # pragma: no cover
        raise AssertionError(f"unexpected client message {msg}")


async def test_every_message_fits_the_sdk_models() -> None:
    async with serving(FakeSpeechmaticsSTT(vocabulary=PHRASES)) as fake:
        async with (
            SpeechmaticsSTT(
                api_key=DEFAULT_API_KEY,
                base_url=fake.url,
                additional_vocab=["antiphon"],
                max_delay=1.0,
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
        async with SpeechmaticsSTT(
            api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST
        ) as stt:
            with pytest.raises(ProviderError, match="job_error") as info:
                await stt.recognize(speech(PHRASES[2]))
            assert info.value.retryable  # job_error: the reference says to retry
    kinds = {m["message"] for m in fake.sent}
    assert kinds == {
        "RecognitionStarted",
        "AudioAdded",
        "AddPartialTranscript",
        "AddTranscript",
        "EndOfUtterance",
        "EndOfTranscript",
        "Error",
    }
    for msg in fake.sent:
        _check_server_message(msg)
    assert set(fake.stats.messages) == {"StartRecognition", "ForceEndOfUtterance", "EndOfStream"}
    for msg in fake.stats.received:
        _check_client_message(msg)
    assert all(h["Authorization"] == f"Bearer {DEFAULT_API_KEY}" for h in fake.stats.headers)


def test_the_witness_is_strict() -> None:
    result = {
        "type": "word",
        "start_time": 0.1,
        "end_time": 0.2,
        "alternatives": [{"content": "hi", "confidence": 0.9}],
    }
    assert _strict(result, RecognitionResult) == []
    assert _strict({**result, "utterance": 1}, RecognitionResult) == ["$.utterance"]
    bad_alt = {**result, "alternatives": [{"content": "hi", "confidence": 0.9, "x": 1}]}
    assert _strict(bad_alt, RecognitionResult) == ["$.alternatives[0].x"]
    assert _strict({k: v for k, v in result.items() if k != "end_time"}, RecognitionResult)
    with pytest.raises(ValueError):
        ServerMessageType("AddTranscripts")


async def test_the_official_client_streams_to_the_fake() -> None:
    async with FakeSpeechmaticsSTT(vocabulary=PHRASES) as fake:
        finals: list[str] = []
        partials: list[str] = []
        utterances: list[dict[str, Any]] = []
        ended = asyncio.Event()
        client = AsyncClient(api_key=DEFAULT_API_KEY, url=fake.url)
        client.on(
            ServerMessageType.ADD_TRANSCRIPT,
            lambda m: finals.append(m["metadata"]["transcript"]),
        )
        client.on(
            ServerMessageType.ADD_PARTIAL_TRANSCRIPT,
            lambda m: partials.append(m["metadata"]["transcript"]),
        )

        def on_end_of_utterance(m: dict[str, Any]) -> None:
            utterances.append(m)
            ended.set()

        client.on(ServerMessageType.END_OF_UTTERANCE, on_end_of_utterance)
        await client.start_session(
            transcription_config=TranscriptionConfig(
                language="en",
                enable_partials=True,
                conversation_config=ConversationConfig(end_of_utterance_silence_trigger=0.5),
            ),
            audio_format=AudioFormat(encoding=AudioEncoding.PCM_S16LE, sample_rate=16000),
        )
        audio = speech(PHRASES[2], pad=0.2).data
        step = 3200  # 100 ms
        for i in range(0, len(audio), step):
            await client.send_audio(audio[i : i + step])
        await client.force_end_of_utterance()
        await asyncio.wait_for(ended.wait(), 5)
        await client.stop_session()
    assert [f.strip() for f in finals] == [PHRASES[2]]
    assert partials and len(utterances) == 1
    assert fake.stats.count_message("ForceEndOfUtterance") == 1
    assert fake.stats.count_message("EndOfStream") == 1
    assert fake.stats.closes_sent == [1000]  # last_seq_no counted every audio message


# --------------------------------------------------------------------------- registration


async def test_the_pipeline_builds_it_on_its_fake_by_name() -> None:
    import contextlib

    from antiphon.agent.pipeline import PipelineSpec, open_services
    from antiphon.cli import STT_NAMES
    from antiphon.testing.registry import LoopbackFakes

    assert "speechmatics" in STT_NAMES
    spec = PipelineSpec(
        vad="webrtc", stt="speechmatics", llm="openai:gpt-4o-mini", tts="deepgram", fake=True
    )
    async with contextlib.AsyncExitStack() as stack:
        services = await open_services(spec, stack, fakes=LoopbackFakes())
        assert isinstance(services.stt, SpeechmaticsSTT)
        assert services.stt.url.startswith("ws://127.0.0.1:") and services.stt.url.endswith("/v2")
        finals = await services.stt.recognize(speech("what is the weather"))
    assert [f.text for f in finals] == ["unknown"]  # no vocabulary given: heard, not named
