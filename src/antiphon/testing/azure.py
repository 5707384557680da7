"""Fake Azure Speech TTS servers for tests and offline demos.

Two fakes: :class:`FakeAzureTTS`, the REST endpoint (below), and
:class:`FakeAzureSpeechWs`, the Speech SDK's WebSocket endpoint for text streaming, which
the real SDK can be pointed at (see its docstring for the fault plan fields it follows).

:class:`FakeAzureTTS` is the REST endpoint, ``POST /cognitiveservices/v1``: a loopback
HTTP/1.1 server (keep-alive, chunked transfer encoding) that checks what the service
checks — path, method, credentials (``Ocp-Apim-Subscription-Key`` or ``Authorization:
Bearer``), ``Content-Type: application/ssml+xml``, ``X-Microsoft-OutputFormat``,
``User-Agent`` and well-formed SSML — and answers with
:func:`~antiphon.testing.synth.tone_for_text` of the SSML's text in the requested format
(raw or RIFF; PCM, mu-law or a-law), in 20 ms chunks.

Fault plan fields that apply to HTTP, in HTTP's terms:

- ``hang_connect``: accept TCP, read nothing, never answer.
- ``reject_status``: answer every request (or the first ``reject_requests``) with that
  status; 429 and 503 carry ``Retry-After: 1``.
- ``silent_after``: a request counts as two client messages (its head and its body, as
  text and flush on a WebSocket); once more than ``silent_after`` were read on a
  connection, requests get a ``200`` head and then nothing, neither audio nor the end of
  the body.
- ``close_mid_audio``: cut the body after ``close_after_chunks`` chunks, without the
  final chunk (``ABORT`` resets the TCP connection, any other value closes it).
- ``drop_before_audio``: close the connection after reading each of the first N requests.
- ``first_audio_delay``, ``chunk_interval``, ``odd_chunking``: as named.
- ``audio_after_done``: write that many chunks of stale audio on the connection after
  the body's final chunk (a keep-alive connection the client must not reuse).
- ``idle_close_after`` / ``max_connection_age``: close keep-alive connections idle for
  that long / older than that (a busy one after its response).

Not applicable (no upgrade, close frames, in-band messages or cancel message in HTTP):
``close_on_open``, ``close_on_open_reason``, ``close_reason``, ``error_mid_stream``,
``malformed_mid_stream``, ``audio_after_clear``, ``ignore_clear``. A client's cancel is
an aborted response; ``stats.cancels`` counts the ones the fake noticed before the end.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from antiphon.audio.codecs import alaw_encode, ulaw_encode
from antiphon.errors import ConfigError
from antiphon.protocols import azure_tts as az
from antiphon.testing.faults import FaultPlan
from antiphon.testing.http_server import FakeHttpServer, HttpConnection
from antiphon.testing.server import FakeWsServer, WsConnection
from antiphon.testing.synth import tone_for_text

__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_API_KEY",
    "DEFAULT_TOKEN",
    "MAX_BODY",
    "AzureFakeStats",
    "FakeAzureSpeechWs",
    "FakeAzureTTS",
    "FakeRequest",
    "SpeechWsStats",
    "synthesize",
]

DEFAULT_API_KEY = "test-key"
DEFAULT_TOKEN = "test-token"
CHUNK_SECONDS = 0.02
MAX_BODY = 1024 * 1024
_CONTENT_TYPES = {"linear16": "audio/L16", "mulaw": "audio/basic", "alaw": "audio/x-alaw"}


def synthesize(text: str, output_format: str = az.DEFAULT_OUTPUT_FORMAT) -> bytes:
    """The exact audio payload the fake sends for ``text`` (without a RIFF header)."""
    fmt = az.resolve_output_format(output_format)
    pcm = tone_for_text(text, fmt.sample_rate)
    if fmt.encoding == "mulaw":
        return bytes(ulaw_encode(pcm))
    if fmt.encoding == "alaw":
        return bytes(alaw_encode(pcm))
    return pcm


@dataclass(frozen=True, slots=True)
class FakeRequest:
    """One request as the fake read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int


@dataclass
class AzureFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    open_connections: int = 0
    requests: list[FakeRequest] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)
    """The SSML text of every request answered with audio, in order."""
    cancels: int = 0
    """Responses the client aborted before their end (as far as the fake noticed)."""
    cut_bodies: int = 0
    dropped_requests: int = 0
    idle_closes: int = 0
    audio_bytes: int = 0


class FakeAzureTTS(FakeHttpServer):
    """``http://127.0.0.1:PORT/cognitiveservices/v1`` with Azure's TTS REST protocol.

    ``reject_requests``: with ``plan.reject_status``, refuse only that many requests, then
    answer normally (e.g. one 429 with ``Retry-After``, then audio).
    """

    stats: AzureFakeStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        token: str | None = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        reject_requests: int | None = None,
    ) -> None:
        super().__init__(
            plan, api_key=api_key, host=host, port=port, reject_requests=reject_requests
        )
        self.token = token
        self.stats = AzureFakeStats()
        self._request_ids = itertools.count()

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> _Conn:
        return _Conn(self, reader, writer, index)


class _Conn(HttpConnection[FakeRequest]):
    """One client connection of the fake: requests one after another (keep-alive)."""

    MAX_BODY = MAX_BODY
    CHUNKED_OVERFLOW = "truncate"
    WRITE_CHECKS_EOF = False

    def __init__(
        self,
        server: FakeAzureTTS,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        index: int,
    ) -> None:
        super().__init__(server, reader, writer, index)
        self.server = server
        self.stats = server.stats
        self.messages = 0

    def make_request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> FakeRequest:
        return FakeRequest(method, target.split("?", 1)[0], headers, body, self.index)

    def on_request(self, request: FakeRequest) -> None:
        self.messages += 2

    def error_text(self, status: int, message: str | None) -> str:
        return (message or "request body too large") + "\n"

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        return [
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {length}",
            f"X-RequestId: fake-{next(self.server._request_ids)}",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        extra = {"Retry-After": "1"} if status in (429, 503) else {}
        return f"rejected by fault plan ({status})\n", extra

    async def answer(self, request: FakeRequest, keep_alive: bool) -> bool:
        plan = self.plan
        fmt = az.resolve_output_format(request.headers["x-microsoft-outputformat"])
        text = az.parse_ssml(request.body).text
        silent = plan.silent_after is not None and self.messages > plan.silent_after
        ctype = "audio/x-wav" if fmt.container == "riff" else _CONTENT_TYPES[fmt.encoding]
        await self.write_head(
            [
                f"Content-Type: {ctype}",
                "Transfer-Encoding: chunked",
                f"X-RequestId: fake-{next(self.server._request_ids)}",
                "Connection: " + ("keep-alive" if keep_alive else "close"),
            ]
        )
        if silent:
            await self.hang()
        self.stats.spoken.append(text)
        return await self._speak(text, fmt) and keep_alive

    def check(self, request: FakeRequest) -> tuple[int, str] | None:
        problem = self._check(request)
        return None if problem is None else (problem[0], problem[1] + "\n")

    def _check(self, request: FakeRequest) -> tuple[int, str] | None:
        h = request.headers
        if request.path.rstrip("/") != az.REST_PATH:
            return 404, f"unknown path {request.path}; use {az.REST_PATH}"
        if request.method != "POST":
            return 405, "use POST"
        key = h.get("ocp-apim-subscription-key")
        auth = h.get("authorization")
        ok = (key is not None and key == self.server.api_key) or (
            auth is not None
            and self.server.token is not None
            and auth == f"Bearer {self.server.token}"
        )
        if not ok:
            return 401, "Unauthorized: invalid or missing subscription key or token"
        if h.get("content-type", "").split(";")[0].strip().lower() != "application/ssml+xml":
            return 415, "Content-Type must be application/ssml+xml"
        agent = h.get("user-agent", "")
        if not agent or len(agent) >= 255:
            return 400, "User-Agent is required and must be shorter than 255 characters"
        fmt_name = h.get("x-microsoft-outputformat", "")
        try:
            az.resolve_output_format(fmt_name)
        except ConfigError:
            return 400, f"unsupported X-Microsoft-OutputFormat {fmt_name!r}"
        try:
            az.parse_ssml(request.body)
        except az.SsmlError as exc:
            return 400, f"invalid SSML: {exc}"
        return None

    async def _speak(self, text: str, fmt: az.OutputFormat) -> bool:
        """Stream the audio; False if the connection must close afterwards."""
        payload = synthesize(text, fmt.name)
        data = az.riff_header(fmt, len(payload)) + payload if fmt.container == "riff" else payload
        step = round(CHUNK_SECONDS * fmt.sample_rate) * fmt.sample_width
        if self.plan.odd_chunking and fmt.sample_width == 2:
            step += 1
        stale = synthesize("stale audio", fmt.name)[:step]
        return await self.stream_audio(data, step, stale=stale)


# --------------------------------------------------------------------------- Speech SDK


@dataclass
class SpeechWsStats:
    """What the Speech SDK WebSocket fake saw and did."""

    connections: int = 0
    open_connections: int = 0
    paths: list[str] = field(default_factory=list)
    """The ``Path`` of every client message, in order."""
    contexts: list[dict[str, Any]] = field(default_factory=list)
    """Every ``synthesis.context`` body."""
    spoken: list[str] = field(default_factory=list)
    stops: int = 0
    audio_bytes: int = 0
    closes_sent: list[int] = field(default_factory=list)


class FakeAzureSpeechWs(FakeWsServer):
    """``ws://127.0.0.1:PORT/cognitiveservices/websocket/v2``: the Speech SDK's TTS protocol.

    Enough of the (undocumented) protocol for the real SDK to synthesise text streams
    against it: ``speech.config``, ``synthesis.context``, ``text.piece``, ``text.end`` and
    ``synthesis.control`` in; ``turn.start``, ``response``, binary ``audio`` frames and
    ``turn.end`` out. A request's audio, :func:`~antiphon.testing.synth.tone_for_text` of
    all its text pieces, follows its ``text.end``. Point the SDK at it with
    ``SpeechConfig(endpoint=fake.url + WS_V2_PATH, subscription=key)``.

    Fault plan fields that apply: ``hang_connect``, ``reject_status``, ``close_on_open``,
    ``silent_after``, ``close_mid_audio`` (+ ``close_after_chunks``, ``close_reason``),
    ``drop_before_audio`` (close 1011 at the first ``text.end``), ``malformed_mid_stream``
    (a frame without headers and an unknown ``Path``), ``audio_after_done`` (audio frames
    after ``turn.end``), ``audio_after_clear`` (audio after a stop), ``first_audio_delay``,
    ``chunk_interval``, ``odd_chunking``, ``idle_close_after``, ``max_connection_age``.
    Not applicable: ``error_mid_stream`` (no in-band error message is known),
    ``ignore_clear`` (a stop is never acknowledged).
    """

    stats: SpeechWsStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        token: str | None = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, host=host, port=port)
        self.api_key = api_key
        self.token = token
        self.stats = SpeechWsStats()

    @property
    def endpoint(self) -> str:
        """The ``endpoint`` to give ``SpeechConfig``."""
        return self.url + az.WS_V2_PATH

    def check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0].rstrip("/")
        if path != az.WS_V2_PATH:
            return connection.respond(404, f"unknown path {path}; text streaming uses v2\n")
        key = request.headers.get("Ocp-Apim-Subscription-Key")
        auth = request.headers.get("Authorization")
        if not (
            (key is not None and key == self.api_key)
            or (auth is not None and self.token is not None and auth == f"Bearer {self.token}")
        ):
            return connection.respond(401, "Unauthorized\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        self.stats.connections += 1
        await self.run(_WsConn(self, ws, self.stats.connections - 1))


class _WsConn(WsConnection):
    """One SDK connection: requests one after another, as the SDK sends them."""

    IDLE_CLOSE = (1000, "idle timeout")
    AGE_CLOSE = (1000, "maximum connection duration")

    def __init__(self, server: FakeAzureSpeechWs, ws: ServerConnection, index: int) -> None:
        super().__init__(server, ws, index=index)
        self.stats = server.stats
        self.requests = 0  # client messages but telemetry (what silent_after counts)
        self.formats: dict[str, az.OutputFormat] = {}
        self.texts: dict[str, list[str]] = {}
        self.speaking: asyncio.Task[None] | None = None
        self.speaking_id = ""
        self.stream_ids = itertools.count(1)

    def busy(self) -> bool:
        return self.speaking is not None and not self.speaking.done()

    async def on_frame(self, raw: str | bytes) -> bool:
        plan = self.plan
        try:
            msg = az.parse_ws_message(raw)
        except ValueError:
            await self.close(1007, "malformed message")
            return False
        path = msg.path
        self.stats.paths.append(path)
        if path == "telemetry":
            return True
        self.requests += 1
        if plan.silent_after is not None and self.requests > plan.silent_after:
            return True
        rid = msg.request_id
        if path == "synthesis.context":
            body = msg.json()
            ctx = body if isinstance(body, dict) else {}
            self.stats.contexts.append(ctx)
            name = ctx.get("synthesis", {}).get("audio", {}).get("outputFormat", "")
            try:
                self.formats[rid] = az.resolve_output_format(name)
            except ConfigError:
                await self.close(1007, f"unsupported output format {name!r}")
                return False
            self.texts[rid] = []
        elif path == "text.piece":
            self.texts.setdefault(rid, []).append(msg.body.decode("utf-8"))
        elif path == "text.end":
            if self.index < plan.drop_before_audio:
                await self.close(1011, "dropped by fault plan")
                return False
            if self.speaking is not None:
                await asyncio.wait([self.speaking])
            text = "".join(self.texts.pop(rid, []))
            fmt = self.formats.pop(rid, az.resolve_output_format(az.DEFAULT_OUTPUT_FORMAT))
            self.speaking_id = rid
            self.speaking = self.spawn(self._speak(rid, text, fmt))
        elif path == "synthesis.control":
            await self._stop(rid)
        return True

    async def _stop(self, rid: str) -> None:
        self.stats.stops += 1
        task = self.speaking
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait([task])
        for _ in range(self.plan.audio_after_clear):
            await self._send_audio(self.speaking_id, "stale", bytes(960))

    async def _send_audio(self, rid: str, sid: str, chunk: bytes) -> None:
        await self.ws.send(az.encode_ws_audio(rid, sid, chunk))
        self.chunks_sent += 1
        self.stats.audio_bytes += len(chunk)

    async def _speak(self, rid: str, text: str, fmt: az.OutputFormat) -> None:
        plan = self.plan
        self.stats.spoken.append(text)
        sid = f"stream-{next(self.stream_ids)}"
        try:
            await self.ws.send(
                az.encode_ws_text(
                    "turn.start", rid, json.dumps({"context": {"serviceTag": "fake"}})
                )
            )
            await self.ws.send(
                az.encode_ws_text(
                    "response", rid, json.dumps({"audio": {"type": "inline", "streamId": sid}})
                )
            )
            if plan.first_audio_delay:
                await asyncio.sleep(plan.first_audio_delay)
            audio = synthesize(text, fmt.name)
            step = round(CHUNK_SECONDS * fmt.sample_rate) * fmt.sample_width
            if plan.odd_chunking and fmt.sample_width == 2:
                step += 1

            async def send(chunk: bytes) -> None:
                await self._send_audio(rid, sid, chunk)

            malformed = ("no headers here", az.encode_ws_text("something.new", rid, "{}"))
            if not await self.stream_audio(audio, step, send, malformed=malformed):
                return
            await self.ws.send(az.encode_ws_text("turn.end", rid, "{}"))
            for _ in range(plan.audio_after_done):
                await self._send_audio(rid, sid, audio[:step])
        except ConnectionClosed:
            return
