"""The tools of an MCP server as antiphon tools, through the official ``mcp`` client.

::

    async with MCPTools.stdio("python", ["weather_server.py"]) as weather:
        session = AgentSession(vad=..., stt=..., llm=..., tts=..., tools=weather.tools)
        ...

How it is built and why:

- **One ``async with`` owns the connection** (rule 1): entering starts the server (stdio:
  a subprocess speaking JSON-RPC on its stdin/stdout) or connects to it (streamable HTTP),
  does the MCP handshake and lists the tools, all within ``connect_timeout``; leaving
  closes it — the SDK closes the server's stdin, waits two seconds, then terminates the
  process tree (and for HTTP ends the session with a DELETE). The ``mcp`` client runs on
  anyio task groups, which must be entered and left by the same task: so the connection
  is a context manager, not an object closed from elsewhere. Tool calls may come from any
  task of the same loop (the agent's reply task).
- **Each MCP tool is a** :class:`~antiphon.services.tools.FunctionTool` whose parameters
  are the server's input schema as is, whose arguments are checked against it with
  ``jsonschema`` (a bad call is refused with a :class:`ToolArgumentError` the model sees,
  before anything is sent), and whose function calls ``tools/call`` with a deadline
  (``call_timeout``, also the tool's ``timeout``, rule 2). A result marked ``isError``
  raises :class:`MCPToolError`, which :func:`~antiphon.services.tools.run_tools` reports
  to the model as the tool's output, like any failing tool.
- **Names fit the LLM APIs**: an MCP name may hold characters OpenAI refuses (``.``,
  ``/``) or be longer than 64; such characters become ``_`` (with ``prefix`` prepended
  when given, to keep two servers' tools apart), and the original name is what is called.
- **The result becomes text**: the text blocks joined; the structured content as JSON
  when there is no text; other blocks (image, audio, resource) are named, not inlined.

``mcp`` is an optional dependency (``pip install 'antiphon[mcp]'``): it is imported only
when a connection is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from antiphon.errors import AntiphonError, ConfigError, ProviderError, ProviderTimeoutError
from antiphon.services.tools import FunctionTool, ToolArgumentError, decode_arguments

if TYPE_CHECKING:
    from mcp import Client

__all__ = ["INSTALL_HINT", "MCPTool", "MCPToolError", "MCPTools", "result_text", "tool_name"]

PROVIDER = "mcp"
INSTALL_HINT = "pip install 'antiphon[mcp]'"
_BAD = re.compile(r"[^a-zA-Z0-9_-]")


class MCPToolError(AntiphonError):
    """The MCP server ran the tool and reported an error (``isError``); the text says it."""

    def __init__(self, message: str, *, tool: str) -> None:
        super().__init__(message)
        self.tool = tool


def tool_name(name: str, prefix: str = "") -> str:
    """An MCP tool's name as the LLM APIs accept it (1-64 of ``[a-zA-Z0-9_-]``)."""
    cleaned = _BAD.sub("_", f"{prefix}{name}")[:64]
    return cleaned or "tool"


def result_text(result: Any) -> str:
    """The text the model gets from a ``CallToolResult``."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {getattr(block, 'mime_type', '')}]".replace(" ]", "]"))
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        elif kind == "resource":
            inner = block.resource
            text = getattr(inner, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {inner.uri}]")
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, default=str)
    return "\n".join(parts)


@dataclass(frozen=True)
class MCPTool(FunctionTool):
    """A tool of an MCP server; :meth:`parse_arguments` checks the server's schema."""

    mcp_name: str = ""
    server: str = ""

    def parse_arguments(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        raw = decode_arguments(self.name, arguments)
        import jsonschema

        try:
            cls = jsonschema.validators.validator_for(self.parameters)
            error = jsonschema.exceptions.best_match(cls(self.parameters).iter_errors(raw))
        except jsonschema.exceptions.SchemaError:
            return raw  # the server's schema is broken: let the server judge the call
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            raise ToolArgumentError(
                f"{self.name}: {error.message}" + (f" (at {where})" if where else "")
            )
        return raw


class MCPTools:
    """An MCP server's tools, for the length of an ``async with`` (see the module doc).

    Build it with :meth:`stdio` or :meth:`http`. After entering, :attr:`tools` holds the
    server's tools as :class:`MCPTool` (``FunctionTool``) objects.

    Args:
        server: what ``mcp.Client`` connects to (a URL, ``StdioServerParameters`` or a
            transport).
        label: the server's name in errors.
        prefix: prepended to each tool's name (e.g. ``"weather_"``).
        allowed: only these tools (by their MCP name); default: all.
        connect_timeout: seconds to start or reach the server, shake hands and list tools.
        call_timeout: seconds each tool call may take.

    Raises:
        ConfigError: a bad argument, or ``mcp`` is not installed (on entering).
    """

    def __init__(
        self,
        server: Any,
        *,
        label: str,
        prefix: str = "",
        allowed: Collection[str] | None = None,
        connect_timeout: float = 10.0,
        call_timeout: float = 10.0,
    ) -> None:
        for name, value in (("connect_timeout", connect_timeout), ("call_timeout", call_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"MCPTools {name} must be seconds > 0, got {value!r}")
        if prefix and not re.fullmatch(r"[a-zA-Z0-9_-]{1,32}", prefix):
            raise ConfigError(f"MCPTools prefix must be 1-32 of [a-zA-Z0-9_-], got {prefix!r}")
        self._server = server
        self.label = label
        self.prefix = prefix
        self.allowed = frozenset(allowed) if allowed is not None else None
        self.connect_timeout = float(connect_timeout)
        self.call_timeout = float(call_timeout)
        self.tools: list[MCPTool] = []
        self._client: Client | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **options: Any,
    ) -> MCPTools:
        """A server started as ``command args`` speaking MCP on its stdin/stdout.

        The server gets the SDK's short list of safe variables (``PATH``, ``HOME``...)
        plus ``env``, never the rest of this process's environment (its secrets).
        """
        params = _require().StdioServerParameters(
            command=command, args=list(args), env=dict(env) if env is not None else None, cwd=cwd
        )
        return cls(params, label=options.pop("label", command), **options)

    @classmethod
    def http(
        cls, url: str, *, headers: Mapping[str, str] | None = None, **options: Any
    ) -> MCPTools:
        """A server at ``url`` over streamable HTTP (``headers``: e.g. an authorization)."""
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"MCP server URL must be http:// or https://, got {url!r}")
        _require()
        server: Any = url
        if headers:  # the HTTP client is made (and closed) by the connection itself
            server = functools.partial(
                _http_with_headers, url, dict(headers), options.get("call_timeout", 10.0)
            )
        label = options.pop("label", re.sub(r"//[^@/]*@", "//", url))  # no credentials
        return cls(server, label=label, **options)

    async def __aenter__(self) -> Self:
        mcp = _require()
        if self._stack is not None:
            raise ConfigError(f"MCP server {self.label!r} is already open; use it once")
        stack = contextlib.AsyncExitStack()
        server = self._server() if isinstance(self._server, functools.partial) else self._server
        client = mcp.Client(server, read_timeout_seconds=self.call_timeout)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await stack.enter_async_context(client)
                listed = await self._list(client)
        except TimeoutError:
            await stack.aclose()
            raise ProviderTimeoutError(
                f"MCP server {self.label!r} did not start and list its tools",
                provider=PROVIDER,
                stage="connect",
                timeout=self.connect_timeout,
                hint="check the server's command or URL; raise connect_timeout if it is slow",
            ) from None
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, Exception) and not isinstance(exc, AntiphonError):
                raise ProviderError(
                    f"MCP server {self.label!r} could not be reached: {exc!r}",
                    provider=PROVIDER,
                    stage="connect",
                    hint="check the server's command or URL and its log (stderr)",
                ) from exc
            raise
        self._client, self._stack = client, stack
        self.tools = [self._tool(t) for t in listed]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._client = self._stack, None, None
        self.tools = []
        if stack is not None:
            await stack.aclose()

    async def _list(self, client: Client) -> list[Any]:
        found: list[Any] = []
        cursor: str | None = None
        for _ in range(100):  # a server whose pages never end cannot hang the start
            page = await client.list_tools(cursor=cursor)
            found.extend(t for t in page.tools if self.allowed is None or t.name in self.allowed)
            cursor = page.next_cursor
            if not cursor:
                break
        names = [tool_name(t.name, self.prefix) for t in found]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(
                f"MCP server {self.label!r}: tools {', '.join(twice)} have the same name once "
                "cleaned for the LLM; keep one with allowed="
            )
        return found

    def _tool(self, spec: Any) -> MCPTool:
        name = tool_name(spec.name, self.prefix)
        mcp_name = spec.name
        schema = dict(spec.input_schema or {"type": "object", "properties": {}})
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})

        async def call(**arguments: Any) -> str:
            client = self._client
            if client is None:
                raise MCPToolError(f"MCP server {self.label!r} is closed", tool=mcp_name)
            result = await client.call_tool(
                mcp_name, arguments, read_timeout_seconds=self.call_timeout
            )
            text = result_text(result)
            if result.is_error:
                raise MCPToolError(text or f"{mcp_name} failed", tool=mcp_name)
            return text

        return MCPTool(
            name=name,
            description=spec.description or spec.title or mcp_name,
            parameters=schema,
            fn=call,
            timeout=self.call_timeout,
            mcp_name=mcp_name,
            server=self.label,
        )


class _OwnedClient(contextlib.AbstractAsyncContextManager[Any]):
    """A transport whose HTTP client we made: closed after the transport."""

    def __init__(self, transport: contextlib.AbstractAsyncContextManager[Any], http: Any) -> None:
        self._transport = transport
        self._http = http

    async def __aenter__(self) -> Any:
        return await self._transport.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._transport.__aexit__(*exc)
        finally:
            await self._http.aclose()


def _http_with_headers(url: str, headers: dict[str, str], timeout: float) -> _OwnedClient:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http_client = httpx2.AsyncClient(headers=headers, timeout=timeout)
    return _OwnedClient(streamable_http_client(url, http_client=http_client), http_client)


def _require() -> Any:
    try:
        import mcp
    except ImportError:
        raise ConfigError(f"the MCP client is not installed; {INSTALL_HINT}") from None
    return mcp
