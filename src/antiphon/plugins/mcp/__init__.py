"""Tools from MCP servers (stdio or streamable HTTP) through the official ``mcp`` client."""

from antiphon.plugins.mcp.tools import (
    INSTALL_HINT,
    MCPTool,
    MCPToolError,
    MCPTools,
    result_text,
    tool_name,
)

__all__ = ["INSTALL_HINT", "MCPTool", "MCPToolError", "MCPTools", "result_text", "tool_name"]
