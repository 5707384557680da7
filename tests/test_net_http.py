"""net.http: the client factory, status and transport errors, deadlines on head and body."""

from __future__ import annotations

import asyncio
import email.utils
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from antiphon.errors import (
    AuthError,
    ConfigError,
    ProviderConnectionError,
    ProviderTimeoutError,
)
from antiphon.net.http import (
    USER_AGENT,
    BodyReader,
    HttpAuthError,
    HttpOptions,
    HttpStatusError,
    make_client,
    open_response,
    parse_retry_after,
    status_error,
    transport_error,
)
from antiphon.testing import LeakCheck

pytestmark = pytest.mark.timeout(30)

# --------------------------------------------------------------------------- Retry-After


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    now = 1_700_000_000.0
    later = email.utils.formatdate(now + 30, usegmt=True)
    earlier = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(30.0)
    assert parse_retry_after(earlier, now=now) == 0.0
    for junk in (None, "", "soon", "nan", "Mon, 99 Foo 2020"):
        assert parse_retry_after(junk) is None


# --------------------------------------------------------------------------- statuses


@pytest.mark.parametrize("status", [401, 403])
def test_auth_statuses_are_auth_errors(status: int) -> None:
    err = status_error(status, provider="p", body=b"Unauthorized", auth_hint="check P_KEY")
    assert isinstance(err, HttpAuthError) and isinstance(err, AuthError)
    assert isinstance(err, HttpStatusError) and err.status == status == err.code
    assert not err.retryable and err.hint == "check P_KEY" and err.stage == "connect"
    assert "Unauthorized" in str(err) and "check P_KEY" in str(err)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_overload_and_server_statuses_are_retryable_with_retry_after(status: int) -> None:
    err = status_error(status, provider="p", headers={"Retry-After": "3"})
    assert err.retryable and err.retry_after == 3.0 and not isinstance(err, AuthError)
    assert "retry after 3s" in str(err)
    assert status_error(status, provider="p").retry_after is None


@pytest.mark.parametrize("status", [400, 404, 409, 413, 415, 422])
def test_other_statuses_are_not_retryable_and_carry_the_hint(status: int) -> None:
    body = "x" * 1000 + " tail"
    err = status_error(status, provider="p", body=body, hints={status: "fix it like so"})
    assert not err.retryable and err.hint == "fix it like so"
    assert len(err.body) == 300 and err.body.startswith("xxx")
    assert f"HTTP {status}" in str(err)
    assert status_error(status, provider="p").hint is None


def test_unknown_status_still_maps() -> None:
    err = status_error(599, provider="p")
    assert err.code == 599 and err.retryable and "unknown status" in str(err)


# --------------------------------------------------------------------------- transport errors

OPTS = HttpOptions(connect_timeout=1.5, read_timeout=4.0, write_timeout=2.5, pool_timeout=3.5)
REQ = httpx.Request("POST", "https://example.invalid/x")


@pytest.mark.parametrize(
    ("exc", "kind", "stage", "retryable"),
    [
        (httpx.ConnectError("refused", request=REQ), ProviderConnectionError, "connect", True),
        (httpx.RemoteProtocolError("cut", request=REQ), ProviderConnectionError, "receive", True),
        (httpx.ReadError("reset", request=REQ), ProviderConnectionError, "receive", True),
        (httpx.UnsupportedProtocol("ftp", request=REQ), ProviderConnectionError, "connect", False),
    ],
)
def test_transport_failures_are_connection_errors(
    exc: httpx.HTTPError, kind: type[Exception], stage: str, retryable: bool
) -> None:
    err = transport_error(exc, provider="p", stage="receive", url="https://h/x", options=OPTS)
    assert type(err) is kind and err.stage == stage and err.retryable is retryable


@pytest.mark.parametrize(
    ("exc", "stage", "timeout"),
    [
        (httpx.ConnectTimeout("t", request=REQ), "connect", 1.5),
        (httpx.PoolTimeout("t", request=REQ), "connect", 3.5),
        (httpx.WriteTimeout("t", request=REQ), "send", 2.5),
        (httpx.ReadTimeout("t", request=REQ), "receive", 4.0),
    ],
)
def test_timeouts_are_provider_timeouts_with_their_stage(
    exc: httpx.HTTPError, stage: str, timeout: float
) -> None:
    err = transport_error(exc, provider="p", stage="receive", options=OPTS)
    assert isinstance(err, ProviderTimeoutError) and not isinstance(err, TimeoutError)
    assert err.stage == stage and err.timeout == timeout


# --------------------------------------------------------------------------- client


def test_client_has_the_deadlines_limits_and_headers() -> None:
    client = make_client(
        HttpOptions(connect_timeout=1.0, read_timeout=2.0, max_connections=7),
        headers={"X-Extra": "1"},
    )
    try:
        t = client.timeout
        assert (t.connect, t.read, t.write, t.pool) == (1.0, 2.0, 5.0, 5.0)
        assert client.headers["User-Agent"] == USER_AGENT
        assert client.headers["Accept-Encoding"] == "identity"
        assert client.headers["X-Extra"] == "1"
        assert not client.follow_redirects and not client.trust_env
    finally:
        asyncio.run(client.aclose())


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"read_timeout": -1.0}, "read_timeout"),
        ({"max_connections": 0}, "max_connections"),
        ({"user_agent": ""}, "user_agent"),
        ({"user_agent": "x" * 300}, "user_agent"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        HttpOptions(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- requests


def _client(handler: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


class _SlowBody(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes | float | Exception]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for c in self.chunks:
            if isinstance(c, float):
                await asyncio.sleep(c)
            elif isinstance(c, Exception):
                raise c
            else:
                yield c


async def test_open_response_returns_the_stream_and_body_reader_reads_it() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_SlowBody([b"ab", 0.01, b"c", b"de"]))

    loop = asyncio.get_running_loop()
    async with _client(httpx.MockTransport(handler)) as client:
        resp = await open_response(
            client, client.build_request("POST", "http://h/x"), provider="p", timeout=1.0
        )
        body = BodyReader(resp, provider="p")
        got = []
        while (chunk := await body.next(deadline_at=loop.time() + 1.0, timeout=1.0)) is not None:
            got.append(chunk)
        assert b"".join(got) == b"abcde" and body.bytes_read == 5 and body.finished
        assert await body.next(deadline_at=None, timeout=1.0) is None
        await body.aclose()


async def test_error_status_is_read_closed_and_raised() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, headers={"Retry-After": "2"}, content=b"Too many requests, slow down"
        )

    async with _client(httpx.MockTransport(handler)) as client:
        with pytest.raises(HttpStatusError) as info:
            await open_response(
                client,
                client.build_request("POST", "http://h/x"),
                provider="p",
                timeout=1.0,
                hints={429: "over quota"},
            )
    err = info.value
    assert err.status == 429 and err.retry_after == 2.0 and err.retryable
    assert err.body == "Too many requests, slow down" and err.hint is not None
    assert err.hint.startswith("over quota")


@pytest.mark.virtual_time
async def test_an_endless_error_body_does_not_hold_the_caller() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, stream=_SlowBody([b"partial", 10.0, b"never"]))

    loop = asyncio.get_running_loop()
    started = loop.time()
    async with _client(httpx.MockTransport(handler)) as client:
        with pytest.raises(HttpStatusError, match="partial"):
            await open_response(
                client,
                client.build_request("POST", "http://h/x"),
                provider="p",
                timeout=1.0,
                error_body_timeout=0.1,
            )
    assert loop.time() - started == pytest.approx(0.1)  # the error body's deadline


async def test_no_response_head_is_a_timeout_of_the_stage() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    async with _client(httpx.MockTransport(handler)) as client:
        with pytest.raises(ProviderTimeoutError) as info:
            await open_response(
                client, client.build_request("POST", "http://h/x"), provider="p", timeout=0.1
            )
    assert info.value.stage == "connect" and info.value.timeout == 0.1


@pytest.mark.parametrize(
    ("chunks", "error", "stage"),
    [
        ([b"ab", 10.0], ProviderTimeoutError, "receive"),
        (
            [b"ab", httpx.RemoteProtocolError("incomplete chunked read")],
            ProviderConnectionError,
            "receive",
        ),
    ],
)
async def test_body_stalling_or_cut_is_typed(
    chunks: list[bytes | float | Exception], error: type[Exception], stage: str
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_SlowBody(chunks))

    loop = asyncio.get_running_loop()
    async with _client(httpx.MockTransport(handler)) as client:
        resp = await open_response(
            client, client.build_request("POST", "http://h/x"), provider="p", timeout=1.0
        )
        body = BodyReader(resp, provider="p")
        assert await body.next(deadline_at=loop.time() + 1, timeout=1) == b"ab"
        with pytest.raises(error) as info:
            await body.next(deadline_at=loop.time() + 0.1, timeout=0.1, message="stalled")
        assert getattr(info.value, "stage", None) == stage
        await body.aclose()


async def test_cancelling_the_caller_is_not_turned_into_an_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    async with _client(httpx.MockTransport(handler)) as client:
        task = asyncio.create_task(
            open_response(
                client, client.build_request("POST", "http://h/x"), provider="p", timeout=5.0
            )
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_connection_refused_on_a_real_socket() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    leaks = LeakCheck(ports=[port])
    async with make_client(HttpOptions(connect_timeout=1.0)) as client:
        with pytest.raises(ProviderConnectionError) as info:
            await open_response(
                client,
                client.build_request("POST", f"http://127.0.0.1:{port}/x"),
                provider="p",
                timeout=2.0,
            )
    assert info.value.stage == "connect" and info.value.retryable
    assert f"127.0.0.1:{port}" in str(info.value)
    await leaks.assert_clean()


async def test_keep_alive_connection_is_reused_and_an_aborted_body_drops_it() -> None:
    """Against a tiny HTTP/1.1 server: read to the end → reused; closed early → dropped."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"".join(b"4\r\nabcd\r\n" for _ in range(64))
                    + b"0\r\n\r\n"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    leaks = LeakCheck(ports=[port])
    try:
        async with make_client() as client:

            async def fetch(read_all: bool) -> None:
                req = client.build_request("POST", f"http://127.0.0.1:{port}/x", content=b"x")
                resp = await open_response(client, req, provider="p", timeout=1.0)
                body = BodyReader(resp, provider="p")
                while await body.next(deadline_at=loop.time() + 1, timeout=1) is not None:
                    if not read_all:
                        break
                await body.aclose()

            await fetch(True)
            await fetch(True)
            assert connections == 1
            await fetch(False)  # aborted: that connection is not reused
            await fetch(True)
            assert connections == 2
    finally:
        server.close()
        await server.wait_closed()
    await leaks.assert_clean()
