"""GeminiLLM: Gemini through the Gemini API's streaming ``streamGenerateContent``.

One ``POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse`` per response,
the key in ``x-goog-api-key``; the body and the event stream are
:mod:`antiphon.protocols.gemini_generate` (SSE bytes through its
:class:`~antiphon.protocols.gemini_generate.GeminiSseParser`, each event through the
:class:`~antiphon.protocols.gemini_generate.GenerateStream` machine, whose actions this
plugin reports to the :class:`~antiphon.services.llm.ChatStream` base). The HTTP loop —
deadlines, retries before the first token (429, 5xx, an ``UNAVAILABLE`` error event or a
cut before any output; after ``google.rpc.RetryInfo`` or a jittered backoff), never after,
cancel closing the response — is :mod:`antiphon.services.http_llm`'s.

Gemini sends each function call whole (no argument fragments): a call is reported as a
delta with its id and name, then one with all its arguments. Gemini 3 attaches a
``thoughtSignature`` to function calls and refuses a replayed call without it, while
antiphon's :class:`~antiphon.services.llm.ToolCall` has no place for it; so the LLM
remembers the signature of each call it produced (the last ``max_signatures``) and puts it
back when that call comes back in the history. Calls the API sent without an id get one
(``antiphon-fc-…``) that is never sent back as an ``id``.

The key comes from ``api_key``, else ``$GOOGLE_API_KEY``, else ``$GEMINI_API_KEY`` (the
order of the ``google-genai`` SDK).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from antiphon.errors import ConfigError, ProviderError
from antiphon.net.http import HttpOptions
from antiphon.plugins.keys import require_api_key
from antiphon.protocols import gemini_generate as gg
from antiphon.protocols import openai_chat as oc
from antiphon.protocols.retry import Backoff
from antiphon.services.http_llm import HttpChatStream, HttpLLM, check_body_options, require_model
from antiphon.services.llm import ChatContext, LLMDeadlines, Usage
from antiphon.services.tools import FunctionTool

__all__ = ["KEY_ENVS", "GeminiChatStream", "GeminiLLM"]

log = logging.getLogger(__name__)

PROVIDER = "gemini"
#: Where the key is looked for, in order (as the google-genai SDK does).
KEY_ENVS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
#: In-stream error statuses worth a retry (before any output).
_RETRYABLE = frozenset({"UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"})


class GeminiLLM(HttpLLM):
    """Streaming chat with Gemini (see the module docstring).

    Args:
        model: The model, e.g. ``"gemini-2.5-flash"`` (required).
        api_key: Defaults to ``$GOOGLE_API_KEY``, then ``$GEMINI_API_KEY``.
        base_url: ``https://generativelanguage.googleapis.com`` (or a proxy).
        api_version: ``v1beta`` (tools and system instructions need it).
        max_output_tokens, temperature, top_p, top_k, stop_sequences: sampling, sent only
            when set.
        thinking_budget: Thinking tokens (``0`` turns thinking off where the model
            allows: the fastest first token for a voice agent; ``-1``: dynamic).
        tool_choice: ``"auto"``, ``"any"``, ``"none"`` or a tool's name.
        max_signatures: How many calls' thought signatures are remembered.
        extra_body: More body fields; ``headers``: more request headers.

    Raises:
        ConfigError: no model, no key, or an option out of range.
    """

    provider: ClassVar[str] = PROVIDER
    not_streaming_hint: ClassVar[str] = "is base_url the Gemini API (with ?alt=sse)?"

    def __init__(
        self,
        model: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str = gg.DEFAULT_BASE_URL,
        api_version: str = gg.API_VERSION,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: Sequence[str] | None = None,
        thinking_budget: int | None = None,
        tool_choice: str | None = None,
        max_signatures: int = 1024,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        deadlines: LLMDeadlines | None = None,
        http: HttpOptions | None = None,
        max_retries: int = 1,
        max_retry_wait: float = 5.0,
        retry_backoff: float | Backoff = 0.25,
    ) -> None:
        model = require_model(model, "GeminiLLM", "gemini-2.5-flash")
        if isinstance(max_signatures, bool) or not isinstance(max_signatures, int):
            raise ConfigError("max_signatures must be an integer >= 1")
        if max_signatures < 1:
            raise ConfigError("max_signatures must be an integer >= 1")
        self.url = gg.stream_url(base_url, model, api_version)
        self.model = model.strip().removeprefix("models/")
        key = require_api_key(api_key, KEY_ENVS[0], "GeminiLLM", also=KEY_ENVS[1:])
        self.headers = gg.request_headers(key)
        self.headers.update(headers or {})
        self.options: dict[str, Any] = {
            "max_output_tokens": max_output_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "stop_sequences": stop_sequences,
            "thinking_budget": thinking_budget,
            "tool_choice": tool_choice,
            "extra": dict(extra_body or {}),
        }
        # Refuse bad options now rather than at the first chat().
        check_body_options(gg.build_body, self.options)
        self.max_signatures = max_signatures
        self._signatures: OrderedDict[str, str] = OrderedDict()
        super().__init__(
            deadlines=deadlines,
            http=http,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            retry_backoff=retry_backoff,
        )

    def remember_signature(self, call_id: str, signature: str) -> None:
        """Keep the thought signature of call ``call_id`` (the last ``max_signatures``)."""
        self._signatures[call_id] = signature
        self._signatures.move_to_end(call_id)
        while len(self._signatures) > self.max_signatures:
            self._signatures.popitem(last=False)

    def body(self, context: ChatContext, tools: Sequence[FunctionTool] = ()) -> dict[str, Any]:
        """The JSON request body for ``context`` and ``tools``."""
        return gg.build_body(context.messages, tools, signatures=self._signatures, **self.options)

    def encode(self, context: ChatContext, tools: tuple[FunctionTool, ...]) -> bytes:
        return gg.encode_body(self.body(context, tools))

    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return gg.http_error(status, headers, body, provider=self.provider)


class GeminiChatStream(HttpChatStream):
    """One streamed response: complete at the chunk with a ``finishReason``."""

    end_marker = "a finishReason"

    def __init__(self, llm: HttpLLM, *args: Any) -> None:
        self.gemini_reason: str | None = None
        """Gemini's own ``finishReason`` (``STOP``, ``MAX_TOKENS``, ``SAFETY``…)."""
        super().__init__(llm, *args)

    def _begin(self) -> None:
        self._parser = gg.GeminiSseParser()
        self._machine = gg.GenerateStream()

    def _feed(self, chunk: bytes) -> bool:
        return self._report(self._parser.feed, chunk)

    def _end(self) -> bool:
        return self._report(lambda _: self._parser.close(), b"")

    def _report(self, feed: Callable[[bytes], list[oc.SseEvent]], chunk: bytes) -> bool:
        """Parse ``chunk`` and report its actions; True at the finish reason."""
        try:
            for sse in feed(chunk):
                for event in gg.parse_event(sse):
                    for action in self._machine.feed(event):
                        if self._handle(action):
                            return True
        except gg.Malformed as exc:
            raise ProviderError(
                f"malformed stream: {exc}",
                provider=self.provider,
                stage="receive",
                hint="the server does not speak Gemini streamGenerateContent (alt=sse)",
            ) from None
        except gg.StreamErrorEvent as exc:
            raise ProviderError(
                f"error in the stream: {exc.type or 'error'}: {exc.message}",
                provider=self.provider,
                stage="stream",
                code=exc.type or exc.code,
                retryable=(exc.type or "") in _RETRYABLE or (exc.type or "") in gg.FAILED,
            ) from None
        return False

    def _handle(self, action: gg.Action) -> bool:
        match action:
            case gg.TextOut(text):
                self._text(text)
            case gg.ToolCallOut(index, call_id, name, arguments, signature):
                if signature and isinstance(self._llm, GeminiLLM):
                    self._llm.remember_signature(call_id, signature)
                self._tool_delta(index, id=call_id, name=name)
                self._tool_delta(index, arguments=arguments)
            case gg.UsageOut(prompt, completion):
                self._usage(Usage(prompt, completion))
            case gg.Finish(reason, gemini_reason):
                self.gemini_reason = gemini_reason
                self._finish_reason(reason)
            case gg.Done():
                return True
        return False


GeminiLLM.stream_class = GeminiChatStream
