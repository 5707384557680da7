"""The streaming chat contract: ``LLM.chat(context, tools=...)`` → ``ChatStream``.

A chat stream yields :class:`TextDelta`s as tokens arrive and :class:`ToolCallDelta`s as
a tool call's arguments stream in (the OpenAI chat-completions shape: an ``index``, then
``id`` and ``name`` once, then fragments of the JSON ``arguments``), followed by each
complete :class:`ToolCall` when the model has finished it. The stream reaches exactly
one terminal state — completed, cancelled or failed with a typed error — and its
:class:`ChatResult` (text, tool calls, ``finish_reason``, :class:`Usage`) is available
from :meth:`ChatStream.result`.

Deadlines (:class:`LLMDeadlines`) are enforced here for every plugin: from the start to
the first event (``first_token``), then between events (``idle``); a plugin's own
connect deadline comes from ``connect``.

Plugins implement :meth:`ChatStream._run` and report through ``_text``,
``_tool_delta`` and ``_finish_reason``/``_usage``; the base assembles tool calls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from antiphon.aio.stream import ProviderService, ProviderStream
from antiphon.aio.stream import StreamState as StreamState
from antiphon.aio.tasks import TaskOwner
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.services.tools import FunctionTool

__all__ = [
    "LLM",
    "ROLES",
    "ChatContext",
    "ChatEvent",
    "ChatMessage",
    "ChatResult",
    "ChatStream",
    "FinishReason",
    "LLMDeadlines",
    "Role",
    "StreamState",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]

log = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete call of a tool: ``arguments`` is the model's JSON text."""

    id: str
    name: str
    arguments: str

    def args(self) -> dict[str, Any]:
        """The arguments parsed (``{}`` when empty); ``ConfigError`` if not a JSON object."""
        try:
            value = json.loads(self.arguments) if self.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"tool call {self.name}: arguments are not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"tool call {self.name}: arguments are not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation.

    ``assistant`` messages may carry ``tool_calls``; a ``tool`` message answers one of
    them (``tool_call_id``) with ``content`` as the result.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(
                f"ChatMessage role must be one of {', '.join(ROLES)}, got {self.role!r}"
            )
        if not isinstance(self.content, str):
            raise ConfigError(f"ChatMessage content must be str, got {type(self.content).__name__}")
        if self.role == "tool" and not self.tool_call_id:
            raise ConfigError("a tool message needs the tool_call_id of the call it answers")
        if not isinstance(self.tool_calls, tuple):
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if not all(isinstance(c, ToolCall) for c in self.tool_calls):
            raise ConfigError("ChatMessage tool_calls must be ToolCall objects")
        if self.tool_calls and self.role != "assistant":
            raise ConfigError("only assistant messages carry tool_calls")


@dataclass
class ChatContext:
    """The conversation sent to a model: an ordered list of :class:`ChatMessage`."""

    messages: list[ChatMessage] = field(default_factory=list)

    def add(self, message: ChatMessage) -> Self:
        if not isinstance(message, ChatMessage):
            raise ConfigError(f"ChatContext.add() takes a ChatMessage, got {message!r}")
        self.messages.append(message)
        return self

    def system(self, text: str) -> Self:
        return self.add(ChatMessage("system", text))

    def user(self, text: str) -> Self:
        return self.add(ChatMessage("user", text))

    def assistant(self, text: str, tool_calls: Iterable[ToolCall] = ()) -> Self:
        return self.add(ChatMessage("assistant", text, tuple(tool_calls)))

    def tool_result(self, call: ToolCall, output: str) -> Self:
        return self.add(ChatMessage("tool", output, tool_call_id=call.id, name=call.name))

    def copy(self) -> ChatContext:
        return ChatContext(list(self.messages))

    def last(self, role: Role) -> ChatMessage | None:
        """The last message of ``role``, if any."""
        for m in reversed(self.messages):
            if m.role == role:
                return m
        return None

    def __len__(self) -> int:
        return len(self.messages)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call ``index``: ``id``/``name`` come once, ``arguments`` in parts."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


ChatEvent = TextDelta | ToolCallDelta | ToolCall


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatResult:
    """What a finished (or ended) stream produced."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason
    usage: Usage
    state: StreamState
    error: ProviderError | None = None


@dataclass(frozen=True, slots=True)
class LLMDeadlines:
    """Every wait on a model, in seconds.

    ``connect``: open the connection (plugins that have one). ``first_token``: from the
    request to the first streamed event. ``idle``: between events. ``close``: closing.
    """

    connect: float = 5.0
    first_token: float = 15.0
    idle: float = 10.0
    close: float = 2.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_token", "idle", "close"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"LLMDeadlines.{name} must be a positive number of seconds")


@dataclass
class _PartialCall:
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


_call_ids = itertools.count(1)


class ChatStream(ProviderStream[ChatEvent]):
    """One model response: events out, exactly one terminal state.

    Iterate it for :data:`ChatEvent`s; iteration ends when the response completes or is
    cancelled and raises the typed error when it failed (after the events before it).
    ``await stream.result()`` waits for the end without consuming events.
    """

    def __init__(
        self,
        *,
        provider: str,
        context: ChatContext,
        tools: Sequence[FunctionTool],
        generation: int,
        deadlines: LLMDeadlines,
        owner: TaskOwner,
    ) -> None:
        super().__init__(provider=provider, generation=generation, close_timeout=deadlines.close)
        self.context = context
        self.tools = tuple(tools)
        self.deadlines = deadlines
        self._text_parts: list[str] = []
        self._partial: dict[int, _PartialCall] = {}
        self._completed: set[int] = set()
        self._calls: list[ToolCall] = []
        self._reason: FinishReason | None = None
        self._usage_value = Usage()
        self._timeout: asyncio.Timeout | None = None
        self._events = 0
        self.time_to_first_token: float | None = None
        self._started = asyncio.get_running_loop().time()
        self._launch(owner, f"{provider}-chat")

    @property
    def has_output(self) -> bool:
        """True once the first event (text or tool call) was delivered."""
        return self._events > 0

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return "".join(self._text_parts)

    async def result(self) -> ChatResult:
        """Wait for the end; the result of a failed stream carries its ``error``."""
        await self._terminal.wait()
        reason: FinishReason
        if self._state is StreamState.CANCELLED:
            reason = "cancelled"
        elif self._state is StreamState.FAILED:
            reason = "error"
        else:
            reason = self._reason or ("tool_calls" if self._calls else "stop")
        return ChatResult(
            self.text, tuple(self._calls), reason, self._usage_value, self._state, self._error
        )

    async def collect_text(self) -> str:
        """All text of the response (raises the stream's error on failure)."""
        return "".join([e.text async for e in self if isinstance(e, TextDelta)])

    # -- for plugins
    def _touch(self) -> None:
        loop = asyncio.get_running_loop()
        if self._events == 0:
            self.time_to_first_token = loop.time() - self._started
        self._events += 1
        # An expiring timeout cannot be rescheduled: its cancellation is already on its way.
        if self._timeout is not None and not self._timeout.expired():
            self._timeout.reschedule(loop.time() + self.deadlines.idle)

    def _text(self, text: str) -> None:
        """Report streamed text."""
        if self._state is not StreamState.RUNNING or not text:
            return
        self._touch()
        self._text_parts.append(text)
        self._out.send_nowait(TextDelta(text))

    def _tool_delta(
        self, index: int, *, id: str | None = None, name: str | None = None, arguments: str = ""
    ) -> None:
        """Report a fragment of tool call ``index`` (completed calls are emitted at the end
        of the stream, or when a higher index starts)."""
        if self._state is not StreamState.RUNNING:
            return
        if index in self._completed:
            raise ProviderError(
                f"tool call #{index} continued after a later call had started",
                provider=self.provider,
                stage="stream",
            )
        self._touch()
        for i in sorted(k for k in self._partial if k < index):
            self._complete(i)
        part = self._partial.setdefault(index, _PartialCall())
        if id:
            part.id = id
        if name:
            part.name = name
        if arguments:
            part.arguments.append(arguments)
        self._out.send_nowait(ToolCallDelta(index, id, name, arguments))

    def _complete(self, index: int) -> None:
        part = self._partial.pop(index)
        self._completed.add(index)
        if not part.name:
            raise ProviderError(
                f"tool call #{index} has no name", provider=self.provider, stage="stream"
            )
        call = ToolCall(part.id or f"call_{next(_call_ids)}", part.name, "".join(part.arguments))
        self._calls.append(call)
        self._out.send_nowait(call)

    def _finish_reason(self, reason: FinishReason) -> None:
        self._reason = reason

    def _usage(self, usage: Usage) -> None:
        self._usage_value = usage

    # -- lifecycle
    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + self.deadlines.first_token) as cm:
                self._timeout = cm
                await self._run()
            for i in sorted(self._partial):
                self._complete(i)
        except asyncio.CancelledError:
            self._finish(StreamState.CANCELLED)
            raise
        except ProviderError as exc:  # before TimeoutError: keep a plugin's typed timeout
            self._finish(StreamState.FAILED, exc)
        except TimeoutError as exc:
            if self._timeout is None or not self._timeout.expired():
                self._finish(
                    StreamState.FAILED,
                    ProviderError(f"timed out: {exc!r}", provider=self.provider, stage="stream"),
                )
                return
            stage = "first_token" if self._events == 0 else "idle"
            limit = self.deadlines.first_token if self._events == 0 else self.deadlines.idle
            self._finish(
                StreamState.FAILED,
                ProviderTimeoutError(
                    "no answer" if self._events == 0 else "the response stalled",
                    provider=self.provider,
                    stage=stage,
                    timeout=limit,
                ),
            )
        except Exception as exc:
            log.exception("%s chat stream failed unexpectedly", self.provider)
            self._finish(
                StreamState.FAILED,
                ProviderError(f"unexpected error: {exc!r}", provider=self.provider, stage="stream"),
            )
        else:
            self._finish(StreamState.COMPLETED)
        finally:
            self._timeout = None

    @abstractmethod
    async def _run(self) -> None:
        """Produce the response; return when complete, raise ``ProviderError`` on failure."""


class LLM(ProviderService[ChatStream]):
    """A streaming chat model. Owns its streams' tasks; ``aclose()`` ends them all."""

    provider: ClassVar[str] = "llm"
    kind: ClassVar[str] = "LLM"

    def __init__(self, *, deadlines: LLMDeadlines | None = None) -> None:
        if deadlines is not None and not isinstance(deadlines, LLMDeadlines):
            raise ConfigError(f"deadlines must be LLMDeadlines, got {type(deadlines).__name__}")
        super().__init__()
        self.deadlines = deadlines or LLMDeadlines()

    def chat(
        self,
        context: ChatContext | Sequence[ChatMessage],
        *,
        tools: Sequence[FunctionTool] = (),
        generation: int = 0,
    ) -> ChatStream:
        """Start a response to ``context`` (copied: later edits do not affect it)."""
        if self._closed:  # before checking the arguments, as the other services do
            raise StreamClosedError(f"{self.provider} LLM is closed; create a new one")
        if isinstance(context, ChatContext):
            ctx = context.copy()
        else:
            ctx = ChatContext()
            for m in context:
                ctx.add(m)
        if not ctx.messages:
            raise ConfigError("chat() needs at least one message")
        if not all(isinstance(t, FunctionTool) for t in tools):
            raise ConfigError(
                "tools must be FunctionTools (decorate functions with @function_tool)"
            )
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"tool names must be unique, got {names}")
        return self._open(lambda: self._new_stream(ctx, tuple(tools), generation))

    def _close_timeout(self) -> float:
        return self.deadlines.close

    @abstractmethod
    def _new_stream(
        self, context: ChatContext, tools: tuple[FunctionTool, ...], generation: int
    ) -> ChatStream:
        """Create the plugin's stream."""
