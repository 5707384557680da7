"""GoogleTTS: the TTS conformance suite on the fake, plugin checks, and the official
``google-cloud-texttospeech`` SDK as the witness of the requests, the answers and the fake.

The witness: the SDK's own message types parse every body the plugin sent and every
answer the fake gave (``from_json`` refuses unknown fields and bad enum values), and the
SDK's REST client (``transport="rest"``, an API key, a local ``api_endpoint``) synthesizes
against the fake in a thread.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import texttospeech
from google.cloud.texttospeech_v1.types import cloud_tts

from antiphon.errors import AuthError, ConfigError, HttpStatusError, ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.google import GoogleTTS
from antiphon.plugins.registry import TTSSettings, tts_provider
from antiphon.protocols import google_tts as gt
from antiphon.services.tts import TTS, StreamState, TTSDeadlines
from antiphon.testing.conformance.tts import FAST, CoreTTSConformance, TTSHarness
from antiphon.testing.faults import FaultPlan
from antiphon.testing.google_tts import DEFAULT_API_KEY, FakeGoogleTTS, answer_body, synthesize
from antiphon.testing.registry import tts_fake
from antiphon.testing.server import FakeServer, running_in_thread, serving
from tts_helpers import speak

#: The async tests run on virtual time (asyncio only, fakes in the test's loop); the SDK's
#: client is synchronous, so its test runs the fake on a thread in real time.


class GoogleHarness(TTSHarness):
    def url_for_port(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def fake(self, plan: FaultPlan) -> FakeServer:
        return FakeGoogleTTS(plan)

    def make_tts(
        self, base_url: str, *, deadlines: TTSDeadlines, pool: PoolOptions | None = None
    ) -> TTS:
        return GoogleTTS(api_key=DEFAULT_API_KEY, base_url=base_url, deadlines=deadlines)

    def expected_pcm(self, text: str, tts: TTS) -> bytes:
        return synthesize(text.strip(), tts.sample_rate)  # each segment is sent stripped

    def connections(self, fake: Any) -> int:
        assert isinstance(fake, FakeGoogleTTS)
        return fake.stats.connections

    def cancels(self, fake: Any) -> int:
        assert isinstance(fake, FakeGoogleTTS)
        return fake.stats.cancels


class TestGoogleConformance(CoreTTSConformance):
    harness = GoogleHarness()


# ----------------------------------------------------------------------------- protocol


def test_body_is_a_valid_sdk_request() -> None:
    options = gt.GoogleTTSOptions(
        voice="de-DE-Neural2-B", sample_rate=16000, speaking_rate=1.2, pitch=-2, volume_gain_db=3
    )
    body = gt.build_body("Guten Tag.", options)
    request = cloud_tts.SynthesizeSpeechRequest.from_json(json.dumps(body))
    assert request.input.text == "Guten Tag."
    assert request.voice.language_code == "de-DE" and request.voice.name == "de-DE-Neural2-B"
    config = request.audio_config
    assert config.audio_encoding == cloud_tts.AudioEncoding.PCM
    assert config.sample_rate_hertz == 16000 and config.speaking_rate == pytest.approx(1.2)
    assert config.pitch == -2 and config.volume_gain_db == 3


def test_the_sdk_refuses_what_the_fake_refuses() -> None:
    bad = {"input": {"txt": "hi"}, "voice": {"languageCode": "en-US"}, "audioConfig": {}}
    with pytest.raises(Exception, match="txt"):
        cloud_tts.SynthesizeSpeechRequest.from_json(json.dumps(bad))
    from antiphon.testing.google_tts import check_body

    problem = check_body(bad)
    assert problem is not None and "txt" in problem


def test_split_text_keeps_every_piece_under_the_byte_limit() -> None:
    text = " ".join(["héllo"] * 2000)  # 12,000 bytes with the accents
    pieces = gt.split_text(text)
    assert len(pieces) == 3
    assert all(len(p.encode()) <= gt.MAX_INPUT_BYTES for p in pieces)
    assert " ".join(pieces) == text


def test_parse_response_strips_a_wav_header_and_refuses_garbage() -> None:
    pcm = synthesize("Hi.", 8000)
    linear16: dict[str, Any] = {
        "input": {"text": "Hi."},
        "voice": {"languageCode": "en-US"},
        "audioConfig": {"audioEncoding": "LINEAR16", "sampleRateHertz": 8000},
    }
    wav_answer = answer_body(linear16)
    assert cloud_tts.SynthesizeSpeechResponse.from_json(wav_answer.decode()).audio_content[:4] == (
        b"RIFF"
    )
    assert gt.parse_response(wav_answer) == pcm
    raw = json.dumps({"audioContent": base64.b64encode(pcm).decode()}).encode()
    assert gt.parse_response(raw) == pcm
    for body in (b"<html>", b"{}", b'{"audioContent": "!!"}'):
        with pytest.raises(gt.MalformedResponse):
            gt.parse_response(body)


# ----------------------------------------------------------------------------- config


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GOOGLE_API_KEY"):
        GoogleTTS()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sample_rate": 11025}, "sample_rate"),
        ({"speaking_rate": 5.0}, "speaking_rate"),
        ({"voice": "Charon"}, "language"),
        ({"base_url": "texttospeech.googleapis.com"}, "base_url"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        GoogleTTS(api_key="k", **kwargs)


def test_registry_names_google_and_its_fake() -> None:
    provider = tts_provider("google")
    assert provider.env == "GOOGLE_API_KEY" and provider.transport == "http"
    tts = provider.make(TTSSettings(api_key="k", voice="en-GB-Neural2-A"))
    assert isinstance(tts, GoogleTTS) and tts.options.language_code == "en-GB"
    assert tts.url == "https://texttospeech.googleapis.com/v1/text:synthesize"
    assert tts.headers["x-goog-api-key"] == "k"
    assert isinstance(tts_fake("google").make(FaultPlan(), 0, "k"), FakeGoogleTTS)


# ----------------------------------------------------------------------------- on the fake


@pytest.mark.virtual_time
async def test_one_request_per_sentence_each_a_valid_sdk_message() -> None:
    async with serving(FakeGoogleTTS()) as fake:
        tts = GoogleTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, sample_rate=16000)
        try:
            audio = await speak(tts, "First sentence. ", "Second one.")
        finally:
            await tts.aclose()
    assert audio == synthesize("First sentence.", 16000) + synthesize("Second one.", 16000)
    assert fake.stats.spoken == ["First sentence.", "Second one."]
    for request in fake.stats.requests:
        parsed = cloud_tts.SynthesizeSpeechRequest.from_json(request.body.decode())
        assert parsed.audio_config.sample_rate_hertz == 16000
        assert "key=" not in request.path  # the key travels in a header, not the URL
        answer = cloud_tts.SynthesizeSpeechResponse.from_json(answer_body(request.json).decode())
        assert answer.audio_content == synthesize(request.json["input"]["text"], 16000)


@pytest.mark.virtual_time
async def test_wrong_key_is_an_auth_error_although_google_answers_400() -> None:
    async with serving(FakeGoogleTTS()) as fake:
        tts = GoogleTTS(api_key="wrong", base_url=fake.url, deadlines=FAST)
        try:
            stream = tts.stream()
            stream.push_text("Hi.")
            stream.end_input()
            with pytest.raises(AuthError, match="GOOGLE_API_KEY"):
                async for _ in stream:
                    pass
            await stream.aclose()
        finally:
            await tts.aclose()
    assert fake.stats.statuses == [400]


@pytest.mark.virtual_time
async def test_an_answer_past_the_bound_fails_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    import antiphon.plugins.google.tts as plugin

    monkeypatch.setattr(plugin, "MAX_ANSWER_BYTES", 10_000)
    async with serving(FakeGoogleTTS()) as fake:
        tts = GoogleTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST)
        try:
            stream = tts.stream()
            stream.push_text("A sentence whose answer is longer than ten kilobytes.")
            stream.end_input()
            with pytest.raises(ProviderError, match="grew past 10000 bytes"):
                async for _ in stream:
                    pass
            await stream.aclose()
        finally:
            await tts.aclose()


@pytest.mark.virtual_time
async def test_the_answer_is_handed_out_as_frames_while_the_stream_runs() -> None:
    async with serving(FakeGoogleTTS()) as fake:
        tts = GoogleTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, sample_rate=8000)
        try:
            stream = tts.stream()
            stream.push_text("A sentence of a few seconds of audio.")
            stream.end_input()
            first = await anext(stream)
            assert first.data and len(first.data) == 2 * 160  # 20 ms at 8 kHz
            assert stream.state is StreamState.RUNNING  # the rest is still being handed out
            stream.cancel()
            assert [f async for f in stream] == []
            await stream.aclose()
        finally:
            await tts.aclose()


@pytest.mark.virtual_time
async def test_a_voice_of_another_language_is_refused_with_googles_message() -> None:
    async with serving(FakeGoogleTTS()) as fake:
        tts = GoogleTTS(
            api_key=DEFAULT_API_KEY, base_url=fake.url, voice="de-DE-Neural2-B", language="en-US"
        )
        try:
            stream = tts.stream()
            stream.push_text("Hi.")
            stream.end_input()
            with pytest.raises(HttpStatusError, match="doesn't match") as info:
                async for _ in stream:
                    pass
            await stream.aclose()
        finally:
            await tts.aclose()
    assert info.value.status == 400 and not info.value.retryable
    assert stream.state is StreamState.FAILED


@pytest.mark.virtual_time
async def test_a_json_answer_without_audio_fails_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import antiphon.testing.google_tts as fake_module

    monkeypatch.setattr(fake_module, "answer_body", lambda body: b'{"nothing": 1}')
    async with serving(FakeGoogleTTS()) as fake:
        tts = GoogleTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST)
        try:
            stream = tts.stream()
            stream.push_text("Hi.")
            stream.end_input()
            with pytest.raises(ProviderError, match="no audioContent"):
                async for _ in stream:
                    pass
            await stream.aclose()
        finally:
            await tts.aclose()


@pytest.mark.realtime
@pytest.mark.timeout(30)
def test_the_official_client_synthesizes_from_the_fake() -> None:
    with running_in_thread(FakeGoogleTTS()) as fake:
        client = texttospeech.TextToSpeechClient(
            transport="rest",
            client_options={"api_endpoint": fake.url, "api_key": DEFAULT_API_KEY},
        )
        response = client.synthesize_speech(
            input=texttospeech.SynthesisInput(text="Hello from Google."),
            voice=texttospeech.VoiceSelectionParams(language_code="en-US", name=gt.DEFAULT_VOICE),
            audio_config=texttospeech.AudioConfig(
                audio_encoding=texttospeech.AudioEncoding.PCM, sample_rate_hertz=24000
            ),
        )
        assert response.audio_content == synthesize("Hello from Google.")
        bad = texttospeech.TextToSpeechClient(
            transport="rest", client_options={"api_endpoint": fake.url, "api_key": "wrong"}
        )
        with pytest.raises(gexc.BadRequest, match="API key not valid"):
            bad.synthesize_speech(
                input=texttospeech.SynthesisInput(text="Hi."),
                voice=texttospeech.VoiceSelectionParams(language_code="en-US"),
                audio_config=texttospeech.AudioConfig(
                    audio_encoding=texttospeech.AudioEncoding.PCM
                ),
            )
