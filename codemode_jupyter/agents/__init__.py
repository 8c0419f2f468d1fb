"""Agents drive Code Mode: an MCP server, human approval of tool calls, the tool for LLM APIs.

The pieces that need the `agents` extra (`mcp`, `uvicorn`, `pydantic-ai-slim`) import it
lazily, so `llm_tool`, `approval` and `results` work with the base install.
"""

from __future__ import annotations

from codemode_jupyter.errors import MissingExtraError

EXTRA_HINT = "install the agents extra: pip install 'codemode-jupyter[agents]'"


def require_mcp() -> None:
    """Raise MissingExtraError naming the extra when the MCP SDK or uvicorn is missing."""
    missing = []
    for module in ("mcp", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingExtraError(f"{' and '.join(missing)} not installed; {EXTRA_HINT}")
