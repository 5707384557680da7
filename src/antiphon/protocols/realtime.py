"""OpenAI Realtime (GA) and Azure Voice Live (beta event names) wire protocol, sans I/O.

One module serves both: Azure Voice Live follows the *preview* ("beta") OpenAI Realtime
schema (``response.audio.delta``, flat session fields such as ``input_audio_format``) with
Azure additions (voice objects, ``azure_semantic_vad``, noise suppression, echo
cancellation); OpenAI's GA API renamed the output events (``response.output_audio.delta``)
and nested the session (``session.audio.input.format``). :class:`Dialect` selects the names.

Contents: typed configuration (voices, tools, the session) refused at the edge with a
:class:`~antiphon.errors.ConfigError` that says how to fix it; encoders of the client
events; :func:`parse`, which turns a frame into a typed event (``Malformed``/``Unknown`` for
garbage); :func:`close_error`; and :class:`RealtimeState`, the state machine that decides
what each server event means (current response, which item is playing, audio of a cancelled
or finished response, function-call accumulation) and keeps the conversation journal that
a reconnect replays. No asyncio, no I/O. Sources: ``docs/realtime.md``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError

# --------------------------------------------------------------------------- dialects


class Dialect(enum.Enum):
    """Which event names and session shape to speak."""

    GA = "ga"  # OpenAI Realtime GA
    BETA = "beta"  # the preview schema, as Azure Voice Live speaks it


@dataclass(frozen=True, slots=True)
class _Names:
    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    text_delta: str
    text_done: str
    item_added: tuple[str, ...]
    assistant_text: str  # content type of an assistant text part in conversation.item.create


NAMES: dict[Dialect, _Names] = {
    Dialect.GA: _Names(
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        ("conversation.item.added", "conversation.item.created"),
        "output_text",
    ),
    Dialect.BETA: _Names(
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
        "response.text.delta",
        "response.text.done",
        ("conversation.item.created",),
        "text",
    ),
}

#: Wire sample rates of PCM16 each dialect accepts (input, output).
INPUT_RATES: dict[Dialect, tuple[int, ...]] = {Dialect.GA: (24000,), Dialect.BETA: (16000, 24000)}
OUTPUT_RATES: dict[Dialect, tuple[int, ...]] = {
    Dialect.GA: (24000,),
    Dialect.BETA: (8000, 16000, 24000),
}
_BETA_OUTPUT_FORMAT = {24000: "pcm16", 16000: "pcm16_16000hz", 8000: "pcm16_8000hz"}

# --------------------------------------------------------------------------- voices

OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
AZURE_NATIVE_VOICES = (
    "aarti",
    "andrew",
    "ava",
    "denise",
    "elsa",
    "florian",
    "francisca",
    "meera",
    "ximena",
    "xiaoxiao",
    "yunxi",
)
VOICE_TYPES = (
    "openai",
    "azure-standard",
    "azure-custom",
    "azure-personal",
    "azure-realtime-native",
)


@dataclass(frozen=True, slots=True)
class Voice:
    """A voice and its type, taken from configuration, never guessed from the name.

    ``type``: ``openai`` (one of :data:`OPENAI_VOICES`), ``azure-standard`` (e.g.
    ``en-US-Ava:DragonHDLatestNeural``), ``azure-custom`` (needs ``endpoint_id``),
    ``azure-personal`` (needs ``model``) or ``azure-realtime-native``. Azure tuning fields
    (``temperature``, ``rate``, ``locale``, ``style``...) go to the voice object as given.
    """

    name: str
    type: str = "openai"
    endpoint_id: str | None = None
    model: str | None = None
    temperature: float | None = None
    rate: str | None = None
    locale: str | None = None
    style: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("a voice needs a non-empty name")
        if self.type not in VOICE_TYPES:
            raise ConfigError(
                f"unknown voice type {self.type!r} for voice {self.name!r}; use one of "
                f"{', '.join(VOICE_TYPES)}"
            )
        if self.type == "openai" and self.name not in OPENAI_VOICES:
            raise ConfigError(
                f"{self.name!r} is not an OpenAI voice ({', '.join(OPENAI_VOICES)}); for an "
                "Azure voice give its type, e.g. Voice(name='en-US-AvaNeural', "
                "type='azure-standard')"
            )
        if self.type == "azure-custom" and not self.endpoint_id:
            raise ConfigError(
                f"azure-custom voice {self.name!r} needs endpoint_id (the custom voice "
                "deployment id from Speech Studio)"
            )
        if self.type == "azure-personal" and not self.model:
            raise ConfigError(
                f"azure-personal voice {self.name!r} needs model, e.g. 'DragonLatestNeural'"
            )
        if self.type == "azure-realtime-native" and self.name not in AZURE_NATIVE_VOICES:
            raise ConfigError(
                f"{self.name!r} is not an azure-realtime-native voice; use one of "
                f"{', '.join(AZURE_NATIVE_VOICES)}"
            )
        if self.temperature is not None and not 0.0 <= self.temperature <= 1.0:
            raise ConfigError(f"voice temperature must be within 0..1, got {self.temperature}")

    @property
    def is_azure(self) -> bool:
        return self.type != "openai"

    def wire(self) -> str | dict[str, Any]:
        """The ``voice`` value: a plain name for OpenAI voices, else an Azure voice object."""
        if not self.is_azure:
            return self.name
        obj: dict[str, Any] = {"name": self.name, "type": self.type}
        for key in ("endpoint_id", "model", "temperature", "rate", "locale", "style"):
            value = getattr(self, key)
            if value is not None:
                obj[key] = value
        return obj


def voice_from_config(value: str | Voice | Mapping[str, Any]) -> Voice:
    """A :class:`Voice` from a plain OpenAI voice name, a ``Voice`` or a mapping with ``type``.

    A plain string is an OpenAI voice name; anything else must say its type.
    """
    if isinstance(value, Voice):
        return value
    if isinstance(value, str):
        return Voice(value, "openai")
    if isinstance(value, Mapping):
        known = {"name", "type", "endpoint_id", "model", "temperature", "rate", "locale", "style"}
        extra = set(value) - known
        if extra:
            raise ConfigError(f"unknown voice field(s) {sorted(extra)}; known: {sorted(known)}")
        if "type" not in value:
            raise ConfigError(
                f"voice mapping {dict(value)!r} needs a 'type' ({', '.join(VOICE_TYPES)})"
            )
        return Voice(**value)
    raise ConfigError(f"voice must be a str, a Voice or a mapping, got {type(value).__name__}")


# --------------------------------------------------------------------------- tools & session


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; ``parameters`` is a JSON schema object."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ConfigError(f"tool name {self.name!r} must be non-empty [A-Za-z0-9_-]")

    def wire(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a ``session.update`` carries; restored as is after a reconnect."""

    instructions: str = ""
    voice: Voice = field(default_factory=lambda: Voice("alloy"))
    tools: tuple[Tool, ...] = ()
    input_rate: int = 24000
    output_rate: int = 24000
    turn_detection: Mapping[str, Any] | None = field(default_factory=lambda: {"type": "server_vad"})
    transcription: Mapping[str, Any] | None = field(default_factory=lambda: {"model": "whisper-1"})
    noise_reduction: Mapping[str, Any] | None = None
    echo_cancellation: Mapping[str, Any] | None = None
    temperature: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def check(self, dialect: Dialect) -> None:
        """Refuse what ``dialect`` cannot carry, saying what to use instead."""
        if self.input_rate not in INPUT_RATES[dialect]:
            raise ConfigError(
                f"input_sample_rate {self.input_rate} is not accepted on the wire by this "
                f"service; use one of {INPUT_RATES[dialect]} (other rates are resampled "
                "by push_audio() anyway)"
            )
        if self.output_rate not in OUTPUT_RATES[dialect]:
            raise ConfigError(
                f"output_sample_rate {self.output_rate} is not offered by this service; use "
                f"one of {OUTPUT_RATES[dialect]}"
            )
        if dialect is Dialect.GA and self.voice.is_azure:
            raise ConfigError(
                f"{self.voice.type} voices exist only on Azure Voice Live; OpenAI Realtime "
                f"takes one of {', '.join(OPENAI_VOICES)}"
            )
        if dialect is Dialect.GA and self.echo_cancellation is not None:
            raise ConfigError("echo cancellation is an Azure Voice Live option")
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"tool names must be unique, got {names}")


def encode_session_update(dialect: Dialect, cfg: SessionConfig) -> str:
    """``session.update`` with the whole configuration, in ``dialect``'s shape."""
    tools = [t.wire() for t in cfg.tools]
    session: dict[str, Any]
    if dialect is Dialect.GA:
        audio_in: dict[str, Any] = {
            "format": {"type": "audio/pcm", "rate": cfg.input_rate},
            "turn_detection": dict(cfg.turn_detection) if cfg.turn_detection else None,
        }
        if cfg.transcription is not None:
            audio_in["transcription"] = dict(cfg.transcription)
        if cfg.noise_reduction is not None:
            audio_in["noise_reduction"] = dict(cfg.noise_reduction)
        session = {
            "type": "realtime",
            "instructions": cfg.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": audio_in,
                "output": {
                    "format": {"type": "audio/pcm", "rate": cfg.output_rate},
                    "voice": cfg.voice.wire(),
                },
            },
            "tools": tools,
            "tool_choice": "auto",
        }
    else:
        session = {
            "modalities": ["text", "audio"],
            "instructions": cfg.instructions,
            "voice": cfg.voice.wire(),
            "input_audio_format": "pcm16",
            "input_audio_sampling_rate": cfg.input_rate,
            "output_audio_format": _BETA_OUTPUT_FORMAT[cfg.output_rate],
            "turn_detection": dict(cfg.turn_detection) if cfg.turn_detection else None,
            "tools": tools,
            "tool_choice": "auto",
        }
        if cfg.transcription is not None:
            session["input_audio_transcription"] = dict(cfg.transcription)
        if cfg.noise_reduction is not None:
            session["input_audio_noise_reduction"] = dict(cfg.noise_reduction)
        if cfg.echo_cancellation is not None:
            session["input_audio_echo_cancellation"] = dict(cfg.echo_cancellation)
    if cfg.temperature is not None and dialect is Dialect.BETA:
        session["temperature"] = cfg.temperature
    session.update(cfg.extra)
    return _dump({"type": "session.update", "session": session})


def build_url(base_url: str, path: str, query: Mapping[str, str]) -> str:
    """``wss://host/<path>?<query>``; ``https`` becomes ``wss``, ``http`` becomes ``ws``."""
    parts = urlsplit(base_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"base URL must look like 'wss://host' or 'https://host' (or ws://127.0.0.1:PORT "
            f"for a local fake), got {base_url!r}"
        )
    p = parts.path.rstrip("/")
    if not p.endswith(path):
        p += path
    return f"{scheme}://{parts.netloc}{p}?{urlencode(dict(query))}"


# --------------------------------------------------------------------------- client events


def _dump(msg: dict[str, Any]) -> str:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))


#: Instruction prefix that makes the model speak a given text (``say``).
SAY_PREFIX = "Say exactly the following text, word for word, and nothing else: "


def encode_append(pcm: bytes) -> str:
    return _dump({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


COMMIT = _dump({"type": "input_audio_buffer.commit"})
CLEAR_INPUT = _dump({"type": "input_audio_buffer.clear"})


def encode_message(dialect: Dialect, role: str, text: str) -> str:
    """``conversation.item.create`` of a text message (user, assistant or system)."""
    kind = NAMES[dialect].assistant_text if role == "assistant" else "input_text"
    item = {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
    return _dump({"type": "conversation.item.create", "item": item})


def encode_function_output(call_id: str, output: str) -> str:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return _dump({"type": "conversation.item.create", "item": item})


def encode_response_create(instructions: str | None = None) -> str:
    msg: dict[str, Any] = {"type": "response.create"}
    if instructions is not None:
        msg["response"] = {"instructions": instructions}
    return _dump(msg)


def encode_response_cancel(response_id: str | None) -> str:
    msg: dict[str, Any] = {"type": "response.cancel"}
    if response_id:
        msg["response_id"] = response_id
    return _dump(msg)


def encode_truncate(item_id: str, content_index: int, audio_end_ms: int) -> str:
    return _dump(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": audio_end_ms,
        }
    )


# --------------------------------------------------------------------------- server events


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one response (``response.done``)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session_id: str


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputTranscript:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str
    call_id: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class OutputItemDone:
    response_id: str
    item_id: str
    item_type: str
    call_id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    content_index: int
    audio: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class FunctionArgsDelta:
    response_id: str
    item_id: str
    call_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class FunctionArgsDone:
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class FunctionCallReady:
    """A complete function call (made by the state machine, never parsed)."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """``reason``: why a response was cancelled or incomplete (``status_details.reason``);
    ``error``: why it failed (``status_details.error``, which the server may send without
    an ``error`` event)."""

    response_id: str
    status: str
    reason: str = ""
    usage: Usage | None = None
    error: ServerError | None = None


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ServerError:
    type: str
    code: str
    message: str
    param: str = ""
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A known event antiphon has no use for (content parts, rate limits, acks...)."""

    type: str


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str
    text: str = field(repr=False)


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputTranscript
    | ResponseCreated
    | OutputItemAdded
    | OutputItemDone
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | FunctionArgsDelta
    | FunctionArgsDone
    | FunctionCallReady
    | ResponseDone
    | ItemTruncated
    | ServerError
    | Ignored
    | Unknown
    | Malformed
)

_IGNORED = frozenset(
    {
        "conversation.created",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.input_audio_transcription.failed",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "response.content_part.added",
        "response.content_part.done",
        "rate_limits.updated",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "warning",
    }
)


def _s(v: object) -> str:
    return v if isinstance(v, str) else ""


def _i(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _d(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    inp, out = _d(raw.get("input_token_details")), _d(raw.get("output_token_details"))
    return Usage(
        _i(raw.get("input_tokens")),
        _i(raw.get("output_tokens")),
        _i(raw.get("total_tokens")),
        _i(inp.get("audio_tokens")),
        _i(out.get("audio_tokens")),
        _i(inp.get("cached_tokens")),
    )


def _server_error(err: dict[str, Any]) -> ServerError:
    """An ``error`` event's ``error``, or a failed response's ``status_details.error``."""
    return ServerError(
        _s(err.get("type")) or "error",
        _s(err.get("code")),
        _s(err.get("message")) or "no message",
        _s(err.get("param")),
        _s(err.get("event_id")),
    )


def parse(frame: str | bytes, dialect: Dialect) -> ServerEvent:
    """Turn one WebSocket message into a typed event of ``dialect``."""
    if not isinstance(frame, str):
        return Malformed("binary frame (the protocol sends JSON text only)", repr(frame[:50]))
    try:
        msg = json.loads(frame)
    except ValueError as exc:
        return Malformed(f"invalid JSON: {exc}", frame[:200])
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return Malformed("JSON message without a string 'type'", frame[:200])
    kind: str = msg["type"]
    n = NAMES[dialect]
    rid, iid = _s(msg.get("response_id")), _s(msg.get("item_id"))
    if kind == n.audio_delta:
        try:
            audio = base64.b64decode(_s(msg.get("delta")), validate=True)
        except (binascii.Error, ValueError) as exc:
            return Malformed(f"audio delta is not base64: {exc}", frame[:200])
        return AudioDelta(rid, iid, _i(msg.get("content_index")), audio)
    if kind == n.audio_done:
        return AudioDone(rid, iid)
    if kind in (n.transcript_delta, n.text_delta):
        return TranscriptDelta(rid, iid, _s(msg.get("delta")))
    if kind in (n.transcript_done, n.text_done):
        return TranscriptDone(rid, iid, _s(msg.get("transcript", msg.get("text"))))
    if kind == "response.function_call_arguments.delta":
        return FunctionArgsDelta(rid, iid, _s(msg.get("call_id")), _s(msg.get("delta")))
    if kind == "response.function_call_arguments.done":
        return FunctionArgsDone(
            rid, iid, _s(msg.get("call_id")), _s(msg.get("name")), _s(msg.get("arguments"))
        )
    if kind == "response.created":
        return ResponseCreated(_s(_d(msg.get("response")).get("id")))
    if kind == "response.done":
        resp = _d(msg.get("response"))
        details = _d(resp.get("status_details"))
        err = details.get("error")
        return ResponseDone(
            _s(resp.get("id")),
            _s(resp.get("status")) or "completed",
            _s(details.get("reason")),
            _usage(resp.get("usage")),
            _server_error(err) if isinstance(err, dict) else None,
        )
    if kind in ("response.output_item.added", "response.output_item.done"):
        item = _d(msg.get("item"))
        args = (_s(item.get("id")), _s(item.get("type")), _s(item.get("call_id")))
        if kind == "response.output_item.added":
            return OutputItemAdded(rid, *args, _s(item.get("name")))
        return OutputItemDone(rid, *args, _s(item.get("name")), _s(item.get("arguments")))
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(iid, _i(msg.get("audio_start_ms")))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(iid, _i(msg.get("audio_end_ms")))
    if kind == "conversation.item.input_audio_transcription.completed":
        return InputTranscript(iid, _s(msg.get("transcript")))
    if kind == "conversation.item.truncated":
        return ItemTruncated(iid, _i(msg.get("audio_end_ms")))
    if kind == "session.created":
        return SessionCreated(_s(_d(msg.get("session")).get("id")))
    if kind == "session.updated":
        return SessionUpdated(_d(msg.get("session")))
    if kind == "error":
        return _server_error(_d(msg.get("error")))
    if kind in n.item_added or kind in _IGNORED:
        return Ignored(kind)
    return Unknown(kind, msg)


#: Server error codes after which the session cannot go on.
FATAL_ERROR_CODES = frozenset({"session_expired"})
#: Close codes after which a reconnect may restore the session.
RETRYABLE_CLOSES = frozenset({1000, 1001, 1006, 1011, 1012, 1013})


def close_error(
    code: int | None, reason: str, *, provider: str, stage: str, auth_hint: str
) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``."""
    reason = reason or "no reason given"
    if code == 1008:
        return AuthError(
            f"the server closed the connection: {reason}",
            provider=provider,
            stage=stage,
            code=code,
            hint=auth_hint,
        )
    if code == 4000:
        return ProviderError(
            f"the server refused the protocol shape: {reason}",
            provider=provider,
            stage=stage,
            code=code,
            hint="the endpoint speaks another Realtime dialect (GA vs preview); check the plugin",
        )
    hints = {
        1001: "the server ended the session (maximum duration?)",
        1011: "the server had an internal error; reconnecting usually helps",
    }
    return ProviderConnectionError(
        f"the server closed the connection: {reason}",
        provider=provider,
        stage=stage,
        code=code if code is not None else 1006,
        hint=hints.get(code or 0, "the connection dropped; check the network"),
        retryable=code is None or code in RETRYABLE_CLOSES,
    )


# --------------------------------------------------------------------------- state machine


class Act(enum.Enum):
    """What the driver does with an event."""

    DELIVER = "deliver"  # hand to the application (with Decision.generation)
    READY = "ready"  # session.updated: the configuration is applied
    CREATED = "created"  # session.created
    DROP = "drop"  # stale or unexpected: discard (reason in Decision.note)
    NOTICE = "notice"  # informational; log at most


@dataclass(frozen=True, slots=True)
class Decision:
    act: Act
    event: ServerEvent
    generation: int = 0
    note: str = ""
    send: tuple[str, ...] = ()


@dataclass(slots=True)
class _Response:
    id: str
    generation: int
    cancelled: bool = False
    done: bool = False
    audio_items: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Call:
    response_id: str
    call_id: str
    name: str
    parts: list[str] = field(default_factory=list)
    emitted: bool = False


@dataclass(frozen=True, slots=True)
class JournalEntry:
    role: str  # user | assistant
    text: str


class RealtimeState:
    """What one realtime session knows about the conversation, across connections.

    The client-side methods return the messages to send and update the state *now*,
    before any await; :meth:`receive` decides what a server event means.

    Generations (turn ids): every ``response.created`` opens a new generation; an
    interruption moves past the interrupted one, so audio of an older generation that is
    still on the wire can be recognised and dropped.
    """

    def __init__(self, dialect: Dialect, *, output_rate: int, journal_limit: int = 64) -> None:
        self.dialect = dialect
        self.output_rate = output_rate
        self.generation = 0
        self.current: _Response | None = None
        self._responses: deque[_Response] = deque(maxlen=32)
        self._requested: deque[str | None] = deque()  # response.create sent, not created yet
        self._cancel_on_create = 0
        self._calls: dict[str, _Call] = {}
        self._audio_ms: dict[str, float] = {}  # item -> ms of audio received
        self._content_index: dict[str, int] = {}
        self._last_audio: tuple[str, int] | None = None  # (item id, generation)
        self._truncated: set[str] = set()
        self._cancel_sent = 0
        self.journal: deque[JournalEntry] = deque(maxlen=journal_limit)

    # -- queries
    @property
    def awaiting(self) -> bool:
        """The server owes a response or is producing one (a deadline should run)."""
        return bool(self._requested) or self.current is not None

    @property
    def response_pending_unheard(self) -> bool:
        """A requested response produced no audio yet (it can be re-requested)."""
        if self._requested:
            return True
        cur = self.current
        return cur is not None and not cur.audio_items

    def received_ms(self, item_id: str) -> float:
        return self._audio_ms.get(item_id, 0.0)

    # -- client side
    def user_text(self, text: str) -> list[str]:
        """A user message and a response to it."""
        self.journal.append(JournalEntry("user", text))
        return [encode_message(self.dialect, "user", text), *self.request_response()]

    def request_response(self, instructions: str | None = None) -> list[str]:
        self._requested.append(instructions)
        return [encode_response_create(instructions)]

    def say(self, text: str) -> list[str]:
        return self.request_response(SAY_PREFIX + text)

    def tool_result(self, call_id: str, output: str) -> list[str]:
        return [encode_function_output(call_id, output), *self.request_response()]

    def commit(self) -> list[str]:
        return [COMMIT, *self.request_response()]

    def interrupt(
        self, target_generation: int, played_ms: int | None, played_item: str | None = None
    ) -> list[str]:
        """Cancel what plays up to ``target_generation``; truncate the item being heard.

        ``played_ms``: how much of the newest audio item the user heard (None: all of what
        arrived); if ``played_item`` names another item, none of the newest was heard.
        Returns ``response.cancel`` / ``conversation.item.truncate`` as needed.
        """
        msgs: list[str] = []
        cur = self.current
        if cur is not None and cur.generation <= target_generation:
            cur.cancelled = True
            self.current = None
            self._cancel_sent += 1
            msgs.append(encode_response_cancel(cur.id))
        elif cur is None and self._requested:
            # Asked for but not created yet: cancel it the moment it is.
            self._cancel_on_create += len(self._requested)
        last = self._last_audio
        if last is not None and last[1] <= target_generation and last[0] not in self._truncated:
            item = last[0]
            received = self._audio_ms.get(item, 0.0)
            if played_item is not None and played_item != item:
                played_ms = 0
            end = received if played_ms is None else min(float(played_ms), received)
            self._truncated.add(item)
            msgs.append(encode_truncate(item, self._content_index.get(item, 0), int(end)))
        self.generation = max(self.generation, target_generation + 1)
        return msgs

    def reconnect(self, cfg: SessionConfig) -> list[str]:
        """Start over on a new connection: the session, the conversation, an unheard request.

        Returns what to send after ``session.created``: the configuration, the journal
        (text items), and ``response.create`` again if a requested response had produced
        no audio. A response that was partly heard is lost (it moved past: new generation).
        """
        again = self.response_pending_unheard and not self._cancel_on_create
        instructions: str | None = None
        if self._requested:
            instructions = self._requested[0]
        cur = self.current
        if cur is not None:
            cur.cancelled = True
        self.current = None
        self._requested.clear()
        self._cancel_on_create = 0
        self._calls.clear()
        self._last_audio = None
        self.generation += 1
        msgs = [encode_session_update(self.dialect, cfg)]
        msgs += [encode_message(self.dialect, e.role, e.text) for e in self.journal]
        if again:
            msgs += self.request_response(instructions)
        return msgs

    # -- server side
    def feed(self, frame: str | bytes) -> Decision:
        return self.receive(parse(frame, self.dialect))

    def _response(self, rid: str) -> _Response | None:
        cur = self.current
        if cur is not None and cur.id == rid:
            return cur
        for r in self._responses:
            if r.id == rid:
                return r
        return None

    def _live(self, rid: str, ev: ServerEvent) -> tuple[_Response | None, Decision | None]:
        r = self._response(rid)
        if r is None:
            return None, Decision(Act.DROP, ev, note=f"event of unknown response {rid!r}")
        if r.cancelled:
            return None, Decision(Act.DROP, ev, r.generation, "event of a cancelled response")
        if r.done:
            return None, Decision(Act.DROP, ev, r.generation, "event after response.done")
        return r, None

    def receive(self, ev: ServerEvent) -> Decision:
        g = self.generation
        if isinstance(ev, AudioDelta):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            r.audio_items.add(ev.item_id)
            ms = len(ev.audio) / 2 / self.output_rate * 1000.0
            self._audio_ms[ev.item_id] = self._audio_ms.get(ev.item_id, 0.0) + ms
            self._content_index[ev.item_id] = ev.content_index
            self._last_audio = (ev.item_id, r.generation)
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, TranscriptDelta | AudioDone):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, TranscriptDone):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            if ev.transcript and ev.item_id not in self._truncated:
                self.journal.append(JournalEntry("assistant", ev.transcript))
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, ResponseCreated):
            self.generation += 1
            r = _Response(ev.response_id, self.generation)
            if self._requested:
                self._requested.popleft()
            self._responses.append(r)
            if self._cancel_on_create:
                self._cancel_on_create -= 1
                r.cancelled = True
                self._cancel_sent += 1
                return Decision(
                    Act.DROP,
                    ev,
                    r.generation,
                    "response interrupted before it was created",
                    (encode_response_cancel(r.id),),
                )
            self.current = r
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, ResponseDone):
            r = self._response(ev.response_id)
            if r is None:
                return Decision(Act.DROP, ev, g, f"response.done of unknown {ev.response_id!r}")
            if r.done:
                return Decision(Act.DROP, ev, r.generation, "second response.done")
            r.done = True
            if self.current is r:
                self.current = None
            for cid in [c for c, call in self._calls.items() if call.response_id == r.id]:
                del self._calls[cid]
            return Decision(Act.DELIVER, ev, r.generation)
        if isinstance(ev, OutputItemAdded):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            if ev.item_type == "function_call":
                self._calls[ev.item_id] = _Call(ev.response_id, ev.call_id, ev.name)
            return Decision(Act.NOTICE, ev, r.generation)
        if isinstance(ev, FunctionArgsDelta):
            r, drop = self._live(ev.response_id, ev)
            if r is None:
                assert drop is not None
                return drop
            call = self._calls.setdefault(ev.item_id, _Call(ev.response_id, ev.call_id, ""))
            call.parts.append(ev.delta)
            return Decision(Act.NOTICE, ev, r.generation)
        if isinstance(ev, FunctionArgsDone | OutputItemDone):
            return self._call_done(ev)
        if isinstance(ev, SpeechStarted | SpeechStopped | InputTranscript):
            if isinstance(ev, InputTranscript) and ev.transcript:
                self.journal.append(JournalEntry("user", ev.transcript))
            return Decision(Act.DELIVER, ev, g)
        if isinstance(ev, SessionCreated):
            return Decision(Act.CREATED, ev, g)
        if isinstance(ev, SessionUpdated):
            return Decision(Act.READY, ev, g)
        if isinstance(ev, ServerError):
            if ev.code == "response_cancel_not_active" and self._cancel_sent:
                return Decision(Act.DROP, ev, g, "cancel crossed the end of the response")
            if ev.code == "conversation_already_has_active_response" and self._requested:
                self._requested.popleft()  # that response.create was refused
            return Decision(Act.DELIVER, ev, g)
        if isinstance(ev, ItemTruncated | Ignored | FunctionCallReady):
            return Decision(Act.NOTICE, ev, g)
        if isinstance(ev, Unknown):
            return Decision(Act.DROP, ev, g, f"unknown event type {ev.type!r}")
        return Decision(Act.DROP, ev, g, ev.reason)

    def _call_done(self, ev: FunctionArgsDone | OutputItemDone) -> Decision:
        if isinstance(ev, OutputItemDone) and ev.item_type != "function_call":
            return Decision(Act.NOTICE, ev, self.generation)
        r, drop = self._live(ev.response_id, ev)
        if r is None:
            assert drop is not None
            return drop
        call = self._calls.get(ev.item_id)
        if call is None:
            call = self._calls[ev.item_id] = _Call(ev.response_id, ev.call_id, ev.name)
        if call.emitted:
            return Decision(Act.NOTICE, ev, r.generation)
        call.emitted = True
        args = ev.arguments or "".join(call.parts)
        ready = FunctionCallReady(
            ev.response_id, ev.item_id, ev.call_id or call.call_id, ev.name or call.name, args
        )
        return Decision(Act.DELIVER, ready, r.generation)


def tools_from_config(tools: Sequence[Tool | Mapping[str, Any]]) -> tuple[Tool, ...]:
    """Tools from :class:`Tool` objects or mappings ``{name, description, parameters}``."""
    out: list[Tool] = []
    for t in tools:
        if isinstance(t, Tool):
            out.append(t)
        elif isinstance(t, Mapping):
            extra = set(t) - {"name", "description", "parameters", "type"}
            if extra or t.get("type", "function") != "function":
                raise ConfigError(
                    f"a tool is {{name, description, parameters}} (type 'function'); got {t!r}"
                )
            out.append(
                Tool(
                    str(t.get("name", "")),
                    str(t.get("description", "")),
                    dict(t.get("parameters", {"type": "object", "properties": {}})),
                )
            )
        else:
            raise ConfigError(f"tools must be Tool objects or mappings, got {type(t).__name__}")
    return tuple(out)
