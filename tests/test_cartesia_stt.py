"""CartesiaSTT (Ink, manual finalize): the WebSocket STT conformance suite on the fake
server, plugin checks, the session machine, and the official ``cartesia`` SDK (its
``stt`` models and ``stt.manual_finalize.websocket`` client) as the fake's witness."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, get_args

import pytest
from cartesia import AsyncCartesia
from cartesia.types.stt import (
    ManualFinalizeWebsocketParams,
    STTManualFinalizeDoneResponse,
    STTManualFinalizeFlushDoneResponse,
    STTManualFinalizeTranscriptResponse,
    STTManualFinalizeWebsocketRequest,
)
from cartesia.types.stt_error_response import STTErrorResponse

from antiphon.errors import AuthError, ConfigError, ProviderError
from antiphon.plugins.cartesia import CartesiaSTT
from antiphon.protocols import cartesia_stt as ink
from antiphon.testing import FaultPlan, serving
from antiphon.testing.cartesia_stt import DEFAULT_API_KEY, FakeCartesiaSTT
from antiphon.testing.conformance.stt_ws import (
    FAST,
    PHRASES,
    PluginHarness,
    WebSocketSTTConformance,
    speech,
)
from antiphon.testing.witness import WitnessError, assert_typed_dict, check_model

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

HARNESS = PluginHarness(
    CartesiaSTT,
    FakeCartesiaSTT,
    api_key=DEFAULT_API_KEY,
    keepalive=None,
    manual_endpoints=True,
)


class TestCartesiaSTTConformance(WebSocketSTTConformance):
    harness = HARNESS


# --------------------------------------------------------------------------- plugin-specific


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARTESIA_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="CARTESIA_API_KEY"):
        CartesiaSTT()


def test_key_from_environment_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTESIA_API_KEY", "from-env")
    stt = CartesiaSTT(keyterms=["antiphon", "Claude Code"])
    assert stt.headers == {"Authorization": "Bearer from-env", "Cartesia-Version": "2026-08-14"}
    assert stt.url == (
        "wss://api.cartesia.ai/stt/websocket?model=ink-2&encoding=pcm_s16le&sample_rate=16000"
        "&language=en&keyterm=antiphon&keyterm=Claude+Code"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "sonic-3"}, "Ink"),
        ({"encoding": "opus"}, "pcm_s16le"),
        ({"sample_rate": 4000}, "8000 to 48000"),
        ({"keyterms": ["x" * 1201]}, "1200"),
        ({"min_volume": -1}, "min_volume"),
        ({"max_reconnects": -1}, "max_reconnects"),
        ({"base_url": "https://x"}, "ws://127.0.0.1:PORT"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CartesiaSTT(api_key="k", **kwargs)


async def test_wrong_key_is_an_auth_error() -> None:
    async with (
        serving(FakeCartesiaSTT()) as fake,
        CartesiaSTT(api_key="wrong", base_url=fake.url, deadlines=FAST) as stt,
    ):
        with pytest.raises(AuthError, match="CARTESIA_API_KEY"):
            await stt.recognize(speech(PHRASES[0]))


async def test_mulaw_at_8k_and_errors_typed() -> None:
    text = PHRASES[1]
    async with serving(FakeCartesiaSTT(vocabulary=PHRASES)) as fake:
        async with CartesiaSTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            encoding="pcm_mulaw",
            sample_rate=8000,
            deadlines=FAST,
        ) as stt:
            finals = await stt.recognize(speech(text))
        assert fake.stats.queries[0]["encoding"] == ["pcm_mulaw"]
        assert fake.stats.commands == ["close"]
        fake.plan = FaultPlan(error_mid_stream=True, close_after_chunks=10)
        async with CartesiaSTT(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt:
            with pytest.raises(ProviderError, match="fault plan") as info:
                await stt.recognize(speech(text))
            assert info.value.code == 500 and info.value.retryable
    assert [f.text for f in finals] == [text]
    auth = ink.error_for(ink.ErrorMessage("bad key", 401), stage="receive")
    assert isinstance(auth, AuthError) and not auth.retryable


# --------------------------------------------------------------------------- the machine


def _chunk(final: bool, text: str, *words: tuple[str, float, float]) -> str:
    msg: dict[str, Any] = {"type": "transcript", "is_final": final, "text": text, "request_id": "r"}
    if words:
        msg["words"] = [
            {
                "words": [w[0] for w in words],
                "start": [w[1] for w in words],
                "end": [w[2] for w in words],
            }
        ]
    return json.dumps(msg)


def test_machine_joins_final_chunks_and_ends_the_utterance_at_flush_done() -> None:
    session = ink.InkSession(ink.InkOptions())
    session.audio(bytes(16000 * 2))
    (a,) = session.feed(_chunk(False, "Hel", ("Hel", 0.1, 0.3)))
    assert a.transcript is not None and a.transcript.text == "Hel" and not a.transcript.is_final
    (b,) = session.feed(_chunk(True, " Hello,", ("Hello,", 0.1, 0.4)))
    assert b.transcript is not None and b.transcript.text == "Hello,"
    assert session.finalize()[-1] == ink.FINALIZE and session.awaiting
    assert session.finalize() == []  # nothing new to finalize
    (c,) = session.feed(_chunk(True, " world.", ("world.", 0.5, 0.9)))
    assert c.transcript is not None and c.transcript.text == "Hello, world."
    (final,) = session.feed('{"type": "flush_done", "request_id": "r"}')
    assert final.transcript is not None and final.transcript.is_final
    assert final.transcript.text == "Hello, world."
    assert (final.transcript.start, final.transcript.end) == (0.1, 0.9)
    assert not session.awaiting
    assert session.close() == [ink.CLOSE]
    assert [x.act for x in session.feed('{"type": "done", "request_id": "r"}')] == [ink.Act.DONE]
    assert [x.act for x in session.feed(_chunk(False, "late"))] == [ink.Act.DROP]


def test_machine_replays_unanswered_audio() -> None:
    session = ink.InkSession(ink.InkOptions(), journal_seconds=5)
    session.audio(bytes(16000 * 2))
    session.finalize()
    session.feed(_chunk(True, "One.", ("One.", 0.1, 0.4)))
    session.feed('{"type": "flush_done", "request_id": "r"}')
    session.audio(bytes(16000))
    session.close()
    msgs = session.begin_replay()
    assert msgs[-1] == ink.CLOSE
    assert sum(len(m) for m in msgs[:-1]) == 16000  # the half second after the answer
    session.feed(_chunk(True, "Two.", ("Two.", 0.1, 0.3)))
    final, done = session.feed('{"type": "done", "request_id": "r"}')
    assert final.transcript is not None and final.transcript.start == pytest.approx(1.1)
    assert done.act is ink.Act.DONE


# --------------------------------------------------------------------------- the witness

_SERVER_MODELS: dict[str, Any] = {
    "transcript": STTManualFinalizeTranscriptResponse,
    "flush_done": STTManualFinalizeFlushDoneResponse,
    "done": STTManualFinalizeDoneResponse,
    "error": STTErrorResponse,
}


def _query_params(q: dict[str, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v[-1] for k, v in q.items() if k != "keyterm"}
    out["sample_rate"] = int(out["sample_rate"])
    if "keyterm" in q:
        out["keyterm"] = q["keyterm"]
    return out


async def test_every_message_fits_the_sdk_models() -> None:
    async with serving(FakeCartesiaSTT(vocabulary=PHRASES)) as fake:
        async with (
            CartesiaSTT(
                api_key=DEFAULT_API_KEY, base_url=fake.url, keyterms=["antiphon"], deadlines=FAST
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
        async with CartesiaSTT(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as stt:
            with pytest.raises(ProviderError):
                await stt.recognize(speech(PHRASES[2]))
    assert {m["type"] for m in fake.sent} == set(_SERVER_MODELS)
    for msg in fake.sent:
        check_model(msg, _SERVER_MODELS[msg["type"]])
    assert set(fake.stats.commands) == {"finalize", "close"}
    assert set(fake.stats.commands) <= set(get_args(STTManualFinalizeWebsocketRequest))
    for q in fake.stats.queries:
        assert_typed_dict(_query_params(q), ManualFinalizeWebsocketParams)


def test_the_witness_is_strict() -> None:
    msg = {"type": "flush_done", "request_id": "r"}
    check_model(msg, STTManualFinalizeFlushDoneResponse)
    with pytest.raises(WitnessError, match="does not declare"):
        check_model({**msg, "utterance": 1}, STTManualFinalizeFlushDoneResponse)
    with pytest.raises(WitnessError):
        check_model({"type": "flush_done"}, STTManualFinalizeFlushDoneResponse)
    with pytest.raises(AssertionError):
        assert_typed_dict(
            {"model": "ink-2", "encoding": "pcm_s16le"}, ManualFinalizeWebsocketParams
        )


async def test_the_official_client_streams_to_the_fake() -> None:
    async with FakeCartesiaSTT(vocabulary=PHRASES) as fake:
        client = AsyncCartesia(api_key=DEFAULT_API_KEY, websocket_base_url=fake.url)
        events: list[Any] = []
        try:
            async with client.stt.manual_finalize.websocket(
                model="ink-2", encoding="pcm_s16le", sample_rate=16000, keyterm=["antiphon"]
            ) as conn:
                audio = speech(PHRASES[2]).data
                for i in range(0, len(audio), 3200):
                    await conn.send_raw(audio[i : i + 3200])
                await conn.send("finalize")
                while not events or events[-1].type != "flush_done":
                    events.append(await asyncio.wait_for(conn.recv(), 5))
                await conn.send("close")
                while events[-1].type != "done":
                    events.append(await asyncio.wait_for(conn.recv(), 5))
        finally:
            with contextlib.suppress(Exception):
                await client.close()
    finals = "".join(e.text for e in events if e.type == "transcript" and e.is_final)
    assert finals.strip() == PHRASES[2]
    assert any(e.type == "transcript" and not e.is_final for e in events)
    assert fake.stats.commands == ["finalize", "close"]
    assert fake.stats.queries[0]["keyterm"] == ["antiphon"]
    headers = {k.lower(): v for k, v in fake.stats.headers[0].items()}
    assert headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert headers["cartesia-version"] == ink.DEFAULT_API_VERSION  # the one we send too


# --------------------------------------------------------------------------- registration


async def test_the_pipeline_builds_it_on_its_fake_by_name() -> None:
    from antiphon.agent.pipeline import PipelineSpec, open_services
    from antiphon.cli import STT_NAMES
    from antiphon.testing.registry import LoopbackFakes

    assert "cartesia" in STT_NAMES
    spec = PipelineSpec(
        vad="webrtc", stt="cartesia", llm="openai:gpt-4o-mini", tts="deepgram", fake=True
    )
    async with contextlib.AsyncExitStack() as stack:
        services = await open_services(spec, stack, fakes=LoopbackFakes())
        assert isinstance(services.stt, CartesiaSTT)
        assert services.stt.url.startswith("ws://127.0.0.1:")
        finals = await services.stt.recognize(speech("what is the weather"))
    assert [f.text for f in finals] == ["unknown"]  # no vocabulary given: heard, not named
