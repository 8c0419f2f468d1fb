"""A run as one ordered timeline, built from the engine's events on the host.

The entries are typed in entries.py (`OutputEntry`, `CallEntry`, `PreviewEntry`, `GapEntry`,
`DisplayEntry`) and built here as plain dicts, in the order things happened, so a print made
after a tool call comes after it. Consecutive output chunks of one stream merge; a call's
entry sits where the call started; previews lead the timeline (see `add_preview`); a `gap`
marks output dropped to keep within the cap; a live update may carry a display as a stub
(see `stub_displays`), the finished run has them all. An output entry with `"call": id`
is what that tool printed on the host while it ran (`add_tool_output`), after the call's entry.

The ending (status, value, error) is the RunResult, which travels next to the timeline.
"""

from __future__ import annotations

import json
from typing import Any

from codemode_jupyter.model.entries import CallEntry, DisplayEntry, Entry, GapEntry, OutputEntry
from codemode_jupyter.model.events import (
    Display,
    Event,
    Output,
    PreviewAnnounced,
    RunFinished,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)
from codemode_jupyter.model.format import clip, format_args, full_repr
from codemode_jupyter.model.result import RunError, RunResult

#: Characters of a call's arguments or result the timeline keeps (the view shows less, and
#: the rest of these on a click).
REPR_LIMIT = 10_000


class Timeline:
    """The entries of one run. Not thread-safe: the view serialises access with a lock.

    Output beyond `output_cap` characters is dropped from the middle: the first half of the
    cap stays (how the run began), then the newest output; a `gap` entry marks the cut.
    """

    def __init__(self, output_cap: int = 1_000_000) -> None:
        self.output_cap = max(output_cap, 2)
        self.entries: list[Entry] = []
        self._calls: dict[int, CallEntry] = {}
        self._parts: dict[int, list[str]] = {}  # id(output entry) -> its text, in chunks
        self._kept = 0  # output characters kept
        self._head: int | None = None  # entries before this index are never trimmed
        self.backend = ""
        self.isolation = ""
        self.status = "running"

    # --- building ----------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if isinstance(event, Output):
            self.add_output(event.stream, event.text)
        elif isinstance(event, ToolCallStarted):
            self.start_call(event.id, event.name, event.args, event.round)
        elif isinstance(event, ToolCallFinished):
            self.finish_call(event.id, event.result, event.error, event.duration)
        elif isinstance(event, PreviewAnnounced):
            self.add_preview(event.preview.port, event.preview.url)
        elif isinstance(event, Display):
            self.add_display(event.data, event.metadata)
        elif isinstance(event, RunStarted):
            self.backend, self.isolation = event.backend, event.isolation
        elif isinstance(event, RunFinished):
            self.finish(event.result)

    def add_tool_output(self, call_id: int, stream: str, text: str) -> None:
        """What the tool of call `call_id` printed on the host (see the module doc)."""
        self.add_output(stream, text, call=call_id)

    def add_output(self, stream: str, text: str, call: int | None = None) -> None:
        if not text:
            return
        last = self.entries[-1] if self.entries else None
        # Chunks of one stream merge, except into the last entry of the head (never trimmed).
        mergeable = self._head is None or len(self.entries) > self._head
        if (
            last is not None
            and last["kind"] == "output"
            and last["stream"] == stream
            and last.get("call") == call
            and mergeable
        ):
            self._parts[id(last)].append(text)
            self._grow(len(text))
            return
        entry: OutputEntry = {"kind": "output", "stream": stream, "text": ""}
        if call is not None:
            entry["call"] = call
        self.entries.append(entry)
        self._parts[id(entry)] = [text]
        self._grow(len(text))

    def _grow(self, size: int) -> None:
        self._kept += size
        if self._head is None and self._kept >= self.output_cap // 2:
            # The head is full: what comes from here on may be dropped again.
            self._head = len(self.entries)
        if self._kept > self.output_cap:
            self._trim(self._kept - self.output_cap)

    def _trim(self, excess: int) -> None:
        assert self._head is not None
        index = self._head
        gap = self.entries[index] if index < len(self.entries) else None
        if gap is None or gap["kind"] != "gap":
            gap: GapEntry = {"kind": "gap", "chars": 0}
            self.entries.insert(index, gap)
        index += 1
        while excess > 0 and index < len(self.entries):
            entry = self.entries[index]
            if entry["kind"] != "output":
                index += 1
                continue
            text = "".join(self._parts[id(entry)])
            if len(text) <= excess:
                del self.entries[index]
                del self._parts[id(entry)]
                cut = len(text)
            else:
                self._parts[id(entry)] = [text[excess:]]
                cut = excess
            excess -= cut
            self._kept -= cut
            gap["chars"] += cut

    def start_call(self, call_id: int, name: str, args: dict[str, Any], round_: int) -> None:
        entry: CallEntry = {
            "kind": "call",
            "id": call_id,
            "name": name,
            "round": round_,
            "args": clip(format_args(args), REPR_LIMIT),
            "state": "running",
        }
        self.entries.append(entry)
        self._calls[call_id] = entry

    def finish_call(
        self, call_id: int, result: Any, error: RunError | None, duration: float
    ) -> None:
        entry = self._calls.get(call_id)
        if entry is None:
            return
        entry["duration"] = duration
        if error is not None:
            entry["state"] = "error"
            entry["error"] = {
                "type": error.type,
                "message": error.message,
                "traceback": error.traceback,
            }
        else:
            entry["state"] = "ok"
            entry["result"] = clip(full_repr(result), REPR_LIMIT)

    def add_display(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        """A display as it came (the engine's caps already apply): its bundle is not copied,
        and no reader changes it."""
        self.entries.append({"kind": "display", "data": data, "metadata": metadata or {}})

    def add_preview(self, port: int, url: str) -> None:
        """Previews lead the timeline, in the order they were announced.

        A program's `codemode.preview()` does not wait for the host, so its announcement may
        reach the host after output the program wrote later: placed first, the timeline is
        the same on every run.
        """
        index = 0
        while index < len(self.entries) and self.entries[index]["kind"] == "preview":
            if self.entries[index]["port"] == port:
                return
            index += 1
        self.entries.insert(index, {"kind": "preview", "port": port, "url": url})
        if self._head is not None:
            self._head += 1

    def finish(self, result: RunResult | None) -> None:
        """The run ended (None: interrupted before a result existed); calls in flight end too."""
        if result is not None:
            self.status = result.status
            self.backend = self.backend or result.backend
            self.isolation = self.isolation or result.isolation
            for preview in result.previews:
                self.add_preview(preview.port, preview.url)
        elif self.status == "running":
            self.status = "interrupted"
        for entry in self._calls.values():
            if entry["state"] == "running":
                entry["state"] = "cancelled"

    # --- reading -----------------------------------------------------------------------

    def call(self, call_id: int) -> CallEntry | None:
        """A copy of the call's entry."""
        entry = self._calls.get(call_id)
        return None if entry is None else self._copy(entry)

    def running_calls(self) -> list[CallEntry]:
        """Copies of the calls still in flight."""
        return [self._copy(e) for e in self._calls.values() if e["state"] == "running"]

    def snapshot(self, output_budget: int | None = None, max_entries: int = 0) -> list[Entry]:
        """JSON-able copies of the entries.

        `output_budget`: keep only the newest that many characters of output (a live view);
        `max_entries`: keep only the newest that many entries. A `gap` entry says what went.
        """
        entries = [self._copy(entry) for entry in self.entries]
        if output_budget is None and not max_entries:
            return entries
        kept: list[Entry] = []
        dropped_chars = 0
        budget = output_budget if output_budget is not None else -1
        for entry in reversed(entries):
            if max_entries and len(kept) >= max_entries:
                dropped_chars += len(entry.get("text", ""))
                continue
            if entry["kind"] == "output" and budget >= 0:
                if budget == 0:
                    dropped_chars += len(entry["text"])
                    continue
                if len(entry["text"]) > budget:
                    dropped_chars += len(entry["text"]) - budget
                    entry["text"] = entry["text"][-budget:]
                budget -= len(entry["text"])
            elif entry["kind"] == "gap":
                dropped_chars += entry["chars"]
                continue
            kept.append(entry)
        kept.reverse()
        if dropped_chars or len(kept) < len(entries):
            kept.insert(0, {"kind": "gap", "chars": dropped_chars})
        return kept

    def _copy(self, entry: Any) -> Any:
        copy = dict(entry)
        if entry["kind"] == "output":
            copy["text"] = "".join(self._parts[id(entry)])
        elif "error" in entry:
            copy["error"] = dict(entry["error"])
        return copy


def stub_displays(entries: list[Entry], budget: int) -> int:
    """Keep the newest displays whose bundles fit in `budget` characters; replace the older
    ones (in place) by stubs: their text/plain and `"omitted"`, the size left out.

    For what is sent again and again (live updates, the Tools panel's runs): a program that
    shows 100 PNGs must not resend all of them ten times a second. Returns the characters
    the kept displays take.
    """
    kept = 0
    for index in range(len(entries) - 1, -1, -1):
        entry = entries[index]
        if entry["kind"] != "display" or "omitted" in entry:
            continue
        size = bundle_size(entry["data"])
        if kept + size <= budget:
            kept += size
            continue
        text = entry["data"].get("text/plain", "")
        stub: DisplayEntry = {
            "kind": "display",
            "data": {"text/plain": text},
            "metadata": {},
            "omitted": size,
        }
        entries[index] = stub
    return kept


def timeline_from_result(result: RunResult) -> list[Entry]:
    """A timeline for a result that was recorded without events: calls, output, displays."""
    timeline = Timeline(output_cap=10**12)
    for call in result.tool_calls:
        timeline.start_call(call.id, call.name, call.args, call.round)
        timeline.finish_call(call.id, call.result, call.error, call.duration)
    timeline.add_output("stdout", result.stdout)
    timeline.add_output("stderr", result.stderr)
    for item in result.displays:
        timeline.add_display(item["data"], item.get("metadata") or {})
    timeline.finish(result)
    return timeline.snapshot()


def bundle_size(data: dict[str, Any]) -> int:
    """Characters the bundle's data take (about its size in a saved notebook)."""
    return sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in data.values())
