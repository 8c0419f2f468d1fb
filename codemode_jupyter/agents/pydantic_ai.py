"""The Code Mode tool for a pydantic-ai agent (the `agents` extra).

    from pydantic_ai import Agent
    from codemode_jupyter.agents.pydantic_ai import codemode_tool

    agent = Agent("anthropic:claude-sonnet-4-5", tools=[codemode_tool(cm)])

The tool is `run_code(code, reset=False)`; its description is the session's prompt, read again
at each step of the agent, so tools added to the session show up without rebuilding the agent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from ..engine import CodeMode
from .llm_tool import TOOL_NAME, handle_tool_call, input_schema, tool_description

try:
    from pydantic_ai import Tool
    from pydantic_ai.tools import ToolDefinition
except ImportError as exc:  # pragma: no cover - depends on the environment
    from . import EXTRA_HINT, MissingExtraError

    raise MissingExtraError(f"pydantic-ai is not installed; {EXTRA_HINT}") from exc


def codemode_tool(
    cm: CodeMode, *, tools: Callable[[], Iterable[Any]] | None = None, name: str = TOOL_NAME
) -> Tool:
    """A pydantic-ai Tool that runs programs in `cm`. `tools`, if given, is called at each
    step for the tools programs get (default: the session's own)."""

    def current() -> list[Any] | None:
        return None if tools is None else list(tools())

    def run_code(code: str, reset: bool = False) -> str:
        # pydantic-ai runs sync tools on a worker thread: the session's sync tools run there.
        return handle_tool_call(cm, {"code": code, "reset": reset}, tools=current())

    async def prepare(ctx: Any, definition: ToolDefinition) -> ToolDefinition:
        return dataclasses.replace(definition, description=tool_description(cm, current()))

    tool = Tool.from_schema(
        run_code, name=name, description=tool_description(cm, current()), json_schema=input_schema()
    )
    tool.prepare = prepare
    return tool
