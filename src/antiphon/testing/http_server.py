"""Base of the fake HTTP provider servers (chat completions, messages, REST TTS).

:class:`FakeHttpServer` is a loopback HTTP/1.1 server on ``asyncio.start_server``: it
listens, keeps each connection's handler task and writer so :meth:`~FakeHttpServer.aclose`
cuts them all, and counts connections. Each connection is an :class:`HttpConnection`:
requests one after another (keep-alive) until the plan's idle timeout or maximum age,
a request line, headers and a body (``Content-Length`` or chunked) read per request,
then the plan's request faults (``drop_before_audio``, ``reject_status`` with
``reject_requests`` and a ``Retry-After``), the fake's own checks, and the fake's answer.
:meth:`HttpConnection.stream_sse` streams a server-sent-event body with the plan's
mid-stream faults. A fake subclasses both and adds only its protocol: what it checks,
its error bodies and headers, and what it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from antiphon.testing.faults import ABORT, FaultPlan
from antiphon.testing.server import LoopbackServer

__all__ = ["FakeHttpServer", "HttpClosed", "HttpConnection", "reason_phrase"]


class HttpClosed(Exception):
    """The client went away."""


def reason_phrase(status: int) -> str:
    """The reason phrase of an HTTP status (``Unknown`` for a made-up one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class HttpStats(Protocol):
    """The statistics every HTTP fake keeps."""

    connections: int
    open_connections: int
    requests: list[Any]
    statuses: list[int]
    dropped_requests: int
    idle_closes: int
    cancels: int


R = TypeVar("R")
_StreamError = (asyncio.IncompleteReadError, asyncio.LimitOverrunError)


class FakeHttpServer(LoopbackServer):
    """A loopback HTTP/1.1 server that speaks one provider's API with a FaultPlan.

    ``reject_requests``: with ``plan.reject_status``, refuse only that many requests, then
    answer normally. Subclasses make their connections in :meth:`connection`.
    """

    scheme = "http"
    stats: HttpStats

    def __init__(
        self,
        plan: FaultPlan | None,
        *,
        api_key: str,
        host: str,
        port: int,
        reject_requests: int | None,
    ) -> None:
        super().__init__(plan, host=host, port=port)
        self.api_key = api_key
        self.reject_requests = reject_requests
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._rejected = 0

    async def start(self) -> str:
        """Listen and return the URL (``http://127.0.0.1:PORT``)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def aclose(self) -> None:
        """Stop listening, cut every connection and wait (bounded) for the handlers."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        handlers = list(self._handlers)
        if handlers:  # aborted sockets end most handlers on their own
            _, pending = await asyncio.wait(handlers, timeout=0.5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=3.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    await self._server.wait_closed()
            self._server = None

    def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> HttpConnection[Any]:
        """The connection object that serves one client connection."""
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        index = self.stats.connections
        self.stats.connections += 1
        self.stats.open_connections += 1
        try:
            if self.plan.hang_connect:
                while await reader.read(65536):
                    pass  # accept TCP, read, never answer
            else:
                await self.connection(reader, writer, index).serve()
        except (
            HttpClosed,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        except asyncio.CancelledError:
            # Cancelled by aclose(): end quietly (asyncio logs a handler that raises).
            if self._server is not None and self._server.is_serving():
                raise
        finally:
            self.stats.open_connections -= 1
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.transport.abort()

    def take_rejection(self) -> int | None:
        """The plan's ``reject_status`` for this request (None: answer it)."""
        status = self.plan.reject_status
        if status is None:
            return None
        if self.reject_requests is not None and self._rejected >= self.reject_requests:
            return None
        self._rejected += 1
        return status


class HttpConnection(Generic[R]):
    """One client connection: requests one after another (keep-alive).

    Subclasses build their request record (:meth:`make_request`), check it
    (:meth:`check`), word errors (:meth:`error_text`, :meth:`rejection`), write heads
    (:meth:`error_head`) and answer (:meth:`answer`).
    """

    #: Largest request body accepted.
    MAX_BODY: ClassVar[int] = 4 * 1024 * 1024
    #: What a chunked body over ``MAX_BODY`` gets: "refuse" (413), "truncate" (read on,
    #: keep what was read when it went over) or "ignore" (no limit).
    CHUNKED_OVERFLOW: ClassVar[str] = "ignore"
    #: Writing notices a client that half-closed (else only a closed socket).
    WRITE_CHECKS_EOF: ClassVar[bool] = True

    def __init__(
        self,
        server: FakeHttpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        index: int,
    ) -> None:
        self.plan = server.plan
        self._http = server
        self.reader = reader
        self.writer = writer
        self.index = index
        self.loop = asyncio.get_running_loop()
        self.opened = self.loop.time()

    # -- protocol hooks
    def make_request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> R:
        raise NotImplementedError

    def headers_of(self, request: R) -> dict[str, str]:
        return request.headers  # type: ignore[attr-defined,no-any-return]

    def error_text(self, status: int, message: str | None) -> str:
        """The body of an error the base answers (400 malformed request line, 413)."""
        raise NotImplementedError

    def error_head(self, status: int, length: int, keep_alive: bool) -> list[str]:
        """Header lines (after the status line) of a complete response."""
        raise NotImplementedError

    def rejection(self, status: int) -> tuple[str, dict[str, str]]:
        """Body and extra headers of the plan's ``reject_status``."""
        raise NotImplementedError

    def on_request(self, request: R) -> None:
        """A request was read (before the plan's faults)."""

    def check(self, request: R) -> tuple[int, str] | None:
        """What the service would refuse: (status, body)."""
        return None

    async def answer(self, request: R, keep_alive: bool) -> bool:
        """Answer a valid request; False if the connection must close afterwards."""
        raise NotImplementedError

    # -- the connection
    def _wait_limit(self) -> float | None:
        """How long the connection may wait idle for its next request."""
        limits: list[float] = []
        if self.plan.idle_close_after is not None:
            limits.append(self.plan.idle_close_after)
        if self.plan.max_connection_age is not None:
            limits.append(self.opened + self.plan.max_connection_age - self.loop.time())
        return max(0.0, min(limits)) if limits else None

    def _too_old(self) -> bool:
        age = self.plan.max_connection_age
        return age is not None and self.loop.time() - self.opened >= age

    async def serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._wait_limit()):
                    first = await self.reader.readline()
            except TimeoutError:
                self._http.stats.idle_closes += 1
                return
            if not first:
                return
            if not await self._serve_one(first) or self._too_old():
                return

    async def _read_request(self, first: bytes) -> R | None:
        try:
            method, target, _version = first.decode("latin-1").rstrip("\r\n").split(" ", 2)
        except ValueError:
            await self.respond(
                400, self.error_text(400, "malformed request line"), keep_alive=False
            )
            return None
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if not line:
                raise HttpClosed
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await self.reader.readline()
                    break
                body += (await self.reader.readexactly(size + 2))[:-2]
                if len(body) > self.MAX_BODY and self.CHUNKED_OVERFLOW == "refuse":
                    await self.respond(413, self.error_text(413, None), keep_alive=False)
                    return None
                if len(body) > self.MAX_BODY and self.CHUNKED_OVERFLOW == "truncate":
                    break
        else:
            length = int(headers.get("content-length", "0") or "0")
            if length > self.MAX_BODY:
                await self.respond(413, self.error_text(413, None), keep_alive=False)
                return None
            body = await self.reader.readexactly(length)
        request = self.make_request(method, target, headers, body)
        self._http.stats.requests.append(request)
        return request

    async def _serve_one(self, first: bytes) -> bool:
        request = await self._read_request(first)
        if request is None:
            return False
        self.on_request(request)
        stats, plan = self._http.stats, self.plan
        keep_alive = self.headers_of(request).get("connection", "").lower() != "close"
        if stats.dropped_requests < plan.drop_before_audio:
            stats.dropped_requests += 1
            return False  # close without an answer
        status = self._http.take_rejection()
        if status is not None:
            body, extra = self.rejection(status)
            await self.respond(status, body, extra=extra)
            return keep_alive
        problem = self.check(request)
        if problem is not None:
            await self.respond(*problem)
            return keep_alive
        return await self.answer(request, keep_alive)

    async def hang(self) -> None:
        """Answer nothing more; wait for the client to give up."""
        while await self.reader.read(65536):
            pass
        raise HttpClosed

    # -- writing
    async def write(self, data: bytes) -> None:
        if self.writer.is_closing() or (self.WRITE_CHECKS_EOF and self.reader.at_eof()):
            raise HttpClosed
        self.writer.write(data)
        try:
            await self.writer.drain()
        except ConnectionError:
            raise HttpClosed from None

    async def respond(
        self,
        status: int,
        body: str,
        *,
        keep_alive: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:
        """A complete response (an error, mostly)."""
        self._http.stats.statuses.append(status)
        data = body.encode()
        head = [
            f"HTTP/1.1 {status} {reason_phrase(status)}",
            *self.error_head(status, len(data), keep_alive),
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
        ]
        await self.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)

    async def write_head(self, headers: Sequence[str]) -> None:
        """The head of a 200 response with a streamed (chunked) body."""
        self._http.stats.statuses.append(200)
        head = ["HTTP/1.1 200 OK", *headers]
        await self.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))

    async def chunk(self, data: bytes) -> None:
        """One piece of the body (split in 7-byte HTTP chunks with ``odd_chunking``)."""
        step = 7 if self.plan.odd_chunking else len(data)
        for pos in range(0, len(data), step):
            part = data[pos : pos + step]
            await self.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")

    async def pause(self, seconds: float) -> None:
        """Sleep, but notice the client closing meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    if not await self.reader.read(65536):
                        raise HttpClosed
        except TimeoutError:
            return

    def _client_gone(self) -> bool:
        return self.reader.at_eof() or self.writer.is_closing()

    async def stream_audio(self, data: bytes, step: int, *, stale: bytes = b"") -> bool:
        """Stream ``data`` as a chunked body in ``step``-byte chunks with the plan's faults
        (a REST TTS answer); False if the connection must close afterwards.

        ``first_audio_delay`` before the first chunk, ``chunk_interval`` after each;
        ``close_mid_audio`` cuts the body after ``close_after_chunks`` chunks (``ABORT``
        resets TCP, any other value closes the socket); ``audio_after_done`` writes that
        many copies of ``stale`` on the connection after the final chunk. The fake's stats
        count ``audio_bytes``, ``cut_bodies`` and ``cancels``.
        """
        plan = self.plan
        stats: Any = self._http.stats
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        cut = False
        try:
            for i, pos in enumerate(range(0, len(data), step)):
                if self._client_gone():
                    raise HttpClosed
                if plan.close_mid_audio is not None and i >= plan.close_after_chunks:
                    stats.cut_bodies += 1
                    cut = True
                    if plan.close_mid_audio == ABORT:
                        self.writer.transport.abort()
                    else:
                        self.writer.close()
                    raise HttpClosed
                chunk = data[pos : pos + step]
                await self.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                stats.audio_bytes += len(chunk)
                if plan.chunk_interval:
                    await asyncio.sleep(plan.chunk_interval)
            await self.write(b"0\r\n\r\n")
        except HttpClosed:
            if not cut:
                stats.cancels += 1
            raise
        if plan.audio_after_done:
            await self.write(stale * plan.audio_after_done)  # junk on a keep-alive connection
        return True

    async def stream_sse(
        self,
        events: Sequence[tuple[bytes, bool]],
        *,
        error: Callable[[], bytes],
        malformed: Sequence[bytes],
        done: bytes = b"",
        stale: Callable[[], bytes] = bytes,
    ) -> bool:
        """Stream ``events`` (bytes, whether it is a counted delta) with the plan's faults;
        False if the connection must close afterwards.

        ``close_mid_audio`` cuts the body before the counted event number
        ``close_after_chunks`` (1000: ends the body there; ``ABORT``: resets TCP; else
        closes), ``error_mid_stream`` sends ``error()`` there and ends the body;
        ``malformed`` goes before the second counted event; ``chunk_interval`` pauses
        after each counted event but the last event; ``done`` ends the stream and
        ``audio_after_done`` sends ``stale()`` after it. The fake's stats count
        ``cut_streams``, ``completed`` and ``cancels``.
        """
        plan = self.plan
        stats: Any = self._http.stats
        deltas = 0
        last = len(events) - 1
        try:
            if plan.first_audio_delay:
                await self.pause(plan.first_audio_delay)
            for i, (data, counted) in enumerate(events):
                if counted:
                    at_cut = deltas >= plan.close_after_chunks
                    if plan.close_mid_audio is not None and at_cut:
                        stats.cut_streams += 1
                        if plan.close_mid_audio == ABORT:
                            self.writer.transport.abort()
                        elif plan.close_mid_audio == 1000:
                            await self.write(b"0\r\n\r\n")
                            return True
                        else:
                            self.writer.close()
                        raise HttpClosed
                    if plan.error_mid_stream and at_cut:
                        await self.chunk(error())
                        await self.write(b"0\r\n\r\n")
                        return True
                    if plan.malformed_mid_stream and deltas == 1:
                        for frame in malformed:
                            await self.chunk(frame)
                    deltas += 1
                await self.chunk(data)
                if counted and i < last and plan.chunk_interval:
                    await self.pause(plan.chunk_interval)
            if done:
                await self.chunk(done)
            for _ in range(plan.audio_after_done):
                await self.chunk(stale())
            await self.write(b"0\r\n\r\n")
            stats.completed += 1
        except HttpClosed:
            if plan.close_mid_audio is None:
                stats.cancels += 1
            raise
        return True
