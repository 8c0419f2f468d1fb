"""A run as an agent reads it: text and data sized for a model, the full record, event lines.

Code Mode keeps intermediate data out of the model's context, so what goes back to the model
is bounded by a budget of characters for the whole result (text plus structured data):
printed output as head and tail, the value's repr, the error with the program's own line
numbers, the first tool calls. What is cut is counted, and the full record of the run (all
output, every call with its arguments and result, displays, artifacts) stays on the host:
an MCP resource `codemode://runs/{id}` (`RunRecords`), or `CodeMode.last_result`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from codemode_jupyter.model import events as ev
from codemode_jupyter.model.format import clip, json_call_line, json_short, json_text
from codemode_jupyter.model.result import RunResult, ToolCall

#: Characters of a whole result (text + structured data) a model gets by default.
DEFAULT_BUDGET = 20_000
MIN_BUDGET = 1_000
#: At most: with images, a result must stay under the SDK client's 1 MiB per server-sent event.
MAX_BUDGET = 300_000
#: A value goes into the structured data only when its JSON is at most this long.
MAX_STRUCTURED_VALUE = 1_000
#: One progress line at most (a program may print a megabyte in one write).
MAX_EVENT_LINE = 2_000
#: Base64 characters of images per result: with the text, far under the SDK client's 1 MiB
#: cap on one server-sent event.
MAX_IMAGE_CHARS = 600_000
MAX_IMAGES = 10
#: Runs whose full record the server keeps (`codemode://runs/{id}`); older ones are dropped.
RUN_HISTORY = 100
RUN_URI = "codemode://runs/{id}"
#: Bytes of one page of a record as the server sends it (JSON inside JSON-RPC inside one
#: server-sent event), under the SDK client's 1 MiB cap on an event.
PAGE_BYTES = 700_000


def check_budget(budget: int | None) -> int:
    """The budget to use: DEFAULT_BUDGET for None; a clear error for a useless one."""
    if budget is None:
        return DEFAULT_BUDGET
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ValueError("the result budget must be a number of characters (an int)")
    if not MIN_BUDGET <= budget <= MAX_BUDGET:
        raise ValueError(
            f"the result budget must be at least {MIN_BUDGET} and at most {MAX_BUDGET} characters"
        )
    return budget


@dataclass
class Shaped:
    """A result cut to a budget: `text` for the model, `data` (structured content), and how
    many characters were left out of either."""

    text: str
    data: dict[str, Any]
    dropped: int


def shape(result: RunResult, budget: int | None = None, run_uri: str | None = None) -> Shaped:
    """`result` as text plus structured data, together within `budget` characters."""
    budget = check_budget(budget)
    data = result_data(result, run_uri, max_value=min(MAX_STRUCTURED_VALUE, budget // 10))
    room = budget - len(json.dumps(data, ensure_ascii=False, default=str)) - 20
    parts, dropped = _text_parts(result, room, run_uri)
    text = "\n\n".join(parts) + "\n"
    if len(text) > room:  # the sections' minimums went over a small budget: cut the middle
        text, cut = _head_and_tail(text, room, run_uri or "the run's full record")
        dropped += cut
    data["counts"]["chars_dropped"] = dropped
    return Shaped(text, data, dropped)


def result_text(result: RunResult, budget: int | None = None, run_uri: str | None = None) -> str:
    """What the model reads back (within `budget`, structured data left out)."""
    return shape(result, budget, run_uri).text


def _text_parts(result: RunResult, room: int, run_uri: str | None) -> tuple[list[str], int]:
    """The text's sections, each within its share of `room`; returns them and the count of
    characters left out. Error and value are cut first (a model needs them most), output
    gets what is left, as head and tail."""
    where = run_uri or "the run's full record"
    dropped = 0
    room -= 120  # status, separators
    error = value = calls = None
    if result.error is not None:
        # The traceback ends with "Type: message": the heading need not repeat it.
        tb = result.error.traceback.rstrip("\n")
        text = f"error: {result.error.type}\n{tb}" if tb else f"error: {result.error}"
        error, cut = _keep_tail(text, max(room // 3, 500))
        dropped, room = dropped + cut, room - len(error)
    if result.value_repr is not None and result.value_repr != "None":
        text = f"value: {result.value_repr}"
        value = clip(text, max(room // 4, 200))
        dropped, room = dropped + len(text) - len(value), room - len(value)
    if result.tool_calls:
        calls = _calls_section(result.tool_calls, max(room // 5, 300), where)
        room -= len(calls)
    streams = {name: text.rstrip("\n") for name, text in _streams(result) if text}
    total = sum(len(text) for text in streams.values()) or 1
    parts = [f"status: {result.status}"]
    for name, text in streams.items():
        section, cut = _head_and_tail(text, max(room * len(text) // total, 200), where)
        parts.append(f"{name}:\n{section}")
        dropped += cut
    parts += [section for section in (calls, value, error) if section is not None]
    lost = result.stdout_dropped + result.stderr_dropped
    if lost:
        parts.append(f"note: the runtime dropped {lost} characters of output (max_output)")
    if result.state_lost:
        parts.append("note: the session's variables were lost (its runtime was replaced)")
    return parts, dropped


def _streams(result: RunResult) -> list[tuple[str, str]]:
    return [("stdout", result.stdout), ("stderr", result.stderr)]


def _head_and_tail(text: str, limit: int, where: str) -> tuple[str, int]:
    if len(text) <= limit:
        return text, 0
    note = f"[... {len(text)} characters left out; all of it in {where} ...]"
    half = max((limit - len(note) - 2) // 2, 20)
    cut = len(text) - 2 * half
    note = note.replace(str(len(text)), str(cut), 1)
    return f"{text[:half]}\n{note}\n{text[-half:]}", cut


def _keep_tail(text: str, limit: int) -> tuple[str, int]:
    """The error's first line and the end of its traceback (where the program failed), each
    line cut to 160 characters (a long message must not push the line numbers out)."""
    whole = len(text)
    text = "\n".join(clip(line, 160) for line in text.split("\n"))
    if len(text) <= limit:
        return text, whole - len(text)
    first = clip(text.split("\n", 1)[0], limit // 3)
    tail = text[-(limit - len(first) - 40) :]
    cut = len(text) - len(first) - len(tail)
    return f"{first}\n[... {cut} characters ...]\n{tail}", whole - len(first) - len(tail)


def _calls_section(calls: list[ToolCall], limit: int, where: str) -> str:
    lines, used = [], 0
    for call in calls:
        line = json_call_line(call, 200)
        if used + len(line) > limit:
            break
        lines.append(line)
        used += len(line) + 1
    left = len(calls) - len(lines)
    if left:
        lines.append(f"... and {left} more (every call is in {where})")
    return f"tool calls ({len(calls)}):\n" + "\n".join(lines)


def result_data(
    result: RunResult, run_uri: str | None = None, max_value: int = MAX_STRUCTURED_VALUE
) -> dict[str, Any]:
    """The run's structured content: status, the value when it is small JSON, the error,
    counts. Never the output or the call log (they are in the text, cut, and in the record)."""
    value, value_json = None, json_text(result.value)
    small = value_json is not None and len(value_json) <= max_value
    if small:
        value = result.value
    data: dict[str, Any] = {
        "ok": result.ok,
        "status": result.status,
        "value": value,
        "value_in_text": result.value_repr not in (None, "None") and not small,
        "error": None
        if result.error is None
        else {"type": result.error.type, "message": clip(result.error.message, max_value // 2)},
        "counts": {
            "tool_calls": len(result.tool_calls),
            "tool_errors": sum(1 for c in result.tool_calls if c.error is not None),
            "stdout_chars": len(result.stdout),
            "stderr_chars": len(result.stderr),
            "displays": len(result.displays),
            "artifacts": len(result.artifacts),
            "chars_dropped": 0,
        },
        "state_lost": result.state_lost,
    }
    if run_uri is not None:
        data["run"] = run_uri
    return data


def full_record(run_id: int, code: str, result: RunResult, **extra: Any) -> dict[str, Any]:
    """Everything about a run, JSON-able: the program, all output, every call with its
    arguments and result, displays, artifacts (the `codemode://runs/{id}` resource)."""
    data = result.to_dict()
    data["artifacts"] = [asdict(a) for a in result.artifacts]
    return {"id": run_id, "uri": RUN_URI.format(id=run_id), "code": code, **extra, "result": data}


class RunRecords:
    """The full records of the last `keep` runs, by id (thread-safe)."""

    def __init__(self, keep: int = RUN_HISTORY) -> None:
        self.keep = keep
        self._records: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, run_id: int, code: str, result: RunResult, **extra: Any) -> str:
        """Keep the run's record; returns its URI."""
        record = full_record(run_id, code, result, **extra)
        with self._lock:
            self._records[run_id] = record
            while len(self._records) > self.keep:
                self._records.popitem(last=False)
        return record["uri"]

    def get(self, run_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._records.get(run_id)

    def text(self, run_id: int) -> str:
        """The record as JSON text; KeyError naming what is kept if it is not."""
        record = self.get(run_id)
        if record is None:
            raise KeyError(
                f"no run {run_id} is kept (the server keeps the last {self.keep} runs: "
                f"{', '.join(map(str, self.ids())) or 'none yet'})"
            )
        return json.dumps(record, ensure_ascii=False, default=repr)

    def page(self, run_id: int, page: int = 1) -> str:
        """Page `page` of the record: the record's JSON itself when it fits in one page, else
        `{"run", "page", "pages", "text"}` whose `text`s, joined in order, are that JSON."""
        pages = paginate(self.text(run_id))
        if len(pages) == 1 and page == 1:
            return pages[0]
        if not 1 <= page <= len(pages):
            raise KeyError(f"run {run_id} has pages 1 to {len(pages)}, not {page}")
        body = {"run": run_id, "page": page, "pages": len(pages), "text": pages[page - 1]}
        return json.dumps(body, ensure_ascii=False)

    def index(self) -> list[dict[str, Any]]:
        """id, uri, session and status of each kept run, oldest first."""
        with self._lock:
            records = list(self._records.values())
        return [
            {
                "id": r["id"],
                "uri": r["uri"],
                "session": r.get("session"),
                "status": r["result"]["status"],
            }
            for r in records
        ]

    def ids(self) -> list[int]:
        with self._lock:
            return list(self._records)


def paginate(text: str, limit: int = PAGE_BYTES) -> list[str]:
    """`text` in consecutive slices, each within `limit` bytes once quoted twice (a page's
    JSON, then the JSON-RPC message that carries it)."""
    pages, start, size = [], 0, limit // 2
    while start < len(text):
        chunk = text[start : start + size]
        while len(json.dumps(json.dumps(chunk, ensure_ascii=False)).encode()) > limit:
            chunk = chunk[: len(chunk) // 2]
        pages.append(chunk)
        start += len(chunk)
    return pages or [""]


def event_line(event: ev.Event) -> str | None:
    """One line for a progress notification, or None for events not worth one."""
    line = _event_line(event)
    return None if line is None else clip(line, MAX_EVENT_LINE)


def _event_line(event: ev.Event) -> str | None:
    if isinstance(event, ev.Output):
        return f"{event.stream}: {event.text}"
    if isinstance(event, ev.ToolCallStarted):
        args = ", ".join(f"{k}={json_short(v, 100)}" for k, v in event.args.items())
        return f"call #{event.id} {event.name}({args})"
    if isinstance(event, ev.ToolCallFinished):
        if event.error is not None:
            return f"call #{event.id} {event.name} raised {event.error}"
        return f"call #{event.id} {event.name} -> {json_short(event.result)}"
    if isinstance(event, ev.RunFinished):
        return f"finished: {event.result.status}"
    return None


#: Image kinds an MCP client takes as image content, in the order a display is looked at.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def result_images(result: RunResult, limit: int = MAX_IMAGE_CHARS) -> list[tuple[str, str]]:
    """(mime type, base64 data) of the images the program displayed (plots included), at
    most MAX_IMAGES and `limit` base64 characters in all (the rest stay in the record)."""
    images, used = [], 0
    for display in result.displays:
        data = display.get("data") or {}
        for mime in IMAGE_TYPES:
            if isinstance(data.get(mime), str):
                if used + len(data[mime]) <= limit and len(images) < MAX_IMAGES:
                    images.append((mime, data[mime]))
                    used += len(data[mime])
                break
    return images
