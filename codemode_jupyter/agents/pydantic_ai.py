"""The Code Mode tool for a pydantic-ai agent (the `agents` extra).

    from pydantic_ai import Agent
    from codemode_jupyter.agents.pydantic_ai import codemode_tool

    agent = Agent("anthropic:claude-sonnet-4-5", tools=[codemode_tool(cm)])

The tool is `run_code(code, reset=False)`; its description is the session's prompt, read again
at each step of the agent, so tools added to the session show up without rebuilding the agent.
Its result is the text `handle_tool_call` returns (within `budget` characters). A failed
program is, by default, a plain result whose text says so (`errors="result"`): a failing
program is a normal step for a Code Mode agent, and pydantic-ai counts every error result
against the tool's retries (1 by default), so error results would end the agent's run after
two failing programs. `errors="tool_error"` raises ModelRetry instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from codemode_jupyter.agents.approval import Approver
from codemode_jupyter.agents.llm_tool import (
    TOOL_NAME,
    ToolArgumentsError,
    check_errors,
    input_schema,
    parse_arguments,
    run_tool_call,
    tool_description,
)
from codemode_jupyter.agents.results import check_budget, result_text
from codemode_jupyter.engine.session import CodeMode

try:
    from pydantic_ai import ModelRetry, Tool
    from pydantic_ai.tools import ToolDefinition
except ImportError as exc:  # pragma: no cover - depends on the environment
    from codemode_jupyter.agents import EXTRA_HINT, MissingExtraError

    raise MissingExtraError(f"pydantic-ai is not installed; {EXTRA_HINT}") from exc


def codemode_tool(
    cm: CodeMode,
    *,
    tools: Callable[[], Iterable[Any]] | None = None,
    name: str = TOOL_NAME,
    budget: int | None = None,
    errors: str = "result",
    approver: Approver | None = None,
) -> Tool:
    """A pydantic-ai Tool that runs programs in `cm`. `tools`, if given, is called at each
    step for the tools programs get (default: the session's own). Calls at once run in
    turn; tools marked `@tool(approve=True)` ask `approver` (rejected without one)."""
    budget = check_budget(budget)
    check_errors(errors)

    def current() -> list[Any] | None:
        return None if tools is None else list(tools())

    def run_code(code: str, reset: bool | None = False) -> str:
        # pydantic-ai runs sync tools on a worker thread: the session's sync tools run there.
        try:
            code, reset = parse_arguments({"code": code, "reset": reset})
        except ToolArgumentsError as exc:
            raise ModelRetry(str(exc)) from None
        result = run_tool_call(cm, code, reset, tools=current(), approver=approver)
        text = result_text(result, budget, "cm.last_result")
        if not result.ok and errors == "tool_error":
            raise ModelRetry(text)
        return text

    async def prepare(ctx: Any, definition: ToolDefinition) -> ToolDefinition:
        return dataclasses.replace(definition, description=tool_description(cm, current()))

    tool = Tool.from_schema(
        run_code, name=name, description=tool_description(cm, current()), json_schema=input_schema()
    )
    tool.prepare = prepare
    return tool
