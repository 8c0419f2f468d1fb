"""The Code Mode tool for LLM APIs: one `run_code` tool whose description is the prompt.

    definition = tool_definition(cm, "anthropic")   # or "openai", "openai-responses", "mcp"
    ...the model answers with a tool call...
    text = handle_tool_call(cm, call.arguments)     # send back as the tool result

The description is `CodeMode.system_prompt()`: how to write a program and every tool as a
Python stub, so the model needs nothing else to use the tools.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from .. import events as ev
from ..engine import CodeMode
from ..tools import ToolRegistry
from .results import result_text

TOOL_NAME = "run_code"
FORMATS = ("openai", "openai-responses", "anthropic", "mcp")

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {
            "type": "string",
            "description": "The Python program to run. Its tools are already defined.",
        },
        "reset": {
            "type": "boolean",
            "default": False,
            "description": "Start from a fresh namespace (forget the variables of earlier "
            "programs) before running.",
        },
    },
    "required": ["code"],
    "additionalProperties": False,
}


def input_schema() -> dict[str, Any]:
    """The JSON schema of the tool's arguments (a copy: callers may change it)."""
    return copy.deepcopy(INPUT_SCHEMA)


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
    """The `run_code` tool in the shape an API takes.

    "openai": Chat Completions (`{"type": "function", "function": {...}}`);
    "openai-responses": the Responses API (flat); "anthropic": Messages API;
    "mcp": an MCP Tool (`inputSchema`).
    """
    description = tool_description(cm, tools)
    schema = input_schema()
    if format == "openai":
        return {
            "type": "function",
            "function": {"name": name, "description": description, "parameters": schema},
        }
    if format == "openai-responses":
        return {"type": "function", "name": name, "description": description, "parameters": schema}
    if format == "anthropic":
        return {"name": name, "description": description, "input_schema": schema}
    if format == "mcp":
        return {"name": name, "description": description, "inputSchema": schema}
    raise ValueError(f"unknown format {format!r}; one of: {', '.join(FORMATS)}")


class ToolArgumentsError(ValueError):
    """The model's arguments for `run_code` do not fit its schema."""


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
    if not isinstance(code, str):
        raise ToolArgumentsError("'code' must be a string holding the program")
    if not isinstance(reset, bool):
        raise ToolArgumentsError("'reset' must be true or false")
    return code, reset


def handle_tool_call(
    cm: CodeMode,
    arguments: str | dict[str, Any] | None,
    *,
    tools: Iterable[Any] | None = None,
    on_event: ev.EventCallback | None = None,
) -> str:
    """Run a `run_code` call and return the text to send back as the tool result.

    Bad arguments come back as text saying what is wrong (the model can correct itself);
    the program's output, tool calls, value and error (with its traceback) are in the text.
    """
    try:
        code, reset = parse_arguments(arguments)
    except ToolArgumentsError as exc:
        return f"status: bad arguments\n\nerror: {exc}\n"
    if reset:
        cm.reset()
    result = cm.run(code, tools=tools, on_event=on_event)
    return result_text(result)
