"""A tiny MCP server for tests/test_mcp_tools.py, built with the official SDK.

Run as ``python tests/mcp_server.py`` it serves MCP on its stdin/stdout; :data:`server`
also gives the streamable HTTP app (``server.streamable_http_app()``).
"""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("antiphon-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(name="notes.search", description="Find notes that mention a word.")
def search(word: str, limit: int = 3) -> str:
    notes = ["buy milk", "call the plumber about the milk tap", "book the train"]
    return "\n".join([n for n in notes if word in n][:limit]) or "no notes"


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the reason (a ToolError: its text reaches the client)."""
    raise ToolError(reason)


@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps, then answers."""
    await anyio.sleep(seconds)
    return "done"


if __name__ == "__main__":
    server.run()
