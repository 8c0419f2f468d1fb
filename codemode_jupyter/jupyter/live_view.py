"""The live view of a running cell: an ipywidgets box, or plain text in a terminal.

The engine calls `on_event` from two threads (output from its I/O thread, tool events from
the kernel's main thread). `on_event` only records into a `RunState` under a lock; a flusher
thread turns the state into widget traits at most `rate` times a second, so a chatty program
cannot flood the front end. Widgets change only through traits: no `with out:`, no
clear_output, no display updates, which nbval and some front ends mishandle.
"""

from __future__ import annotations

import functools
import html
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..events import (
    Event,
    Output,
    PreviewAnnounced,
    RunFinished,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)
from ..result import Preview, RunResult
from .transcript import format_call, plural, short_repr

#: Calls listed in the view; older ones are counted, not shown.
MAX_CALL_ROWS = 30


@dataclass
class CallRow:
    name: str
    args: str
    state: str = "running"  # running | ok | error
    duration: float | None = None
    detail: str = ""


@dataclass
class RunState:
    """Everything the view shows, recorded from events; rendering reads a consistent copy."""

    output_cap: int
    backend: str = ""
    isolation: str = ""
    warning: str = ""
    status: str = "running"
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    duration: float | None = None
    segments: list[list[str]] = field(default_factory=list)  # [stream, text], merged
    chars_kept: int = 0
    chars_hidden: int = 0
    calls: OrderedDict[int, CallRow] = field(default_factory=OrderedDict)
    calls_total: int = 0
    rounds: int = 0
    previews: dict[int, str] = field(default_factory=dict)

    def add_output(self, stream: str, text: str) -> None:
        if self.segments and self.segments[-1][0] == stream:
            self.segments[-1][1] += text
        else:
            self.segments.append([stream, text])
        self.chars_kept += len(text)
        self._trim()

    def _trim(self) -> None:
        # Keep the tail: the latest output is what a user watching a run wants to see.
        while self.chars_kept > self.output_cap and self.segments:
            excess = self.chars_kept - self.output_cap
            text = self.segments[0][1]
            if len(text) <= excess:
                self.segments.pop(0)
                cut = len(text)
            else:
                self.segments[0][1] = text[excess:]
                cut = excess
            self.chars_kept -= cut
            self.chars_hidden += cut

    def start_call(self, event: ToolCallStarted) -> None:
        self.calls[event.id] = CallRow(event.name, format_call(event.name, event.args)[:160])
        self.calls_total += 1
        self.rounds = max(self.rounds, event.round)
        while len(self.calls) > MAX_CALL_ROWS:
            self.calls.popitem(last=False)

    def finish_call(self, event: ToolCallFinished) -> None:
        row = self.calls.get(event.id)
        if row is None:
            return
        row.state = "error" if event.error is not None else "ok"
        row.duration = event.duration
        row.detail = str(event.error) if event.error is not None else short_repr(event.result)

    def finish(self, result: RunResult) -> None:
        self.status = result.status
        self.duration = result.duration
        self.error = str(result.error) if result.error and result.status != "ok" else ""
        self.rounds = max(self.rounds, result.rounds)
        self.calls_total = max(self.calls_total, len(result.tool_calls))
        self.backend = self.backend or result.backend
        self.isolation = self.isolation or result.isolation
        for preview in result.previews:
            self.previews.setdefault(preview.port, preview.url)

    def apply(self, event: Event) -> None:
        if isinstance(event, Output):
            self.add_output(event.stream, event.text)
        elif isinstance(event, ToolCallStarted):
            self.start_call(event)
        elif isinstance(event, ToolCallFinished):
            self.finish_call(event)
        elif isinstance(event, PreviewAnnounced):
            self.previews[event.preview.port] = event.preview.url
        elif isinstance(event, RunStarted):
            self.backend, self.isolation = event.backend, event.isolation
            if event.isolation == "none" and not self.warning:
                self.warning = "no isolation: the program runs with the host's files and network"
        elif isinstance(event, RunFinished):
            self.finish(event.result)

    def elapsed(self) -> float:
        return self.duration if self.duration is not None else time.monotonic() - self.started


def format_duration(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


#: status -> (label, colour) of the badge. Plain text in a coloured pill rather than emoji,
#: which many systems (and headless browsers) draw as empty boxes.
STATUS_BADGES = {
    "running": ("running", "#1976d2"),
    "ok": ("ok", "#388e3c"),
    "error": ("error", "#d32f2f"),
    "timeout": ("timed out", "#d32f2f"),
    "interrupted": ("interrupted", "#f57c00"),
    "crashed": ("runtime crashed", "#d32f2f"),
    "limit": ("tool-call limit", "#d32f2f"),
}
_MUTED = "opacity:0.65"
_ERROR = "#d32f2f"
# Inline styles: the view must look right in Notebook 7 and VS Code too, where the
# JupyterLab extension's stylesheet is not loaded. The line height undoes ipywidgets' 28px.
_BOX = "font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;line-height:1.45"
_MONO = "font-family:var(--jp-code-font-family,monospace);font-size:12px"


def _badge(status: str) -> str:
    label, colour = STATUS_BADGES.get(status, (status, "#616161"))
    return (
        f"<span class='codemode-live-badge' data-status='{html.escape(status, quote=True)}' "
        f"style='display:inline-block;padding:0 7px;border-radius:8px;background:{colour};"
        "color:#fff;font-size:11px;font-weight:600;text-transform:uppercase;"
        f"letter-spacing:0.03em'>{html.escape(label)}</span>"
    )


def render_header(state: RunState) -> str:
    where = html.escape(state.backend or "…")
    if state.isolation:
        where += f" (isolation: {html.escape(state.isolation)})"
    counter = f"{plural(state.calls_total, 'tool call')} · {plural(state.rounds, 'round')}"
    text = (
        f"{_badge(state.status)} <b>Code Mode</b> "
        f"<span style='{_MUTED}'>{format_duration(state.elapsed())} · {counter} · "
        f"{where}</span>"
    )
    if state.warning:
        text += f"<div style='color:#e65100'>⚠ {html.escape(state.warning)}</div>"
    if state.error:
        text += f"<div style='color:{_ERROR};font-weight:600'>{html.escape(state.error)}</div>"
    if state.chars_hidden:
        text += (
            f"<div style='{_MUTED}'>output trimmed in this view: {state.chars_hidden} "
            "earlier characters not shown</div>"
        )
    return f"<div class='codemode-live-header' style='{_BOX}'>{text}</div>"


_MARKS = {
    "running": ("…", "#1976d2"),
    "ok": ("✓", "#388e3c"),
    "error": ("✗", _ERROR),
}


def render_calls(state: RunState) -> str:
    if not state.calls:
        return ""
    rows = []
    hidden = state.calls_total - len(state.calls)
    if hidden > 0:
        rows.append(f"<div style='{_MUTED}'>… {hidden} earlier calls</div>")
    for row in state.calls.values():
        mark, colour = _MARKS[row.state]
        took = (
            f" <span style='{_MUTED}'>{format_duration(row.duration)}</span>"
            if row.duration is not None
            else f" <span style='{_MUTED}'>running</span>"
        )
        detail = ""
        if row.detail:
            style = f"color:{_ERROR}" if row.state == "error" else ""
            detail = f" → <span style='{style}'>{html.escape(row.detail[:120])}</span>"
        rows.append(
            f"<div><span style='color:{colour};font-weight:700'>{mark}</span> "
            f"<span style='color:var(--jp-mirror-editor-variable-color,#05a)'>"
            f"{html.escape(row.args)}</span>{detail}{took}</div>"
        )
    return (
        f"<div class='codemode-live-calls' style='{_MONO};line-height:1.5;margin:4px 0 2px 2px;"
        "padding-left:8px;border-left:2px solid var(--jp-border-color2,#ddd)'>"
        + "".join(rows)
        + "</div>"
    )


def render_previews(state: RunState) -> str:
    if not state.previews:
        return ""
    links = [
        f"<a href='{html.escape(url, quote=True)}' target='_blank' rel='noopener' "
        "style='display:inline-block;margin-right:8px;padding:0 8px;border-radius:4px;"
        "border:1px solid var(--jp-brand-color1,#1976d2);color:var(--jp-brand-color1,#1976d2);"
        f"text-decoration:none'>↗ preview :{port}</a>"
        for port, url in sorted(state.previews.items())
    ]
    return (
        f"<div class='codemode-live-previews' style='{_BOX};margin-top:4px'>"
        + "".join(links)
        + "</div>"
    )


def render_outputs(state: RunState) -> tuple[dict[str, str], ...]:
    return tuple(
        {"output_type": "stream", "name": stream, "text": text} for stream, text in state.segments
    )


class LiveView:
    """Base of the two views: records events, renders on `flush`."""

    def __init__(self, output_cap: int = 20_000, rate: float = 10.0) -> None:
        self.state = RunState(output_cap=output_cap)
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._done = threading.Event()
        self._interval = 1.0 / max(rate, 0.1)
        self._thread: threading.Thread | None = None

    def on_event(self, event: Event) -> None:
        """Engine callback: quick and thread-safe; rendering happens on the flusher thread."""
        with self._lock:
            self.state.apply(event)
        self._dirty.set()

    def warn(self, message: str) -> None:
        with self._lock:
            self.state.warning = message
        self._dirty.set()

    def start(self) -> None:
        self.show()
        self._thread = threading.Thread(
            target=self._flusher, name="codemode-live-view", daemon=True
        )
        self._thread.start()

    def finish(self, result: RunResult | None) -> None:
        """Stop the flusher and render the final state, on the calling thread."""
        self._done.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if result is not None:
                self.state.finish(result)
            elif self.state.status == "running":
                self.state.status = "interrupted"
                self.state.duration = self.state.elapsed()
        self.flush(final=True)

    def _flusher(self) -> None:
        # A cell that ends within the first interval sends only its final state.
        if self._done.wait(timeout=self._interval):
            return
        last_tick = time.monotonic()
        while not self._done.is_set():
            # Wake on changes, and once a second anyway so the elapsed time moves.
            changed = self._dirty.wait(timeout=1.0)
            if self._done.is_set():
                return
            self._dirty.clear()
            if changed or time.monotonic() - last_tick >= 1.0:
                self.flush(final=False)
                last_tick = time.monotonic()
            # Coalescing: whatever arrives during this pause goes out in the next flush.
            self._done.wait(timeout=self._interval)

    def show(self) -> None:
        raise NotImplementedError

    def flush(self, final: bool) -> None:
        raise NotImplementedError


class WidgetView(LiveView):
    """The ipywidgets view, for kernels with a front end (JupyterLab, Notebook 7, VS Code).

    Three widgets a cell (a box, an HTML summary, an Output for the streams); layouts and
    styles are shared across cells because each new widget model costs a comm message and
    about half a millisecond.
    """

    def __init__(self, output_cap: int = 20_000, rate: float = 10.0) -> None:
        super().__init__(output_cap, rate)
        import ipywidgets as widgets

        shared = _shared_models()
        self.summary = widgets.HTML(
            value=self._summary(), layout=shared["layout"], style=shared["html_style"]
        )
        self.output = widgets.Output(layout=shared["output_layout"])
        self.box = _live_box_class()(
            children=(self.summary, self.output), layout=shared["layout"]
        )
        self._rendered: dict[str, Any] = {}

    def _summary(self) -> str:
        return render_header(self.state) + render_previews(self.state) + render_calls(self.state)

    def show(self) -> None:
        from IPython.display import display

        display(self.box)

    def flush(self, final: bool) -> None:
        with self._lock:
            summary = self._summary()
            outputs = render_outputs(self.state)
        # Only changed traits are sent: each assignment is one comm message.
        self._set("summary", self.summary, "value", summary)
        self._set("output", self.output, "outputs", outputs)

    def _set(self, key: str, widget: Any, trait: str, value: Any) -> None:
        if self._rendered.get(key) != value:
            self._rendered[key] = value
            setattr(widget, trait, value)


@functools.cache
def _shared_models() -> dict[str, Any]:
    import ipywidgets as widgets
    from ipywidgets.widgets.widget_string import HTMLStyle

    return {
        "layout": widgets.Layout(),
        "html_style": HTMLStyle(),
        "output_layout": widgets.Layout(max_height="24em", overflow="auto"),
    }


@functools.cache
def _live_box_class() -> type:
    # ipywidgets is imported on first use, not when the extension loads.
    import ipywidgets as widgets

    class LiveBox(widgets.VBox):
        """A VBox whose text/plain fallback never varies, so nbval can compare it."""

        def __repr__(self) -> str:
            return "codemode live view"

    return LiveBox


class TextView(LiveView):
    """Plain text: output passes through as it comes, each tool call gets a line.

    In terminal IPython (`in_cell=False`) a status line with the duration ends the run. In a
    kernel cell (`%config CodeMode.display = "text"`, for front ends without widgets) the
    lines leave out timings and the status line, because the streams are saved in the
    notebook and compared by nbval, and the transcript that follows says how the run ended.
    """

    def __init__(
        self, stdout: TextIO | None = None, stderr: TextIO | None = None, *, in_cell: bool = False
    ) -> None:
        super().__init__(output_cap=0)
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr
        self._in_cell = in_cell

    def on_event(self, event: Event) -> None:
        if isinstance(event, Output):
            stream = self._err if event.stream == "stderr" else self._out
            stream.write(event.text)
            stream.flush()
        elif isinstance(event, ToolCallFinished):
            outcome = f"raised {event.error}" if event.error else "ok"
            took = "" if self._in_cell else f" ({format_duration(event.duration)})"
            self._err.write(f"  [tool] {event.name} {outcome}{took}\n")
        elif isinstance(event, PreviewAnnounced):
            self._err.write(f"  [preview] {_preview_line(event.preview)}\n")
        elif isinstance(event, RunStarted):
            self._err.write(f"[codemode] {event.backend}, isolation: {event.isolation}\n")

    def warn(self, message: str) -> None:
        self._err.write(f"[codemode] warning: {message}\n")

    def start(self) -> None:
        pass

    def finish(self, result: RunResult | None) -> None:
        if result is None:
            self._err.write("[codemode] interrupted\n")
            return
        if self._in_cell:
            return
        self._err.write(
            f"[codemode] {result.status} in {format_duration(result.duration)}, "
            f"{plural(len(result.tool_calls), 'tool call')}\n"
        )
        self._err.flush()


def _preview_line(preview: Preview) -> str:
    return f"port {preview.port}: {preview.url}"
