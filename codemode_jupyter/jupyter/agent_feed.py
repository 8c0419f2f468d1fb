"""The agent feed: the cell that ran `%codemode serve` shows each agent run as it goes.

Each agent run gets the run view of a `%%codemode` cell: `view.RichView`'s live bundle
(`application/vnd.codemode.run+json`, updated in place at its rate) and then the finished
run's bundle (`transcript.run_bundle`), drawn by the labextension's run renderer. The serve
cell finished executing long before agent runs happen, so display messages under its parent
header would no longer reach it; widget state does, whenever it is sent. So each run is an
`ipywidgets.Output` whose `outputs` trait holds the bundle (the front end renders it with its
rendermime, hence with our renderer), under a short header with the agent's code, and
followed by what a cell shows below its view: what its tools printed, its error as a
traceback, its value. The program's displays are in the run view, in time order, as in a
cell. Approval cards of the run's paused calls go right under it.

Widget state set from the engine's threads goes out through ipykernel's IOPub thread, so the
feed updates while the kernel is idle or busy with a person's cell. The feed keeps the newest
`MAX_RUNS` runs (newest last) and closes the widgets of those it drops. Outside a kernel
(`widgets=False`) it prints one line per event instead.
"""

from __future__ import annotations

import functools
import html
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .. import events as ev
from ..agents.results import event_line
from ..result import RunResult
from .errors import CodeModeError
from .text import clip
from .tool_output import capture
from .transcript import MIME_RUN, run_bundle
from .view import RichView

MAX_RUNS = 20
#: Lines of an agent's program shown above its run (the rest is counted, not shown).
CODE_LINES = 40
#: Characters of what the tools printed during a run that the feed keeps (head and tail).
TOOL_OUTPUT_CHARS = 20_000
#: MIME types of an agent program's displays and value the feed shows. The feed's outputs
#: are trusted by the front end (they are widget state), so anything that can carry script
#: (HTML, SVG, Markdown, JavaScript) would run the agent's code in the person's page, with
#: the kernel's powers: only text and raster images pass. The MCP result carries the rest.
SAFE_TYPES = ("text/plain", "image/png", "image/jpeg", "image/gif", "image/webp")


class FeedRunView(RichView):
    """One agent run in the feed: a RichView whose display is an Output widget's state.

    `_send` (the live bundle, from the flusher thread) and `publish` (the finished run) set
    the widget's `outputs`; everything else (the timeline, the rate, coalescing) is RichView's.
    """

    def __init__(self, number: int, code: str, **options: Any) -> None:
        import ipywidgets as w

        super().__init__(code, **options)
        self.number = number
        self.result: RunResult | None = None
        self._header = _header_output(number, code)
        self._tool_output: list[list[str]] = []  # [stream, text], consecutive writes merged
        self._show_lock = threading.Lock()
        self.output = w.Output()
        self.cards = w.VBox()
        self.widget = w.VBox([self.output, self.cards])
        self.widget.add_class("codemode-AgentRun")

    def tool_output(self, stream: str, text: str) -> None:
        """Text a tool printed on the host during this run (shown under the run, as a cell
        shows its tools' prints as its own stream output)."""
        with self._lock:
            last = self._tool_output[-1] if self._tool_output else None
            if last is not None and last[0] == stream:
                last[1] = clip(last[1] + text, TOOL_OUTPUT_CHARS)
            else:
                self._tool_output.append([stream, clip(text, TOOL_OUTPUT_CHARS)])
        self._dirty.set()

    def _streams(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"output_type": "stream", "name": stream, "text": text}
                for stream, text in self._tool_output
            ]

    def finish(self, result: RunResult | None) -> None:
        self.result = result
        super().finish(result)

    def end(self, result: RunResult | None) -> None:
        """The run ended: show the finished run (None: the last live state stays)."""
        self.finish(result)
        if result is None:
            return
        data, metadata = run_bundle(self.code, result, self.entries(), warnings=self.warnings)
        self.publish(data, metadata)

    def _send(self, data: dict[str, Any], *, update: bool) -> None:
        # RichView starts with an empty display; the feed shows the run at once instead.
        self._show(_display_output(data or self._live_bundle(), {}), self._streams())

    def publish(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        self._show(_display_output(data, metadata), self._streams() + self._ending())

    def _ending(self) -> list[dict[str, Any]]:
        """What a cell shows below its view: the error or the value."""
        result = self.result
        if result is None:
            return []
        shown: list[dict[str, Any]] = []
        if not result.ok:
            error = result.error
            shown.append(
                {
                    "output_type": "error",
                    "ename": error.type if error else result.status,
                    "evalue": error.message if error else result.status,
                    "traceback": CodeModeError(result)._render_traceback_(),
                }
            )
        else:
            text = result.value_repr
            if text is None and result.value is not None:
                text = repr(result.value)
            if text not in (None, "None"):
                value = {"text/plain": text, **(result.value_bundle or {})}
                shown.append(_display_output(value, {}))
        return shown

    def _show(self, run: dict[str, Any], below: list[dict[str, Any]]) -> None:
        with self._show_lock:  # the flusher thread and the run's own thread both send
            self.output.outputs = (self._header, run, *below)

    def close(self) -> None:
        """Close the run's widgets (it left the feed)."""
        for card in self.cards.children:
            _close_tree(card)
        for widget in (self.cards, self.output, self.widget):
            widget.close()


CODE_STYLE = (
    "margin:2px 0 4px 0;padding:4px 8px;font-size:var(--jp-code-font-size);"
    "background:var(--jp-cell-editor-background);"
    "border:1px solid var(--jp-cell-editor-border-color)"
)


def _header_output(number: int, code: str) -> dict[str, Any]:
    """The agent's program above its run (a cell shows it as its input). Escaped: the agent
    wrote it, and the feed's outputs are trusted."""
    lines = code.rstrip("\n").split("\n")
    shown = "\n".join(lines[:CODE_LINES])
    more = len(lines) - CODE_LINES
    if more > 0:
        shown += f"\n… {more} more line{'s' if more != 1 else ''}"
    text = f"agent run {number}\n{shown}"
    markup = (
        f"<div class='codemode-AgentRunHeader'><b>agent run {number}</b>"
        f"<pre style='{CODE_STYLE}'>{html.escape(shown)}</pre></div>"
    )
    return {
        "output_type": "display_data",
        "data": {"text/html": markup, "text/plain": text},
        "metadata": {},
    }


def _display_output(data: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """A display_data of safe types only; a run bundle's display entries are kept to safe
    types too (the card draws them with the output's trust, which widget state has)."""
    kept = {k: v for k, v in data.items() if k in SAFE_TYPES}
    if MIME_RUN in data:
        kept[MIME_RUN] = _safe_run(data[MIME_RUN])
    if MIME_RUN in metadata:
        metadata = {**metadata, MIME_RUN: _safe_run(metadata[MIME_RUN])}
    return {"output_type": "display_data", "data": kept, "metadata": metadata}


def _safe_run(payload: dict[str, Any]) -> dict[str, Any]:
    """The run payload (or its varying part) with display entries reduced to safe types."""
    timeline = payload.get("timeline")
    if not timeline:
        return payload
    # A list in the payload, a dict by entry index in the varying metadata.
    items = timeline.items() if isinstance(timeline, dict) else enumerate(timeline)
    safe = {key: _safe_entry(entry) for key, entry in items}
    return {**payload, "timeline": safe if isinstance(timeline, dict) else list(safe.values())}


def _safe_entry(entry: Any) -> Any:
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), dict):
        return entry
    if entry.get("kind", "display") != "display":
        return entry
    data = {k: v for k, v in entry["data"].items() if k in SAFE_TYPES}
    return {**entry, "data": data}


@functools.cache
def _feed_box(w: Any) -> type:
    """A VBox whose text/plain (front ends without widgets, a saved notebook reopened without
    its widget state) says what it was, not a dump of its children."""

    class AgentFeedBox(w.VBox):
        def __repr__(self) -> str:
            return "codemode: the agent feed of %codemode serve (a live widget)"

    return AgentFeedBox


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


#: Called when an agent run ends: (job, result, its timeline entries, or None when the feed
#: drew no view of it).
Finished = Callable[[Any, RunResult, "list[dict[str, Any]] | None"], None]


class AgentFeed:
    """The feed widget (`.widget`, displayed by the serve cell), or printed lines outside a
    kernel (`widgets=False`). `options` go to each run's view (RichView's output_cap,
    live_output_chars and rate)."""

    def __init__(
        self,
        widgets: bool = True,
        on_finished: Finished | None = None,
        **options: Any,
    ) -> None:
        self.widgets = widgets
        self.options = options
        self.on_finished = on_finished
        self._runs: dict[int, FeedRunView] = {}  # running, by job id
        self._current: FeedRunView | None = None  # the newest running run
        self._shown: list[FeedRunView] = []  # the runs in the feed, oldest first
        self._printed: set[int] = set()  # runs announced by the text fallback
        self._closed = False
        self._lock = threading.Lock()
        self.widget: Any = None
        self._placeholder: Any = None
        if widgets:
            import ipywidgets as w

            self._placeholder = w.HTML("<i>agent runs appear here</i>")
            self.widget = _feed_box(w)([self._placeholder])
            self.widget.add_class("codemode-AgentFeed")

    def on_event(self, job: Any, event: ev.Event) -> None:
        """An AgentRunner observer (engine threads; quick)."""
        view = self._view_for(job, event)
        if view is not None:
            view.on_event(event)
        if not isinstance(event, ev.RunFinished):
            return
        if view is not None:
            with self._lock:
                self._runs.pop(job.id, None)
                if self._current is view:
                    self._current = None
            view.end(event.result)
        if self.on_finished is not None:
            self.on_finished(job, event.result, view.entries() if view is not None else None)

    def _view_for(self, job: Any, event: ev.Event) -> FeedRunView | None:
        """The run's view (started on its first event); None without widgets or once the
        feed is closed (late events of a run the stop cut short start nothing)."""
        if not self.widgets:
            self._print(job, event)
            return None
        with self._lock:
            if self._closed:
                return None
            view = self._runs.get(job.id)
            return view if view is not None else self._start(job)

    @contextmanager
    def capturing(self, job: Any) -> Iterator[None]:
        """The AgentRunner's run context: what tools print during `job` goes to its view."""
        if not self.widgets:
            yield  # a terminal shows prints where they are made
            return

        def sink(stream: str, text: str) -> None:
            with self._lock:
                view = self._runs.get(job.id) if not self._closed else None
            if view is not None:
                view.tool_output(stream, text)

        with capture(sink):
            yield

    def _start(self, job: Any) -> FeedRunView:
        view = FeedRunView(job.id, job.code, **self.options)
        self._runs[job.id] = view
        self._current = view
        self._append(view.widget, view)
        view.start()
        return view

    def runs(self) -> list[FeedRunView]:
        """The runs the feed shows, oldest first."""
        with self._lock:
            return list(self._shown)

    def place(self, card: Any) -> None:
        """Show an approval card (WidgetApprover's `place`) under the run that asks: agent
        runs go one at a time, so it is the running one."""
        with self._lock:
            view = self._current
            if view is not None:
                view.cards.children = (*view.cards.children, card)
                return
            self._append(card, None)

    def _append(self, widget: Any, view: FeedRunView | None) -> None:
        """Add an entry, newest last, keeping MAX_RUNS (called with the lock held)."""
        shown = self._shown
        entries = [c for c in self.widget.children if c is not self._placeholder]
        entries.append(widget)
        if view is not None:
            shown.append(view)
        dropped = entries[: max(len(entries) - MAX_RUNS, 0)]
        self.widget.children = tuple(entries[len(dropped) :])
        for old in dropped:
            match = next((v for v in shown if v.widget is old), None)
            if match is not None:
                shown.remove(match)
                match.close()
            else:
                _close_tree(old)

    def close(self) -> None:
        """End the views of runs still going (their flusher threads stop). Idempotent."""
        with self._lock:
            self._closed = True
            running = list(self._runs.values())
            self._runs.clear()
            self._current = None
        for view in running:
            view.end(None)

    def _print(self, job: Any, event: ev.Event) -> None:
        with self._lock:
            if job.id not in self._printed:
                self._printed.add(job.id)
                print(f"[agent run {job.id}] started")
            if isinstance(event, ev.RunFinished):
                self._printed.discard(job.id)
        line = event_line(event)
        if line is not None:
            print(f"[agent run {job.id}] {line.rstrip()}")
