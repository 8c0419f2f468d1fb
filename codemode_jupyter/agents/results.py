"""A run as an agent reads it: text for the model, compact data, and one line per event."""

from __future__ import annotations

import json
import reprlib
from typing import Any

from .. import events as ev
from ..result import RunResult, ToolCall
from ..text import clip

_reprs = reprlib.Repr()
_reprs.maxstring = _reprs.maxother = 200
_reprs.maxlist = _reprs.maxdict = 20
MAX_CALLS_SHOWN = 50  # a program may make a thousand calls; the model needs the first ones


def short(value: Any, limit: int = 300) -> str:
    """A value as JSON when it is JSON (what the program saw), clipped to `limit`."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = _reprs.repr(value)
    return clip(text, limit)


def call_line(call: ToolCall) -> str:
    """`#1 add(a=1, b=2) -> 3`, or `... raised ValueError: bad`."""
    args = ", ".join(f"{name}={short(value, 100)}" for name, value in call.args.items())
    head = f"#{call.id} {call.name}({args})"
    if call.error is not None:
        return f"{head} raised {call.error}"
    return f"{head} -> {short(call.result)}"


def result_text(result: RunResult) -> str:
    """What the model reads back: status, output, tool calls, value, error with traceback."""
    parts = [f"status: {result.status}"]
    if result.stdout:
        parts.append("stdout:\n" + result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append("stderr:\n" + result.stderr.rstrip("\n"))
    if result.tool_calls:
        lines = [call_line(call) for call in result.tool_calls[:MAX_CALLS_SHOWN]]
        if len(result.tool_calls) > MAX_CALLS_SHOWN:
            lines.append(f"... and {len(result.tool_calls) - MAX_CALLS_SHOWN} more")
        parts.append(f"tool calls ({len(result.tool_calls)}):\n" + "\n".join(lines))
    if result.value_repr is not None and result.value_repr != "None":
        parts.append(f"value: {result.value_repr}")
    if result.error is not None:
        error = f"error: {result.error}"
        if result.error.traceback:
            error += "\n" + result.error.traceback.rstrip("\n")
        parts.append(error)
    if result.state_lost:
        parts.append("note: the session's variables were lost (its runtime was replaced)")
    return "\n\n".join(parts) + "\n"


def result_data(result: RunResult) -> dict[str, Any]:
    """The run as JSON-able data, without what only a person debugging needs (timings, the
    host's tracebacks of tool errors)."""
    return {
        "ok": result.ok,
        "status": result.status,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "value": result.value,
        "value_repr": result.value_repr,
        "error": None
        if result.error is None
        else {
            "type": result.error.type,
            "message": result.error.message,
            "traceback": result.error.traceback,
        },
        "tool_calls": [
            {
                "id": c.id,
                "name": c.name,
                "args": c.args,
                "result": c.result,
                "error": None if c.error is None else str(c.error),
            }
            for c in result.tool_calls[:MAX_CALLS_SHOWN]
        ],
        "tool_call_count": len(result.tool_calls),
        "state_lost": result.state_lost,
    }


def event_line(event: ev.Event) -> str | None:
    """One line for a progress notification, or None for events not worth one."""
    if isinstance(event, ev.Output):
        return f"{event.stream}: {event.text}"
    if isinstance(event, ev.ToolCallStarted):
        args = ", ".join(f"{k}={short(v, 100)}" for k, v in event.args.items())
        return f"call #{event.id} {event.name}({args})"
    if isinstance(event, ev.ToolCallFinished):
        if event.error is not None:
            return f"call #{event.id} {event.name} raised {event.error}"
        return f"call #{event.id} {event.name} -> {short(event.result)}"
    if isinstance(event, ev.RunFinished):
        return f"finished: {event.result.status}"
    return None


#: Image kinds an MCP client takes as image content, in the order a display is looked at.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_IMAGES = 10


def result_images(result: RunResult) -> list[tuple[str, str]]:
    """(mime type, base64 data) of the images the program displayed (plots included), at
    most MAX_IMAGES, for a client that shows images to its model."""
    images = []
    for display in result.displays:
        data = display.get("data") or {}
        for mime in IMAGE_TYPES:
            if isinstance(data.get(mime), str):
                images.append((mime, data[mime]))
                break
    return images[:MAX_IMAGES]
