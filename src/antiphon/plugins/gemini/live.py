"""Gemini Live (speech to speech) over the Live API WebSocket, ``BidiGenerateContent``.

``wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.
GenerativeService.BidiGenerateContent`` with the key in ``x-goog-api-key``. The wire
protocol is :mod:`antiphon.protocols.gemini_live`; the session is the shared
:class:`~antiphon.services.realtime.RealtimeSession`, reached through the protocol hook of
:class:`~antiphon.services.realtime.WebSocketRealtimeModel`. Input audio is sent as 16 kHz
PCM16, output arrives as 24 kHz PCM16. See ``docs/gemini-live.md``.

The voice is the shared :class:`~antiphon.protocols.realtime.Voice` of type ``gemini`` (a
plain name is one). The configuration is fixed per connection, so a new one (a changed
voice, instructions or tools; the server's ``goAway`` notice) is applied by moving the
session to a new connection that resumes it with the server's session-resumption handle,
at a quiet moment (:mod:`antiphon.services.realtime.handover`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import gemini_live as gl
from antiphon.protocols.realtime import SessionConfig, Tool, Voice, build_url
from antiphon.protocols.realtime.state import RealtimeState
from antiphon.services.realtime import RealtimeDeadlines, WebSocketRealtimeModel

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "PROVIDER", "GeminiLive"]

PROVIDER = "gemini"
DEFAULT_BASE_URL = "wss://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-09-2025"


class GeminiLive(WebSocketRealtimeModel):
    """Google's Gemini Live speech-to-speech model.

    Args:
        api_key: defaults to ``$GOOGLE_API_KEY``, then ``$GEMINI_API_KEY``.
        model: a Live model name (``models/`` is added when missing).
        base_url: ``wss://...``; a local fake at ``ws://127.0.0.1:PORT``.
        voice: a prebuilt voice name (``Puck``, ``Kore``, ...; see :data:`gl.VOICES`) or
            a :class:`Voice` of type ``gemini``.
        automatic_activity_detection: the server's voice activity detection ends the
            user's turns and interrupts the model on barge-in (default on).
        session_resumption: ask for session-resumption handles, so that the session
            moves to a new connection without losing the conversation when the server
            announces the end of one (``goAway``) or the configuration changes (default
            on; off: ``goAway`` is followed by an ordinary reconnect that replays the
            text of the conversation, and ``update()`` applies at the next connection).
        temperature, extra_setup: more ``setup`` fields (``extra_setup`` is merged as is).
        max_input_backlog: seconds of input audio that may wait for the socket before
            the session fails (default 2.0).
        max_output_backlog: seconds of agent audio the consumer may fall behind before
            the session fails (default 120.0).

    Raises:
        ConfigError: no key, an empty model or voice, a non-positive backlog, or a setting
            Gemini cannot carry.

    The configuration is fixed per connection (the Live API takes ``setup`` once):
    ``session.update()`` keeps the new instructions, voice or tools and applies them on
    a new connection (see the module docstring).
    """

    provider: ClassVar[str] = PROVIDER
    voice_type: ClassVar[str] = "gemini"
    server_speaks_first: ClassVar[bool] = False

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        base_url: str = DEFAULT_BASE_URL,
        instructions: str = "",
        voice: str | Voice | Mapping[str, Any] = gl.DEFAULT_VOICE,
        tools: Sequence[Tool | Mapping[str, Any]] = (),
        automatic_activity_detection: bool = True,
        session_resumption: bool = True,
        temperature: float | None = None,
        deadlines: RealtimeDeadlines | None = None,
        max_reconnects: int = 2,
        max_input_backlog: float = 2.0,
        max_output_backlog: float = 120.0,
        extra_setup: Mapping[str, Any] | None = None,
    ) -> None:
        self._key = require_api_key(
            api_key, "GOOGLE_API_KEY", "Gemini Live", also=("GEMINI_API_KEY",)
        )
        if not model.strip():
            raise ConfigError(f"model must name a Live model, e.g. {DEFAULT_MODEL!r}")
        if isinstance(voice, str) and not voice.strip():
            raise ConfigError(f"voice must be a prebuilt voice name, e.g. {', '.join(gl.VOICES)}")
        self.model = model.strip()
        self.automatic_activity_detection = automatic_activity_detection
        self.session_resumption = session_resumption
        super().__init__(
            url=build_url(base_url, gl.PATH, {}),
            auth_hint=auth_hint("GOOGLE_API_KEY", "GEMINI_API_KEY"),
            instructions=instructions,
            voice=voice.strip() if isinstance(voice, str) else voice,
            tools=tools,
            turn_detection={"type": "server_vad"} if automatic_activity_detection else None,
            transcription={},
            temperature=temperature,
            input_sample_rate=gl.INPUT_RATE,
            output_sample_rate=gl.OUTPUT_RATE,
            deadlines=deadlines,
            max_reconnects=max_reconnects,
            max_input_backlog=max_input_backlog,
            max_output_backlog=max_output_backlog,
            extra_session=extra_setup,
        )

    # -- the protocol hook
    def protocol_state(self) -> RealtimeState:
        return gl.GeminiLiveState(
            model=self.model,
            input_rate=self.config.input_rate,
            output_rate=self.config.output_rate,
            automatic_activity_detection=self.automatic_activity_detection,
            session_resumption=self.session_resumption,
        )

    def check_config(self, cfg: SessionConfig) -> None:
        if cfg.input_rate != gl.INPUT_RATE or cfg.output_rate != gl.OUTPUT_RATE:
            raise ConfigError(
                f"Gemini Live takes {gl.INPUT_RATE} Hz in and sends {gl.OUTPUT_RATE} Hz out "
                "(push_audio() resamples any rate)"
            )
        if cfg.voice.type != "gemini":
            raise ConfigError(
                f"Gemini Live takes a prebuilt voice ({', '.join(gl.VOICES)}), not a "
                f"{cfg.voice.type} voice"
            )
        names = [t.name for t in cfg.tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"tool names must be unique, got {names}")

    def setup_messages(self, cfg: SessionConfig) -> list[str]:
        return [
            gl.encode_setup(
                cfg,
                model=self.model,
                automatic_activity_detection=self.automatic_activity_detection,
                session_resumption=self.session_resumption,
            )
        ]

    def update_messages(self, cfg: SessionConfig) -> list[str] | None:
        return None  # setup is once per connection: a new connection applies it

    async def connect_headers(self) -> Mapping[str, str]:
        return {"x-goog-api-key": self._key}

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return gl.close_error(
            code, reason, provider=self.provider, stage=stage, auth_hint=self.auth_hint
        )
