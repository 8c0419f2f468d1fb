"""The Code Mode tool for LLM APIs: one `run_code` tool whose description is the prompt.

    definition = tool_definition(cm, "anthropic")   # or "openai", "openai-responses", "mcp"
    ...the model answers with a tool call...
    text = handle_tool_call(cm, call.arguments)     # send back as the tool result

The description is `CodeMode.system_prompt()`: how to write a program and every tool as a
Python stub, so the model needs nothing else to use the tools.

The text sent back is within a budget of characters (results.py; the whole RunResult stays in
`cm.last_result`). Calls at the same time (a model's parallel tool calls) wait their turn in
the session. Tools marked `@tool(approve=True)` ask `approver`, or are rejected when none is
given: a marked tool never runs unasked.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from codemode_jupyter.agents.approval import ApprovalGate, Approver, NoApprover
from codemode_jupyter.agents.results import result_text
from codemode_jupyter.agents.runner import busy_result
from codemode_jupyter.engine.session import CodeMode
from codemode_jupyter.errors import ToolArgumentsError
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.result import RunResult
from codemode_jupyter.tools.definition import (
    FORMATS,
    INPUT_SCHEMA,
    TOOL_NAME,
    definition,
    input_schema,
    strict_schema,
)
from codemode_jupyter.tools.tool import Tool, ToolRegistry

__all__ = [
    "FORMATS",
    "INPUT_SCHEMA",
    "TOOL_NAME",
    "handle_tool_call",
    "input_schema",
    "run_tool_call",
    "strict_schema",
    "tool_definition",
]

#: How a failed program comes back: "result" (plain, the text says it failed) or
#: "tool_error" (an error result: MCP isError, pydantic-ai's ModelRetry).
ERROR_MODES = ("result", "tool_error")


def tool_description(cm: CodeMode, tools: Iterable[Any] | None = None) -> str:
    """The tool's description: the session's prompt (or the prompt for `tools`)."""
    if tools is None:
        return cm.system_prompt()
    return ToolRegistry(tools).system_prompt()


def tool_definition(
    cm: CodeMode,
    format: str = "openai",
    *,
    tools: Iterable[Any] | None = None,
    name: str = TOOL_NAME,
) -> dict[str, Any]:
    """The `run_code` tool in the shape an API takes (tools/definition.py)."""
    return definition(tool_description(cm, tools), format, name)


def parse_arguments(arguments: str | dict[str, Any] | None) -> tuple[str, bool]:
    """(code, reset) from a tool call's arguments: a dict, or a JSON string (OpenAI)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as exc:
            raise ToolArgumentsError(f"the arguments are not valid JSON ({exc})") from None
    if not isinstance(arguments, dict):
        raise ToolArgumentsError('the arguments must be an object like {"code": "..."}')
    unknown = set(arguments) - {"code", "reset"}
    if unknown:
        raise ToolArgumentsError(
            f"unknown argument(s): {', '.join(sorted(unknown))}; expected code and optionally reset"
        )
    code, reset = arguments.get("code"), arguments.get("reset", False)
    if reset is None:  # OpenAI's strict mode sends null for "not given"
        reset = False
    if not isinstance(code, str):
        raise ToolArgumentsError("'code' must be a string holding the program")
    if not isinstance(reset, bool):
        raise ToolArgumentsError("'reset' must be true or false")
    return code, reset


def check_errors(errors: str) -> str:
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be one of {', '.join(ERROR_MODES)}, not {errors!r}")
    return errors


def only_tools(tools: Iterable[Any], names: Iterable[str]) -> list[Tool]:
    """The tools called one of `names` (an agent may call only those)."""
    allowed = set(names)
    return [tool for tool in map(Tool.from_callable, tools) if tool.name in allowed]


#: One lock per session: calls at once (parallel tool calls) run one after the other.
_turns: weakref.WeakKeyDictionary[CodeMode, threading.Lock] = weakref.WeakKeyDictionary()
_turns_lock = threading.Lock()


def _turn(cm: CodeMode) -> threading.Lock:
    with _turns_lock:
        return _turns.setdefault(cm, threading.Lock())


def run_tool_call(
    cm: CodeMode,
    code: str,
    reset: bool = False,
    *,
    tools: Iterable[Any] | None = None,
    on_event: ev.EventCallback | None = None,
    approver: Approver | None = None,
) -> RunResult:
    """Run one program for an agent: after the session's other agent calls (in turn), with
    the tools marked for approval asking `approver` (rejected without one)."""
    gate = ApprovalGate(approver if approver is not None else NoApprover(), None)
    with _turn(cm):
        listed = [Tool.from_callable(t) for t in (tools if tools is not None else cm.tools)]
        if any(map(gate.needs_approval, listed)):
            tools = gate.guard(listed, cm)
        try:
            if reset:
                cm.reset()
            return cm.run(code, tools=tools, on_event=on_event)
        except RuntimeError as exc:  # a person's cell runs in it, or it is closed
            if "running" not in str(exc) and "closed" not in str(exc):
                raise
            return busy_result(None, exc)


def handle_tool_call(
    cm: CodeMode,
    arguments: str | dict[str, Any] | None,
    *,
    tools: Iterable[Any] | None = None,
    on_event: ev.EventCallback | None = None,
    budget: int | None = None,
    approver: Approver | None = None,
) -> str:
    """Run a `run_code` call and return the text to send back as the tool result.

    Bad arguments come back as text saying what is wrong (the model can correct itself);
    the program's output (head and tail), tool calls, value and error (with its traceback)
    are in the text, within `budget` characters (default results.DEFAULT_BUDGET).
    """
    try:
        code, reset = parse_arguments(arguments)
    except ToolArgumentsError as exc:
        return f"status: bad arguments\n\nerror: {exc}\n"
    result = run_tool_call(cm, code, reset, tools=tools, on_event=on_event, approver=approver)
    return result_text(result, budget, "cm.last_result")
