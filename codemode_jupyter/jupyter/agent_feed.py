"""The agent feed: the cell that ran `%codemode serve` shows each agent run as it goes.

A simple view (one HTML block per run: code, output, calls, status; newest last, bounded)
until the timeline view replaces it. Events arrive on engine threads; widget updates from
them are sent to the front end by ipykernel's IOPub thread, so the feed updates while the
kernel is idle or busy with a person's cell.
"""

from __future__ import annotations

import html
import threading
from typing import Any

from .. import events as ev
from ..agents.results import event_line

MAX_RUNS = 20
MAX_CHARS = 4000  # of each run's log shown (the tail)


class _RunView:
    def __init__(self, number: int, code: str, widget: Any) -> None:
        self.number, self.code, self.widget = number, code, widget
        self.lines: list[str] = []
        self.status = "running"

    def render(self) -> str:
        log = "".join(self.lines)
        if len(log) > MAX_CHARS:
            log = "…" + log[-MAX_CHARS:]
        return (
            f"<div style='border-left:3px solid #888;padding-left:6px;margin:4px 0'>"
            f"<b>agent run {self.number}</b> — {html.escape(self.status)}"
            f"<pre style='margin:2px 0'>{html.escape(self.code)}</pre>"
            f"<pre style='margin:2px 0;color:#555'>{html.escape(log)}</pre></div>"
        )


class AgentFeed:
    """The feed widget (`.widget`, displayed by the serve cell), or printed lines outside a
    kernel (`widgets=False`)."""

    def __init__(self, widgets: bool = True) -> None:
        self.widgets = widgets
        self._runs: dict[int, _RunView] = {}
        self._lock = threading.Lock()
        self._children_lock = threading.Lock()  # runs and approval cards come from threads
        self.widget: Any = None
        if widgets:
            import ipywidgets as w

            self.widget = w.VBox([w.HTML("<i>agent runs appear here</i>")])

    def on_event(self, job: Any, event: ev.Event) -> None:
        """An AgentRunner observer."""
        with self._lock:
            view = self._runs.get(job.id)
            if view is None:
                view = self._start(job)
            line = event_line(event)
            if isinstance(event, ev.RunFinished):
                view.status = event.result.status
            elif line is not None and not isinstance(event, ev.Output):
                view.lines.append(line + "\n")
            elif isinstance(event, ev.Output):
                view.lines.append(event.text)
            if not self.widgets and line is not None:
                print(f"[agent run {job.id}] {line.rstrip()}")
            if view.widget is not None:
                view.widget.value = view.render()
            if isinstance(event, ev.RunFinished):
                self._runs.pop(job.id, None)

    def _start(self, job: Any) -> _RunView:
        widget = None
        if self.widgets:
            import ipywidgets as w

            widget = w.HTML()
            self._append(widget)
        elif job.code:
            print(f"[agent run {job.id}] started")
        view = _RunView(job.id, job.code, widget)
        self._runs[job.id] = view
        return view

    def place(self, card: Any) -> None:
        """Show an approval card (WidgetApprover's `place`)."""
        self._append(card)

    def _append(self, widget: Any) -> None:
        with self._children_lock:
            children = [*self.widget.children, widget]
            self.widget.children = tuple(children[-MAX_RUNS * 2 :])
