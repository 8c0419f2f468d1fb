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

Widget state is not what a notebook keeps: after a save and a new kernel the widgets are gone
("model not found"). So the feed is also kept as plain outputs of the serving cell: each run's
outputs (its header, its run bundle with the approvals, what its tools printed, its ending),
pushed over the `codemode.feed` comm (feed_comm.py) when a run starts, when a call waits or is
decided and when it ends; the JupyterLab extension writes them into the cell, where they are
saved like any output and drawn by the run renderer without a kernel. The serving cell's own
display carries `application/vnd.codemode.feed+json` next to the widget: the extension draws
the widget while the server runs in this kernel and, once it stopped or the kernel is gone, a
line saying so (never the dead widget).

Approvals are part of a run's record: each paused call's entry gets `approval` (the decision,
who decided, the reason) and `waited` (the seconds a person took, kept out of the call's
`duration`); while it waits its state is `waiting`. Cards are linked to the run's own call
number (the newest call of that tool still in flight, which is the one that asks).
"""

from __future__ import annotations

import contextvars
import functools
import html
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from codemode_jupyter.agents.results import event_line
from codemode_jupyter.jupyter.approval_marks import ApprovalMarks
from codemode_jupyter.jupyter.errors import CodeModeError
from codemode_jupyter.jupyter.views.feed_comm import FEED_MIME, FeedComm
from codemode_jupyter.jupyter.views.live import RichView
from codemode_jupyter.jupyter.views.tool_output import capture
from codemode_jupyter.jupyter.views.transcript import MIME_RUN, run_bundle
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.format import clip
from codemode_jupyter.model.result import RunResult

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

    def __init__(
        self,
        number: int,
        code: str,
        session: str = "agent",
        on_change: Callable[[FeedRunView], None] | None = None,
        **options: Any,
    ) -> None:
        import ipywidgets as w

        super().__init__(code, **options)
        self.number = number
        self.session = session
        self.on_change = on_change
        self.result: RunResult | None = None
        self.approvals = ApprovalMarks()
        self._header = _header_output(number, code, session)
        self._tool_output: list[list[str]] = []  # [stream, text], consecutive writes merged
        self._show_lock = threading.Lock()
        self.output = w.Output()
        self.cards = w.VBox()
        self.widget = w.VBox([self.output, self.cards])
        self.widget.add_class("codemode-AgentRun")

    def tool_output(self, stream: str, text: str) -> bool:
        """Text a tool printed on the host during this run: in the timeline under the call
        that printed it, as in a cell; printed while no call runs, it is shown under the run."""
        if super().tool_output(stream, text):
            return True
        with self._lock:
            last = self._tool_output[-1] if self._tool_output else None
            if last is not None and last[0] == stream:
                last[1] = clip(last[1] + text, TOOL_OUTPUT_CHARS)
            else:
                self._tool_output.append([stream, clip(text, TOOL_OUTPUT_CHARS)])
        self._dirty.set()
        return True

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
            self._changed()
            return
        data, metadata = run_bundle(self.code, result, self.entries(), warnings=self.warnings)
        self.publish(data, metadata)
        self._changed()

    def entries(self) -> list[dict[str, Any]]:
        """The timeline, with the approvals of its paused calls."""
        return self._with_approvals(super().entries())

    # --- approvals ---------------------------------------------------------------------

    def link_call(self, tool: str) -> int | None:
        """The run's number of the call of `tool` that asks for approval now (see
        approval_marks); the live view shows it waiting."""
        with self._lock:
            running = [e["id"] for e in self.timeline.running_calls() if e["name"] == tool]
        call_id = self.approvals.link(running)
        self._redraw()
        return call_id

    def decided(self, call_id: int, action: str, by: str, reason: str = "") -> None:
        """A person (or the timeout, or the agent's client) decided call `call_id`."""
        self.approvals.decided(call_id, action, by, reason)
        self._redraw()

    def _redraw(self) -> None:
        """Show the live run now (not at the flusher's next turn), and keep it."""
        if self.result is None:
            self._send(self._live_bundle(), update=True)
        self._changed()

    def _with_approvals(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.approvals.apply(entries)

    # --- showing -----------------------------------------------------------------------

    def _send(self, data: dict[str, Any], *, update: bool) -> None:
        # RichView starts with an empty display; the feed shows the run at once instead.
        data = dict(data or self._live_bundle())
        payload = data.get(MIME_RUN)
        if payload is not None:
            timeline = self._with_approvals(payload.get("timeline") or [])
            data[MIME_RUN] = {**payload, "timeline": timeline, "agent": self.agent_info()}
        self._show(_display_output(data, {}), self._streams())

    def agent_info(self) -> dict[str, Any]:
        """Who ran it, for the run card (its "Insert as cell" opens this session)."""
        return {"run": self.number, "session": self.session}

    def record(self, feed: str) -> dict[str, Any]:
        """The run as the serving cell keeps it: one display_data whose run bundle also
        carries what the feed shows around the run (the program, what the tools printed,
        the ending; `agent.record`), marked with the feed and the run so the front end
        replaces it when the run changes."""
        with self._show_lock:
            run = self.output.outputs[1] if len(self.output.outputs) > 1 else None
        if run is None or MIME_RUN not in run.get("data", {}):
            run = _display_output(self._live_bundle(), {})
        payload = dict(run["data"][MIME_RUN])
        streams = self._streams()
        payload["agent"] = {
            **self.agent_info(),
            "record": True,
            "tool_output": [[o["name"], o["text"]] for o in streams],
        }
        text = "\n".join(
            [self._header["data"]["text/plain"], run["data"].get("text/plain", "")]
            + [o["text"] for o in streams]
        )
        metadata = {**run.get("metadata", {}), "codemode_feed": {"feed": feed, "run": self.number}}
        return {
            "output_type": "display_data",
            "data": {MIME_RUN: payload, "text/plain": text.rstrip("\n")},
            "metadata": metadata,
        }

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def publish(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        data = dict(data)
        if MIME_RUN in data:
            data[MIME_RUN] = {**data[MIME_RUN], "agent": self.agent_info()}
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


def _header_output(number: int, code: str, session: str) -> dict[str, Any]:
    """The agent's program above its run (a cell shows it as its input). Escaped: the agent
    wrote it, and the feed's outputs are trusted."""
    lines = code.rstrip("\n").split("\n")
    shown = "\n".join(lines[:CODE_LINES])
    more = len(lines) - CODE_LINES
    if more > 0:
        shown += f"\n… {more} more line{'s' if more != 1 else ''}"
    text = f"agent run {number} (session {session})\n{shown}"
    markup = (
        f"<div class='codemode-AgentRunHeader'><b>agent run {number}</b> "
        f"<span class='codemode-AgentRunSession'>(session {html.escape(session)})</span>"
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


#: The job whose program this thread runs (set by `AgentFeed.capturing`).
_running_job: contextvars.ContextVar[int] = contextvars.ContextVar("codemode_feed_job")


def stopped_text(info: dict[str, Any]) -> str:
    """What the serving cell says once its server stopped: no URL (it is gone), the tools
    and approvals it had."""
    lines = ["codemode: the MCP server stopped (%codemode serve starts a new one)"]
    if info.get("tools"):
        lines.append(f"tools agents could call: {', '.join(info['tools'])}")
    if info.get("approve"):
        lines.append(f"approval was asked for: {', '.join(info['approve'])}")
    return "\n".join(lines)


def _about(text: str, settings: str = "") -> str:
    """The server's summary, its client settings folded (they are long, and the same for
    every start but the port)."""
    shown = f"<pre class='codemode-AgentFeedText'>{html.escape(text)}</pre>"
    if settings:
        shown += (
            "<details class='codemode-AgentFeedSettings'><summary>client settings</summary>"
            f"<pre class='codemode-AgentFeedText'>{html.escape(settings.strip())}</pre></details>"
        )
    return shown


def _public(info: dict[str, Any]) -> dict[str, Any]:
    """The server info the front end draws (JSON; never the token)."""
    keys = ("url", "session", "shared", "tools", "approve", "text")
    return {k: info[k] for k in keys if k in info}


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
        session: str = "agent",
        **options: Any,
    ) -> None:
        self.widgets = widgets
        self.options = options
        self.on_finished = on_finished
        self.session = session
        self.id = uuid.uuid4().hex
        self.comm = FeedComm(self.id)
        self.info: dict[str, Any] = {}
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
            self._about = w.HTML()
            self._about.add_class("codemode-AgentFeedAbout")
            self.widget = _feed_box(w)([self._about, self._placeholder])
            self.widget.add_class("codemode-AgentFeed")

    def show(self, info: dict[str, Any]) -> None:
        """Display the feed in the current cell: the server's `info` (serve_cmd.serve_info)
        above the runs, and the mark the front end keeps the cell's record by."""
        from IPython.display import display

        self.info = info
        self._about.value = _about(info.get("summary", info["text"]), info.get("settings", ""))
        self.comm.open(info)  # before the display: the front end knows the feed is live
        bundle = self.widget._repr_mimebundle_()
        data = {
            FEED_MIME: {"version": 1, "feed": self.id, **_public(info)},
            "application/vnd.jupyter.widget-view+json": bundle[
                "application/vnd.jupyter.widget-view+json"
            ],
            "text/plain": info["text"],
        }
        display(data, raw=True)

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
            if view is not None:
                return view
            view = self._start(job)
        self._push(view)  # the record starts with the run (a save mid-run keeps it)
        return view

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

        token = _running_job.set(job.id)  # an approval asked on this thread is this run's
        try:
            with capture(sink):
                yield
        finally:
            _running_job.reset(token)

    def _start(self, job: Any) -> FeedRunView:
        session = job.session_name or self.session  # the session the run ran in
        view = FeedRunView(job.id, job.code, session, self._push, **self.options)
        self._runs[job.id] = view
        self._current = view
        self._append(view.widget, view)
        view.start()
        return view

    def _push(self, view: FeedRunView) -> None:
        """Send the run's record (and which runs the feed keeps) to the front end."""
        keep = [v.number for v in self.runs()]
        self.comm.send_run(view.number, [view.record(self.id)], keep)

    def runs(self) -> list[FeedRunView]:
        """The runs the feed shows, oldest first."""
        with self._lock:
            return list(self._shown)

    def place(self, card: Any) -> None:
        """Show an approval card (WidgetApprover's `place`) under the run that asks (the
        run of this thread; else the newest running one) and link it to the run's call."""
        with self._lock:
            job = _running_job.get(None)
            view = self._runs.get(job) if job is not None else None
            view = view or self._current
            if view is None:
                self._append(card.widget, None)
                return
            view.cards.children = (*view.cards.children, card.widget)
        card.number = view.link_call(card.request.tool)
        card.on_decided.append(
            lambda c: (
                view.decided(c.number, c.decision.action, c.by, c.decision.reason)
                if c.number is not None
                else None
            )
        )
        card.refresh()

    def _append(self, widget: Any, view: FeedRunView | None) -> None:
        """Add an entry, newest last, keeping MAX_RUNS (called with the lock held)."""
        shown = self._shown
        fixed = (self._about, self._placeholder)
        entries = [c for c in self.widget.children if c not in fixed]
        entries.append(widget)
        if view is not None:
            shown.append(view)
        dropped = entries[: max(len(entries) - MAX_RUNS, 0)]
        self.widget.children = (self._about, *entries[len(dropped) :])
        for old in dropped:
            match = next((v for v in shown if v.widget is old), None)
            if match is not None:
                shown.remove(match)
                match.close()
            else:
                _close_tree(old)

    def close(self) -> None:
        """End the views of runs still going (their flusher threads stop), and say the
        server stopped, in the widget and to the front end. Idempotent."""
        with self._lock:
            was_closed, self._closed = self._closed, True
            running = list(self._runs.values())
            self._runs.clear()
            self._current = None
        for view in running:
            view.end(None)
        if was_closed:
            return
        if self.widget is not None:
            self._about.value = _about(stopped_text(self.info))
        self.comm.close(stopped_text(self.info))

    def _print(self, job: Any, event: ev.Event) -> None:
        with self._lock:
            if job.id not in self._printed:
                self._printed.add(job.id)
                print(f"[agent run {job.id}] started in session {job.session_name}")
            if isinstance(event, ev.RunFinished):
                self._printed.discard(job.id)
        line = event_line(event)
        if line is not None:
            print(f"[agent run {job.id}] {line.rstrip()}")
