"""What a finished `%%codemode` cell keeps: a deterministic transcript and the run+json bundle.

nbval compares every mimetype of an output's `data` except images and widget views, and it
never compares `metadata`. So `data` holds only what is the same on every run of the same
program (and on every machine): the text/plain transcript and the run+json payload without
timings, backend, isolation or preview URLs. Those live in the output's `metadata` under the
same mimetype and the same shape, and a renderer deep-merges them back (see `merge_varying`).
"""

from __future__ import annotations

import reprlib
from typing import Any

from ..result import RunResult, ToolCall

MIME_RUN = "application/vnd.codemode.run+json"
PAYLOAD_VERSION = 1

#: Result fields that differ between two runs of the same program, or between machines.
VARYING_FIELDS = ("duration", "backend", "isolation", "previews")

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 6
_short.maxlevel = 3

MAX_VALUE_CHARS = 200


def short_repr(value: Any) -> str:
    """A one-line repr, bounded in length, for transcripts and the live view."""
    try:
        text = _short.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return " ".join(text.split())


def plural(count: int, word: str) -> str:
    """`1 tool call`, `2 tool calls`."""
    return f"{count} {word}{'s' if count != 1 else ''}"


def format_call(name: str, args: dict[str, Any]) -> str:
    """`name(a=1, b='x')`, each argument shortened."""
    inner = ", ".join(f"{key}={short_repr(value)}" for key, value in args.items())
    return f"{name}({inner})"


def _format_outcome(call: ToolCall) -> str:
    if call.error is not None:
        return f"raised {call.error}"
    return short_repr(call.result)


def _value_text(result: RunResult) -> str | None:
    if result.value_repr is not None:
        text = result.value_repr
    elif result.value is not None:
        text = repr(result.value)
    else:
        return None
    text = " ".join(text.split()) if "\n" not in text else text
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return text


def _summary(result: RunResult) -> str:
    parts = [result.status]
    if result.tool_calls:
        parts.append(
            f"{plural(len(result.tool_calls), 'tool call')} in {plural(result.rounds, 'round')}"
        )
    else:
        parts.append("no tool calls")
    return "── codemode: " + ", ".join(parts)


def transcript_text(result: RunResult, *, streams: bool = True) -> str:
    """The text/plain transcript: program output, tool calls without timings, value, status.

    Identical on every run of a deterministic program: nothing here is measured, random or
    specific to the machine (no durations, ids, backend, isolation or URLs). `streams=False`
    leaves out the program's stdout and stderr, for a cell where they were streamed already.
    """
    lines: list[str] = []
    if streams:
        lines.extend(_stream_lines(result))
    lines.append(_summary(result))
    lines.extend(
        f"  {format_call(call.name, call.args)} -> {_format_outcome(call)}"
        for call in result.tool_calls
    )
    lines.extend(f"  preview: port {preview.port}" for preview in result.previews)
    if result.error is not None:
        lines.append(f"  {result.error}")
    value = _value_text(result)
    if value is not None:
        lines.append(f"  value: {value}")
    if result.state_lost:
        lines.append("  (the runtime was replaced: variables from earlier cells are gone)")
    return "\n".join(lines)


def _stream_lines(result: RunResult) -> list[str]:
    lines: list[str] = []
    if result.stdout:
        lines.extend(result.stdout.rstrip("\n").split("\n"))
    if result.stdout_dropped:
        lines.append(f"[{result.stdout_dropped} more characters of stdout dropped]")
    if result.stderr:
        lines.append("── stderr:")
        lines.extend(result.stderr.rstrip("\n").split("\n"))
    if result.stderr_dropped:
        lines.append(f"[{result.stderr_dropped} more characters of stderr dropped]")
    return lines


def split_varying(result_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a RunResult dict into its deterministic part and what varies between runs.

    Varying: timings, backend, isolation, preview URLs, and tracebacks (host paths name the
    kernel's temporary files; sandbox paths name the sandbox's Python version).
    """
    stable = {k: v for k, v in result_dict.items() if k not in VARYING_FIELDS}
    varying = {k: result_dict[k] for k in VARYING_FIELDS if k in result_dict}
    if result_dict.get("error"):
        stable["error"] = _without_traceback(result_dict["error"])
        varying["error"] = result_dict["error"]
    stable_calls, varying_calls = [], []
    for call in result_dict.get("tool_calls") or []:
        stable_call = {k: v for k, v in call.items() if k != "duration"}
        extra: dict[str, Any] = {"duration": call.get("duration", 0.0)}
        if call.get("error"):
            stable_call["error"] = _without_traceback(call["error"])
            extra["error"] = call["error"]
        stable_calls.append(stable_call)
        varying_calls.append(extra)
    stable["tool_calls"] = stable_calls
    varying["tool_calls"] = varying_calls
    return stable, varying


def _without_traceback(error: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in error.items() if k != "traceback"}


def merge_varying(stable: dict[str, Any], varying: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `split_varying`, as a renderer does it.

    Keys of `varying` replace those of `stable`, except `tool_calls`, merged call by call.
    """
    merged = dict(stable)
    for key, value in varying.items():
        if key == "tool_calls":
            merged[key] = [
                {**call, **extra}
                for call, extra in zip(stable.get(key, []), value, strict=False)
            ]
        else:
            merged[key] = value
    return merged


def run_bundle(
    code: str, result: RunResult, *, streams: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(data, metadata) of the display_data a finished cell keeps.

    `streams=False`: the text/plain transcript leaves out stdout and stderr (the text view
    streamed them into the cell already); the run+json payload always has them.
    """
    stable, varying = split_varying(result.to_dict())
    data = {
        "text/plain": transcript_text(result, streams=streams),
        MIME_RUN: {"version": PAYLOAD_VERSION, "code": code, "result": stable},
    }
    metadata = {MIME_RUN: {"version": PAYLOAD_VERSION, "result": varying}}
    return data, metadata
