"""OpenAI Realtime (GA) over WebSocket: ``wss://api.openai.com/v1/realtime?model=...``.

GA event names and nested session shape (``session.audio.input.format``), PCM16 at
24 kHz both ways, ``Authorization: Bearer`` with an API key or an ephemeral client secret
and no ``OpenAI-Beta`` header. The session itself is
:class:`~antiphon.services.realtime.RealtimeSession`; see ``docs/realtime.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from antiphon.errors import ConfigError
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols.realtime import Dialect, Tool, Voice, build_url
from antiphon.services.realtime import RealtimeDeadlines, WebSocketRealtimeModel

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "PATH", "PROVIDER", "OpenAIRealtime"]

PROVIDER = "openai"
DEFAULT_BASE_URL = "wss://api.openai.com"
PATH = "/v1/realtime"
DEFAULT_MODEL = "gpt-realtime"


class OpenAIRealtime(WebSocketRealtimeModel):
    """OpenAI's speech-to-speech Realtime model.

    ``api_key`` defaults to ``$OPENAI_API_KEY``. ``base_url`` may point at a local fake
    (``ws://127.0.0.1:PORT``). ``voice``: one of the OpenAI voice names. ``turn_detection``
    defaults to ``{"type": "server_vad"}``; pass ``None`` to end turns with
    ``commit_audio()``. ``noise_reduction``: ``{"type": "near_field"|"far_field"}``.
    ``max_input_backlog``: seconds of input audio that may wait for the socket before the
    session fails (default 2.0); ``max_output_backlog``: seconds of agent audio the consumer
    may fall behind before the session fails (default 120.0).
    """

    provider: ClassVar[str] = PROVIDER
    dialect: ClassVar[Dialect] = Dialect.GA

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        base_url: str = DEFAULT_BASE_URL,
        instructions: str = "",
        voice: str | Voice | Mapping[str, Any] = "alloy",
        tools: Sequence[Tool | Mapping[str, Any]] = (),
        turn_detection: Mapping[str, Any] | None = None,
        server_vad: bool = True,
        transcription: Mapping[str, Any] | None = None,
        noise_reduction: Mapping[str, Any] | None = None,
        deadlines: RealtimeDeadlines | None = None,
        max_reconnects: int = 2,
        max_input_backlog: float = 2.0,
        max_output_backlog: float = 120.0,
        extra_session: Mapping[str, Any] | None = None,
    ) -> None:
        self._key = require_api_key(
            api_key,
            "OPENAI_API_KEY",
            "OpenAI Realtime",
            how="or pass an ephemeral client secret as api_key",
        )
        if not model:
            raise ConfigError("model must name a realtime model, e.g. 'gpt-realtime'")
        self.model = model
        if turn_detection is None and server_vad:
            turn_detection = {"type": "server_vad"}
        super().__init__(
            url=build_url(base_url, PATH, {"model": model}),
            auth_hint=auth_hint("OPENAI_API_KEY"),
            instructions=instructions,
            voice=voice,
            tools=tools,
            turn_detection=turn_detection,
            transcription=transcription if transcription is not None else {"model": "whisper-1"},
            noise_reduction=noise_reduction,
            deadlines=deadlines,
            max_reconnects=max_reconnects,
            max_input_backlog=max_input_backlog,
            max_output_backlog=max_output_backlog,
            extra_session=extra_session,
        )

    async def connect_headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self._key}"}
