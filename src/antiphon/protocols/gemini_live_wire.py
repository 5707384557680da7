"""Gemini Live: the wire (sans-I/O): client messages, server fields, close codes.

Sources: the Live API WebSockets reference, https://ai.google.dev/api/live (client
messages carry exactly one of ``setup``, ``clientContent``, ``realtimeInput``,
``toolResponse``), and the field names of the ``google-genai`` SDK's
``LiveClientMessage``/``LiveServerMessage`` models, against which every message here is
validated in ``tests/test_sdk_gemini_live.py``.

How it is built: pure functions, no state. The ``encode_*`` functions write one client
message each as compact JSON (:func:`encode_setup` fixes the session's configuration:
"you cannot update the configuration while the connection is open");
:func:`duration_seconds` and :func:`usage_from_metadata` read the two server fields that
need more than a lookup; :func:`close_error` types a close of the connection, since the
Live API reports errors as WebSocket close codes, never as a message. What a sequence of
messages means is the state machine's, :mod:`antiphon.protocols.gemini_live`, which
re-exports the public names here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from antiphon.errors import AuthError, ProviderError
from antiphon.protocols.realtime import GEMINI_VOICES, SessionConfig, Usage
from antiphon.protocols.realtime import close_error as realtime_close_error
from antiphon.protocols.realtime.config import dump_json

__all__ = [
    "DEFAULT_VOICE",
    "INPUT_RATE",
    "OUTPUT_RATE",
    "PATH",
    "VOICES",
    "close_error",
    "duration_seconds",
    "encode_activity",
    "encode_audio",
    "encode_audio_stream_end",
    "encode_client_content",
    "encode_setup",
    "encode_tool_response",
    "usage_from_metadata",
]

#: The WebSocket path of the Gemini API (v1beta), https://ai.google.dev/api/live.
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
#: Input audio is raw 16-bit little-endian PCM at 16 kHz; output is 24 kHz.
INPUT_RATE = 16000
OUTPUT_RATE = 24000
#: Gemini's prebuilt voices (a voice given as a plain name must be one of them).
VOICES = GEMINI_VOICES
DEFAULT_VOICE = "Puck"


# --------------------------------------------------------------------------- client messages


def encode_setup(
    cfg: SessionConfig,
    *,
    model: str,
    voice: str | None = None,
    automatic_activity_detection: bool = True,
    transcription: bool = True,
    session_resumption: bool = False,
    handle: str | None = None,
) -> str:
    """The ``setup`` message: model, audio output, voice (``voice``, else the
    configuration's), instructions, tools, transcription; ``session_resumption`` asks for
    resumption handles, ``handle`` resumes the session it names."""
    name = voice or (cfg.voice.name if cfg.voice.type == "gemini" else DEFAULT_VOICE)
    generation: dict[str, Any] = {
        "responseModalities": ["AUDIO"],
        "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": name}}},
    }
    if cfg.temperature is not None:
        generation["temperature"] = cfg.temperature
    setup: dict[str, Any] = {
        "model": model if model.startswith("models/") else f"models/{model}",
        "generationConfig": generation,
    }
    if cfg.instructions:
        setup["systemInstruction"] = {"parts": [{"text": cfg.instructions}]}
    if cfg.tools:
        decls = [
            {
                "name": t.name,
                "description": t.description,
                "parametersJsonSchema": dict(t.parameters),
            }
            for t in cfg.tools
        ]
        setup["tools"] = [{"functionDeclarations": decls}]
    if not automatic_activity_detection:
        setup["realtimeInputConfig"] = {"automaticActivityDetection": {"disabled": True}}
    if transcription:
        setup["inputAudioTranscription"] = {}
        setup["outputAudioTranscription"] = {}
    if session_resumption or handle:
        setup["sessionResumption"] = {"handle": handle} if handle else {}
    setup.update(cfg.extra)
    return dump_json({"setup": setup})


def encode_audio(pcm: bytes, rate: int = INPUT_RATE) -> str:
    """``realtimeInput.audio``: one chunk of PCM16 mono."""
    blob = {"data": base64.b64encode(pcm).decode(), "mimeType": f"audio/pcm;rate={rate}"}
    return dump_json({"realtimeInput": {"audio": blob}})


def encode_activity(start: bool) -> str:
    """``realtimeInput.activityStart``/``activityEnd``: the user's turn, marked by the client
    (only with automatic activity detection off)."""
    return dump_json({"realtimeInput": {"activityStart" if start else "activityEnd": {}}})


def encode_audio_stream_end() -> str:
    """``realtimeInput.audioStreamEnd``: the microphone paused; flush what was heard."""
    return dump_json({"realtimeInput": {"audioStreamEnd": True}})


def encode_client_content(turns: list[tuple[str, str]], *, turn_complete: bool) -> str:
    """``clientContent``: (role, text) turns; ``turn_complete`` asks the model to answer."""
    msg: dict[str, Any] = {"turnComplete": turn_complete}
    if turns:
        msg["turns"] = [
            {"role": "model" if role == "assistant" else "user", "parts": [{"text": text}]}
            for role, text in turns
        ]
    return dump_json({"clientContent": msg})


def encode_tool_response(call_id: str, name: str, output: str) -> str:
    """``toolResponse``: the result of one function call; ``output`` is JSON if it parses
    to an object, else it is wrapped as ``{"output": output}``."""
    try:
        parsed = json.loads(output)
    except ValueError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"output": output}
    fr = {"id": call_id, "name": name, "response": response}
    return dump_json({"toolResponse": {"functionResponses": [fr]}})


# --------------------------------------------------------------------------- errors


def close_error(
    code: int | None, reason: str, *, provider: str, stage: str, auth_hint: str
) -> ProviderError:
    """The typed error for a close of the Live API: 1008 (policy: key, permission) and a
    1007 whose reason names the API key are auth errors; other 1007s are a refused
    request (not retryable); the rest as for every realtime service."""
    text = reason or "no reason given"
    if code == 1007 and "key" in text.lower():
        return AuthError(
            f"the server closed the connection: {text}",
            provider=provider,
            stage=stage,
            code=code,
            hint=auth_hint,
        )
    if code == 1007:
        return ProviderError(
            f"the server refused the request: {text}",
            provider=provider,
            stage=stage,
            code=code,
            hint="a setup field or message is invalid for this model; check the model name "
            "and the configuration",
        )
    return realtime_close_error(code, reason, provider=provider, stage=stage, auth_hint=auth_hint)


# --------------------------------------------------------------------------- server fields


def duration_seconds(duration: object) -> float:
    """A protobuf JSON duration (``"12.5s"``) in seconds; 0 when missing or malformed."""
    if not isinstance(duration, str) or not duration.endswith("s"):
        return 0.0
    try:
        value = float(duration[:-1])
    except ValueError:
        return 0.0
    return value if value >= 0 else 0.0


def usage_from_metadata(raw: object) -> Usage | None:
    """``usageMetadata`` as :class:`~antiphon.protocols.realtime.Usage` (audio tokens from
    the per-modality details); None when it is not an object."""
    if not isinstance(raw, Mapping):
        return None

    def num(key: str) -> int:
        v = raw.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    def audio(key: str) -> int:
        details = raw.get(key)
        if not isinstance(details, list):
            return 0
        return sum(
            int(d.get("tokenCount", 0))
            for d in details
            if isinstance(d, Mapping) and d.get("modality") == "AUDIO"
        )

    prompt, response = num("promptTokenCount"), num("responseTokenCount")
    return Usage(
        input_tokens=prompt,
        output_tokens=response,
        total_tokens=num("totalTokenCount") or prompt + response,
        input_audio_tokens=audio("promptTokensDetails"),
        output_audio_tokens=audio("responseTokensDetails"),
        cached_tokens=num("cachedContentTokenCount"),
    )
