"""The `run_code` tool for LLM APIs as data: its name, JSON schema and the shape each API takes.

Pure (no session): the engine builds `cm.tool_definition(...)` from it with its own prompt, and
the agents (agents/llm_tool.py) run the calls.
"""

from __future__ import annotations

import copy
from typing import Any

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


def strict_schema() -> dict[str, Any]:
    """The schema in OpenAI's strict form: every property required, optional ones nullable
    (null means the default), no defaults."""
    schema = input_schema()
    reset = schema["properties"]["reset"]
    reset.pop("default")
    reset["type"] = ["boolean", "null"]
    reset["description"] += " null means false."
    schema["required"] = list(schema["properties"])
    return schema


def definition(description: str, format: str = "openai", name: str = TOOL_NAME) -> dict[str, Any]:
    """The `run_code` tool described by `description` in the shape an API takes.

    "openai": Chat Completions (`{"type": "function", "function": {...}}`);
    "openai-responses": the Responses API (flat); "anthropic": Messages API;
    "mcp": an MCP Tool (`inputSchema`).
    """
    schema = input_schema()
    if format == "openai":
        return {
            "type": "function",
            "function": {"name": name, "description": description, "parameters": schema},
        }
    if format == "openai-responses":
        return {
            "type": "function",
            "name": name,
            "description": description,
            "parameters": strict_schema(),
            "strict": True,
        }
    if format == "anthropic":
        return {"name": name, "description": description, "input_schema": schema}
    if format == "mcp":
        return {"name": name, "description": description, "inputSchema": schema}
    raise ValueError(f"unknown format {format!r}; one of: {', '.join(FORMATS)}")
