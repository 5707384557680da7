"""The Azure TTS protocol module: formats, SSML, requests, retry policy, RIFF, SDK mapping."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)
from antiphon.net.http import status_error
from antiphon.protocols import azure_tts as az
from antiphon.protocols.retry import retry_delay

# --------------------------------------------------------------------------- formats


def test_format_table_covers_raw_and_riff_pcm_and_8k_telephony() -> None:
    names = set(az.OUTPUT_FORMATS)
    for container in ("raw", "riff"):
        for rate in ("8khz", "16khz", "22050hz", "24khz", "44100hz", "48khz"):
            assert f"{container}-{rate}-16bit-mono-pcm" in names
        assert f"{container}-8khz-8bit-mono-mulaw" in names
        assert f"{container}-8khz-8bit-mono-alaw" in names
    fmt = az.OUTPUT_FORMATS["riff-22050hz-16bit-mono-pcm"]
    assert (fmt.container, fmt.encoding, fmt.sample_rate, fmt.sample_width) == (
        "riff",
        "linear16",
        22050,
        2,
    )
    assert fmt.sdk_name == "Riff22050Hz16BitMonoPcm"
    assert az.OUTPUT_FORMATS["raw-8khz-8bit-mono-mulaw"].sdk_name == "Raw8Khz8BitMonoMULaw"
    assert not names & az.COMPRESSED_FORMATS


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("linear16", 24000), "raw-24khz-16bit-mono-pcm"),
        (("linear16", 44100, "riff"), "riff-44100hz-16bit-mono-pcm"),
        (("mulaw", 8000), "raw-8khz-8bit-mono-mulaw"),
        (("alaw", 8000, "riff"), "riff-8khz-8bit-mono-alaw"),
    ],
)
def test_output_format_for_an_encoding_and_rate(args: tuple[str, int], name: str) -> None:
    assert az.output_format_for(*args).name == name


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: az.output_format_for("linear16", 32000), "8000, 16000, 22050, 24000"),
        (lambda: az.output_format_for("mulaw", 16000), "8000 Hz only"),
        (lambda: az.output_format_for("mp3", 24000), "linear16, mulaw or alaw"),
        (lambda: az.output_format_for("linear16", 24000, "ogg"), "'raw' or 'riff'"),
        (lambda: az.resolve_output_format("ogg-24khz-16bit-mono-opus"), "compressed"),
        (lambda: az.resolve_output_format("raw-24khz-16bit-mono-truesilk"), "compressed"),
        (lambda: az.resolve_output_format("raw-11khz"), "unknown Azure output format"),
    ],
)
def test_unsupported_formats_are_refused_with_a_fix(call: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------- SSML


@pytest.mark.parametrize("rate", ["+10%", "-20%", "50%", "1.2", "0.5", "x-slow", "default"])
@pytest.mark.parametrize("pitch", ["+2st", "-10%", "+50Hz", "600Hz", "x-high", "medium"])
@pytest.mark.parametrize("volume", ["80", "+5", "-5.5", "+10%", "loud", "silent"])
def test_documented_prosody_forms_are_accepted(rate: str, pitch: str, volume: str) -> None:
    voice = az.Voice(rate=rate, pitch=pitch, volume=volume)
    info = az.parse_ssml(az.build_ssml("Hi.", voice))
    assert info.attributes == {"rate": rate, "pitch": pitch, "volume": volume}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": ""}, "voice name"),
        ({"name": 'en-US-A"vaNeural'}, "voice name"),
        ({"language": "english"}, "locale"),
        ({"style": "very cheerful"}, "style"),
        ({"role": "<Girl>"}, "role"),
        ({"style_degree": 1.0}, "needs a style"),
        ({"style": "sad", "style_degree": 0.0}, "0.01 and 2"),
        ({"rate": "fast!"}, "rate"),
        ({"pitch": "+2"}, "pitch"),
        ({"volume": "loudest"}, "volume"),
    ],
)
def test_bad_voice_settings_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        az.Voice(**kwargs)  # type: ignore[arg-type]


def test_language_comes_from_the_voice_name() -> None:
    assert az.language_of("de-DE-KatjaNeural") == "de-DE"
    assert az.language_of("zh-CN-sichuan-YunxiNeural") == "zh-CN"
    assert az.language_of("my-custom-voice") == "en-US"
    assert az.Voice("fr-FR-DeniseNeural").locale == "fr-FR"
    assert az.Voice("fr-FR-DeniseNeural", language="fr-CA").locale == "fr-CA"


def test_ssml_document_shape() -> None:
    plain = az.build_ssml("Hello there.", az.Voice())
    assert plain == (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" '
        'xmlns:mstts="http://www.w3.org/2001/mstts" xml:lang="en-US">'
        '<voice name="en-US-AvaMultilingualNeural">Hello there.</voice></speak>'
    )
    styled = az.build_ssml(
        "Hi.", az.Voice(style="cheerful", style_degree=1.5, role="Girl", rate="+10%")
    )
    assert (
        '<mstts:express-as style="cheerful" styledegree="1.5" role="Girl">'
        '<prosody rate="+10%">Hi.</prosody></mstts:express-as>'
    ) in styled


def test_user_text_cannot_break_out_of_the_document() -> None:
    text = '</voice></speak><speak><voice name="x">&amp; "quoted" \'single\' \x00\x07\x1b end'
    ssml = az.build_ssml(text, az.Voice())
    info = az.parse_ssml(ssml)
    assert info.text == '</voice></speak><speak><voice name="x">&amp; "quoted" \'single\'  end'
    assert info.voice == "en-US-AvaMultilingualNeural"
    assert ssml.count("<voice") == 1


@settings(max_examples=300, deadline=None)
@given(text=st.text(), voice=st.sampled_from([az.Voice(), az.Voice(style="sad", rate="-5%")]))
def test_any_text_round_trips_through_ssml(text: str, voice: az.Voice) -> None:
    """Whatever the text, the document is valid SSML and says exactly that text."""
    info = az.parse_ssml(az.build_ssml(text, voice).encode("utf-8"))
    assert info.text == az.clean_text(text)
    assert info.voice == voice.name and info.language == voice.locale


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ("not xml", "well-formed"),
        ("<speech version='1.0'/>", "root element"),
        ("<speak xml:lang='en-US'><voice name='v'>x</voice></speak>", "version"),
        ("<speak version='1.0'><voice name='v'>x</voice></speak>", "xml:lang"),
        ("<speak version='1.0' xml:lang='en-US'>x</speak>", "<voice>"),
        ("<speak version='1.0' xml:lang='en-US'><voice>x</voice></speak>", "name"),
    ],
)
def test_invalid_ssml_is_reported(doc: str, fragment: str) -> None:
    with pytest.raises(az.SsmlError, match=fragment):
        az.parse_ssml(doc)


# --------------------------------------------------------------------------- requests


def test_urls_for_a_region_or_a_base_url() -> None:
    assert (
        az.build_url(region="westus")
        == "https://westus.tts.speech.microsoft.com/cognitiveservices/v1"
    )
    assert az.build_url(region=" WestEurope ").startswith("https://westeurope.tts.")
    assert az.build_url(base_url="http://127.0.0.1:8080") == (
        "http://127.0.0.1:8080/cognitiveservices/v1"
    )
    assert az.build_url(base_url="https://h.example/cognitiveservices/v1/") == (
        "https://h.example/cognitiveservices/v1"
    )
    assert az.build_url(base_url="https://h.example/proxy", region="ignored") == (
        "https://h.example/proxy/cognitiveservices/v1"
    )


def test_custom_voice_deployments_use_the_voice_host() -> None:
    assert az.build_url(region="westus", deployment_id="0a1b-2c3d") == (
        "https://westus.voice.speech.microsoft.com/cognitiveservices/v1?deploymentId=0a1b-2c3d"
    )
    assert az.build_url(base_url="http://127.0.0.1:9", deployment_id="abc") == (
        "http://127.0.0.1:9/cognitiveservices/v1?deploymentId=abc"
    )
    with pytest.raises(ConfigError, match="deployment GUID"):
        az.build_url(region="westus", deployment_id="a b&c")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "AZURE_SPEECH_REGION"),
        ({"region": "west us"}, "region name"),
        ({"base_url": "wss://westus.tts.speech.microsoft.com"}, "https://"),
        ({"base_url": "127.0.0.1:80"}, "https://"),
    ],
)
def test_bad_endpoints_are_refused(kwargs: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        az.build_url(**kwargs)


def test_request_headers_with_a_key_or_a_token() -> None:
    fmt = az.OUTPUT_FORMATS["raw-16khz-16bit-mono-pcm"]
    h = az.request_headers(fmt, key="k", user_agent="app/1")
    assert h == {
        "Content-Type": "application/ssml+xml",
        "X-Microsoft-OutputFormat": "raw-16khz-16bit-mono-pcm",
        "User-Agent": "app/1",
        "Ocp-Apim-Subscription-Key": "k",
    }
    t = az.request_headers(fmt, token="jwt", user_agent="x" * 400)
    assert t["Authorization"] == "Bearer jwt" and "Ocp-Apim-Subscription-Key" not in t
    assert len(t["User-Agent"]) < 255
    with pytest.raises(ConfigError, match="exactly one"):
        az.request_headers(fmt)
    with pytest.raises(ConfigError, match="exactly one"):
        az.request_headers(fmt, key="k", token="t")


# --------------------------------------------------------------------------- retries


def _status(code: int, retry_after: str | None = None) -> ProviderError:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return status_error(code, provider="azure", headers=headers)


@pytest.mark.parametrize(
    ("error", "heard", "attempt", "delay"),
    [
        (_status(429, "1"), False, 0, 1.0),
        (_status(503, "0"), False, 0, 0.0),
        (_status(502), False, 0, 0.25),
        (_status(429, "30"), False, 0, None),  # too long to wait for
        (_status(429, "1"), False, 1, None),  # retried already
        (_status(429, "1"), True, 0, None),  # audio was heard
        (_status(400), False, 0, None),
        (_status(401), False, 0, None),
        (
            ProviderConnectionError("dropped", provider="a", stage="s", retryable=True),
            False,
            0,
            0.25,
        ),
        (ProviderConnectionError("refused", provider="a", stage="s"), False, 0, None),
        (ProviderTimeoutError("slow", provider="a", stage="s", timeout=1.0), False, 0, None),
    ],
)
def test_retry_policy(error: ProviderError, heard: bool, attempt: int, delay: float | None) -> None:
    got = retry_delay(
        error, delivered=heard, attempt=attempt, max_retries=1, max_wait=2.0, backoff=0.25
    )
    assert got == delay


@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from([400, 401, 403, 404, 415, 429, 500, 502, 503]),
    retry_after=st.one_of(st.none(), st.integers(0, 100).map(str)),
    heard=st.booleans(),
    attempt=st.integers(0, 3),
    max_retries=st.integers(0, 3),
)
def test_retry_policy_is_bounded(
    status: int, retry_after: str | None, heard: bool, attempt: int, max_retries: int
) -> None:
    delay = retry_delay(
        _status(status, retry_after),
        delivered=heard,
        attempt=attempt,
        max_retries=max_retries,
        max_wait=2.0,
        backoff=0.25,
    )
    retryable = status == 429 or status >= 500
    if heard or attempt >= max_retries or not retryable:
        assert delay is None
    elif retry_after is None:
        assert delay == 0.25
    else:
        assert delay == (float(retry_after) if float(retry_after) <= 2.0 else None)


# --------------------------------------------------------------------------- RIFF

FMT = az.OUTPUT_FORMATS["riff-24khz-16bit-mono-pcm"]


def _list_chunk() -> bytes:
    body = b"INFOISFT\x05\x00\x00\x00fake\x00\x00"  # odd-sized sub-chunk, padded
    return b"LIST" + struct.pack("<I", len(body)) + body


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    extra=st.booleans(),
)
def test_riff_header_is_stripped_whatever_the_chunking(
    payload: bytes, cuts: list[int], extra: bool
) -> None:
    header = az.riff_header(FMT, len(payload))
    if extra:  # a LIST chunk between fmt and data, as some encoders write
        header = header[:36] + _list_chunk() + header[36:]
    body = header + payload
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    reader = az.RiffReader(FMT)
    out = b"".join(reader.feed(p) for p in pieces)
    reader.finish()
    assert out == payload and reader.in_data


def test_riff_header_must_match_the_requested_format() -> None:
    wrong = az.riff_header(az.OUTPUT_FORMATS["riff-16khz-16bit-mono-pcm"], 0)
    with pytest.raises(az.RiffError, match=r"16000 Hz.*riff-24khz-16bit-mono-pcm was requested"):
        az.RiffReader(FMT).feed(wrong)
    with pytest.raises(az.RiffError, match="RIFF/WAVE"):
        az.RiffReader(FMT).feed(b"ID3\x03" + bytes(40))
    law = az.OUTPUT_FORMATS["riff-8khz-8bit-mono-mulaw"]
    assert az.RiffReader(law).feed(az.riff_header(law, 2) + b"\x7f\xff") == b"\x7f\xff"
    no_fmt = b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00"
    with pytest.raises(az.RiffError, match="'fmt '"):
        az.RiffReader(FMT).feed(no_fmt)


def test_riff_extensible_format_is_understood() -> None:
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, 24000, 48000, 2, 16)
    fmt += struct.pack("<HHI", 22, 16, 4) + struct.pack("<H", 1) + bytes(14)
    body = b"RIFF\x00\x00\x00\x00WAVEfmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data\x00\x00\x00\x00\x01\x02"
    assert az.RiffReader(FMT).feed(body) == b"\x01\x02"


def test_body_ending_inside_the_header_is_an_error_but_empty_is_not() -> None:
    reader = az.RiffReader(FMT)
    reader.feed(az.riff_header(FMT, 10)[:20])
    with pytest.raises(az.RiffError, match="inside the RIFF header"):
        reader.finish()
    az.RiffReader(FMT).finish()


# --------------------------------------------------------------------------- Speech SDK

# Cancellation details as the real SDK 1.53 reported them against the loopback fake.
REFUSED = (
    "Connection failed (no connection to the remote host). Internal error: 1. Error details: "
    "Failed with error: WS_OPEN_ERROR_UNDERLYING_IO_OPEN_FAILED (code=111: [CONNECTION] "
    "Connection refused - no server available)"
)


@pytest.mark.parametrize(
    ("code", "details", "kind", "status", "retryable"),
    [
        (
            "AuthenticationFailure",
            "WebSocket upgrade failed: Authentication error (401). Please check subscription "
            "information and region name.",
            AuthError,
            401,
            False,
        ),
        (
            "AuthenticationFailure",
            "WebSocket upgrade failed: Authentication error (403).",
            AuthError,
            403,
            False,
        ),
        (
            "TooManyRequests",
            "WebSocket upgrade failed: Too many requests (429).",
            ProviderError,
            429,
            True,
        ),
        (
            "ServiceError",
            "WebSocket upgrade failed: Internal service error (500). Error Details: Failed with "
            "HTTP 500 Internal Server Error",
            ProviderError,
            500,
            True,
        ),
        ("ConnectionFailure", REFUSED, ProviderConnectionError, None, True),
        (
            "ServiceError",
            "Connection was closed by the remote host. Error code: 1011. Error details: NET-0001 "
            "USP state: ReceivingData. Received audio size: 2880 bytes.",
            ProviderConnectionError,
            1011,
            True,
        ),
        (
            "ConnectionFailure",
            "Connection was closed by the remote host. Error code: 1008. Error details: Invalid",
            ProviderConnectionError,
            1008,
            False,
        ),
        (
            "ConnectionFailure",
            "WebSocket operation failed. Internal error: 3. Error details: "
            "WS_ERROR_UNDERLYING_IO_ERROR USP state: ReceivingData.",
            ProviderConnectionError,
            None,
            True,
        ),
        ("BadRequest", "Unsupported voice xx-XX-Nobody.", ProviderError, 400, False),
    ],
)
def test_sdk_cancellations_map_to_typed_errors(
    code: str, details: str, kind: type[ProviderError], status: int | None, retryable: bool
) -> None:
    err = az.sdk_error(code, details, stage="receive")
    assert type(err) is kind
    if status is not None:
        assert err.code == status
    assert err.retryable is retryable
    assert err.provider == "azure"
    if kind is AuthError:
        assert "AZURE_SPEECH_KEY" in str(err) and err.stage == "connect"


def test_ws_frames_round_trip() -> None:
    text = az.encode_ws_text("turn.start", "abc123", '{"context":{}}')
    msg = az.parse_ws_message(text)
    assert msg.path == "turn.start" and msg.request_id == "abc123"
    assert msg.header("content-type") == "application/json" and msg.json() == {"context": {}}
    audio = az.encode_ws_audio("abc123", "s1", b"\x00\x01\x02")
    got = az.parse_ws_message(audio)
    assert got.path == "audio" and got.header("X-StreamId") == "s1" and got.body == b"\x00\x01\x02"
    assert az.parse_ws_message("Path:text.end\r\n\r\n").body == b""
    assert az.parse_ws_message("Path:x\r\n\r\nnot json").json() is None


@pytest.mark.parametrize("frame", ["no headers", b"\x00", b"\x00\x10short"])
def test_malformed_ws_frames_are_refused(frame: str | bytes) -> None:
    with pytest.raises(ValueError, match="frame"):
        az.parse_ws_message(frame)
