"""AnthropicLLM: Claude through the streaming Messages API.

One ``POST {base_url}/v1/messages`` with ``"stream": true`` per response, with the
``x-api-key`` and ``anthropic-version`` headers; the body and the event stream are
:mod:`antiphon.protocols.anthropic_messages` (the SSE bytes go through the shared
:class:`~antiphon.protocols.openai_chat.SseParser`, each event through the protocol's
:class:`~antiphon.protocols.anthropic_messages.MessageStream` machine, whose actions this
plugin reports to the :class:`~antiphon.services.llm.ChatStream` base).

The system prompt is sent as the top-level ``system``; tools and tool results are mapped
from the ``ChatContext``. Prompt caching is opt-in: ``cache_system=True`` and
``cache_tools=True`` mark the system prompt and the tool list as cache breakpoints.

Deadlines and retries are those of ``OpenAILLM``: ``connect`` for TCP/TLS,
``first_token`` from the request to the first text or tool call (the request, the
response head and any retry included), ``idle`` between events, ``close`` for closing.
A request that fails before anything was delivered — 429, 500, 529 (overloaded), a
dropped connection — is retried ``max_retries`` times after the server's ``retry-after``
(or ``retry_backoff``), if that wait fits; once a token was delivered a failure ends the
stream with a typed error. Cancelling a stream closes its response at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from antiphon.aio.tasks import TaskOwner
from antiphon.errors import ConfigError, ProviderConnectionError, ProviderError
from antiphon.net.http import ERROR_BODY_LIMIT, HttpOptions, make_client, transport_error
from antiphon.protocols import anthropic_messages as am
from antiphon.protocols import openai_chat as oc
from antiphon.protocols.retry import retry_delay
from antiphon.services.llm import LLM, ChatContext, ChatStream, LLMDeadlines, Usage
from antiphon.services.tools import FunctionTool

__all__ = ["KEY_ENV", "AnthropicChatStream", "AnthropicLLM"]

log = logging.getLogger(__name__)

PROVIDER = "anthropic"
KEY_ENV = "ANTHROPIC_API_KEY"


class AnthropicLLM(LLM):
    """Streaming chat with Claude (see the module docstring).

    Args:
        model: The model, e.g. ``"claude-sonnet-4-5"`` (required).
        api_key: Defaults to ``$ANTHROPIC_API_KEY``.
        base_url: ``https://api.anthropic.com`` (or a proxy; ``/v1`` may end it).
        max_tokens: The most tokens of one answer (the API requires a limit).
        cache_system: Mark the system prompt as a prompt-cache breakpoint.
        cache_tools: Mark the tool list as a prompt-cache breakpoint.
        tool_choice: ``"auto"``, ``"any"``, ``"none"`` or a tool's name.
        parallel_tool_calls: ``False`` asks for at most one tool call per answer.
        api_version: The ``anthropic-version`` header.
        beta: ``anthropic-beta`` flags.
        extra_body: More body fields; ``headers``: more request headers.

    Raises:
        ConfigError: no model, no key, or an option out of range.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        model: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str = am.DEFAULT_BASE_URL,
        max_tokens: int = am.DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: Sequence[str] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        cache_system: bool = False,
        cache_tools: bool = False,
        user_id: str | None = None,
        api_version: str = am.API_VERSION,
        beta: Sequence[str] = (),
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        deadlines: LLMDeadlines | None = None,
        http: HttpOptions | None = None,
        max_retries: int = 1,
        max_retry_wait: float = 5.0,
        retry_backoff: float = 0.25,
    ) -> None:
        if not model or not isinstance(model, str) or not model.strip():
            raise ConfigError("AnthropicLLM needs model=..., e.g. 'claude-sonnet-4-5'")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if max_retry_wait < 0 or retry_backoff < 0:
            raise ConfigError("max_retry_wait and retry_backoff must be >= 0 seconds")
        self.url = am.messages_url(base_url)
        self.model = model
        if api_key is None:
            api_key = os.environ.get(KEY_ENV, "")
        key = api_key.strip()
        if not key:
            raise ConfigError(f"AnthropicLLM needs an API key: pass api_key=... or set {KEY_ENV}")
        self._headers = am.request_headers(key, version=api_version, beta=beta)
        self._headers.update(headers or {})
        self.options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "stop_sequences": stop_sequences,
            "tool_choice": tool_choice,
            "parallel_tool_calls": parallel_tool_calls,
            "cache_system": cache_system,
            "cache_tools": cache_tools,
            "user_id": user_id,
            "extra": dict(extra_body or {}),
        }
        # Refuse bad options now rather than at the first chat().
        am.build_body([_Probe()], [], model=model, **{**self.options, "tool_choice": None})
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

    def body(self, context: ChatContext, tools: Sequence[FunctionTool] = ()) -> dict[str, Any]:
        """The JSON request body for ``context`` and ``tools``."""
        return am.build_body(context.messages, tools, model=self.model, **self.options)

    def _new_stream(
        self, context: ChatContext, tools: tuple[FunctionTool, ...], generation: int
    ) -> ChatStream:
        body = am.encode_body(self.body(context, tools))  # ConfigError here, at chat()
        return AnthropicChatStream(self, context, tools, generation, body, self._tasks)

    async def _aclose_resources(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deadlines.close):
                await self._client.aclose()


class _Probe:
    role = "user"
    content = "probe"
    tool_calls: tuple[oc.ToolCallLike, ...] = ()
    tool_call_id = None


class AnthropicChatStream(ChatStream):
    """One streamed message (with at most ``max_retries`` retries before output)."""

    def __init__(
        self,
        llm: AnthropicLLM,
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
        self.stop_reason: str | None = None
        """Anthropic's own ``stop_reason`` (``end_turn``, ``tool_use``, ``max_tokens``…)."""
        super().__init__(
            provider=llm.provider,
            context=context,
            tools=tools,
            generation=generation,
            deadlines=llm.deadlines,
            owner=owner,
        )

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
                    backoff=llm.retry_backoff,
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
            "POST", llm.url, content=self._body, headers=llm._headers
        )
        try:
            response = await llm._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(
                exc, provider=self.provider, stage="request", url=llm.url, options=llm.http_options
            ) from None
        try:
            if not response.is_success:
                body = await self._error_body(response)
                raise am.http_error(
                    response.status_code,
                    response.headers,
                    body,
                    provider=self.provider,
                    auth_hint=f"check the API key ({KEY_ENV} or api_key=...)",
                )
            if response.headers.get("content-type", "").startswith("application/json"):
                raise ProviderError(
                    "the server answered with JSON, not an event stream",
                    provider=self.provider,
                    stage="receive",
                    hint="is base_url an Anthropic Messages API?",
                )
            await self._read(response)
        finally:
            with contextlib.suppress(TimeoutError, httpx.HTTPError):
                async with asyncio.timeout(self.deadlines.close):
                    await response.aclose()

    async def _read(self, response: httpx.Response) -> None:
        parser = oc.SseParser()
        machine = am.MessageStream()
        chunks = response.aiter_bytes()
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except httpx.HTTPError as exc:
                raise transport_error(
                    exc,
                    provider=self.provider,
                    stage="receive",
                    url=self._llm.url,
                    options=self._llm.http_options,
                ) from None
            if self._feed(parser.feed, chunk, machine):
                return
        if self._feed(lambda _: parser.close(), b"", machine):
            return
        raise ProviderConnectionError(
            "the stream ended before message_stop",
            provider=self.provider,
            stage="receive",
            hint="the server closed the response early; retrying usually helps",
            retryable=True,
        )

    def _feed(self, feed: Any, chunk: bytes, machine: am.MessageStream) -> bool:
        """Parse ``chunk`` and report its actions; True at ``message_stop``."""
        try:
            for sse in feed(chunk):
                for action in machine.feed(am.parse_event(sse)):
                    if self._handle(action):
                        return True
        except am.Malformed as exc:
            raise ProviderError(
                f"malformed stream: {exc}",
                provider=self.provider,
                stage="receive",
                hint="the server does not speak Anthropic Messages streaming",
            ) from None
        except am.StreamErrorEvent as exc:
            raise ProviderError(
                f"error in the stream: {exc.type or 'error'}: {exc.message}",
                provider=self.provider,
                stage="stream",
                code=exc.type,
                retryable=exc.type in ("overloaded_error", "api_error", "rate_limit_error"),
            ) from None
        return False

    def _handle(self, action: am.Action) -> bool:
        match action:
            case am.TextOut(text):
                self._text(text)
            case am.ToolStartOut(index, call_id, name):
                self._tool_delta(index, id=call_id, name=name)
            case am.ToolArgsOut(index, arguments):
                self._tool_delta(index, arguments=arguments)
            case am.UsageOut(prompt, completion):
                self._usage(Usage(prompt, completion))
            case am.Finish(reason, stop_reason):
                self.stop_reason = stop_reason
                self._finish_reason(reason)
            case am.Done():
                return True
        return False

    async def _error_body(self, response: httpx.Response) -> bytes:
        body = b""
        with contextlib.suppress(TimeoutError, httpx.HTTPError, httpx.StreamError):
            async with asyncio.timeout(self.deadlines.close):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= ERROR_BODY_LIMIT:
                        break
        return body[:ERROR_BODY_LIMIT]
