"""What the fake chat-completion servers share: scripted replies, requests, the SSE answer.

Every LLM fake (:mod:`~antiphon.testing.openai_chat`,
:mod:`~antiphon.testing.anthropic_messages`, :mod:`~antiphon.testing.gemini_generate`,
:mod:`~antiphon.testing.bedrock_converse`) answers a JSON request with a stream, from a
script written once in provider-neutral terms: a :class:`Reply` (text, tool calls as
:class:`ScriptedCall`\\ s, a finish reason), a sequence of them, or a
:data:`Responder` function of the request body (:func:`default_reply` echoes the last
message). :class:`FakeChatServer` holds the script and :class:`ChatFakeStats`;
:class:`ChatConnection` reads each request (:class:`ChatRequest`) and streams the next
reply through :meth:`~antiphon.testing.http_server.HttpConnection.stream_sse` with the
plan's faults, so a fake writes only its provider's events (:meth:`ChatConnection.events`,
its error and stale events, its head). Cut from :mod:`antiphon.testing.openai_chat`,
which re-exports every name here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from antiphon.testing.faults import FaultPlan
from antiphon.testing.http_server import FakeHttpServer, HttpConnection

__all__ = [
    "DEFAULT_API_KEY",
    "MAX_BODY",
    "ChatConnection",
    "ChatFakeStats",
    "ChatRequest",
    "FakeChatServer",
    "Reply",
    "Responder",
    "ScriptedCall",
    "default_reply",
]

DEFAULT_API_KEY = "test-key"
MAX_BODY = 4 * 1024 * 1024
_TOKEN = re.compile(r"\s*\S+|\s+")


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """A tool call the fake model makes (``arguments``: JSON text or a mapping)."""

    name: str
    arguments: str | Mapping[str, Any] = "{}"
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments))


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer: text, tool calls (several: parallel calls), or both."""

    text: str = ""
    tool_calls: tuple[ScriptedCall, ...] = ()
    finish_reason: str | None = None
    """Default: ``tool_calls`` when there are calls, else ``stop``."""

    def tokens(self) -> list[str]:
        """The text as the fake streams it, one piece per chunk."""
        return _TOKEN.findall(self.text)


Responder = Callable[[dict[str, Any]], Reply]


def default_reply(body: Mapping[str, Any]) -> Reply:
    """What the fake answers when nothing was scripted: the last message, echoed."""
    messages = body.get("messages") or [{}]
    last = messages[-1]
    content = last.get("content") or ""
    if last.get("role") == "tool":
        return Reply(f"The tool said: {content}")
    return Reply(f"You said: {content}")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One request as the fake read it (``json``: the parsed body, if it parsed)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: Any
    connection: int


@dataclass
class ChatFakeStats:
    """What the fake saw and did (read it from the test after the fact)."""

    connections: int = 0
    open_connections: int = 0
    requests: list[ChatRequest] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    """Every reply streamed (or started), in order."""
    completed: int = 0
    """Streams sent to their ``[DONE]``."""
    cancels: int = 0
    """Streams the client closed before their end (as far as the fake noticed)."""
    cut_streams: int = 0
    dropped_requests: int = 0
    idle_closes: int = 0


class FakeChatServer(FakeHttpServer):
    """What the chat API fakes share: scripted replies, a ``Retry-After`` value.

    ``replies``: see the module docstring. ``reject_requests``: with
    ``plan.reject_status``, refuse only that many requests, then answer normally.
    """

    stats: ChatFakeStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        replies: Reply | Sequence[Reply] | Responder | None = None,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        reject_requests: int | None = None,
        retry_after: str = "1",
    ) -> None:
        super().__init__(
            plan, api_key=api_key, host=host, port=port, reject_requests=reject_requests
        )
        self.retry_after = retry_after
        self.stats = ChatFakeStats()
        self._script: list[Reply] = []
        self._responder: Responder = self.default_reply
        if isinstance(replies, Reply):
            fixed = replies
            self._responder = lambda _body: fixed
        elif callable(replies):
            self._responder = replies
        elif replies is not None:
            self._script = list(replies)
        self._ids = itertools.count(1)
        self._answered = 0
        self.sent_events: list[dict[str, Any]] = []
        """Every event streamed through :meth:`ChatConnection.event`, parsed (for witness
        tests)."""

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give a client and the provider's SDK."""
        return self.url

    def default_reply(self, body: dict[str, Any]) -> Reply:
        """The answer when nothing was scripted."""
        return default_reply(body)

    def next_reply(self, body: dict[str, Any]) -> Reply:
        """The reply to ``body``: the next scripted one, else the responder's."""
        if self._script:
            return self._script.pop(0)
        return self._responder(body)


class ChatConnection(HttpConnection[ChatRequest]):
    """A chat API connection: JSON requests, answered with a server-sent-event stream."""

    MAX_BODY = MAX_BODY

    def __init__(
        self,
        server: FakeChatServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        index: int,
    ) -> None:
        super().__init__(server, reader, writer, index)
        self.chat = server
        self.stats = server.stats

    def make_request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> ChatRequest:
        try:
            parsed: Any = json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
        split = urlsplit(target)
        return ChatRequest(
            method, split.path, parse_qs(split.query), headers, body, parsed, self.index
        )

    #: What ``malformed_mid_stream`` sends: frames a client must ignore or refuse.
    MALFORMED: tuple[bytes, ...] = ()

    def stream_head(self, keep_alive: bool) -> list[str]:
        """The header lines of a streamed answer."""
        raise NotImplementedError

    async def stream(self, reply: Reply, body: dict[str, Any]) -> bool:
        """Stream one reply; False if the connection must close afterwards.

        By default: :meth:`events` through :meth:`stream_sse` with the plan's faults
        (:meth:`error_event` for ``error_mid_stream``, :attr:`MALFORMED`,
        :meth:`stale_event` for ``audio_after_done``).
        """
        return await self.stream_sse(
            self.events(reply, body),
            error=self.error_event,
            malformed=self.MALFORMED,
            stale=self.stale_event,
        )

    def event(self, obj: dict[str, Any]) -> bytes:
        """``obj`` as one event on the wire (:meth:`encode_event`), noted in the server's
        ``sent_events``."""
        self.chat.sent_events.append(obj)
        return self.encode_event(obj)

    def encode_event(self, obj: dict[str, Any]) -> bytes:
        """The bytes of one server-sent event carrying ``obj``."""
        raise NotImplementedError

    def events(self, reply: Reply, body: dict[str, Any]) -> list[tuple[bytes, bool]]:
        """The stream of ``reply``: (event bytes, whether it is a counted delta)."""
        raise NotImplementedError

    def error_event(self) -> bytes:
        """What ``error_mid_stream`` sends before the body ends."""
        raise NotImplementedError

    def stale_event(self) -> bytes:
        """One event of ``audio_after_done``, after the end of the reply."""
        raise NotImplementedError

    async def answer(self, request: ChatRequest, keep_alive: bool) -> bool:
        server, plan = self.chat, self.plan
        body: dict[str, Any] = request.json
        server._answered += 1
        silent = plan.silent_after is not None and server._answered > plan.silent_after
        await self.write_head(self.stream_head(keep_alive))
        if silent:
            await self.hang()
        reply = server.next_reply(body)
        self.stats.replies.append(reply)
        return await self.stream(reply, body) and keep_alive
