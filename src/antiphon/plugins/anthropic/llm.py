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

The HTTP loop — deadlines, retries before the first token (429, 500, 529 overloaded, a
dropped connection, an ``overloaded_error`` event before any output; after
``retry-after`` or a jittered backoff from ``retry_backoff``), never after, cancel
closing the response — is :mod:`antiphon.services.http_llm`'s; this module builds the
request and parses the stream (:class:`AnthropicChatStream`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from antiphon.errors import ProviderError
from antiphon.net.http import HttpOptions
from antiphon.plugins.keys import require_api_key
from antiphon.protocols import anthropic_messages as am
from antiphon.protocols import openai_chat as oc
from antiphon.protocols.retry import Backoff
from antiphon.services.http_llm import (
    HttpChatStream,
    HttpLLM,
    check_body_options,
    require_model,
)
from antiphon.services.llm import ChatContext, LLMDeadlines
from antiphon.services.tools import FunctionTool

__all__ = ["KEY_ENV", "AnthropicChatStream", "AnthropicLLM"]

log = logging.getLogger(__name__)

PROVIDER = "anthropic"
KEY_ENV = "ANTHROPIC_API_KEY"


class AnthropicLLM(HttpLLM):
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
    not_streaming_hint: ClassVar[str] = "is base_url an Anthropic Messages API?"

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
        retry_backoff: float | Backoff = 0.25,
    ) -> None:
        self.model = require_model(model, "AnthropicLLM", "claude-sonnet-4-5")
        self.url = am.messages_url(base_url)
        key = require_api_key(api_key, KEY_ENV, "AnthropicLLM")
        self.headers = am.request_headers(key, version=api_version, beta=beta)
        self.headers.update(headers or {})
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
        check_body_options(am.build_body, self.options, model=self.model)
        super().__init__(
            deadlines=deadlines,
            http=http,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            retry_backoff=retry_backoff,
        )

    def body(self, context: ChatContext, tools: Sequence[FunctionTool] = ()) -> dict[str, Any]:
        """The JSON request body for ``context`` and ``tools``."""
        return am.build_body(context.messages, tools, model=self.model, **self.options)

    def encode(self, context: ChatContext, tools: tuple[FunctionTool, ...]) -> bytes:
        return am.encode_body(self.body(context, tools))

    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return am.http_error(
            status,
            headers,
            body,
            provider=self.provider,
            auth_hint=f"check the API key ({KEY_ENV} or api_key=...)",
        )


class AnthropicChatStream(HttpChatStream):
    """One streamed message: SSE events through the protocol's ``MessageStream`` machine,
    complete at ``message_stop``."""

    end_marker = "message_stop"

    def _begin(self) -> None:
        self._parser = oc.SseParser()
        self._machine = am.MessageStream()

    def _feed(self, chunk: bytes) -> bool:
        return self._report(self._parser.feed, chunk)

    def _end(self) -> bool:
        return self._report(lambda _: self._parser.close(), b"")

    def _report(self, feed: Callable[[bytes], list[oc.SseEvent]], chunk: bytes) -> bool:
        """Parse ``chunk`` and report its actions; True at ``message_stop``."""
        try:
            for sse in feed(chunk):
                for action in self._machine.feed(am.parse_event(sse)):
                    if self._report_action(action):
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


AnthropicLLM.stream_class = AnthropicChatStream
