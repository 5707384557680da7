"""HTTP for provider plugins: an httpx client with deadlines, and typed errors.

Plugins never build an ``httpx.AsyncClient`` themselves. :func:`make_client` gives one
with connect/read/write/pool deadlines and a keep-alive pool (so a warm connection is
reused across requests); :func:`open_response` sends a request and waits for the response
head within a deadline, turning a non-2xx status into a typed error;
:class:`BodyReader` reads a streamed body chunk by chunk, each wait bounded, and aborts
it at once on :meth:`BodyReader.aclose`.

Status mapping: 401/403 → :class:`HttpAuthError` (an ``AuthError``); 429 and 5xx →
retryable :class:`HttpStatusError` carrying ``retry_after`` seconds from the
``Retry-After`` header; any other status → non-retryable :class:`HttpStatusError`.
Transport failures: connect errors → ``ProviderConnectionError`` (stage ``connect``),
timeouts → ``ProviderTimeoutError`` with the stage, a body cut short →
``ProviderConnectionError`` (stage ``receive``, retryable).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version

import httpx

from antiphon.errors import (
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)
from antiphon.errors import HttpAuthError as HttpAuthError  # re-exported (defined there)
from antiphon.errors import HttpStatusError as HttpStatusError

__all__ = [
    "ERROR_BODY_LIMIT",
    "USER_AGENT",
    "BodyReader",
    "HttpAuthError",
    "HttpOptions",
    "HttpStatusError",
    "make_client",
    "open_response",
    "parse_retry_after",
    "status_error",
    "transport_error",
]


def _user_agent() -> str:
    try:
        return f"antiphon/{version('antiphon')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "antiphon"


USER_AGENT = _user_agent()
#: How much of an error body is kept for the message.
ERROR_BODY_LIMIT = 2048


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """Deadlines (seconds) and pool limits of an HTTP client.

    ``connect_timeout``: TCP (+ TLS) connect. ``read_timeout``: any single read, a
    backstop behind the plugin's own per-stage deadlines. ``write_timeout``: sending the
    request. ``pool_timeout``: waiting for a free connection when ``max_connections`` are
    busy. ``keepalive_expiry``: idle connections are closed after this long.
    ``trust_env``: honour ``HTTP(S)_PROXY``/``SSL_CERT_FILE`` and friends (off by default
    so that a local fake is never sent through a proxy); ``proxy`` sets one explicitly.
    """

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    write_timeout: float = 5.0
    pool_timeout: float = 5.0
    max_connections: int = 100
    max_keepalive_connections: int = 20
    keepalive_expiry: float = 30.0
    trust_env: bool = False
    proxy: str | None = None
    user_agent: str = USER_AGENT

    def __post_init__(self) -> None:
        for name in (
            "connect_timeout",
            "read_timeout",
            "write_timeout",
            "pool_timeout",
            "keepalive_expiry",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"HttpOptions.{name} must be a positive number of seconds")
        if self.max_connections < 1 or self.max_keepalive_connections < 0:
            raise ConfigError(
                "HttpOptions.max_connections must be >= 1 and max_keepalive_connections >= 0"
            )
        if not self.user_agent or len(self.user_agent) >= 255:
            raise ConfigError("HttpOptions.user_agent must be 1 to 254 characters")


def make_client(
    options: HttpOptions | None = None, *, headers: Mapping[str, str] | None = None
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with the deadlines and pool of ``options``.

    The caller owns it and must ``await client.aclose()``. Redirects are not followed
    (a provider endpoint that redirects is misconfigured); bodies are not decompressed
    by default (``Accept-Encoding: identity``), since audio does not compress.
    """
    opts = options or HttpOptions()
    all_headers = {"User-Agent": opts.user_agent, "Accept-Encoding": "identity"}
    all_headers.update(headers or {})
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=opts.connect_timeout,
            read=opts.read_timeout,
            write=opts.write_timeout,
            pool=opts.pool_timeout,
        ),
        limits=httpx.Limits(
            max_connections=opts.max_connections,
            max_keepalive_connections=opts.max_keepalive_connections,
            keepalive_expiry=opts.keepalive_expiry,
        ),
        headers=all_headers,
        follow_redirects=False,
        trust_env=opts.trust_env,
        proxy=opts.proxy,
    )


# --------------------------------------------------------------------------- errors


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date).

    None if absent or unparsable; never negative. ``now`` is a Unix time (for tests).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN → None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _detail(body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return " ".join(text.split())[:300]


def status_error(
    status: int,
    *,
    provider: str,
    stage: str = "connect",
    headers: Mapping[str, str] | None = None,
    body: bytes | str = b"",
    auth_hint: str = "check the API key",
    hints: Mapping[int, str] | None = None,
) -> HttpStatusError:
    """The typed error for a non-2xx ``status`` (see the module docstring)."""
    hdrs = httpx.Headers(dict(headers or {}))
    retry_after = parse_retry_after(hdrs.get("retry-after"))
    detail = _detail(body)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    message = f"HTTP {status} {phrase}" + (f": {detail}" if detail else "")
    hint = (hints or {}).get(status)
    if status in (401, 403):
        return HttpAuthError(
            message,
            provider=provider,
            stage=stage,
            status=status,
            retry_after=retry_after,
            body=detail,
            hint=hint or auth_hint,
        )
    retryable = status == 429 or status >= 500
    if hint is None and status == 429:
        hint = "too many requests for the resource's quota; slow down or raise the quota"
    if hint is None and status >= 500:
        hint = "a server-side problem; retrying later usually helps"
    if retry_after is not None and retryable:
        hint = f"{hint}; the server asks to retry after {retry_after:g}s"
    return HttpStatusError(
        message,
        provider=provider,
        stage=stage,
        status=status,
        retry_after=retry_after,
        body=detail,
        hint=hint,
        retryable=retryable,
    )


def transport_error(
    exc: httpx.HTTPError,
    *,
    provider: str,
    stage: str,
    url: str = "",
    options: HttpOptions | None = None,
) -> ProviderError:
    """The typed error for an httpx failure (``stage`` is where it happened)."""
    opts = options or HttpOptions()
    where = f" to {url}" if url else ""
    if isinstance(exc, httpx.ConnectTimeout):
        return ProviderTimeoutError(
            f"could not connect{where}",
            provider=provider,
            stage="connect",
            timeout=opts.connect_timeout,
            hint="is the service reachable? check the base URL, region and network",
        )
    if isinstance(exc, httpx.PoolTimeout):
        return ProviderTimeoutError(
            "no free connection in the pool",
            provider=provider,
            stage="connect",
            timeout=opts.pool_timeout,
            hint="every connection is busy; raise HttpOptions.max_connections",
        )
    if isinstance(exc, httpx.WriteTimeout):
        return ProviderTimeoutError(
            "could not send the request",
            provider=provider,
            stage="send",
            timeout=opts.write_timeout,
            hint="the server stopped reading",
        )
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeoutError(
            "no data from the server",
            provider=provider,
            stage=stage,
            timeout=opts.read_timeout,
            hint="the server went silent",
        )
    if isinstance(exc, httpx.ConnectError):
        return ProviderConnectionError(
            f"cannot connect{where}: {exc}",
            provider=provider,
            stage="connect",
            hint="check the base URL or region and that the service is reachable",
            retryable=True,
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ProviderConnectionError(
            f"invalid URL{where}: {exc}",
            provider=provider,
            stage="connect",
            hint="the base URL must start with https:// (or http:// for a local fake)",
        )
    return ProviderConnectionError(
        f"the connection dropped: {exc or type(exc).__name__}",
        provider=provider,
        stage=stage,
        hint="the server closed the connection or the network failed; retrying usually helps",
        retryable=True,
    )


# --------------------------------------------------------------------------- requests


async def _read_error_body(response: httpx.Response, *, timeout: float) -> bytes:
    """Up to ERROR_BODY_LIMIT bytes of an error body, within ``timeout`` (then give up)."""
    if response.is_stream_consumed:  # read already (a non-streaming transport)
        try:
            return response.content[:ERROR_BODY_LIMIT]
        except httpx.ResponseNotRead:
            return b""
    body = b""
    try:
        async with asyncio.timeout(timeout):
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= ERROR_BODY_LIMIT:
                    break
    except (TimeoutError, httpx.HTTPError, httpx.StreamError):
        pass
    return body[:ERROR_BODY_LIMIT]


async def open_response(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    provider: str,
    timeout: float,
    stage: str = "connect",
    auth_hint: str = "check the API key",
    hints: Mapping[int, str] | None = None,
    options: HttpOptions | None = None,
    error_body_timeout: float = 1.0,
) -> httpx.Response:
    """Send ``request`` and wait for the response head within ``timeout`` seconds.

    Returns the streaming 2xx response (the caller reads and closes it). A non-2xx answer
    is read (bounded), closed, and raised as :func:`status_error`; an expired deadline is
    a ``ProviderTimeoutError`` of ``stage``; transport failures as :func:`transport_error`.
    If the caller is cancelled, httpx closes the half-open connection.
    """
    url = str(request.url.copy_with(query=None))
    cm = asyncio.timeout(timeout)
    try:
        async with cm:
            response = await client.send(request, stream=True)
    except TimeoutError:
        if not cm.expired():
            raise
        raise ProviderTimeoutError(
            "no response to the request",
            provider=provider,
            stage=stage,
            timeout=timeout,
            hint=f"the server at {url} accepted the connection but did not answer",
        ) from None
    except httpx.HTTPError as exc:
        raise transport_error(
            exc, provider=provider, stage=stage, url=url, options=options
        ) from None
    if response.is_success:
        return response
    try:
        body = await _read_error_body(response, timeout=error_body_timeout)
    finally:
        await response.aclose()
    raise status_error(
        response.status_code,
        provider=provider,
        stage=stage,
        headers=response.headers,
        body=body,
        auth_hint=auth_hint,
        hints=hints,
    )


class BodyReader:
    """The raw body of a streamed response, one chunk at a time, each wait bounded.

    :meth:`next` returns the next chunk, or ``None`` at the end of the body. A body cut
    short is a retryable ``ProviderConnectionError`` (stage ``receive``). :meth:`aclose`
    closes the response: if the body was not read to its end, the connection is dropped
    rather than returned to the pool, so nothing of this response can reach another.
    """

    def __init__(
        self,
        response: httpx.Response,
        *,
        provider: str,
        stage: str = "receive",
        options: HttpOptions | None = None,
    ) -> None:
        self.response = response
        self.provider = provider
        self.stage = stage
        self._options = options
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self.bytes_read = 0
        self.finished = False

    async def next(
        self,
        *,
        deadline_at: float | None,
        timeout: float,
        message: str = "no data from the server",
        hint: str | None = None,
    ) -> bytes | None:
        """Next chunk by loop time ``deadline_at`` (``timeout`` is what it stands for)."""
        if self.finished:
            return None
        cm = asyncio.timeout_at(deadline_at)
        try:
            async with cm:
                chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self.finished = True
            return None
        except TimeoutError:
            if not cm.expired():
                raise
            raise ProviderTimeoutError(
                message, provider=self.provider, stage=self.stage, timeout=timeout, hint=hint
            ) from None
        except httpx.HTTPError as exc:
            raise transport_error(
                exc,
                provider=self.provider,
                stage=self.stage,
                url=str(self.response.url),
                options=self._options,
            ) from None
        self.bytes_read += len(chunk)
        return chunk

    async def aclose(self) -> None:
        """Close the response (drops the connection unless the body was read to its end)."""
        await self.response.aclose()
