"""The host's end of one live runtime: its transport, and the I/O thread that routes frames.

Output frames go straight to the current run's sink (so streaming never waits for a tool);
every other frame is queued in `inbox`, as `(Inbox kind, payload)`, for the thread that runs
the program's tools; the engine queues its own news there too (the kinds below the frames). Every
frame is checked against its kind's fields first: the runtime shares its process with the
program, so a frame that does not fit is a fault of the runtime, which is then stopped.
"""

from __future__ import annotations

import queue
import threading
from enum import Enum
from typing import Any, Protocol

from .backends import Transport
from .displays import check_bundle, check_display_frame
from .output import CappedText
from .runtime import codemode_protocol as P


class Inbox(Enum):
    """What a message in a connection's inbox is, and so what its payload holds."""

    CALL = P.CALL  # the program calls a tool: the frame
    PREVIEW = P.PREVIEW  # the program announced a port to preview: the frame
    DONE = P.DONE  # the program ended: the frame
    RESET_DONE = P.RESET_DONE  # the namespace was reset: the frame
    EOF = "eof"  # the runtime has gone (see `fault` and the transport's exit_info): None
    CALL_DONE = "call_done"  # an async tool call ended: (run, call, outcome)
    PREVIEW_URL = "preview_url"  # the backend gave a preview port's link: (run, port, url)
    CANCEL = "cancel"  # cancel() was called: the run to stop


#: The inbox kind of each frame that goes to the inbox.
_QUEUED = {kind.value: kind for kind in (Inbox.CALL, Inbox.PREVIEW, Inbox.DONE, Inbox.RESET_DONE)}

#: The fields each runtime -> host frame must have, with their exact types (bool is not int).
_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    P.OUT: (("s", int), ("d", str)),
    P.CALL: (("id", int), ("name", str), ("args", list), ("kwargs", dict)),
    P.PREVIEW: (("port", int),),
    P.DONE: (("id", str), ("ok", bool)),
    P.DISPLAY: (("data", dict),),
    P.ARTIFACT: (("name", str), ("d", str), ("more", bool)),
    P.READY: (),
    P.RESET_DONE: (),
}
#: Frames whose payload may nest; deeper than this is refused, so nothing later (validation,
#: transcripts, json.dumps) can hit the interpreter's recursion limit on the host.
_NESTED_KINDS = (P.CALL, P.DONE, P.DISPLAY)
_RUN_KINDS = (P.CALL, P.DONE, P.PREVIEW)  # frames that only make sense while a run goes
MAX_DEPTH = 100


class FrameError(ValueError):
    """A frame from the runtime that does not fit the protocol."""


class OutputSink(Protocol):
    """The run that takes what the I/O thread reads, in order (a RunState)."""

    def output(self, stream: int, text: str) -> None: ...
    def display(self, frame: dict) -> None: ...
    def artifact(self, frame: dict) -> None: ...


def check_frame(frame: dict) -> None:
    """Raise FrameError unless `frame` has the fields its kind needs, of the right types."""
    kind = frame["t"]
    fields = _FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise FrameError(f"unknown frame kind {kind!r:.40}")
    for name, expected in fields:
        if type(frame.get(name)) is not expected:
            raise FrameError(f"{kind!r} frame with a bad {name!r} field")
    if kind == P.OUT and frame["s"] not in (P.STDOUT, P.STDERR):
        raise FrameError("'out' frame for an unknown stream")
    if kind == P.PREVIEW and not 0 < frame["port"] < 65536:
        raise FrameError(f"'preview' frame for port {frame['port']}, which is not a port")
    if kind == P.DONE and not frame["ok"]:
        error = frame.get("error")
        if not isinstance(error, dict) or not all(
            isinstance(error.get(key, ""), str) for key in ("type", "message", "traceback")
        ):
            raise FrameError("'done' frame with a malformed error")
    _check_rich(frame)


def _check_rich(frame: dict) -> None:
    """A display's and a value's MIME bundle (runtime/codemode_rich.py makes them)."""
    kind = frame["t"]
    try:
        if kind == P.DISPLAY:
            check_display_frame(frame)
        elif kind == P.DONE and "bundle" in frame:
            check_bundle(frame["bundle"], "'done' frame's bundle")
    except ValueError as exc:
        raise FrameError(str(exc)) from None


def nesting_depth(value: Any, limit: int) -> int:
    """How deep `value` nests (lists and dicts), counting only up to `limit` + 1."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        nested = []
        for item in level:
            if isinstance(item, dict):
                nested.extend(item.values())
            elif isinstance(item, list):
                nested.extend(item)
        level = [item for item in nested if isinstance(item, (dict, list))]
    return depth


def _may_nest_deeper(line: bytes) -> bool:
    """A cheap bound first: a line with few brackets cannot nest deep (the usual call)."""
    return line.count(b"[") + line.count(b"{") > MAX_DEPTH


class RuntimeConnection:
    """One live runtime: its transport and the I/O thread that routes its frames."""

    def __init__(self, transport: Transport, max_late_output: int = 1_000_000) -> None:
        self.transport = transport
        self.alive = True
        self.fault = ""
        self.info: dict[str, Any] = {}
        self.ready = threading.Event()  # set on the runtime's ready frame (or its end)
        self.sink: OutputSink | None = None
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        # Output written between runs (by threads a program left running), for the next run.
        self._late = {P.STDOUT: CappedText(max_late_output), P.STDERR: CappedText(max_late_output)}
        self._late_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, name="codemode-io", daemon=True)
        self._reader.start()

    def send(self, frame: dict) -> None:
        self.transport.write(P.encode(frame))

    def _read_loop(self) -> None:
        splitter = P.LineSplitter(P.MAX_FRAME)
        try:
            while not self._closed:
                data = self.transport.read()
                if not data:
                    break
                for line in splitter.feed(data):
                    if self._closed:
                        break
                    self._route(line)
        except (ValueError, RecursionError) as exc:
            # A flood, or a frame that does not fit: the host's memory and threads are not
            # the sandbox's to take, and a runtime that breaks the protocol cannot be trusted.
            self.fault = f"the runtime broke its channel ({exc})"
            self.transport.kill()
        except Exception as exc:  # nothing may end this thread silently
            self.fault = f"the host failed reading the runtime ({type(exc).__name__}: {exc})"
            self.transport.kill()
        self.alive = False
        self.ready.set()
        self.inbox.put((Inbox.EOF, None))

    def _route(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            frame = P.decode(line)
        except ValueError as exc:
            raise FrameError(f"a line that is not a frame: {exc}") from None
        check_frame(frame)
        kind = frame["t"]
        if kind == P.OUT:
            self._output(frame["s"], frame["d"])
        elif kind == P.READY:
            self.info = frame
            self.ready.set()
        else:
            if (
                kind in _NESTED_KINDS
                and _may_nest_deeper(line)
                and (nesting_depth(frame, MAX_DEPTH) > MAX_DEPTH)
            ):
                raise FrameError(f"a {kind!r} frame nested deeper than {MAX_DEPTH} levels")
            if kind in (P.DISPLAY, P.ARTIFACT):
                self._rich(kind, frame)
            elif self.sink is None and kind in _RUN_KINDS:
                self._outside_a_run(frame)
            else:
                self.inbox.put((_QUEUED[kind], frame))

    def _outside_a_run(self, frame: dict) -> None:
        """A frame that belongs to a run when none is going (threads a program left behind):
        a tool call is refused at once, anything else is dropped, so nothing piles up for
        the next run to mistake for its own."""
        if frame["t"] == P.CALL:
            self.send(
                {
                    "t": P.RESULT,
                    "id": frame["id"],
                    "ok": False,
                    "error": {
                        "type": "RuntimeError",
                        "message": "no run is going: tool calls from threads that outlive "
                        "their run are refused",
                    },
                }
            )

    def _output(self, stream: int, text: str) -> None:
        sink = self.sink
        if sink is not None:
            sink.output(stream, text)
            return
        with self._late_lock:
            self._late[stream].append(text)

    def _rich(self, kind: str, frame: dict) -> None:
        """Displays and artifacts go to the run straight from this thread, so they keep their
        place among its output; with no run going they are dropped (threads left behind)."""
        sink = self.sink
        if sink is None:
            return
        if kind == P.DISPLAY:
            sink.display(frame)
        else:
            sink.artifact(frame)

    def take_late_output(self) -> list[tuple[int, CappedText]]:
        """Output that arrived between runs (background threads), capped, for the next run."""
        with self._late_lock:
            late = [(stream, text) for stream, text in self._late.items() if text.size]
            for stream, text in late:
                self._late[stream] = CappedText(text.limit)
        return late

    def close(self) -> None:
        """Stop the runtime; the reader drops whatever it still had in hand."""
        self._closed = True
        self.alive = False
        self.transport.kill()
        # The reader sees EOF at once and closes its end; wait for that (briefly: a reader
        # stuck in a slow listener keeps its fd until it gets back), so a closed session
        # leaves no fd behind.
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)
