"""Chat over streaming HTTP: one request per response, read as it arrives, retried before output.

OpenAI chat completions, Anthropic Messages and Gemini ``streamGenerateContent`` differ
only in the request they build and the event stream they parse; the loop around them is
the same, and lives here once:

- :class:`HttpLLM` owns the ``httpx`` client (deadlines from
  :class:`~antiphon.services.llm.LLMDeadlines`: ``connect`` for TCP/TLS, a read backstop of
  ``max(first_token, idle) + close``), the request headers and the retry settings. A
  plugin sets :attr:`HttpLLM.url`, :attr:`HttpLLM.headers`, :attr:`HttpLLM.stream_class`
  and implements :meth:`HttpLLM.encode` (the body, refused with ``ConfigError`` at
  ``chat()``) and :meth:`HttpLLM.http_error` (its error body → a typed error). Its
  constructor checks the model (:func:`require_model`) and the body's options
  (:func:`check_body_options`), so that a bad one is refused before the first ``chat()``.
- :class:`HttpChatStream` sends the request, waits for the head, refuses an error status
  or a JSON answer where an event stream was asked for, and feeds the body, chunk by
  chunk, to the plugin's parser (:meth:`HttpChatStream._begin`, :meth:`~HttpChatStream._feed`,
  :meth:`~HttpChatStream._end`), which reports through the
  :class:`~antiphon.services.llm.ChatStream` base. A body that ends before the protocol's
  end marker is a retryable ``ProviderConnectionError``.

Retries: a request that fails before anything was delivered — 429, 5xx, a dropped
connection, a stream cut before its first token — is retried ``max_retries`` times (one
by default) after the server's ``Retry-After`` or else the jittered
:class:`~antiphon.protocols.retry.Backoff` (``retry_backoff`` is its base, or a
``Backoff``), provided the wait is at most ``max_retry_wait`` and fits in the first-token
deadline (:func:`~antiphon.protocols.retry.retry_delay`). Once a token was delivered a
failure is never retried: it ends the stream with a typed error after the text that came.
Cancelling a stream closes its response (and drops that connection) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar

import httpx

from antiphon.aio.tasks import TaskOwner
from antiphon.errors import ConfigError, ProviderConnectionError, ProviderError
from antiphon.net.http import ERROR_BODY_LIMIT, HttpOptions, make_client, transport_error
from antiphon.protocols import chat_actions as ca
from antiphon.protocols.retry import Backoff, make_backoff, retry_delay
from antiphon.services.llm import LLM, ChatContext, ChatMessage, ChatStream, LLMDeadlines, Usage
from antiphon.services.tools import FunctionTool

__all__ = ["HttpChatStream", "HttpLLM", "check_body_options", "require_model"]

log = logging.getLogger(__name__)

# After a stream's end marker: how long, and how many bytes, to read on so the connection
# can be reused (see HttpChatStream._drain).
DRAIN_WAIT = 0.05
DRAIN_LIMIT = 16_384


def require_model(model: str | None, llm: str, example: str, *more: str) -> str:
    """``model``, refused when it is missing, blank or not a string.

    Raises:
        ConfigError: ``"{llm} needs model=..., e.g. '{example}'"`` (then ``, '{more}'``).
    """
    if not model or not isinstance(model, str) or not model.strip():
        raise ConfigError(f"{llm} needs model=..., e.g. {', '.join(map(repr, (example, *more)))}")
    return model


def check_body_options(
    build_body: Callable[..., object], options: Mapping[str, Any], **fixed: Any
) -> None:
    """Refuse bad options now rather than at the first ``chat()``: build the body of one
    user message with ``options`` and ``fixed`` (no tools, so no tool choice).

    Raises:
        ConfigError: what ``build_body`` raises for an option out of range.
    """
    build_body([ChatMessage("user", "probe")], [], **fixed, **{**options, "tool_choice": None})


class HttpLLM(LLM):
    """An LLM that streams each response over one HTTP request (see the module docstring).

    Args:
        deadlines: The waits on the model.
        http: The HTTP client's deadlines and pool (default: from ``deadlines``).
        max_retries: Retries of a request that failed before any output.
        max_retry_wait: The longest wait before a retry (a longer ``Retry-After`` gives up).
        retry_backoff: The backoff's base in seconds, or a :class:`Backoff`.

    Raises:
        ConfigError: a retry option out of range.
    """

    #: The stream class the plugin's responses use.
    stream_class: ClassVar[type[HttpChatStream]]
    #: What a JSON answer (where an event stream was asked for) suggests checking.
    not_streaming_hint: ClassVar[str] = "does this server support streaming?"

    url: str
    """Where each request is POSTed."""
    headers: dict[str, str]
    """The request headers (the key among them)."""

    def __init__(
        self,
        *,
        deadlines: LLMDeadlines | None = None,
        http: HttpOptions | None = None,
        max_retries: int = 1,
        max_retry_wait: float = 5.0,
        retry_backoff: float | Backoff = 0.25,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if max_retry_wait < 0:
            raise ConfigError("max_retry_wait must be >= 0 seconds")
        self.backoff = make_backoff(retry_backoff)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.retry_backoff = retry_backoff
        super().__init__(deadlines=deadlines)
        d = self.deadlines
        self.http_options = http or HttpOptions(
            connect_timeout=d.connect,
            read_timeout=max(d.first_token, d.idle) + d.close,
            write_timeout=d.connect,
            pool_timeout=d.connect,
        )
        self._client: httpx.AsyncClient = make_client(self.http_options)
        self.requests = 0
        """HTTP requests sent (retries included)."""

    @property
    def _headers(self) -> dict[str, str]:
        return self.headers

    def request_headers(self, body: bytes) -> dict[str, str]:
        """The headers of one request of ``body`` (:attr:`headers`; a plugin that signs
        each request, as SigV4 does, signs here)."""
        return self.headers

    @abstractmethod
    def encode(self, context: ChatContext, tools: tuple[FunctionTool, ...]) -> bytes:
        """The request body (``ConfigError`` for a conversation the API cannot take)."""

    @abstractmethod
    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """The typed error of an error response."""

    def _new_stream(
        self, context: ChatContext, tools: tuple[FunctionTool, ...], generation: int
    ) -> ChatStream:
        body = self.encode(context, tools)  # ConfigError here, at chat()
        return self.stream_class(self, context, tools, generation, body, self._tasks)

    async def _aclose_resources(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deadlines.close):
                await self._client.aclose()


class HttpChatStream(ChatStream):
    """One streamed response (with at most ``max_retries`` retries before output).

    A plugin implements the parser hooks: :meth:`_begin` (a new attempt: fresh parser
    state), :meth:`_feed` (report the events of a chunk; True at the end marker) and
    :meth:`_end` (the body ended: report what remains; True if the response was
    complete). ``end_marker`` names what a complete stream ends with, for the error.
    """

    end_marker: ClassVar[str] = "its end"

    def __init__(
        self,
        llm: HttpLLM,
        context: ChatContext,
        tools: tuple[FunctionTool, ...],
        generation: int,
        body: bytes,
        owner: TaskOwner,
    ) -> None:
        self._llm = llm
        self._body = body
        self._t0 = asyncio.get_running_loop().time()
        self.attempts = 0
        """Requests this response took (1 + retries)."""
        self.stop_reason: str | None = None
        """The provider's own finish reason, where the plugin keeps it."""
        super().__init__(
            provider=llm.provider,
            context=context,
            tools=tools,
            generation=generation,
            deadlines=llm.deadlines,
            owner=owner,
        )

    # -- the parser (the plugin's)
    @abstractmethod
    def _begin(self) -> None:
        """A new attempt starts: reset the parser."""

    @abstractmethod
    def _feed(self, chunk: bytes) -> bool:
        """Parse ``chunk`` and report its events; True once the stream is complete."""

    @abstractmethod
    def _end(self) -> bool:
        """The body ended: report what the parser still holds; True if complete."""

    def _report_action(self, action: ca.Action) -> bool:
        """Report one :mod:`~antiphon.protocols.chat_actions` action of a protocol
        machine; True at :class:`~antiphon.protocols.chat_actions.Done`. The provider's
        own finish reason is kept in :attr:`stop_reason`."""
        match action:
            case ca.TextOut(text):
                self._text(text)
            case ca.ToolStartOut(index, call_id, name):
                self._tool_delta(index, id=call_id, name=name)
            case ca.ToolArgsOut(index, arguments):
                self._tool_delta(index, arguments=arguments)
            case ca.UsageOut(prompt, completion):
                self._usage(Usage(prompt, completion))
            case ca.Finish(reason, stop_reason):
                self.stop_reason = stop_reason
                self._finish_reason(reason)
            case ca.Done():
                return True
        return False

    # -- the loop
    async def _run(self) -> None:
        llm = self._llm
        loop = asyncio.get_running_loop()
        retries = 0
        while True:
            try:
                await self._attempt()
                return
            except ProviderError as exc:
                delay = retry_delay(
                    exc,
                    delivered=self.has_output,
                    attempt=retries,
                    max_retries=llm.max_retries,
                    max_wait=llm.max_retry_wait,
                    backoff=llm.backoff,
                    budget=self._t0 + self.deadlines.first_token - loop.time(),
                )
                if delay is None:
                    raise
                retries += 1
                log.info("%s: %s; retrying in %.2fs", self.provider, exc, delay)
                await asyncio.sleep(delay)

    async def _attempt(self) -> None:
        llm = self._llm
        self.attempts += 1
        llm.requests += 1
        request = llm._client.build_request(
            "POST", llm.url, content=self._body, headers=llm.request_headers(self._body)
        )
        try:
            response = await llm._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "request") from None
        try:
            if not response.is_success:
                body = await self._error_body(response)
                raise llm.http_error(response.status_code, response.headers, body)
            if response.headers.get("content-type", "").startswith("application/json"):
                raise ProviderError(
                    "the server answered with JSON, not an event stream",
                    provider=self.provider,
                    stage="receive",
                    hint=llm.not_streaming_hint,
                )
            await self._read(response)
        finally:
            await self._close(response)

    async def _read(self, response: httpx.Response) -> None:
        self._begin()
        chunks = response.aiter_bytes()
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, "receive") from None
            if self._feed(chunk):
                await self._drain(chunks)
                return
        if self._end():
            return
        raise ProviderConnectionError(
            f"the stream ended before {self.end_marker}",
            provider=self.provider,
            stage="receive",
            hint="the server closed the response early; retrying usually helps",
            retryable=True,
        )

    async def _drain(self, chunks: AsyncIterator[bytes]) -> None:
        """After the end marker, read what is left of the body (its last empty chunk, as a
        rule) for a moment, so the connection goes back to the pool instead of being dropped
        by the close: the next request then skips a TCP (and TLS) handshake. A server that
        keeps sending after its end marker costs at most ``DRAIN_WAIT`` and the connection."""
        left = DRAIN_LIMIT
        with contextlib.suppress(TimeoutError, httpx.HTTPError, httpx.StreamError):
            async with asyncio.timeout(DRAIN_WAIT):
                async for chunk in chunks:
                    left -= len(chunk)
                    if left < 0:
                        break

    def _transport_error(self, exc: httpx.HTTPError, stage: str) -> ProviderError:
        llm = self._llm
        return transport_error(
            exc, provider=self.provider, stage=stage, url=llm.url, options=llm.http_options
        )

    async def _error_body(self, response: httpx.Response) -> bytes:
        """Up to ERROR_BODY_LIMIT bytes of an error body, within the close deadline."""
        body = b""
        with contextlib.suppress(TimeoutError, httpx.HTTPError, httpx.StreamError):
            async with asyncio.timeout(self.deadlines.close):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= ERROR_BODY_LIMIT:
                        break
        return body[:ERROR_BODY_LIMIT]

    async def _close(self, response: httpx.Response) -> None:
        """Close the response; one not read to its end drops its connection."""
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(self.deadlines.close):
                await response.aclose()
