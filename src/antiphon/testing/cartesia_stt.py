"""A fake Cartesia Ink STT server (``/stt/websocket``, manual finalize).

It speaks the protocol on loopback: checks the path, ``Authorization: Bearer <key>``
and ``Cartesia-Version``, and the query (``model``, ``encoding``, ``sample_rate``,
``language``, ``keyterm`` repeated); takes binary audio, sends non-final ``transcript``
chunks while a phrase is heard (the text since the last final chunk), answers
``finalize`` with the final chunk of what is buffered (``words`` timed in seconds of the
connection's audio) and ``flush_done``, and ``close`` with the last final chunk,
``done`` and a 1000 close. Every message it sends is in :attr:`FakeCartesiaSTT.sent`.

Recognition is the shared one of :mod:`antiphon.testing.listening`.

Fault plan fields that apply: ``hang_connect``, ``reject_status``, ``close_on_open``;
``silent_after`` (client messages); ``close_mid_audio`` and ``error_mid_stream`` (an
``error`` with status 500, then close 1011) after ``close_after_chunks`` audio messages;
``drop_before_audio`` (close 1011 at the first finalize/close of the first N
connections, before answering); ``malformed_mid_stream``; ``audio_after_done`` (stale
chunks after ``done``); ``first_audio_delay``; ``chunk_interval``; ``idle_close_after``
and ``max_connection_age`` (close 1011).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import ConfigError
from antiphon.protocols import cartesia_stt as ink
from antiphon.testing.faults import FaultPlan
from antiphon.testing.listening import FakeListenServer, ListenerConnection, ListenerStats

__all__ = ["DEFAULT_API_KEY", "CartesiaSTTFakeStats", "FakeCartesiaSTT"]

DEFAULT_API_KEY = "test-key"
INTERIM_EVERY = 0.25


@dataclass
class CartesiaSTTFakeStats(ListenerStats):
    """What the fake saw and did (read it from the test after the fact)."""

    queries: list[dict[str, list[str]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    """The text commands received (``finalize``, ``close``), in order."""


class FakeCartesiaSTT(FakeListenServer):
    """``ws://127.0.0.1:PORT/stt/websocket`` with Cartesia's Ink STT protocol."""

    stats: CartesiaSTTFakeStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        vocabulary: Iterable[str] = (),
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, vocabulary=vocabulary, api_key=api_key, host=host, port=port)
        self.stats = CartesiaSTTFakeStats()
        self.sent: list[dict[str, Any]] = []

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != ink.PATH:
            return connection.respond(404, f"unknown path {parts.path}; use {ink.PATH}\n")
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return connection.respond(401, '{"message": "Invalid API key"}')
        if not request.headers.get("Cartesia-Version"):
            return connection.respond(400, '{"message": "Cartesia-Version is required"}')
        q = parse_qs(parts.query)
        try:
            ink.options_from_query(q)
        except ConfigError as exc:
            return connection.respond(400, json.dumps({"message": str(exc)}))
        self.count_connection(connection)
        self.stats.queries.append(q)
        self.stats.headers.append({k: v for k, v in request.headers.raw_items()})
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        options = ink.options_from_query(parse_qs(urlsplit(ws.request.path).query))
        await self.run(_Conn(self, ws, index=self.take_index(ws), options=options))


class _Conn(ListenerConnection):
    """One client connection of the fake."""

    def __init__(
        self, server: FakeCartesiaSTT, ws: ServerConnection, *, index: int, options: ink.InkOptions
    ) -> None:
        super().__init__(server, ws, index=index, rate=options.sample_rate)
        self.server = server
        self.stats = server.stats
        self.options = options
        self.request_id = f"req-{index}"

    async def send_json(self, msg: dict[str, Any]) -> None:
        self.server.sent.append(msg)
        await super().send_json(msg)

    def decode(self, wire: bytes) -> npt.NDArray[np.int16]:
        pcm = wire if self.options.width == 2 else decode_to_pcm("mulaw", wire)
        return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")

    async def send_failure(self) -> None:
        await self.send_json(
            {
                "type": "error",
                "message": "Internal error (fault plan)",
                "status_code": 500,
                "title": "Internal Server Error",
                "request_id": self.request_id,
            }
        )
        await self.close(1011, "internal error")

    async def on_control(self, kind: str | None, msg: Any, raw: str) -> bool:
        self.stats.commands.append(raw)
        if raw == ink.FINALIZE:
            if not await self.answer_gate():
                return False
            await self._final_chunk()
            await self.send_json({"type": "flush_done", "request_id": self.request_id})
            return True
        if raw == ink.CLOSE:
            if not await self.answer_gate():
                return False
            await self._final_chunk()
            await self.send_json({"type": "done", "request_id": self.request_id})
            for _ in range(self.plan.audio_after_done):
                await self.ws.send(
                    json.dumps(
                        {
                            "type": "transcript",
                            "is_final": False,
                            "text": "stale",
                            "request_id": self.request_id,
                        }
                    )
                )
            await self.close(1000, "")
            return False
        await self.send_json(
            {
                "type": "error",
                "message": f"unknown command {raw[:40]!r}",
                "status_code": 400,
                "title": "Bad Request",
                "request_id": self.request_id,
            }
        )
        await self.close(1008, "bad request")
        return False

    # -- recognition
    async def _send_chunk(self, upto: int, *, final: bool) -> None:
        await self.first_answer()
        words = [w for run in self.runs(self.finalized) for w in self.heard(run, upto)]
        if not words and not final:
            return
        text = " ".join(w[0] for w in words)
        msg: dict[str, Any] = {
            "type": "transcript",
            "is_final": final,
            "text": (" " + text) if final and text else text,
            "request_id": self.request_id,
            "duration": round(upto / self.rate, 3),
            "language": self.options.language or "en",
        }
        if words:
            msg["words"] = [
                {
                    "words": [w[0] for w in words],
                    "start": [round(w[1], 3) for w in words],
                    "end": [round(w[2], 3) for w in words],
                }
            ]
        await self.send_json(msg)
        if self.plan.chunk_interval:
            await asyncio.sleep(self.plan.chunk_interval)

    async def advance(self) -> None:
        """After new audio: a non-final chunk of what is heard since the last final."""
        if self.samples - self.last_interim >= INTERIM_EVERY * self.rate and self.runs(
            self.finalized
        ):
            self.last_interim = self.samples
            await self._send_chunk(self.samples, final=False)

    async def _final_chunk(self) -> None:
        await self._send_chunk(self.samples, final=True)
        self.finalized = self.last_interim = self.samples
