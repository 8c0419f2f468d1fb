"""The host's end of one live runtime: its transport, and who reads and routes its frames.

A run's own thread reads the frames while it waits for them (no hand-off between threads);
an I/O thread reads between runs and while a sync tool runs long (see RuntimeConnection).
Output frames go straight to the current run's sink (so streaming never waits for a tool);
every other frame is queued in `inbox`, as `(Inbox kind, payload)`, for the thread that runs
the program's tools; the engine posts its own news there too (the kinds below the frames). Every
frame is checked against its kind's fields first: the runtime shares its process with the
program, so a frame that does not fit is a fault of the runtime, which is then stopped.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from enum import Enum
from typing import Any, Protocol

from codemode_jupyter.backends import Transport
from codemode_jupyter.engine.displays import check_bundle, check_display_frame
from codemode_jupyter.errors import FrameError
from codemode_jupyter.model.output import CappedText
from codemode_jupyter.runtime import codemode_protocol as P


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
    P.OUT: (("s", int),),  # and its text, "d" or "n" (P.out_text)
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
#: A run's thread away from the channel longer than this (a slow sync tool): the I/O thread
#: reads meanwhile, so output of the program's other threads still streams.
_TAKE_OVER = 0.002
_CHECK = 0.005  # how often the resting I/O thread looks whether the run's thread is away
#: A spin's look that took this long (a yield is a microsecond when nothing else wants the
#: CPU) means something else runs on this CPU: maybe the runtime (Transport.separate).
_CROWDED = 15e-6
_SEPARATE_EVERY = 0.002  # at most one look per this many seconds: a look costs ~10 µs


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
    more = _MORE_CHECKS.get(kind)  # none for the hot kinds (call, result answers)
    if more is not None:
        more(frame)


def _check_out(frame: dict) -> None:
    if frame["s"] not in (P.STDOUT, P.STDERR):
        raise FrameError("'out' frame for an unknown stream")
    if type(frame.get("d", frame.get("n"))) is not str:  # its text, in either form
        raise FrameError("'out' frame with a bad 'd' field")


def _check_preview(frame: dict) -> None:
    if not 0 < frame["port"] < 65536:
        raise FrameError(f"'preview' frame for port {frame['port']}, which is not a port")


def _check_done(frame: dict) -> None:
    if not frame["ok"]:
        error = frame.get("error")
        if not isinstance(error, dict) or not all(
            isinstance(error.get(key, ""), str) for key in ("type", "message", "traceback")
        ):
            raise FrameError("'done' frame with a malformed error")
    if "bundle" in frame:  # the value's MIME bundle (runtime/codemode_rich.py makes it)
        _rich_check(check_bundle, frame["bundle"], "'done' frame's bundle")


def _check_display(frame: dict) -> None:
    _rich_check(check_display_frame, frame)


def _rich_check(check: Any, *args: Any) -> None:
    try:
        check(*args)
    except ValueError as exc:
        raise FrameError(str(exc)) from None


_MORE_CHECKS = {
    P.OUT: _check_out,
    P.PREVIEW: _check_preview,
    P.DONE: _check_done,
    P.DISPLAY: _check_display,
}


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
    """One live runtime: its transport and the I/O thread that routes its frames.

    Who reads the channel: while a run goes, the thread that runs it (`lead`), inside
    `next_message`, so a frame reaches the thread that acts on it with no hand-off; the I/O
    thread reads when no one waits there: between runs (output of threads left running, a crash
    while idle) and while the run's thread is away longer than _TAKE_OVER (a slow sync tool: the
    program's other threads still stream their output). Transports that cannot be read without
    blocking (`shared_reads` False) are read by the I/O thread only, as before.
    """

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
        self._splitter = P.LineSplitter(P.MAX_FRAME)
        self._shared = transport.shared_reads
        self._role = threading.Lock()  # held by the thread that reads and routes right now
        self._leading = False  # a run's thread reads (lead/follow): the I/O thread rests
        self._away = 0.0  # when the leading thread left next_message (0: it is in there)
        self._io_waiting = False  # the I/O thread waits on the transport (wake it to stop)
        self._ended = False
        # Waits for the frame that answers a tool result (the program's next step) spin less
        # long than all other waits (a run's first frame, its end), and count misses apart.
        self.spin = P.Spin()
        self.other_spin = P.Spin(P.SPIN_MAX_OTHER)
        self._answered = False  # the last thing sent was a tool result
        self._cpus_seen_by = 0  # the thread whose CPUs the spins were set for
        self._separated = 0.0  # when the runtime was last looked for on this thread's CPU
        # What the runtime holds from the last run frame: a run sends only what changed (a
        # session's tools, with their docs, were encoded and decoded again on every run).
        self._sent_tools: list | None = None
        self._sent_limits: dict | None = None
        loop = self._shared_loop if self._shared else self._read_loop
        self._reader = threading.Thread(target=loop, name="codemode-io", daemon=True)
        self._reader.start()

    def send(self, frame: dict) -> None:
        self.transport.write(P.encode(frame))

    def send_run(
        self, run_id: str, code: str, tools: list, limits: dict, inputs: dict | None = None
    ) -> None:
        """A run frame; `tools` (compared by identity: a registry makes its list once) and
        `limits` go in only if they differ from the last run frame's; `inputs` if any."""
        if tools is self._sent_tools and limits == self._sent_limits and not inputs:
            self.transport.write(P.encode_run(run_id, code))  # the usual run
            return
        frame: dict[str, Any] = {"t": P.RUN, "id": run_id, "code": code}
        if inputs:
            frame["inputs"] = inputs
        if tools is not self._sent_tools:
            frame["tools"] = self._sent_tools = tools
        if limits != self._sent_limits:
            frame["limits"] = self._sent_limits = limits
        self.send(frame)

    def answer(self, data: bytes) -> None:
        """Send tool results (the program waits for them: its next frame comes soon)."""
        self._answered = True
        self.transport.write(data)

    def post(self, kind: Inbox, payload: Any) -> None:
        """Queue news made on the host (any thread) for the run's thread, waking it."""
        self.inbox.put((kind, payload))
        if self._shared:
            self.transport.wake()

    # --- the run's thread reads --------------------------------------------------------------

    def lead(self) -> None:
        """A run starts on this thread: it reads the channel (in next_message) until follow().

        The I/O thread is not woken for it (a wake-up costs more than a whole warm run on a
        VM): if it waits on the transport, the run's first frame wakes it and it rests.
        """
        self._away = 0.0
        self._leading = True
        if self._shared:
            reader = threading.get_ident()
            if reader != self._cpus_seen_by:  # a syscall: once per thread (a session's runs
                self._cpus_seen_by = reader  # are all pinned or all not)
                self.spin.check_cpus()
                self.other_spin.check_cpus()
            _ctrl_c.install()

    def follow(self) -> None:
        """The run has ended: the I/O thread reads again, once its rest (_CHECK) is over."""
        self._leading = False
        if self._shared:
            _ctrl_c.uninstall()

    def next_message(self, timeout: float) -> tuple[Inbox, Any] | None:
        """The next `(kind, payload)` of the inbox within `timeout` seconds, else None.

        While leading, this thread reads the channel itself: it looks without sleeping for
        `spin.limit`, then sleeps on the transport until a frame, a post() or the timeout.
        """
        if not self._shared or not self._leading:
            try:
                return self.inbox.get(timeout=timeout)
            except queue.Empty:
                return None
        self._away = 0.0
        if self._io_waiting:
            self.transport.wake()  # it read while this thread ran a slow tool: back to rest
        try:
            with self._role:
                return self._lead_until(time.perf_counter() + timeout)
        finally:
            self._away = time.perf_counter()

    def _lead_until(self, deadline: float) -> tuple[Inbox, Any] | None:
        inbox, transport = self.inbox, self.transport
        while True:
            if not inbox.empty():
                return inbox.get_nowait()
            start = time.perf_counter()
            if start >= deadline:
                return None
            if self._ended:  # nothing more to read: only the host's own news can come
                try:
                    return inbox.get(timeout=deadline - start)
                except queue.Empty:
                    return None
            spin = self.spin if self._answered else self.other_spin
            end = start + spin.limit
            caught = transport.ready(0)
            now = crowded = start
            # News posted meanwhile (an async call's result) ends the spin at once: the inbox
            # is looked at before each look and before sleeping (a transport's look may have
            # taken the post's wake-up).
            while not caught and now < end and inbox.empty():
                if P.SPIN_YIELD:
                    os.sched_yield()
                looked, now = now, time.perf_counter()
                if now - looked > _CROWDED:  # the yield ran something else on this CPU
                    crowded = now
                caught = transport.ready(0)
            if crowded != start and crowded - self._separated > _SEPARATE_EVERY:
                self._separated = crowded
                transport.separate()  # the runtime, if it was what ran here
            if not caught and (
                not inbox.empty() or not transport.ready(deadline - time.perf_counter())
            ):
                continue  # a post() came, or the time is up
            _ctrl_c.hold()
            try:
                self._pump()
            finally:
                _ctrl_c.release()
            spin.record(time.perf_counter() - start, caught)
            self._answered = False

    # --- the I/O thread ------------------------------------------------------------------------

    def _shared_loop(self) -> None:
        """The I/O thread of a shared_reads transport: reads whenever no run's thread does."""
        try:
            while not self._ended and not self._closed:
                if not self._may_read():
                    time.sleep(_CHECK)  # not woken by follow(): a wake-up would cost the run
                    continue
                self._io_waiting = True
                found = self.transport.ready(None)
                self._io_waiting = False
                if found and self._may_read() and self._role.acquire(blocking=False):
                    try:
                        self._pump()
                    finally:
                        self._role.release()
        except Exception as exc:  # nothing may end this thread silently
            self._fail(f"the host failed reading the runtime ({type(exc).__name__}: {exc})")
        with self._role:  # no thread waits on the transport any more
            self.transport.close_reader()
        self._end()

    def _may_read(self) -> bool:
        away = self._away
        return not self._leading or (away > 0 and time.perf_counter() - away >= _TAKE_OVER)

    def _pump(self) -> None:
        """Read what is there and route it (by the thread that holds the role)."""
        if self._ended:
            return
        data = self.transport.read_nowait()
        if data is not None:
            self._take(data)

    def _take(self, data: bytes) -> None:
        """Split what was read into frames and route them; b"" is the end of the channel."""
        if not data:
            self._end()
            return
        try:
            for line in self._splitter.feed(data):
                if self._closed:
                    break
                self._route(line)
        except (ValueError, RecursionError) as exc:
            # A flood, or a frame that does not fit: the host's memory and threads are not
            # the sandbox's to take, and a runtime that breaks the protocol cannot be trusted.
            self._fail(f"the runtime broke its channel ({exc})")

    def _fail(self, fault: str) -> None:
        self.fault = fault
        self.transport.kill()
        self._end()

    def _end(self) -> None:
        """The runtime has gone (EOF, a fault or close): say so once."""
        if self._ended:
            return
        self._ended = True
        self.alive = False
        self.ready.set()
        self.post(Inbox.EOF, None)

    def _read_loop(self) -> None:
        """The I/O thread of a transport only it reads (blocking reads)."""
        try:
            while not self._closed and not self._ended:
                self._take(self.transport.read())
        except Exception as exc:  # nothing may end this thread silently
            self._fail(f"the host failed reading the runtime ({type(exc).__name__}: {exc})")
        self._end()

    def _route(self, line: bytes) -> None:
        plain = P.decode_out(line)  # most output: read without the JSON decoder
        if plain is not None:
            self._output(*plain)
            return
        if line[:1] != b"{" and not line.strip():  # a blank line (no copy of a frame)
            return
        try:
            frame = P.decode(line)
        except ValueError as exc:
            raise FrameError(f"a line that is not a frame: {exc}") from None
        check_frame(frame)
        kind = frame["t"]
        if kind == P.OUT:
            self._output(frame["s"], P.out_text(frame))
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
        if not any(text.size for text in self._late.values()):
            return []  # the usual case, without the lock (output racing this look: the next run's)
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
        self._leading = False
        if self._shared:
            self.transport.wake()
        # The reader sees EOF at once and closes its end; wait for that (briefly: a reader
        # stuck in a slow listener keeps its fd until it gets back), so a closed session
        # leaves no fd behind.
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)


class _CtrlC:
    """Ctrl-C on the main thread, held while it routes frames it has read.

    A KeyboardInterrupt raised while frames are read and routed would lose them, and a held
    signal mask does not help: a SIGINT sent to the process may be taken by any other thread,
    and Python then runs the handler on the main thread anyway. So while a run's main thread
    reads the channel, SIGINT's Python handler is wrapped: inside hold()/release() it is noted,
    and the original handler runs at release(). Other threads need none of this.
    """

    def __init__(self) -> None:
        self.previous: Any = None
        self.held = 0
        self.pending: tuple[int, Any] | None = None

    def install(self) -> None:
        if threading.get_ident() != _MAIN:
            return
        current = _getsignal(signal.SIGINT)
        if callable(current) and current != self.handle:
            self.previous = current
            _setsignal(signal.SIGINT, self.handle)

    def uninstall(self) -> None:
        if threading.get_ident() != _MAIN or self.previous is None:
            return
        if _getsignal(signal.SIGINT) == self.handle:  # unless a tool set its own since
            _setsignal(signal.SIGINT, self.previous)
        self.previous = None

    def handle(self, signum: int, frame: Any) -> None:
        if self.held:
            self.pending = (signum, frame)
        elif self.previous is not None:
            self.previous(signum, frame)

    def hold(self) -> None:
        if threading.get_ident() == _MAIN:
            self.held += 1

    def release(self) -> None:
        if threading.get_ident() != _MAIN:
            return
        self.held -= 1
        pending, self.pending = self.pending, None
        if pending is not None and self.previous is not None:
            self.previous(*pending)  # the KeyboardInterrupt, now that nothing is in hand


_MAIN = threading.main_thread().ident
try:  # the C functions under signal.getsignal/signal: a tenth of the cost, twice per run
    from _signal import getsignal as _getsignal
    from _signal import signal as _setsignal
except ImportError:  # not CPython
    _getsignal, _setsignal = signal.getsignal, signal.signal
_ctrl_c = _CtrlC()
