"""CartesiaTTS: the conformance suite on the fake server, plus plugin-specific checks."""

from __future__ import annotations

import asyncio
import json

import pytest

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import AuthError, ConfigError, ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.cartesia import CartesiaTTS
from antiphon.protocols import cartesia_tts as ca
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing import FaultPlan, serving
from antiphon.testing.cartesia import DEFAULT_API_KEY, FakeCartesiaTTS, synthesize
from antiphon.testing.conformance.tts import FAST, TTSConformance, TTSHarness
from antiphon.testing.server import FakeWsServer

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class CartesiaHarness(TTSHarness):
    context_ids = True

    def fake(self, plan: FaultPlan) -> FakeWsServer:
        return FakeCartesiaTTS(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        return CartesiaTTS(
            api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines, pool=pool
        )

    def make_timed_tts(self, base_url: str, *, deadlines: TTSDeadlines) -> TTS:
        return CartesiaTTS(
            api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines, add_timestamps=True
        )

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        return synthesize(text, "linear16", tts.sample_rate)

    def connections(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeCartesiaTTS)
        return fake.stats.connections

    def cancels(self, fake: FakeWsServer) -> int:
        assert isinstance(fake, FakeCartesiaTTS)
        return fake.stats.cancels


class TestCartesiaConformance(TTSConformance):
    harness = CartesiaHarness()


# ----------------------------------------------------------------------------- config


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARTESIA_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="CARTESIA_API_KEY"):
        CartesiaTTS()
    with pytest.raises(ConfigError, match="CARTESIA_API_KEY"):
        CartesiaTTS(api_key="   ")


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTESIA_API_KEY", " from-env ")
    tts = CartesiaTTS()
    assert tts.headers == {"Authorization": "Bearer from-env", "Cartesia-Version": "2026-08-14"}
    assert tts.url == "wss://api.cartesia.ai/tts/websocket?cartesia_version=2026-08-14"
    assert tts.sample_rate == 24000 and tts.wire_encoding == "linear16"


def test_every_option_reaches_the_generation_request() -> None:
    tts = CartesiaTTS(
        api_key="k",
        model="sonic-3",
        voice="a0e99841-438c-4a64-b679-ae501e7d6091",
        language="fr",
        encoding="pcm_mulaw",
        sample_rate=8000,
        speed=1.2,
        volume=0.8,
        emotion="excited",
        max_buffer_delay_ms=200,
        pronunciation_dict_id="dict-1",
        api_version="2026-03-01",
    )
    assert tts.wire_encoding == "mulaw" and tts.headers["Cartesia-Version"] == "2026-03-01"
    msg = json.loads(tts.new_session().speak("Bonjour.")[0])
    assert msg["model_id"] == "sonic-3" and msg["language"] == "fr"
    assert msg["voice"] == {"mode": "id", "id": "a0e99841-438c-4a64-b679-ae501e7d6091"}
    assert msg["output_format"] == {
        "container": "raw",
        "encoding": "pcm_mulaw",
        "sample_rate": 8000,
    }
    assert msg["generation_config"] == {"speed": 1.2, "volume": 0.8, "emotion": "excited"}
    assert msg["max_buffer_delay_ms"] == 200 and msg["pronunciation_dict_id"] == "dict-1"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"encoding": "mulaw", "sample_rate": 24000}, "8000, 16000"),
        ({"encoding": "mp3"}, "raw audio"),
        ({"encoding": "pcm_f32le"}, "linear16"),
        ({"sample_rate": 32000}, "22050"),
        ({"voice": "Katie"}, "UUID"),
    ],
)
def test_unsupported_combination_is_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        CartesiaTTS(api_key="k", **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- on the fake


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_telephony_encodings_are_decoded_to_pcm(encoding: str) -> None:
    async with serving(FakeCartesiaTTS()) as fake:
        async with CartesiaTTS(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            encoding=encoding,
            sample_rate=8000,
            deadlines=FAST,
        ) as tts:
            frame = await tts.synthesize("Phone call audio.").collect()
        sent = fake.stats.messages[0]["output_format"]
    assert sent == {"container": "raw", "encoding": f"pcm_{encoding}", "sample_rate": 8000}
    assert frame.sample_rate == 8000
    assert frame.data == decode_to_pcm(encoding, synthesize("Phone call audio.", encoding, 8000))


async def test_wrong_key_is_an_auth_error_from_the_fake() -> None:
    async with (
        serving(FakeCartesiaTTS()) as fake,
        CartesiaTTS(api_key="wrong", base_url=fake.url, deadlines=FAST) as tts,
    ):
        with pytest.raises(AuthError, match="CARTESIA_API_KEY") as info:
            await tts.synthesize("hi").collect()
    assert info.value.code == 401 and info.value.stage == "connect"


async def test_each_stream_is_a_new_context_on_the_same_connection() -> None:
    async with (
        serving(FakeCartesiaTTS()) as fake,
        CartesiaTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        for text in ("One.", "Two."):
            await tts.synthesize(text).collect()
        contexts, messages = list(fake.stats.contexts), list(fake.stats.messages)
    assert fake.stats.connections == 1 and len(set(contexts)) == 2
    # Per context: the text (continue: true), then the end (continue: false, no text).
    assert [(m["context_id"], m["transcript"], m["continue"]) for m in messages] == [
        (contexts[0], "One.", True),
        (contexts[0], "", False),
        (contexts[1], "Two.", True),
        (contexts[1], "", False),
    ]
    assert not fake.stats.errors_sent


async def test_flushes_are_answered_per_flush_id() -> None:
    async with serving(FakeCartesiaTTS()) as fake:
        async with (
            CartesiaTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
            tts.stream() as s,
        ):
            s.push_text("Hello, ")
            s.push_text("world.")
            s.flush()
            s.push_text(" Bye.")
            s.end_input()
            audio = (await s.collect()).data
        kinds = [
            (m["transcript"], m.get("flush", False), m["continue"]) for m in fake.stats.messages
        ]
    assert kinds == [
        ("Hello, ", False, True),
        ("world.", False, True),
        ("", True, True),
        (" Bye.", False, True),
        ("", False, False),
    ]
    # Transcripts are concatenated verbatim: the flush speaks "Hello, world.".
    assert fake.stats.flushed_texts == ["Hello, world.", " Bye."]
    assert audio == synthesize("Hello, world.", "linear16", 24000) + synthesize(
        " Bye.", "linear16", 24000
    )


async def test_server_error_for_the_context_fails_with_its_message() -> None:
    """A request the server refuses is a typed error carrying the server's explanation."""
    async with (
        serving(FakeCartesiaTTS()) as fake,
        CartesiaTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        # Simulate a client bug: a context whose fields change between messages.
        original = tts.new_session

        def drifting() -> ca.ContextSession:
            session = original()
            real_speak = session.speak

            def speak(text: str) -> list[str | bytes]:
                msgs = real_speak(text)
                if session.flushes_sent:  # after the first flush, change the voice
                    m = json.loads(msgs[0])
                    m["voice"]["id"] = "a0e99841-438c-4a64-b679-ae501e7d6091"
                    msgs = [json.dumps(m)]
                return msgs

            session.speak = speak  # type: ignore[method-assign]
            return session

        tts.new_session = drifting  # type: ignore[method-assign]
        async with tts.stream() as s:
            s.push_text("First.")
            s.flush()
            s.push_text(" Second.")
            s.end_input()
            with pytest.raises(ProviderError, match="keep all fields") as info:
                await s.collect()
        assert s.state is StreamState.FAILED and info.value.stage == "receive"


def _dropped() -> float:
    from prometheus_client import REGISTRY

    labels = {"provider": "cartesia", "reason": "unexpected"}
    return REGISTRY.get_sample_value("antiphon_tts_dropped_messages_total", labels) or 0.0


async def test_cancelled_context_audio_is_dropped_by_the_next_stream() -> None:
    plan = FaultPlan(chunk_interval=0.005, ignore_clear=True)
    dropped = _dropped()
    async with (
        serving(FakeCartesiaTTS(plan)) as fake,
        CartesiaTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        s1 = tts.synthesize("An answer the server keeps speaking after the cancel. " * 2)
        await anext(s1)
        await s1.aclose()
        async with tts.stream() as s2:
            s2.push_text("Next turn.")
            s2.end_input()
            audio = (await s2.collect()).data
        # The old context was still speaking on the same connection meanwhile.
        await asyncio.sleep(0.05)
        cancels = [m for m in fake.stats.messages if m.get("cancel")]
    assert audio == synthesize("Next turn.", "linear16", 24000)
    assert _dropped() > dropped  # the old context's chunks reached s2 and were dropped
    assert fake.stats.connections == 1
    assert cancels == [{"context_id": fake.stats.contexts[0], "cancel": True}]


async def test_timestamps_are_notices_and_change_nothing() -> None:
    """With add_timestamps (set here through the session) the audio stays exact."""
    async with (
        serving(FakeCartesiaTTS()) as fake,
        CartesiaTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST) as tts,
    ):
        original = tts.new_session

        def with_timestamps() -> ca.ContextSession:
            session = original()
            encode = session._encode

            def _encode(op: tuple[str, str], context_id: str) -> str:
                m = json.loads(encode(op, context_id))  # type: ignore[arg-type]
                m["add_timestamps"] = True
                return json.dumps(m)

            session._encode = _encode  # type: ignore[method-assign]
            return session

        tts.new_session = with_timestamps  # type: ignore[method-assign]
        frame = await tts.synthesize("Time me please.").collect()
    assert frame.data == synthesize("Time me please.", "linear16", 24000)


async def test_missing_version_is_refused_by_the_fake() -> None:
    from antiphon.net.ws import connect

    async with serving(FakeCartesiaTTS()) as fake:
        with pytest.raises(ProviderError, match="Cartesia-Version") as info:
            await connect(
                f"{fake.url}/tts/websocket",
                provider="cartesia",
                headers={"X-API-Key": DEFAULT_API_KEY},
                auth_hint="",
            )
    assert info.value.code == 400
