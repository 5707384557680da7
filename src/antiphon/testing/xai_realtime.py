"""A fake xAI Voice Agent server (``/v1/realtime``) for tests and demos.

It is :class:`~antiphon.testing.realtime.FakeRealtimeServer` (the OpenAI Realtime GA
schema: VAD, canned transcripts, synthetic speech, function calls, cancel and truncate,
every fault of its plan) with xAI's differences, as
:mod:`antiphon.protocols.xai_realtime` describes them: it greets with
``conversation.created``, reads the session in xAI's shape (``voice`` and
``turn_detection`` at its top, ``audio.*.format`` rates from 8 to 48 kHz) and refuses a
voice of another service, speaks a ``force_message`` item as is (a response of its own,
no ``response.create``), ignores ``response.create`` instructions, and sends a ``ping``
after every ``session.updated``. ``model`` is optional in the query. Built from xAI's
documentation and the clients that implement it (no typed schema is published, and the
``xai-sdk`` package has no realtime types to witness it).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from antiphon.protocols import realtime as rt
from antiphon.protocols import xai_realtime as xr
from antiphon.testing.realtime import (
    DEFAULT_API_KEY,
    FakeRealtimeServer,
    RealtimeConnection,
)

__all__ = ["DEFAULT_API_KEY", "FakeXAIRealtimeServer"]

_OPENAI_ONLY = frozenset({"type", "output_modalities", "tool_choice"})


class FakeXAIRealtimeServer(FakeRealtimeServer):
    """A loopback xAI Voice Agent server (see the module docstring); takes the arguments
    of :class:`~antiphon.testing.realtime.FakeRealtimeServer` except ``dialect``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, dialect="ga", **kwargs)
        self.path = xr.PATH

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != self.path:
            return connection.respond(404, f"unknown path {parts.path}; use {self.path}\n")
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return connection.respond(401, "invalid credentials\n")
        self.count_connection(connection)
        self.stats.queries.append({k: v[-1] for k, v in parse_qs(parts.query).items()})
        return None

    def connection(self, ws: ServerConnection, index: int) -> RealtimeConnection:
        return _XAIConnection(self, ws, index)


class _XAIConnection(RealtimeConnection):
    def __init__(self, server: FakeRealtimeServer, ws: ServerConnection, index: int) -> None:
        super().__init__(server, ws, index)
        self.session = {
            "id": server.next_id("sess"),
            "object": "realtime.session",
            "voice": xr.DEFAULT_VOICE,
            "turn_detection": {"type": "server_vad"},
        }

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        td = self.session.get("turn_detection")
        return td if isinstance(td, dict) else None

    async def on_open(self) -> None:
        conv = {"id": self.server.next_id("conv"), "object": "realtime.conversation"}
        with contextlib.suppress(ConnectionClosed):
            await self.send({"type": "conversation.created", "conversation": conv})

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "session.update":
            await self._session_update(msg.get("session"))
            return
        item = msg.get("item")
        if isinstance(item, dict) and item.get("type") == "force_message":
            await self._force_message(item)
            return
        if kind == "response.create" and isinstance(msg.get("response"), dict):
            msg = {**msg, "response": {}}  # xAI's response.create takes no instructions
        await super()._dispatch(msg)

    async def _session_update(self, session: object) -> None:
        if not isinstance(session, dict):
            await self._error("invalid_request_error", "missing_session", "no session")
            return
        foreign = sorted(_OPENAI_ONLY & set(session))
        if foreign:
            await self._error(
                "invalid_request_error", "unknown_parameter", f"unknown field(s) {foreign}"
            )
            return
        audio = session.get("audio") or {}
        for side in ("input", "output"):
            rate = ((audio.get(side) or {}).get("format") or {}).get("rate", 24000)
            if rate not in xr.RATES:
                await self._error("invalid_request_error", "invalid_value", f"rate {rate}")
                return
        voice = session.get("voice", xr.DEFAULT_VOICE)
        if not isinstance(voice, str):
            await self._error("invalid_request_error", "invalid_value", "voice is a string")
            return
        self.stats.session_updates += 1
        self.stats.sessions.append(session)
        self.session.update(session)
        await self.send({"type": "session.updated", "session": dict(self.session)})
        await self.send({"type": "ping", "timestamp": int(time.time() * 1000)})

    async def _force_message(self, item: dict[str, Any]) -> None:
        content = item.get("content") or []
        text = "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
        if not text:
            await self._error("invalid_request_error", "invalid_value", "empty force_message")
            return
        if self.busy():
            await self._error(
                "invalid_request_error",
                "conversation_already_has_active_response",
                "Conversation already has an active response",
            )
            return
        self._start_response(rt.SAY_PREFIX + text)  # spoken as is, as a say() is
