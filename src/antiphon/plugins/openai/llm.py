"""OpenAILLM: streaming chat completions over any OpenAI-compatible HTTP API.

One ``POST {base_url}/chat/completions`` with ``"stream": true`` per response, read as
server-sent events by :mod:`antiphon.protocols.openai_chat`. Works with OpenAI and the
servers that copy its API — Ollama, vLLM, xAI, Groq (:meth:`OpenAILLM.compatible` knows
their URLs and key variables) — and with Azure OpenAI (``azure_endpoint`` +
``azure_deployment``: the deployment path, ``api-version`` query and ``api-key`` header).

Deadlines come from :class:`~antiphon.services.llm.LLMDeadlines`: ``connect`` for TCP/TLS,
``first_token`` from the request to the first text or tool call (the request, the
response head and any retry included), ``idle`` between events afterwards, ``close``
for closing. A request that fails before anything was delivered — 429, 5xx, a dropped
connection, a stream cut before its first token — is retried ``max_retries`` times (one
by default) after the server's ``Retry-After`` (or ``retry_backoff``), provided the wait
is at most ``max_retry_wait`` and fits in the first-token deadline. Once a token was
delivered a failure is never retried: it ends the stream with a typed error after the
text that came. Cancelling a stream closes its response (and drops that connection) at
once.
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
from antiphon.protocols import openai_chat as oc
from antiphon.protocols.retry import retry_delay
from antiphon.services.llm import LLM, ChatContext, ChatStream, LLMDeadlines, Usage
from antiphon.services.tools import FunctionTool

log = logging.getLogger(__name__)

PROVIDER = "openai"
KEY_ENV = "OPENAI_API_KEY"
AZURE_KEY_ENV = "AZURE_OPENAI_API_KEY"

#: OpenAI-compatible servers: base URL and the environment variable of their key
#: (None: the server needs no key).
COMPATIBLE: dict[str, tuple[str, str | None]] = {
    "openai": (oc.DEFAULT_BASE_URL, KEY_ENV),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "xai": ("https://api.x.ai/v1", "XAI_API_KEY"),
    "ollama": ("http://localhost:11434/v1", None),
    "vllm": ("http://localhost:8000/v1", None),
}

_FINISH = {"stop", "tool_calls", "length", "content_filter"}


class OpenAILLM(LLM):
    """Streaming chat over an OpenAI-compatible API (see the module docstring).

    ``model`` is required (for Azure it defaults to the deployment). ``api_key`` defaults
    to ``$OPENAI_API_KEY`` (``$AZURE_OPENAI_API_KEY`` for Azure; ``api_key_env`` names
    another variable); pass ``api_key=""`` for a server that takes no key. Sampling
    options left at ``None`` are not sent. ``extra_body`` adds provider-specific fields;
    ``headers`` adds request headers.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        model: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str = oc.DEFAULT_BASE_URL,
        api_key_env: str | None = KEY_ENV,
        azure_endpoint: str | None = None,
        azure_deployment: str | None = None,
        api_version: str = oc.AZURE_API_VERSION,
        organization: str | None = None,
        project: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        include_usage: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        deadlines: LLMDeadlines | None = None,
        http: HttpOptions | None = None,
        max_retries: int = 1,
        max_retry_wait: float = 5.0,
        retry_backoff: float = 0.25,
    ) -> None:
        azure = azure_endpoint is not None or azure_deployment is not None
        if azure:
            if not azure_endpoint or not azure_deployment:
                raise ConfigError(
                    "Azure OpenAI needs both azure_endpoint='https://NAME.openai.azure.com' "
                    "and azure_deployment='your-deployment'"
                )
            self.url = oc.azure_chat_url(azure_endpoint, azure_deployment, api_version)
            model = model or azure_deployment
        else:
            self.url = oc.chat_url(base_url)
        if not model or not isinstance(model, str) or not model.strip():
            raise ConfigError(
                "OpenAILLM needs model=..., e.g. 'gpt-4o-mini' (OpenAI), 'llama3.2' (Ollama)"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if max_retry_wait < 0 or retry_backoff < 0:
            raise ConfigError("max_retry_wait and retry_backoff must be >= 0 seconds")
        self.model = model
        self.azure = azure
        key = self._resolve_key(api_key, AZURE_KEY_ENV if azure else api_key_env, azure)
        hdrs: dict[str, str] = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if key:
            if azure:
                hdrs["api-key"] = key
            else:
                hdrs["Authorization"] = f"Bearer {key}"
        if organization:
            hdrs["OpenAI-Organization"] = organization
        if project:
            hdrs["OpenAI-Project"] = project
        hdrs.update(headers or {})
        self._headers = hdrs
        self.options: dict[str, Any] = {
            "include_usage": include_usage,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "max_completion_tokens": max_completion_tokens,
            "stop": stop,
            "seed": seed,
            "tool_choice": tool_choice,
            "parallel_tool_calls": parallel_tool_calls,
            "extra": dict(extra_body or {}),
        }
        # Refuse bad options now rather than at the first chat().
        oc.build_body([_Probe()], [], model=model, **{**self.options, "tool_choice": None})
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

    @staticmethod
    def _resolve_key(api_key: str | None, env: str | None, azure: bool) -> str:
        if api_key is not None:
            return api_key.strip()
        key = os.environ.get(env, "").strip() if env else ""
        if env and not key:
            where = "Azure OpenAI" if azure else "OpenAILLM"
            raise ConfigError(
                f"{where} needs an API key: pass api_key=... or set {env}; for a server "
                "that takes none (Ollama, a local vLLM) pass api_key=''"
            )
        return key

    @classmethod
    def compatible(cls, server: str, model: str, **kwargs: Any) -> OpenAILLM:
        """An OpenAILLM for a known server (``openai``, ``groq``, ``xai``, ``ollama``,
        ``vllm``): its base URL and key variable, unless ``kwargs`` override them."""
        try:
            base_url, env = COMPATIBLE[server]
        except KeyError:
            raise ConfigError(
                f"unknown server {server!r}; choose one of {', '.join(COMPATIBLE)} or pass "
                "base_url=... to OpenAILLM"
            ) from None
        kwargs.setdefault("base_url", base_url)
        kwargs.setdefault("api_key_env", env)
        if env is None:
            kwargs.setdefault("api_key", "")
        return cls(model, **kwargs)

    def body(self, context: ChatContext, tools: Sequence[FunctionTool] = ()) -> dict[str, Any]:
        """The JSON request body for ``context`` and ``tools``."""
        return oc.build_body(context.messages, tools, model=self.model, **self.options)

    def _new_stream(
        self, context: ChatContext, tools: tuple[FunctionTool, ...], generation: int
    ) -> ChatStream:
        body = oc.encode_body(self.body(context, tools))  # ConfigError here, at chat()
        return OpenAIChatStream(self, context, tools, generation, body, self._tasks)

    async def _aclose_resources(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deadlines.close):
                await self._client.aclose()


class _Probe:
    role = "user"
    content = "probe"
    tool_calls: tuple[oc.ToolCallLike, ...] = ()
    tool_call_id = None


class OpenAIChatStream(ChatStream):
    """One streamed chat completion (with at most ``max_retries`` retries before output)."""

    def __init__(
        self,
        llm: OpenAILLM,
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
                raise oc.http_error(
                    response.status_code,
                    response.headers,
                    body,
                    provider=self.provider,
                    auth_hint=self._auth_hint(),
                )
            ctype = response.headers.get("content-type", "")
            if ctype.startswith("application/json"):
                raise ProviderError(
                    "the server answered with JSON, not an event stream",
                    provider=self.provider,
                    stage="receive",
                    hint="does this server support streaming (stream: true)?",
                )
            await self._read(response)
        finally:
            await self._close(response)

    async def _read(self, response: httpx.Response) -> None:
        parser = oc.SseParser()
        chunks = response.aiter_bytes()
        finished = False
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
            for event in self._parse(parser.feed, chunk):
                if self._handle(event):
                    return
                finished = finished or isinstance(event, oc.Finish)
        for event in self._parse(lambda _: parser.close(), b""):
            if self._handle(event):
                return
            finished = finished or isinstance(event, oc.Finish)
        if not finished:
            raise ProviderConnectionError(
                "the stream ended before its end ([DONE] or a finish_reason)",
                provider=self.provider,
                stage="receive",
                hint="the server closed the response early; retrying usually helps",
                retryable=True,
            )
        log.debug("%s: stream ended after its finish_reason but without [DONE]", self.provider)

    def _parse(self, feed: Any, chunk: bytes) -> list[oc.WireEvent]:
        try:
            out: list[oc.WireEvent] = []
            for sse in feed(chunk):
                out.extend(oc.parse_event(sse))
            return out
        except oc.Malformed as exc:
            raise ProviderError(
                f"malformed stream: {exc}",
                provider=self.provider,
                stage="receive",
                hint="the server does not speak OpenAI chat-completions streaming",
            ) from None
        except oc.StreamErrorEvent as exc:
            raise ProviderError(
                f"error in the stream: {exc.message}",
                provider=self.provider,
                stage="stream",
                code=exc.code or exc.type,
                retryable=exc.type != "invalid_request_error",
            ) from None

    def _handle(self, event: oc.WireEvent) -> bool:
        """Report one event; True at ``[DONE]``."""
        if isinstance(event, oc.ContentDelta):
            self._text(event.text)
        elif isinstance(event, oc.ToolCallFragment):
            self._tool_delta(event.index, id=event.id, name=event.name, arguments=event.arguments)
        elif isinstance(event, oc.Finish):
            reason = event.reason if event.reason in _FINISH else "stop"
            if event.reason == "function_call":  # the legacy name of tool_calls
                reason = "tool_calls"
            self._finish_reason(reason)  # type: ignore[arg-type]
        elif isinstance(event, oc.UsageReport):
            self._usage(Usage(event.prompt_tokens, event.completion_tokens))
        elif isinstance(event, oc.Done):
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

    async def _close(self, response: httpx.Response) -> None:
        """Close the response; one not read to its end drops its connection."""
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(self.deadlines.close):
                await response.aclose()

    def _auth_hint(self) -> str:
        if self._llm.azure:
            return f"check the Azure OpenAI key ({AZURE_KEY_ENV} or api_key=...)"
        return f"check the API key for {self._llm.url} (api_key=... or its variable)"
