"""xAI's Voice Agent API (``wss://api.x.ai/v1/realtime``), sans I/O: the OpenAI Realtime
GA schema with xAI's differences, on top of :mod:`antiphon.protocols.realtime`.

Sources (xAI documents the API in prose; no typed schema is published):
https://docs.x.ai/docs/guides/voice/agent (endpoint, auth, session fields, events), the
event models of Pipecat's xAI plugin (``pipecat/services/xai/realtime/events.py``),
LiveKit's xAI plugin (a subclass of its OpenAI Realtime GA plugin) and
``PROTOCOLS.md`` §2.2. The official ``xai-sdk`` (1.21.0) has no types for this API: it
is a gRPC client of the chat, image, video, files, collections... services, with no
realtime or voice module, so there is no xAI witness. The frames xAI shares with
OpenAI's GA schema are validated against the ``openai`` SDK's types
(``tests/test_sdk_xai_realtime.py``); xAI's own (below) against those documents only.

What is the same as OpenAI Realtime GA (and reused unchanged): the client events
(``input_audio_buffer.append|commit|clear``, ``conversation.item.create|truncate``,
``response.create|cancel``), the server event names and shapes
(``response.output_audio.delta``, ``response.output_audio_transcript.*``,
``response.function_call_arguments.*``, ``input_audio_buffer.speech_*``,
``conversation.item.input_audio_transcription.completed``, ``response.done``, ``error``),
and so :class:`~antiphon.protocols.realtime.RealtimeState` entire.

What differs (each handled here):

- the greeting is ``conversation.created`` (``conversation.id``), not ``session.created``;
- the ``session`` of ``session.update`` is flatter: ``voice`` and ``turn_detection`` at
  its top, ``audio.input.format``/``audio.output.format`` as ``{"type": "audio/pcm",
  "rate": N}`` with rates 8000 to 48000 (:data:`RATES`), no ``type``,
  ``output_modalities`` or ``tool_choice`` (:func:`encode_session_update`);
- voices are xAI's (``eve`` by default, ``ara``, ``rex``, ``sal``, ``leo``..., or a
  custom voice id): a :class:`~antiphon.protocols.realtime.Voice` of type ``xai``;
- ``response.create`` carries no ``instructions``: ``say()`` sends a ``force_message``
  item (an assistant message spoken as is, no inference), which the server answers with a
  response of its own (community sources only; unverified against the live service);
- the server sends ``ping`` (``{"type": "ping", "timestamp": ms}``) as keep-alive, and,
  when a transcription model is set, cumulative
  ``conversation.item.input_audio_transcription.updated`` events (ignored: the
  ``.completed`` event carries the final transcript);
- xAI's server-side tools (``web_search``, ``x_search``, ``file_search``, ``mcp``) and
  ``reasoning``, ``resumption``, ``replace`` go through ``extra_session`` as given.
"""

from __future__ import annotations

from typing import Any

from antiphon.errors import ConfigError
from antiphon.protocols.json_events import Malformed, parse_json_event
from antiphon.protocols.realtime import (
    Dialect,
    Ignored,
    RealtimeState,
    SessionConfig,
    SessionCreated,
    Unknown,
)
from antiphon.protocols.realtime.config import dump_json
from antiphon.protocols.realtime.events import SERVER, parse_message
from antiphon.protocols.realtime.state import Act, Decision

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_VOICE",
    "PATH",
    "RATES",
    "VOICES",
    "XAIRealtimeState",
    "check_config",
    "encode_force_message",
    "encode_session_update",
]

PATH = "/v1/realtime"
#: The xAI documentation's default model (LiveKit defaults to ``grok-voice-latest``).
DEFAULT_MODEL = "grok-voice-fast-1.0"
DEFAULT_VOICE = "eve"
#: The documented voices (ids are case-insensitive; custom voice ids are accepted too).
VOICES = ("eve", "ara", "rex", "sal", "leo")
#: PCM16 sample rates the session accepts both ways (the documents also list "21050",
#: an apparent typo that is left out).
RATES = (8000, 16000, 24000, 32000, 44100, 48000)


def check_config(cfg: SessionConfig) -> None:
    """Refuse what xAI's session cannot carry, saying what to use instead."""
    if cfg.voice.type != "xai":
        raise ConfigError(
            f"xAI takes its own voices ({', '.join(VOICES)} or a custom voice id), not a "
            f"{cfg.voice.type} voice"
        )
    for name, rate in (("input", cfg.input_rate), ("output", cfg.output_rate)):
        if rate not in RATES:
            raise ConfigError(f"xAI's {name} sample rate must be one of {RATES}, got {rate}")
    if cfg.temperature is not None:
        raise ConfigError("xAI's session has no temperature setting")
    if cfg.noise_reduction is not None or cfg.echo_cancellation is not None:
        raise ConfigError("noise reduction and echo cancellation are not xAI session options")
    names = [t.name for t in cfg.tools]
    if len(set(names)) != len(names):
        raise ConfigError(f"tool names must be unique, got {names}")


def encode_session_update(cfg: SessionConfig) -> str:
    """``session.update`` in xAI's shape (see the module docstring)."""
    audio_in: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": cfg.input_rate}}
    if cfg.transcription is not None:
        audio_in["transcription"] = dict(cfg.transcription)
    session: dict[str, Any] = {
        "instructions": cfg.instructions,
        "voice": cfg.voice.name,
        "turn_detection": dict(cfg.turn_detection) if cfg.turn_detection else None,
        "audio": {
            "input": audio_in,
            "output": {"format": {"type": "audio/pcm", "rate": cfg.output_rate}},
        },
        "tools": [t.wire() for t in cfg.tools],
    }
    session.update(cfg.extra)
    return dump_json({"type": "session.update", "session": session})


def encode_force_message(text: str) -> str:
    """A ``force_message`` item: the agent speaks ``text`` as is (xAI's extension)."""
    item = {
        "type": "force_message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }
    return dump_json({"type": "conversation.item.create", "item": item})


class XAIRealtimeState(RealtimeState):
    """:class:`~antiphon.protocols.realtime.RealtimeState` with xAI's differences: the
    greeting, ``ping``, the session's shape and ``say`` (see the module docstring)."""

    def __init__(self, *, output_rate: int, journal_limit: int = 64) -> None:
        super().__init__(Dialect.GA, output_rate=output_rate, journal_limit=journal_limit)

    def session_update(self, cfg: SessionConfig) -> str:
        return encode_session_update(cfg)

    def say(self, text: str) -> list[str]:
        self._requested.append(None)  # the server answers a force_message on its own
        return [encode_force_message(text)]

    def feed(self, frame: str | bytes) -> Decision:
        # decoded once: the greeting is read here, the rest by the shared parser
        msg = parse_json_event(frame, provider=SERVER)
        if isinstance(msg, Malformed):
            return self.receive(msg)
        if msg["type"] == "conversation.created":
            conv = msg.get("conversation")
            cid = conv.get("id") if isinstance(conv, dict) else None
            return Decision(Act.CREATED, SessionCreated(cid if isinstance(cid, str) else ""))
        ev = parse_message(msg, self.dialect, frame)
        if isinstance(ev, Unknown) and ev.type in _NOTICES:
            return Decision(Act.NOTICE, Ignored(ev.type), self.generation)
        return self.receive(ev)


#: xAI events with nothing to act on.
_NOTICES = frozenset(
    {
        "ping",
        "conversation.item.input_audio_transcription.updated",
        "input_audio_buffer.dtmf_event_received",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "mcp_list_tools.completed",
    }
)
