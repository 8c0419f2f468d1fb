"""How values, calls and durations are written as text: one format for every view.

Arguments and results are shown as Python literals, as the program sees them (`city='Paris'`,
`{'temp_c': 18}`). Durations use one rule set, mirrored by `formatDuration` in the
labextension's format.ts. Long text is cut at a word or token boundary and ends in an ellipsis.
"""

from __future__ import annotations

import json
import reprlib
from functools import cache
from typing import Any

from codemode_jupyter.model.entries import CallEntry, DisplayEntry, Entry, ErrorInfo

#: Characters after which `clip` looks back for a boundary (a space or punctuation) to cut at.
_BOUNDARY = " ,;)]}"
#: Characters of a call's arguments or of its result on one line of text.
CALL_CHARS = 120
#: Characters of an error message on a call's line while a run goes.
ERROR_CHARS = 200
#: Lines of a display's text/plain in the live text.
DISPLAY_LINES = 10
#: Characters of a run's value in a transcript.
VALUE_CHARS = 200


@cache
def _repr_within(limit: int) -> reprlib.Repr:
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 6
    shortener.maxlevel = 3
    return shortener


def short_repr(value: Any, limit: int = 60) -> str:
    """A one-line repr with long strings and other long reprs cut to about `limit` characters
    and long collections abbreviated (reprlib's way); never raises, whatever the value's own
    repr does."""
    try:
        text = _repr_within(limit).repr(value)
    except Exception:  # a repr that fails must not turn a clear message into a crash
        text = f"<{type(value).__name__}>"
    return " ".join(text.split())


def full_repr(value: Any) -> str:
    """The value's repr; `<type>` when its repr raises."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def clip(text: str, limit: int, ellipsis: str = "…") -> str:
    """`text` cut to at most `limit` characters, `ellipsis` included, at a boundary when one
    is near."""
    if len(text) <= limit:
        return text
    cut = max(limit - len(ellipsis), 1)
    # A boundary in the last quarter of the kept part reads better than a cut mid-token.
    for index in range(cut, max(cut * 3 // 4, 1) - 1, -1):
        if text[index - 1] in _BOUNDARY:
            cut = index
            break
    return text[:cut].rstrip() + ellipsis


def plural(count: int, word: str) -> str:
    """`1 tool call`, `2 tool calls`."""
    return f"{count} {word}{'s' if count != 1 else ''}"


def format_args(args: dict[str, Any]) -> str:
    """`a=1, b='x'`: a call's keyword arguments as the program wrote them."""
    return ", ".join(f"{key}={full_repr(value)}" for key, value in args.items())


def json_text(value: Any) -> str | None:
    """The value as JSON text, None when it is not JSON (no fallback to str)."""
    try:
        return json.dumps(value, ensure_ascii=False, default=_refuse)
    except (TypeError, ValueError):
        return None


def json_short(value: Any, limit: int = 300) -> str:
    """A value as JSON when it is JSON (what a model reads best), else a short repr; clipped
    to `limit` (an agent's result text)."""
    text = json_text(value)
    return clip(short_repr(value, 200) if text is None else text, limit)


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def json_call_line(call: Any, limit: int = 300) -> str:
    """A `ToolCall` for an agent: `#1 add(a=1, b=2) -> 3`, or `... raised ValueError: bad`,
    its values as JSON."""
    args = ", ".join(f"{name}={json_short(value, 100)}" for name, value in call.args.items())
    head = f"#{call.id} {call.name}({args})"
    if call.error is not None:
        return clip(f"{head} raised {format_error(call.error)}", limit)
    return clip(f"{head} -> {json_short(call.result, limit)}", limit)


def format_error(error: ErrorInfo | Any) -> str:
    """`Type: message` (or the type alone) of an error dict or a RunError."""
    if isinstance(error, dict):
        kind, message = error.get("type") or "Error", error.get("message") or ""
    else:
        kind, message = error.type, error.message
    return f"{kind}: {message}" if message else kind


def call_line(entry: CallEntry, *, live: bool = False, timings: bool = False) -> str:
    """A call entry as one line: `  name(args) -> result` in a saved transcript,
    `  name(args) → result  1.20 ms` while a run goes (`live`, `timings`). A call answered
    with a stand-in value reads `= value, tool not run`."""
    head = f"  {entry['name']}({clip(entry['args'], CALL_CHARS)})"
    state = entry["state"]
    result = clip(entry.get("result", ""), CALL_CHARS)
    if state == "ok" and (entry.get("approval") or {}).get("stand_in"):
        outcome = f" = {result}, tool not run"
    elif state == "ok":
        outcome = f" {'→' if live else '->'} {result}"
    elif state == "error":
        error: ErrorInfo = entry.get("error") or {"type": "Error", "message": ""}
        if live:
            outcome = f" ✗ {error.get('type', 'Error')}: {clip(error.get('message', ''), 200)}"
        else:
            outcome = f" -> raised {format_error(error)}"
    else:
        outcome = " … waiting for approval" if state == "waiting" else f" … {state}"
    took = f"  {format_duration(entry['duration'])}" if timings and "duration" in entry else ""
    return head + outcome + took


def entry_lines(entry: Entry, *, live: bool = False, timings: bool = False) -> list[str]:
    """An entry as text lines. `live`: the live text (displays and preview URLs shown);
    else a saved transcript, which leaves out what varies or is shown by an output of its
    own (displays, URLs)."""
    kind = entry["kind"]
    if kind == "output" and "call" in entry:  # printed by a tool, under its call
        return [f"    {line}" for line in entry["text"].rstrip("\n").split("\n")]
    if kind == "output":
        return entry["text"].rstrip("\n").split("\n")
    if kind == "call":
        return [call_line(entry, live=live, timings=timings)]
    if kind == "preview":
        url = f": {entry.get('url', '')}" if live else ""
        return [f"  preview: port {entry['port']}{url}"]
    if kind == "gap":
        return [f"  [… {entry['chars']} characters of output not shown …]"]
    if kind == "display" and live:
        return display_lines(entry)
    return []


def display_lines(entry: DisplayEntry) -> list[str]:
    """A display as text: its text/plain (the first lines; the rich form is in the card)."""
    lines = str(entry.get("data", {}).get("text/plain", "")).rstrip("\n").split("\n")
    shown = [f"  {line}" for line in lines[:DISPLAY_LINES]]
    if len(lines) > DISPLAY_LINES:
        shown.append(f"  [… {len(lines) - DISPLAY_LINES} more lines …]")
    return shown


def value_text(value_repr: str | None, value: Any = None) -> str | None:
    """A run's value for a transcript (a one-line repr joined, cut), None when there is none."""
    if value_repr is not None:
        text = value_repr
    elif value is not None:
        text = full_repr(value)
    else:
        return None
    text = " ".join(text.split()) if "\n" not in text else text
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def format_duration(seconds: float) -> str:
    """Seconds as `850 µs`, `12.3 ms`, `1.24 s` or `2 min 5 s` (the same rules as format.ts)."""
    if seconds < 0.001:
        return f"{round(seconds * 1e6)} µs"
    if seconds < 1:
        ms = seconds * 1000
        digits = 2 if ms < 10 else 1 if ms < 100 else 0
        return f"{ms:.{digits}f} ms"
    if seconds < 60:
        return f"{seconds:.{2 if seconds < 10 else 1}f} s"
    minutes = int(seconds // 60)
    rest = round(seconds - minutes * 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
