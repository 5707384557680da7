"""Typed configuration of a realtime session, refused at the edge.

The two dialects' event and field names (:class:`Dialect`), voices (of every realtime
service: one :class:`Voice` whose ``type`` says whose voice it is), tools and the
session (:class:`SessionConfig`, :func:`encode_session_update`), each checked with a
:class:`~antiphon.errors.ConfigError` that says how to fix it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from antiphon.errors import ConfigError

__all__ = [
    "AZURE_NATIVE_VOICES",
    "GEMINI_VOICES",
    "INPUT_RATES",
    "NAMES",
    "OPENAI_VOICES",
    "OUTPUT_RATES",
    "VOICE_TYPES",
    "Dialect",
    "SessionConfig",
    "Tool",
    "Voice",
    "build_url",
    "dump_json",
    "encode_session_update",
    "tools_from_config",
    "voice_from_config",
]


def dump_json(msg: dict[str, Any]) -> str:
    """One client event as compact JSON (the form every encoder sends)."""
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))


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
#: Gemini's prebuilt voices (the speech-generation voice list, which the native-audio Live
#: models share: https://ai.google.dev/gemini-api/docs/speech-generation#voices).
GEMINI_VOICES = (
    "Zephyr",
    "Puck",
    "Charon",
    "Kore",
    "Fenrir",
    "Leda",
    "Orus",
    "Aoede",
    "Callirrhoe",
    "Autonoe",
    "Enceladus",
    "Iapetus",
    "Umbriel",
    "Algieba",
    "Despina",
    "Erinome",
    "Algenib",
    "Rasalgethi",
    "Laomedeia",
    "Achernar",
    "Alnilam",
    "Schedar",
    "Gacrux",
    "Pulcherrima",
    "Achird",
    "Zubenelgenubi",
    "Vindemiatrix",
    "Sadachbia",
    "Sadaltager",
    "Sulafat",
)
VOICE_TYPES = (
    "openai",
    "azure-standard",
    "azure-custom",
    "azure-personal",
    "azure-realtime-native",
    "gemini",
    "xai",
)


@dataclass(frozen=True, slots=True)
class Voice:
    """A voice and its type, taken from configuration, never guessed from the name.

    ``type``: ``openai`` (one of :data:`OPENAI_VOICES`), ``azure-standard`` (e.g.
    ``en-US-Ava:DragonHDLatestNeural``), ``azure-custom`` (needs ``endpoint_id``),
    ``azure-personal`` (needs ``model``), ``azure-realtime-native``, ``gemini`` (one of
    :data:`GEMINI_VOICES`, Gemini Live's prebuilt voices) or ``xai`` (an xAI voice id:
    ``eve``, ``ara``, ``rex``, ``sal``, ``leo``... or a custom voice id). Azure tuning
    fields (``temperature``, ``rate``, ``locale``, ``style``...) go to the voice object as
    given. A plain string given to a model is a voice of that model's own type.
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
        if self.type == "gemini" and self.name not in GEMINI_VOICES:
            raise ConfigError(
                f"{self.name!r} is not a Gemini prebuilt voice; use one of "
                f"{', '.join(GEMINI_VOICES)} (names are capitalised)"
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
        return self.type.startswith("azure-")

    def wire(self) -> str | dict[str, Any]:
        """The ``voice`` value: a plain name, or an Azure voice object."""
        if not self.is_azure:
            return self.name
        obj: dict[str, Any] = {"name": self.name, "type": self.type}
        for key in ("endpoint_id", "model", "temperature", "rate", "locale", "style"):
            value = getattr(self, key)
            if value is not None:
                obj[key] = value
        return obj


def voice_from_config(
    value: str | Voice | Mapping[str, Any], default_type: str = "openai"
) -> Voice:
    """A :class:`Voice` from a plain voice name, a ``Voice`` or a mapping with ``type``.

    A plain string is a voice of ``default_type`` (the service's own voices: ``openai``,
    ``gemini``, ``xai``); anything else must say its type.
    """
    if isinstance(value, Voice):
        return value
    if isinstance(value, str):
        return Voice(value, default_type)
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
        if dialect is Dialect.GA and self.voice.type != "openai":
            where = "Azure Voice Live" if self.voice.is_azure else "their own service"
            raise ConfigError(
                f"{self.voice.type} voices exist only on {where}; OpenAI Realtime "
                f"takes one of {', '.join(OPENAI_VOICES)}"
            )
        if dialect is Dialect.BETA and self.voice.type in ("gemini", "xai"):
            raise ConfigError(
                f"{self.voice.type} voices exist only on their own service; Azure Voice Live "
                "takes an OpenAI voice name or an Azure voice (with its type)"
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
    return dump_json({"type": "session.update", "session": session})


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
