"""The realtime service: :class:`RealtimeModel` owns its sessions' tasks;
:class:`WebSocketRealtimeModel` is the base of the plugins that speak the OpenAI Realtime
schema over a WebSocket (URL, dialect, headers, session configuration)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

from antiphon.aio.tasks import TaskOwner
from antiphon.errors import ConfigError, ProviderError, StreamClosedError
from antiphon.net.ws import WsConnection, WsOptions, connect
from antiphon.protocols import realtime as rt
from antiphon.protocols.realtime import (
    Dialect,
    SessionConfig,
    Tool,
    Voice,
    tools_from_config,
    voice_from_config,
)
from antiphon.services.realtime.events import RealtimeDeadlines
from antiphon.services.realtime.session import RealtimeSession

__all__ = ["RealtimeModel", "WebSocketRealtimeModel"]

# --------------------------------------------------------------------------- the model


class RealtimeModel(ABC):
    """A speech-to-speech model; ``session()`` opens a conversation.

    Owns every task its sessions start; ``aclose()`` closes live sessions within their
    deadlines. Use ``async with`` or call ``aclose()``.
    """

    provider: ClassVar[str] = "realtime"
    #: The type of a voice given as a plain name (``openai``, ``gemini``, ``xai``).
    voice_type: ClassVar[str] = "openai"

    def __init__(
        self,
        *,
        instructions: str = "",
        voice: str | Voice | Mapping[str, Any] = "alloy",
        tools: Sequence[Tool | Mapping[str, Any]] = (),
        input_sample_rate: int = 24000,
        output_sample_rate: int = 24000,
        deadlines: RealtimeDeadlines | None = None,
    ) -> None:
        self.instructions = instructions
        self.voice = voice_from_config(voice, self.voice_type)
        self.tools = tools_from_config(tools)
        self.input_sample_rate = input_sample_rate
        self.output_sample_rate = output_sample_rate
        self.deadlines = deadlines or RealtimeDeadlines()
        self._tasks = TaskOwner(f"realtime:{self.provider}")
        self._sessions: set[RealtimeSession] = set()
        self._closed = False

    @abstractmethod
    def session(self) -> RealtimeSession:
        """A new, not yet connected session: ``async with model.session() as s``."""

    @property
    def active_sessions(self) -> int:
        return sum(1 for s in self._sessions if not s.done)

    async def aclose(self) -> None:
        """Close live sessions and stop every task; idempotent and bounded."""
        self._closed = True
        sessions = list(self._sessions)
        if sessions:
            await asyncio.gather(*(s.aclose() for s in sessions))
        await self._tasks.aclose(self.deadlines.close * 2)
        self._sessions.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class WebSocketRealtimeModel(RealtimeModel):
    """Base of the plugins that speak the OpenAI Realtime schema over a WebSocket.

    A plugin supplies ``url``, ``dialect``, handshake headers (:meth:`connect_headers`),
    an auth hint, and the parts of :class:`SessionConfig` its service adds.
    ``max_reconnects``: how often a session may move to a new connection after a drop.
    ``max_input_backlog``: seconds of input audio allowed to wait for the socket.
    ``max_output_backlog``: seconds of agent audio the consumer may fall behind before the
    session fails.
    """

    dialect: ClassVar[Dialect] = Dialect.GA

    def __init__(
        self,
        *,
        url: str,
        auth_hint: str,
        max_reconnects: int = 2,
        max_input_backlog: float = 2.0,
        max_output_backlog: float = 120.0,
        turn_detection: Mapping[str, Any] | None = None,
        transcription: Mapping[str, Any] | None = None,
        noise_reduction: Mapping[str, Any] | None = None,
        echo_cancellation: Mapping[str, Any] | None = None,
        temperature: float | None = None,
        extra_session: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_reconnects < 0:
            raise ConfigError("max_reconnects must be >= 0")
        for name, value in (
            ("max_input_backlog", max_input_backlog),
            ("max_output_backlog", max_output_backlog),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")
        self.url = url
        self.auth_hint = auth_hint
        self.max_reconnects = max_reconnects
        self.max_input_backlog = max_input_backlog
        self.max_output_backlog = max_output_backlog
        self.config = SessionConfig(
            instructions=self.instructions,
            voice=self.voice,
            tools=self.tools,
            input_rate=self.input_sample_rate,
            output_rate=self.output_sample_rate,
            turn_detection=turn_detection,
            transcription=transcription,
            noise_reduction=noise_reduction,
            echo_cancellation=echo_cancellation,
            temperature=temperature,
            extra=dict(extra_session or {}),
        )
        self.check_config(self.config)
        self._ws_options = WsOptions(
            connect_timeout=self.deadlines.connect,
            send_timeout=self.deadlines.send,
            close_timeout=self.deadlines.close,
        )

    # -- the protocol hook: a plugin whose wire protocol is not the OpenAI Realtime schema
    #    (Gemini Live) overrides these four, and its state's ``audio`` and ``feed_all``;
    #    the defaults speak the OpenAI schema.

    #: The server speaks first (``session.created``) before the client configures it.
    server_speaks_first: ClassVar[bool] = True
    #: Seconds within which a configuration that needs a new connection is applied.
    move_within: ClassVar[float] = 10.0

    def protocol_state(self) -> rt.RealtimeState:
        """A new state machine for one session (it lives across the session's connections)."""
        return rt.RealtimeState(self.dialect, output_rate=self.config.output_rate)

    def check_config(self, cfg: SessionConfig) -> None:
        """Refuse a configuration this service cannot carry (ConfigError)."""
        cfg.check(self.dialect)

    def setup_messages(self, cfg: SessionConfig) -> list[str]:
        """What configures a new connection (the first messages after it opened)."""
        return [rt.encode_session_update(self.dialect, cfg)]

    def update_messages(self, cfg: SessionConfig) -> list[str] | None:
        """What applies a changed configuration to the open connection; None: only a new
        connection can (the session moves when the protocol can resume, at a quiet
        moment within :attr:`move_within` seconds; else the next connection applies it)."""
        return self.setup_messages(cfg)

    @abstractmethod
    async def connect_headers(self) -> Mapping[str, str]:
        """Handshake headers for a new connection (credentials: never log them)."""

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        """The typed error for a server close (``retryable`` decides about reconnecting)."""
        return rt.close_error(
            code, reason, provider=self.provider, stage=stage, auth_hint=self.auth_hint
        )

    async def _connect(self) -> WsConnection:
        return await connect(
            self.url,
            provider=self.provider,
            headers=await self.connect_headers(),
            options=self._ws_options,
            auth_hint=self.auth_hint,
        )

    def session(self) -> RealtimeSession:
        if self._closed:
            raise StreamClosedError(f"{self.provider} realtime model is closed; create a new one")
        self._sessions = {s for s in self._sessions if not s.done}
        s = RealtimeSession(self)
        self._sessions.add(s)
        return s
