"""RimeTTS: the conformance suite on the fake server, the protocol machine, the plugin.

Rime has no official SDK on the package index, so there is no witness test: the fake and
the protocol module follow Rime's documentation (cited in antiphon.protocols.rime_tts).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from antiphon.errors import AuthError, ConfigError, ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.registry import TTSSettings, tts_provider
from antiphon.plugins.rime import RimeTTS
from antiphon.protocols import rime_tts as rt
from antiphon.protocols.tts_session import Act, ProtocolStateError
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing import FaultPlan, serving
from antiphon.testing.conformance.tts import FAST, TTSConformance, TTSHarness
from antiphon.testing.registry import tts_fake
from antiphon.testing.rime_tts import DEFAULT_API_KEY, FakeRimeTTS, synthesize, word_timestamps
from antiphon.testing.server import FakeWsServer
from tts_helpers import speak

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class RimeHarness(TTSHarness):
    context_ids = True

    def fake(self, plan: FaultPlan) -> FakeWsServer:
        return FakeRimeTTS(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        return RimeTTS(api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines, pool=pool)

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        return synthesize(text, "linear16", tts.sample_rate)

    def connections(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeRimeTTS)
        return fake.stats.connections

    def cancels(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeRimeTTS)
        return fake.stats.clears


class TestRimeConformance(TTSConformance):
    harness = RimeHarness()


# ----------------------------------------------------------------------------- protocol


def _ids() -> Callable[[], str]:
    counter = iter(range(1, 1000))
    return lambda: f"ctx-{next(counter)}"


def _chunk(audio: bytes, cid: str | None) -> str:
    return json.dumps({"type": "chunk", "data": base64.b64encode(audio).decode(), "contextId": cid})


def test_session_tags_text_with_its_context_and_flushes_once() -> None:
    s = rt.RimeSession(context_ids=_ids())
    assert s.speak("   ") == []  # leading blank text is not sent
    msgs = s.speak("Hello there.")
    assert [json.loads(m) for m in msgs] == [{"text": "Hello there.", "contextId": "ctx-1"}]
    assert [json.loads(m) for m in s.flush()] == [{"operation": "flush"}]
    assert s.flush() == []  # nothing new to flush
    assert s.pending_flushes == 1 and s.awaiting_audio


def test_long_text_is_split_under_rimes_limit() -> None:
    text = ("word " * 300).strip()
    msgs = rt.encode_text(text, "c")
    assert len(msgs) > 1
    pieces = [json.loads(m)["text"] for m in msgs]
    assert all(len(p) <= rt.MAX_TEXT_CHARS for p in pieces)
    assert "".join(pieces) == text


def test_done_answers_flushes_in_order_and_ends_the_stream() -> None:
    s = rt.RimeSession(context_ids=_ids())
    s.speak("One.")
    s.flush()
    s.speak("Two.")
    s.end_input()
    assert s.feed(_chunk(b"\x01\x00", "ctx-1")).act is Act.DELIVER
    assert s.feed(json.dumps({"type": "done", "contextId": "ctx-1"})).act is Act.SEGMENT_DONE
    assert not s.done
    last = s.feed(json.dumps({"type": "done", "contextId": "ctx-1"}))
    assert last.act is Act.STREAM_DONE and s.done
    # anything later, even of this context, is stale
    assert s.feed(_chunk(b"\x01\x00", "ctx-1")).act is Act.DROP


def test_other_contexts_and_garbage_are_dropped() -> None:
    s = rt.RimeSession(context_ids=_ids())
    s.speak("Hi.")
    s.flush()
    assert s.feed(_chunk(b"\x01\x00", "old")).act is Act.DROP
    assert s.feed(_chunk(b"\x01\x00", None)).act is Act.DROP
    assert s.feed("{not json").act is Act.DROP
    assert s.feed(json.dumps({"type": "somethingNew"})).act is Act.DROP
    assert s.feed(json.dumps({"type": "chunk", "data": "!!", "contextId": "ctx-1"})).act is Act.DROP
    assert s.feed(b"\x00\x01").act is Act.DROP
    assert s.pending_flushes == 1


def test_word_timestamps_are_parsed_into_a_notice() -> None:
    s = rt.RimeSession(context_ids=_ids())
    s.speak("Hello world.")
    s.flush()
    msg = {
        "type": "timestamps",
        "word_timestamps": {"words": ["Hello", "world."], "start": [0, 0.4], "end": [0.4, 0.9]},
        "contextId": "ctx-1",
    }
    action = s.feed(json.dumps(msg))
    assert action.act is Act.NOTICE
    assert action.event == rt.WordTimestamps(("Hello", "world."), (0.0, 0.4), (0.4, 0.9), "ctx-1")
    uneven = {**msg, "word_timestamps": {"words": ["a"], "start": [0, 1], "end": [1]}}
    assert isinstance(rt.parse(json.dumps(uneven)), rt.Malformed)


def test_error_fails_the_active_stream_only() -> None:
    s = rt.RimeSession(context_ids=_ids())
    error = json.dumps({"type": "error", "message": "bad speaker"})
    assert s.feed(error).act is Act.DROP  # nothing asked yet
    s.speak("Hi.")
    s.flush()
    action = s.feed(error)
    assert action.act is Act.FAIL and action.note == "bad speaker"


def test_clear_is_sent_only_for_a_started_context_and_needs_no_ack() -> None:
    idle = rt.RimeSession()
    assert idle.clear() == []
    s = rt.RimeSession()
    s.speak("Hi.")
    assert [json.loads(m) for m in s.clear()] == [{"operation": "clear"}]
    assert not s.clear_needs_ack and not s.awaiting_audio
    with pytest.raises(ProtocolStateError):
        s.speak("more")


def test_replay_moves_to_a_new_context_until_audio_is_heard() -> None:
    s = rt.RimeSession(context_ids=_ids())
    s.speak("One.")
    s.flush()
    msgs = s.reset_for_replay()
    assert [json.loads(m) for m in msgs] == [
        {"text": "One.", "contextId": "ctx-2"},
        {"operation": "flush"},
    ]
    assert s.context_id == "ctx-2" and s.pending_flushes == 1
    assert s.feed(_chunk(b"\x01\x00", "ctx-2")).act is Act.DELIVER
    assert s.replay() is None


# ----------------------------------------------------------------------------- config


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIME_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="RIME_API_KEY"):
        RimeTTS()


def test_key_from_environment_and_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIME_API_KEY", " from-env ")
    tts = RimeTTS(speaker="cove", model="mistv2", sample_rate=16000, speed_alpha=0.9)
    assert tts.headers == {"Authorization": "Bearer from-env"}
    assert tts.url == (
        "wss://users-ws.rime.ai/ws3?speaker=cove&modelId=mistv2&audioFormat=pcm"
        "&samplingRate=16000&segment=never&speedAlpha=0.9"
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"encoding": "mp3"}, "encoding"),
        ({"sample_rate": 11025}, "sample_rate"),
        ({"speaker": " "}, "speaker"),
        ({"speed_alpha": 0.0}, "speed_alpha"),
        ({"base_url": "https://users-ws.rime.ai"}, "base_url"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        RimeTTS(api_key="k", **kwargs)


def test_registry_names_rime_and_its_fake() -> None:
    provider = tts_provider("rime")
    assert provider.env == "RIME_API_KEY" and provider.transport == "websocket"
    tts = provider.make(TTSSettings(api_key="k", voice="cove", base_url="ws://127.0.0.1:9"))
    assert isinstance(tts, RimeTTS) and "speaker=cove" in tts.url
    assert isinstance(tts_fake("rime").make(FaultPlan(), 0, "k"), FakeRimeTTS)


# ----------------------------------------------------------------------------- on the fake


async def test_mulaw_is_decoded_to_pcm_and_timestamps_follow_the_audio() -> None:
    async with serving(FakeRimeTTS()) as fake:
        tts = RimeTTS(
            api_key=DEFAULT_API_KEY, base_url=fake.url, encoding="mulaw", sample_rate=8000
        )
        try:
            audio = await speak(tts, "Hello from Rime.")
        finally:
            await tts.aclose()
    assert len(audio) == len(synthesize("Hello from Rime.", "linear16", 8000))
    kinds = [m["type"] for m in fake.stats.sent]
    assert kinds[-2:] == ["timestamps", "done"]
    stamps = fake.stats.sent[-2]
    assert stamps["word_timestamps"] == word_timestamps("Hello from Rime.")
    assert stamps["contextId"] == fake.stats.messages[0]["contextId"]


async def test_each_stream_is_a_new_context_on_one_connection() -> None:
    async with serving(FakeRimeTTS()) as fake:
        tts = RimeTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST)
        try:
            first = await speak(tts, "First turn.")
            second = await speak(tts, "Second turn.")
        finally:
            await tts.aclose()
    assert first == synthesize("First turn.", "linear16", 24000)
    assert second == synthesize("Second turn.", "linear16", 24000)
    assert fake.stats.connections == 1
    contexts = {m["contextId"] for m in fake.stats.messages if "text" in m}
    assert len(contexts) == 2


async def test_wrong_key_is_an_auth_error() -> None:
    async with serving(FakeRimeTTS()) as fake:
        tts = RimeTTS(api_key="wrong", base_url=fake.url, deadlines=FAST)
        try:
            stream = tts.stream()
            stream.push_text("Hi.")
            stream.end_input()
            with pytest.raises(AuthError):
                async for _ in stream:
                    pass
            await stream.aclose()
        finally:
            await tts.aclose()


async def test_server_error_fails_with_its_message() -> None:
    async with serving(FakeRimeTTS(FaultPlan(error_mid_stream=True, close_after_chunks=1))) as fake:
        tts = RimeTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST)
        try:
            stream = tts.stream()
            stream.push_text("A sentence long enough for chunks.")
            stream.end_input()
            with pytest.raises(ProviderError, match="synthesis failed"):
                async for _ in stream:
                    pass
            await stream.aclose()
            assert stream.state is StreamState.FAILED
        finally:
            await tts.aclose()


async def test_cleared_context_audio_is_dropped_by_the_next_stream() -> None:
    plan = FaultPlan(audio_after_clear=3, chunk_interval=0.05)
    async with serving(FakeRimeTTS(plan)) as fake:
        tts = RimeTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST)
        try:
            stream = tts.stream()
            stream.push_text("A long first answer that the user interrupts.")
            stream.flush()
            async for _ in stream:
                break
            stream.cancel()
            await stream.aclose()
            await asyncio.sleep(0)
            audio = await speak(tts, "Next.")
        finally:
            await tts.aclose()
    assert audio == synthesize("Next.", "linear16", 24000)
    assert fake.stats.clears == 1 and fake.stats.connections == 1
