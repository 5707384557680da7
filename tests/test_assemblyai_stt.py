"""AssemblyAISTT: the WebSocket STT conformance suite on the fake server, plugin checks, and
the official ``assemblyai`` SDK (``streaming.v3``) as the fake's witness."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from assemblyai.streaming.v3 import (
    AsyncStreamingClient,
    BeginEvent,
    StreamingClientOptions,
    StreamingEvents,
    StreamingParameters,
    StreamingSessionParameters,
    TerminationEvent,
    TurnEvent,
)
from assemblyai.streaming.v3.models import (
    ErrorEvent,
    ForceEndpoint,
    KeepAlive,
    TerminateSession,
    UpdateConfiguration,
)

from antiphon.errors import AuthError, ConfigError, ProviderError
from antiphon.plugins.assemblyai import AssemblyAISTT
from antiphon.plugins.assemblyai.stt import AssemblyAIRecognizeStream
from antiphon.protocols import assemblyai_stt as aai
from antiphon.services.stt import StreamState
from antiphon.testing import FaultPlan, serving
from antiphon.testing.assemblyai_stt import DEFAULT_API_KEY, FakeAssemblyAISTT
from antiphon.testing.conformance.stt_ws import (
    FAST,
    PHRASES,
    PluginHarness,
    WebSocketSTTConformance,
    speech,
)
from antiphon.testing.witness import WitnessError, check_model

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


HARNESS = PluginHarness(
    AssemblyAISTT,
    FakeAssemblyAISTT,
    api_key=DEFAULT_API_KEY,
    keepalive="KeepAlive",
)


class TestAssemblyAISTTConformance(WebSocketSTTConformance):
    harness = HARNESS


# --------------------------------------------------------------------------- plugin-specific


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSEMBLYAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ASSEMBLYAI_API_KEY"):
        AssemblyAISTT()


def test_key_from_environment_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "from-env")
    stt = AssemblyAISTT(keyterms=["antiphon", "Claude"], max_turn_silence=900)
    assert stt._headers == {"Authorization": "from-env"}
    assert stt.url.startswith(
        "wss://streaming.assemblyai.com/v3/ws?sample_rate=16000&encoding=pcm_s16le"
    )
    assert "format_turns=true" in stt.url and "max_turn_silence=900" in stt.url
    assert "speech_model=universal-streaming-english" in stt.url
    assert aai.options_from_query(
        {"sample_rate": "16000", "keyterms_prompt": '["antiphon", "Claude"]'}
    ).keyterms == ("antiphon", "Claude")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 100}, "8000 and 48000"),
        ({"encoding": "opus"}, "pcm_s16le"),
        ({"keyterms": ["x" * 51]}, "50 characters"),
        ({"end_of_turn_confidence_threshold": 2.0}, "0 to 1"),
        ({"max_reconnects": -1}, "max_reconnects"),
        ({"base_url": "https://x"}, "ws://127.0.0.1:PORT"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AssemblyAISTT(api_key="k", **kwargs)


async def test_wrong_key_is_an_auth_error() -> None:
    async with (
        serving(FakeAssemblyAISTT()) as fake,
        AssemblyAISTT(api_key="wrong", base_url=fake.url, deadlines=FAST) as stt,
    ):
        with pytest.raises(AuthError, match="ASSEMBLYAI_API_KEY"):
            await stt.recognize(speech("What time is it?"))


async def test_a_temporary_token_goes_in_the_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSEMBLYAI_API_KEY", raising=False)
    async with serving(FakeAssemblyAISTT(vocabulary=PHRASES)) as fake:
        async with AssemblyAISTT(token=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt:
            assert stt._headers == {}
            finals = await stt.recognize(speech(PHRASES[0]))
        assert fake.stats.queries[0]["token"] == DEFAULT_API_KEY
        assert "Authorization" not in fake.stats.headers[0]
    assert [f.text for f in finals] == [PHRASES[0]]


@pytest.mark.parametrize(("code", "auth"), [(1008, True), (3007, False), (3008, False)])
def test_close_codes_are_typed(code: int, auth: bool) -> None:
    error = aai.close_error(code, "", stage="receive")
    assert isinstance(error, AuthError) is auth
    assert error.retryable is (code == 3008)
    assert aai.CLOSE_CODES[code] in str(error)


async def test_audio_goes_in_messages_the_service_accepts_and_mulaw_works() -> None:
    text = PHRASES[1]
    async with serving(FakeAssemblyAISTT(vocabulary=PHRASES)) as fake:
        async with AssemblyAISTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            encoding="pcm_mulaw",
            sample_rate=8000,
            deadlines=FAST,
        ) as stt:
            finals = await stt.recognize(speech(text, 16000))
        assert fake.stats.queries[0]["encoding"] == "pcm_mulaw"
        assert fake.stats.closes_sent == [1000]  # no 3007: every message was 50-1000 ms
    assert [f.text for f in finals] == [text]


async def test_update_configuration_and_keyterms_reach_the_server() -> None:
    text = PHRASES[0]
    async with serving(FakeAssemblyAISTT(vocabulary=PHRASES)) as fake:
        async with AssemblyAISTT(
            api_key=DEFAULT_API_KEY, base_url=fake.url, keyterms=["antiphon"], deadlines=FAST
        ) as stt:
            async with stt.stream() as s:
                assert isinstance(s, AssemblyAIRecognizeStream)
                s.update_configuration(keyterms=["antiphon", "Claude"], max_turn_silence=800)
                for f in speech(text).split(0.02):
                    s.push_audio(f)
                s.end_input()
                finals = [t async for t in s if t.is_final]
            assert s.state is StreamState.COMPLETED
        assert json.loads(fake.stats.queries[0]["keyterms_prompt"]) == ["antiphon"]
        (update,) = [m for m in fake.stats.received if m["type"] == "UpdateConfiguration"]
        assert update == {
            "type": "UpdateConfiguration",
            "keyterms_prompt": ["antiphon", "Claude"],
            "max_turn_silence": 800,
        }
    assert [f.text for f in finals] == [text]


def test_session_machine_keeps_the_formatted_end_of_turn_and_drops_stale_turns() -> None:
    session = aai.StreamingSession(aai.StreamingOptions())
    session.audio(bytes(16000 * 2))  # one second sent

    def turn(order: int, end: bool, formatted: bool, *words: str) -> str:
        ws = [
            {
                "start": 100 * i,
                "end": 100 * i + 90,
                "confidence": 0.9,
                "text": w,
                "word_is_final": end or i < len(words) - 1,
            }
            for i, w in enumerate(words)
        ]
        return json.dumps(
            {
                "type": "Turn",
                "turn_order": order,
                "turn_is_formatted": formatted,
                "end_of_turn": end,
                "transcript": " ".join(words),
                "end_of_turn_confidence": 0.5,
                "words": ws,
            }
        )

    (partial,) = session.feed(turn(0, False, False, "hello", "wor"))
    assert partial.transcript is not None and partial.transcript.text == "hello wor"
    assert not partial.transcript.is_final and session.turn_open
    assert session.force_endpoint()[-1] == aai.FORCE_ENDPOINT and session.awaiting
    assert [a.act for a in session.feed(turn(0, True, False, "hello", "world"))] == [aai.Act.DROP]
    (final,) = session.feed(turn(0, True, True, "Hello,", "world."))
    assert final.transcript is not None and final.transcript.is_final
    assert final.transcript.text == "Hello, world." and final.transcript.end == 0.19
    assert not session.awaiting and session.finalized == 0.19
    assert [a.act for a in session.feed(turn(0, False, False, "late"))] == [aai.Act.DROP]
    assert session.terminate() == [aai.TERMINATE]
    assert [a.act for a in session.feed('{"type": "Termination"}')] == [aai.Act.DONE]


# --------------------------------------------------------------------------- the witness


def _check_server_message(msg: dict[str, Any]) -> None:
    models = {
        "Begin": BeginEvent,
        "Turn": TurnEvent,
        "Termination": TerminationEvent,
        "Error": ErrorEvent,
    }
    check_model(msg, models[msg["type"]])


def _check_client_message(msg: dict[str, Any]) -> None:
    models = {
        "ForceEndpoint": ForceEndpoint,
        "Terminate": TerminateSession,
        "KeepAlive": KeepAlive,
        "UpdateConfiguration": UpdateConfiguration,
    }
    check_model(msg, models[msg["type"]])


def _check_query(query: dict[str, str]) -> None:
    params: dict[str, Any] = {
        k: json.loads(v) if k == "keyterms_prompt" else v for k, v in query.items()
    }
    check_model(params, StreamingParameters)


async def test_every_message_fits_the_sdk_models() -> None:
    plan = FaultPlan(error_mid_stream=True, close_after_chunks=20)
    async with serving(FakeAssemblyAISTT(vocabulary=PHRASES)) as fake:
        async with (
            AssemblyAISTT(
                api_key=DEFAULT_API_KEY,
                base_url=fake.url,
                keyterms=["antiphon"],
                min_turn_silence=400,
                keepalive_interval=0.05,
                deadlines=FAST,
            ) as stt,
            stt.stream() as s,
        ):
            assert isinstance(s, AssemblyAIRecognizeStream)
            for f in speech(PHRASES[0]).split(0.02):
                s.push_audio(f)
            s.flush()
            await asyncio.sleep(0.2)  # long enough for a KeepAlive or two
            s.update_configuration(end_of_turn_confidence_threshold=0.6)
            for f in speech(PHRASES[1]).split(0.02):
                s.push_audio(f)
            s.end_input()
            finals = [t.text async for t in s if t.is_final]
        assert finals == list(PHRASES[:2])
        fake.plan = plan
        async with AssemblyAISTT(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt:
            with pytest.raises(ProviderError, match="3005"):
                await stt.recognize(speech(PHRASES[2]))
    kinds = {m["type"] for m in fake.sent}
    assert kinds == {"Begin", "Turn", "Termination", "Error"}
    for msg in fake.sent:
        _check_server_message(msg)
    assert {m["type"] for m in fake.stats.received} == {
        "ForceEndpoint",
        "Terminate",
        "KeepAlive",
        "UpdateConfiguration",
    }
    for msg in fake.stats.received:
        _check_client_message(msg)
    for query in fake.stats.queries:
        _check_query(query)
    assert all(h["Authorization"] == DEFAULT_API_KEY for h in fake.stats.headers)


def test_the_witness_is_strict() -> None:
    turn = {
        "type": "Turn",
        "turn_order": 0,
        "turn_is_formatted": False,
        "end_of_turn": False,
        "transcript": "",
        "end_of_turn_confidence": 0.1,
        "words": [],
    }
    check_model(turn, TurnEvent)
    with pytest.raises(WitnessError, match="does not declare"):
        check_model({**turn, "utterance": ""}, TurnEvent)
    with pytest.raises(WitnessError):
        check_model({k: v for k, v in turn.items() if k != "end_of_turn"}, TurnEvent)


async def test_the_official_client_streams_to_the_fake() -> None:
    async with FakeAssemblyAISTT(vocabulary=PHRASES) as fake:
        client = AsyncStreamingClient(
            StreamingClientOptions(
                api_key=DEFAULT_API_KEY, api_host=fake.url, max_connection_retries=0
            )
        )
        began: list[BeginEvent] = []
        turns: list[TurnEvent] = []
        ended: list[TerminationEvent] = []
        errors: list[Exception] = []
        client.on(StreamingEvents.Begin, lambda _c, e: began.append(e))
        client.on(StreamingEvents.Turn, lambda _c, e: turns.append(e))
        client.on(StreamingEvents.Termination, lambda _c, e: ended.append(e))
        client.on(StreamingEvents.Error, lambda _c, e: errors.append(e))
        params = StreamingParameters.model_validate(
            {
                "sample_rate": 16000,
                "format_turns": True,
                "speech_model": "universal-streaming-english",
                "keyterms_prompt": ["antiphon"],
            }
        )
        await client.connect(params)
        audio = speech(PHRASES[2]).data
        step = 1600 * 2  # 100 ms
        await client.stream([audio[i : i + step] for i in range(0, len(audio), step)])
        await client.set_params(StreamingSessionParameters(max_turn_silence=700))
        await client.force_endpoint()
        await client.disconnect(terminate=True)
    assert errors == [] and len(began) == 1 and len(ended) == 1
    finals = [t for t in turns if t.end_of_turn and t.turn_is_formatted]
    assert [t.transcript for t in finals] == [PHRASES[2]]
    assert any(not t.end_of_turn for t in turns)
    assert fake.stats.count("ForceEndpoint") == 1 and fake.stats.count("Terminate") == 1
    assert json.loads(fake.stats.queries[0]["keyterms_prompt"]) == ["antiphon"]


def test_its_state_error_is_the_one_of_the_error_tree() -> None:
    import antiphon.errors

    assert aai.ProtocolStateError is antiphon.errors.ProtocolStateError
