"""The views of a running `%%codemode` cell: rich (one display updated in place) and text.

Every view records the run's timeline (timeline.py) from the engine's events. The rich view
draws nothing itself: it publishes the timeline as `application/vnd.codemode.run+json`, which
the labextension renders (live and saved, the same code), with a text/plain fallback for front
ends without the extension. See docs/ARCHITECTURE.md, "The run view", for why it is a display
updated in place rather than a widget.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
import time
import uuid
from typing import Any, TextIO

from codemode_jupyter.jupyter.views.transcript import MIME_RUN, PAYLOAD_VERSION
from codemode_jupyter.model.events import (
    Event,
    Output,
    PreviewAnnounced,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)
from codemode_jupyter.model.format import call_line, entry_lines, format_duration, plural
from codemode_jupyter.model.result import RunResult
from codemode_jupyter.model.timeline import Timeline, stub_displays

#: Entries a live update carries at most (the saved view has them all).
LIVE_ENTRIES = 500
#: Characters of display bundles a live update embeds: the newest displays that fit; older
#: ones travel as their text/plain until the run ends (the finished card has them all).
LIVE_DISPLAY_CHARS = 2 << 20
#: Characters a second the live updates may send: a big payload (many images) slows the
#: updates down, so the websocket and the browser are not flooded.
LIVE_CHARS_PER_SECOND = 4 << 20


class View:
    """Records the timeline; subclasses show it. `on_event` is quick and thread-safe."""

    def __init__(self, output_cap: int = 1_000_000) -> None:
        self.timeline = Timeline(output_cap)
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        with self._lock:
            self.timeline.apply(event)

    def tool_output(self, stream: str, text: str) -> bool:
        """A write to sys.stdout/stderr on the host during the run (tool_output.capture):
        filed under the newest call in flight; False (not taken) when no call runs."""
        with self._lock:
            running = self.timeline.running_calls()
            if not running:
                return False
            self.timeline.add_tool_output(running[-1]["id"], stream, text)
        return True

    def warn(self, message: str) -> None:
        with self._lock:
            if message not in self.warnings:
                self.warnings.append(message)

    def start(self) -> None:
        """Show the (empty) view; the cell's program has not started yet."""

    def finish(self, result: RunResult | None) -> None:
        """The run ended (None: interrupted before a result existed)."""
        with self._lock:
            self.timeline.finish(result)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.timeline.snapshot()

    def publish(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        """Show the finished run's bundle (the output a saved notebook keeps)."""
        from IPython.display import publish_display_data

        publish_display_data(data, metadata)


class QuietView(View):
    """--quiet: record, show nothing; warnings still reach stderr."""

    def warn(self, message: str) -> None:
        print(f"codemode: {message}", file=sys.stderr)


class RichView(View):
    """One display, updated in place at most `rate` times a second, replaced by the result.

    The display starts with empty data and ends with empty data: nbval records only the first
    message of a display (never its updates) and compares what the saved notebook holds, so
    both must be empty for the live display to be invisible to it. The finished run is then
    published as its own display_data right where the live one was.

    Each update resends the whole (capped) payload, so the pause after one grows with its
    size: at most `rate` updates a second and `LIVE_CHARS_PER_SECOND` characters a second.

    `final_in_place`: the finished run replaces the live display's data instead (the saved
    output is then the live one). A cell that asks at prompts while it runs (`--step`) needs
    it: its prompts come after the live display, and a new display would land below them.
    """

    final_in_place = False

    def __init__(
        self,
        code: str,
        *,
        output_cap: int = 1_000_000,
        live_output_chars: int = 20_000,
        rate: float = 10.0,
    ) -> None:
        super().__init__(output_cap)
        self.code = code
        self.live_output_chars = live_output_chars
        self.display_id = uuid.uuid4().hex
        self.started = time.monotonic()
        self._interval = 1.0 / max(rate, 0.1)
        self._last_size = 0  # characters of the last live update (about its bytes)
        self._dirty = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def on_event(self, event: Event) -> None:
        super().on_event(event)
        self._dirty.set()

    def tool_output(self, stream: str, text: str) -> bool:
        taken = super().tool_output(stream, text)
        self._dirty.set()
        return taken

    def warn(self, message: str) -> None:
        super().warn(message)
        self._dirty.set()

    def start(self) -> None:
        self._send({}, update=False)
        # The kernel's parent header (which cell this output belongs to) is a context
        # variable: the flusher thread runs in a copy of this context.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._flusher,), name="codemode-view", daemon=True
        )
        self._thread.start()

    def _stop(self) -> None:
        self._done.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def finish(self, result: RunResult | None) -> None:
        self._stop()
        super().finish(result)
        if result is None:
            # No result will be published: the live display keeps the final state.
            self._send(self._live_bundle(), update=True)

    def publish(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        if self.final_in_place:
            self._send(data, update=True, metadata=metadata)
            return
        self._send({}, update=True)
        super().publish(data, metadata)

    def _flusher(self) -> None:
        # A cell that ends within the first interval sends only its final state.
        if self._done.wait(timeout=self._interval):
            return
        last = time.monotonic()
        while not self._done.is_set():
            # Wake on changes, and once a second anyway so the elapsed time moves.
            changed = self._dirty.wait(timeout=1.0)
            if self._done.is_set():
                return
            self._dirty.clear()
            if changed or time.monotonic() - last >= 1.0:
                self._send(self._live_bundle(), update=True)
                last = time.monotonic()
            # Coalescing: what arrives during this pause goes out with the next update.
            self._done.wait(timeout=self.pause())

    def pause(self) -> float:
        """Seconds to wait after an update: longer after a big one (see the class doc)."""
        return max(self._interval, self._last_size / LIVE_CHARS_PER_SECOND)

    def _live_bundle(self) -> dict[str, Any]:
        with self._lock:
            timeline = self.timeline
            entries = timeline.snapshot(self.live_output_chars, LIVE_ENTRIES)
            status, backend, isolation = timeline.status, timeline.backend, timeline.isolation
            warnings = list(self.warnings)
        display_chars = stub_displays(entries, LIVE_DISPLAY_CHARS)
        self._last_size = display_chars + sum(len(e.get("text", "")) for e in entries)
        payload = {
            "version": PAYLOAD_VERSION,
            "code": self.code,
            "timeline": entries,
            "result": {
                "status": status,
                "duration": time.monotonic() - self.started,
                "backend": backend,
                "isolation": isolation,
            },
        }
        if warnings:
            payload["warnings"] = warnings
        return {MIME_RUN: payload, "text/plain": live_text(payload)}

    def _send(
        self, data: dict[str, Any], *, update: bool, metadata: dict[str, Any] | None = None
    ) -> None:
        from IPython.display import publish_display_data

        publish_display_data(
            data, metadata or {}, transient={"display_id": self.display_id}, update=update
        )


def live_text(payload: dict[str, Any]) -> str:
    """The text/plain of a live update (front ends without the extension show it)."""
    result = payload["result"]
    entries = payload["timeline"]
    calls = [e for e in entries if e["kind"] == "call"]
    lines = [
        f"── codemode: {result['status']} · {format_duration(result['duration'])} · "
        f"{plural(len(calls), 'tool call')}"
    ]
    for entry in entries[-40:]:
        lines.extend(entry_lines(entry, live=True, timings=True))
    return "\n".join(lines)


class TextView(View):
    """Plain text as it happens: output passes through, each tool call gets a line.

    In terminal IPython (`in_cell=False`) call lines carry their duration, a status line ends
    the run, and lines are coloured when the terminal supports it (not with NO_COLOR). In a
    kernel cell (`%config CodeMode.display = "text"`) timings are left out, because the
    streams are saved in the notebook and compared by nbval.
    """

    def __init__(
        self, stdout: TextIO | None = None, stderr: TextIO | None = None, *, in_cell: bool = False
    ) -> None:
        super().__init__()
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr
        self._in_cell = in_cell
        self._colour = not in_cell and _supports_colour(self._err)

    def on_event(self, event: Event) -> None:
        super().on_event(event)
        if isinstance(event, Output):
            stream = self._err if event.stream == "stderr" else self._out
            stream.write(event.text)
            stream.flush()
        elif isinstance(event, ToolCallFinished):
            with self._lock:
                entry = self.timeline.call(event.id) or {}
            if entry:
                self._line(call_line(entry, live=True, timings=not self._in_cell), entry["state"])
        elif isinstance(event, PreviewAnnounced):
            self._line(f"  preview: port {event.preview.port}: {event.preview.url}", "info")
        elif isinstance(event, RunStarted):
            self._line(f"[codemode] {event.backend}, isolation: {event.isolation}", "info")
        elif isinstance(event, ToolCallStarted):
            pass

    def warn(self, message: str) -> None:
        super().warn(message)
        self._line(f"[codemode] warning: {message}", "warning")

    def finish(self, result: RunResult | None) -> None:
        with self._lock:
            running = self.timeline.running_calls()
        super().finish(result)
        for entry in running:
            entry["state"] = "cancelled"
            self._line(call_line(entry, live=True), "cancelled")
        if result is None:
            self._line("[codemode] interrupted", "warning")
            return
        if self._in_cell:
            return
        lost = "; the runtime was replaced: variables from earlier cells are gone"
        self._line(
            f"[codemode] {result.status} in {format_duration(result.duration)}, "
            f"{plural(len(result.tool_calls), 'tool call')}" + (lost if result.state_lost else ""),
            "ok" if result.ok else "error",
        )

    def _line(self, text: str, tone: str) -> None:
        if self._colour and tone in _COLOURS:
            text = f"\x1b[{_COLOURS[tone]}m{text}\x1b[0m"
        self._err.write(text + "\n")
        self._err.flush()


_COLOURS = {"ok": "32", "error": "31", "cancelled": "33", "warning": "33", "info": "2"}


def _supports_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except Exception:
        return False
