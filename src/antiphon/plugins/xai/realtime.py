"""xAI's Voice Agent API (speech to speech) over WebSocket: ``wss://api.x.ai/v1/realtime``.

``Authorization: Bearer`` with an API key (or an ephemeral client secret). The wire
protocol is :mod:`antiphon.protocols.xai_realtime` (the OpenAI Realtime GA schema with
xAI's differences); the session is the shared
:class:`~antiphon.services.realtime.RealtimeSession`. PCM16 at 24 kHz both ways by default
(8 to 48 kHz can be configured). See ``docs/xai-realtime.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from antiphon.errors import ConfigError
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import xai_realtime as xr
from antiphon.protocols.realtime import (
    Dialect,
    RealtimeState,
    SessionConfig,
    Tool,
    Voice,
    build_url,
)
from antiphon.services.realtime import RealtimeDeadlines, WebSocketRealtimeModel

__all__ = ["DEFAULT_BASE_URL", "PROVIDER", "XAIRealtime"]

PROVIDER = "xai"
DEFAULT_BASE_URL = "wss://api.x.ai"


class XAIRealtime(WebSocketRealtimeModel):
    """xAI's Grok voice agent.

    Args:
        api_key: defaults to ``$XAI_API_KEY`` (an ephemeral client secret works too).
        model: a voice model (``grok-voice-fast-1.0``, ``grok-voice-think-fast-1.0``...).
        base_url: ``wss://...``; a local fake at ``ws://127.0.0.1:PORT``.
        voice: an xAI voice (``eve``, ``ara``, ``rex``, ``sal``, ``leo``) or a custom voice
            id, or a :class:`Voice` of type ``xai``.
        turn_detection: ``{"type": "server_vad", ...}`` (the default, with ``server_vad``)
            or None with ``server_vad=False``: end turns with ``commit_audio()``.
        transcription: ``audio.input.transcription`` (e.g. ``{"language_hint": "en"}``);
            None: the server's default.
        input_sample_rate, output_sample_rate: PCM16 rates on the wire (:data:`xr.RATES`).
        max_input_backlog: seconds of input audio that may wait for the socket before
            the session fails (default 2.0).
        max_output_backlog: seconds of agent audio the consumer may fall behind before
            the session fails (default 120.0).
        extra_session: more session fields as given (server tools, ``reasoning``...).

    Raises:
        ConfigError: no key, an empty model, a non-positive backlog, or a setting xAI
            cannot carry.
    """

    provider: ClassVar[str] = PROVIDER
    voice_type: ClassVar[str] = "xai"
    dialect: ClassVar[Dialect] = Dialect.GA

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = xr.DEFAULT_MODEL,
        base_url: str = DEFAULT_BASE_URL,
        instructions: str = "",
        voice: str | Voice | Mapping[str, Any] = xr.DEFAULT_VOICE,
        tools: Sequence[Tool | Mapping[str, Any]] = (),
        turn_detection: Mapping[str, Any] | None = None,
        server_vad: bool = True,
        transcription: Mapping[str, Any] | None = None,
        input_sample_rate: int = 24000,
        output_sample_rate: int = 24000,
        deadlines: RealtimeDeadlines | None = None,
        max_reconnects: int = 2,
        max_input_backlog: float = 2.0,
        max_output_backlog: float = 120.0,
        extra_session: Mapping[str, Any] | None = None,
    ) -> None:
        self._key = require_api_key(
            api_key,
            "XAI_API_KEY",
            "xAI's voice agent",
            how="or pass an ephemeral client secret as api_key",
        )
        if not model.strip():
            raise ConfigError(f"model must name a voice model, e.g. {xr.DEFAULT_MODEL!r}")
        self.model = model.strip()
        if turn_detection is None and server_vad:
            turn_detection = {"type": "server_vad"}
        super().__init__(
            url=build_url(base_url, xr.PATH, {"model": self.model}),
            auth_hint=auth_hint("XAI_API_KEY"),
            instructions=instructions,
            voice=voice,
            tools=tools,
            turn_detection=turn_detection,
            transcription=transcription,
            input_sample_rate=input_sample_rate,
            output_sample_rate=output_sample_rate,
            deadlines=deadlines,
            max_reconnects=max_reconnects,
            max_input_backlog=max_input_backlog,
            max_output_backlog=max_output_backlog,
            extra_session=extra_session,
        )

    # -- the protocol hook
    def protocol_state(self) -> RealtimeState:
        return xr.XAIRealtimeState(output_rate=self.config.output_rate)

    def check_config(self, cfg: SessionConfig) -> None:
        xr.check_config(cfg)

    def setup_messages(self, cfg: SessionConfig) -> list[str]:
        return [xr.encode_session_update(cfg)]

    async def connect_headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self._key}"}
