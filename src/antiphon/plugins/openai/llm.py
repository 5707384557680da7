"""OpenAILLM: streaming chat completions over any OpenAI-compatible HTTP API.

One ``POST {base_url}/chat/completions`` with ``"stream": true`` per response, read as
server-sent events by :mod:`antiphon.protocols.openai_chat`. Works with OpenAI and the
servers that copy its API — Ollama, vLLM, xAI, Groq (:meth:`OpenAILLM.compatible` knows
their URLs and key variables) — and with Azure OpenAI (``azure_endpoint`` +
``azure_deployment``: the deployment path, ``api-version`` query and ``api-key`` header).

The HTTP loop — deadlines, retries before the first token (after ``Retry-After`` or a
jittered backoff from ``retry_backoff``), never after, cancel closing the response — is
:mod:`antiphon.services.http_llm`'s; this module builds the request and parses the
stream (:class:`OpenAIChatStream`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from antiphon.errors import ConfigError, ProviderError
from antiphon.net.http import HttpOptions
from antiphon.plugins.keys import require_api_key
from antiphon.protocols import openai_chat as oc
from antiphon.protocols.retry import Backoff
from antiphon.services.http_llm import HttpChatStream, HttpLLM, check_body_options, require_model
from antiphon.services.llm import ChatContext, LLMDeadlines, Usage
from antiphon.services.tools import FunctionTool

__all__ = ["AZURE_KEY_ENV", "COMPATIBLE", "KEY_ENV", "PROVIDER", "OpenAIChatStream", "OpenAILLM"]

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


class OpenAILLM(HttpLLM):
    """Streaming chat over an OpenAI-compatible API (see the module docstring).

    ``model`` is required (for Azure it defaults to the deployment). ``api_key`` defaults
    to ``$OPENAI_API_KEY`` (``$AZURE_OPENAI_API_KEY`` for Azure; ``api_key_env`` names
    another variable); pass ``api_key=""`` for a server that takes no key. Sampling
    options left at ``None`` are not sent. ``extra_body`` adds provider-specific fields;
    ``headers`` adds request headers.
    """

    provider: ClassVar[str] = PROVIDER
    not_streaming_hint: ClassVar[str] = "does this server support streaming (stream: true)?"

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
        retry_backoff: float | Backoff = 0.25,
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
        model = require_model(model, "OpenAILLM", "gpt-4o-mini", "llama3.2")
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
        self.headers = hdrs
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
        check_body_options(oc.build_body, self.options, model=model)
        super().__init__(
            deadlines=deadlines,
            http=http,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            retry_backoff=retry_backoff,
        )

    @staticmethod
    def _resolve_key(api_key: str | None, env: str | None, azure: bool) -> str:
        if (api_key is None and env is None) or (isinstance(api_key, str) and not api_key.strip()):
            return ""  # a server that takes no key (Ollama, a local vLLM)
        return require_api_key(
            api_key,
            env or KEY_ENV,
            "Azure OpenAI" if azure else "OpenAILLM",
            how="for a server that takes none, such as Ollama or a local vLLM, pass api_key=''",
        )

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

    def encode(self, context: ChatContext, tools: tuple[FunctionTool, ...]) -> bytes:
        return oc.encode_body(self.body(context, tools))

    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        if self.azure:
            hint = f"check the Azure OpenAI key ({AZURE_KEY_ENV} or api_key=...)"
        else:
            hint = f"check the API key for {self.url} (api_key=... or its variable)"
        return oc.http_error(status, headers, body, provider=self.provider, auth_hint=hint)


class OpenAIChatStream(HttpChatStream):
    """One streamed chat completion: SSE chunks, complete at ``[DONE]`` (or, from servers
    that omit it, at the end of a body that carried a ``finish_reason``)."""

    end_marker = "its end ([DONE] or a finish_reason)"

    def _begin(self) -> None:
        self._parser = oc.SseParser()
        self._finished = False

    def _feed(self, chunk: bytes) -> bool:
        return self._report(self._parse(self._parser.feed, chunk))

    def _end(self) -> bool:
        if self._report(self._parse(lambda _: self._parser.close(), b"")):
            return True
        if self._finished:
            log.debug("%s: stream ended after its finish_reason but without [DONE]", self.provider)
        return self._finished

    def _report(self, events: list[oc.WireEvent]) -> bool:
        for event in events:
            if self._handle(event):
                return True
            self._finished = self._finished or isinstance(event, oc.Finish)
        return False

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


OpenAILLM.stream_class = OpenAIChatStream
