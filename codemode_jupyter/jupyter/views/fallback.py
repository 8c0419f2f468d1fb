"""The fallbacks a finished `%%codemode` cell keeps for front ends without the extension.

VS Code, GitHub, nbviewer and nbconvert show the text/html (or the text/plain) instead of the
run card: the status line, the timeline in time order (a print made after a tool call comes
after it), then the ending. Both are identical on every run of a deterministic program, since
nbval compares them: nothing measured, random or specific to the machine (no durations, ids,
backend, isolation, URLs or tracebacks). Displays are left out: each is an output of its own.
The HTML uses plain tags only (GitHub drops styles and scripts).
"""

from __future__ import annotations

from functools import partial
from html import escape as _escape

from codemode_jupyter.model.entries import Entry
from codemode_jupyter.model.format import (
    call_line,
    entry_lines,
    format_error,
    plural,
    value_text,
)
from codemode_jupyter.model.result import RunResult
from codemode_jupyter.model.timeline import timeline_from_result

#: Text in HTML: quotes stay as they are (they are not in attributes).
escape = partial(_escape, quote=False)


def summary_line(result: RunResult, timeline: list[Entry]) -> str:
    """`── codemode: ok, 2 tool calls in 2 rounds`."""
    calls = sum(1 for e in timeline if e["kind"] == "call")
    parts = [result.status]
    if calls:
        parts.append(f"{plural(calls, 'tool call')} in {plural(result.rounds, 'round')}")
    else:
        parts.append("no tool calls")
    return "── codemode: " + ", ".join(parts)


def transcript_text(
    result: RunResult,
    timeline: list[Entry] | None = None,
    *,
    streams: bool = True,
    value: bool = True,
) -> str:
    """The text/plain transcript: a status line, then the timeline in time order (program
    output, tool calls without timings, previews), then the ending (artifacts, error, value).

    Identical on every run of a deterministic program: nothing here is measured, random or
    specific to the machine (no durations, ids, backend, isolation or URLs). `timeline`:
    the run's entries (by default rebuilt from the result, without the order of events).
    `streams=False` leaves out the program's stdout and stderr, for a cell where they were
    streamed already; `value=False` the value, for a cell whose Out[n] shows it.
    """
    entries = timeline_from_result(result) if timeline is None else timeline
    lines = [summary_line(result, entries)]
    lines.extend(_body_lines(entries, streams))
    lines.extend(ending_lines(result, value, streams))
    return "\n".join(lines)


def _body_lines(entries: list[Entry], streams: bool) -> list[str]:
    """The timeline's lines in order; a stream's heading where the stream changes."""
    lines: list[str] = []
    stream = "stdout"
    for entry in entries:
        if entry["kind"] in ("output", "gap") and not streams:
            continue
        if entry["kind"] == "output" and entry["stream"] != stream:
            stream = entry["stream"]
            lines.append(f"── {stream}:")
        lines.extend(entry_lines(entry))
    return lines


def ending_lines(result: RunResult, value: bool, streams: bool) -> list[str]:
    """What follows the timeline: dropped output, artifacts, the error, the value."""
    lines: list[str] = []
    if streams:
        lines.extend(
            f"[{dropped} more characters of {name} dropped]"
            for name, dropped in (
                ("stdout", result.stdout_dropped),
                ("stderr", result.stderr_dropped),
            )
            if dropped
        )
    # Files the program left under outputs/ (name and size: their host path varies).
    lines.extend(f"  artifact: {a.name} ({a.size} bytes)" for a in result.artifacts)
    if result.error is not None:
        lines.append(f"  {format_error(result.error)}")
    shown = value_text(result.value_repr, result.value) if value else None
    if shown is not None:
        lines.append(f"  value: {shown}")
    if result.state_lost:
        lines.append("  (the runtime was replaced: variables from earlier cells are gone)")
    return lines


def fallback_html(
    result: RunResult, timeline: list[Entry], *, streams: bool = True, value: bool = True
) -> str:
    """The run as HTML: what `transcript_text` says, each part in a block of its own."""
    parts = [f"<p><strong>{escape(summary_line(result, timeline))}</strong></p>"]
    parts.extend(_entry_html(entry) for entry in timeline if streams or _shown_without(entry))
    parts.extend(f"<p>{escape(line.strip())}</p>" for line in ending_lines(result, value, streams))
    body = "\n".join(part for part in parts if part)
    return f'<div class="codemode-fallback">\n{body}\n</div>'


def _shown_without(entry: Entry) -> bool:
    """Shown when the cell streamed the program's output already (the rest is not)."""
    return entry["kind"] not in ("output", "gap")


def _entry_html(entry: Entry) -> str:
    kind = entry["kind"]
    if kind == "output":
        label = "<p><em>stderr:</em></p>\n" if entry["stream"] == "stderr" else ""
        return f"{label}<pre>{escape(entry['text'].rstrip(chr(10)))}</pre>"
    if kind == "call":
        return f"<p>tool call: <code>{escape(call_line(entry).strip())}</code></p>"
    if kind in ("preview", "gap"):
        return "".join(f"<p><em>{escape(line.strip())}</em></p>" for line in entry_lines(entry))
    return ""
