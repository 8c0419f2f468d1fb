"""The Code Mode runtime: runs inside the sandbox, executes programs, forwards tool calls.

Standard library only, so it starts in any image with a python3. Started as
`python3 -I -u codemode_runtime.py`; it speaks frames (codemode_protocol.py) on its own
stdin/stdout and gives the program a clean fd 0 (/dev/null) and fd 1/2 (pipes it reads), so
nothing the program writes can reach the control channel unwrapped. With `--sequenced`
(codemode_protocol.SEQUENCED: the Daytona backend) it drops batches of frames delivered twice.

`python3 -I -u codemode_runtime.py --replay` is the one-shot variant for the replay fallback:
it reads a JSON request from stdin, or from the CODEMODE_REPLAY_B64 variable the host embeds.
The local backend runs it through codemode_runtime_start.py, which runs the same code as a
script from its cached bytecode.
"""

from __future__ import annotations

# Modules a session's start and a plain run do not need (base64, signal, traceback) are
# imported where they are used: every import here is paid by each cold start.
import _ast  # what the ast module re-exports; importing ast itself costs each start 1 ms more
import _imp
import _signal  # what `signal` wraps (its wrappers make an enum member of each number)
import _thread
import _warnings
import builtins
import codecs
import functools
import io
import itertools
import linecache
import os
import select
import sys
import threading
import time
import types
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import codemode_protocol as P
import codemode_rich as R

del sys.path[0]

CELL = "<cell>"
_HIDDEN_FILES = {os.path.abspath(f) for f in (__file__, P.__file__, R.__file__)}
_FLUSH_AT = 1 << 16  # chars held at most before they go out as a frame
_FRAME_TEXT = 1 << 20
_FLUSH_DELAY = 0.01  # the longest a partial line waits
#: A line written within _BURST of its stream's last frame is part of a burst: it waits up to
#: _BURST for more (or _FLUSH_AT chars), so a loop of prints sends a few large frames instead
#: of one per line. A line after a quiet moment still goes out at once.
_BURST = 0.0005
_NEVER = float("inf")
_PUMP_FRAME = 1 << 18  # bytes an fd pump reads at most before it sends them


class ToolError(Exception):
    """A host tool failed; `tool` names it and `remote_type` is the exception type there."""

    tool = ""
    remote_type = ""


class ToolArgumentError(ToolError, TypeError):
    """The host rejected the arguments of a tool call."""


class UnknownToolError(ToolError, NameError):
    """The program called a tool the host does not have."""


class ToolRejected(ToolError, PermissionError):
    """A person (or an approval timeout) refused the call; the message says why."""


_SPECIAL_ERRORS = {
    "ToolArgumentError": ToolArgumentError,
    "UnknownToolError": UnknownToolError,
    "ToolRejected": ToolRejected,
}
_error_classes: dict[str, type] = {}


def tool_error(name: str, error: dict) -> ToolError:
    """The exception a failed call raises in the program: a ToolError that is also the
    builtin type the tool raised (so `except ValueError` works as it would in plain Python)."""
    kind = str(error.get("type", "Exception"))
    message = f"{name}: {error.get('message', '')}"
    cls = _SPECIAL_ERRORS.get(kind) or _error_class(kind)
    try:
        exc = cls(message)
    except Exception:
        exc = ToolError(message)
    exc.tool, exc.remote_type = name, kind
    return exc


def _error_class(kind: str) -> type:
    if kind not in _error_classes:
        base = getattr(builtins, kind, None)
        usable = isinstance(base, type) and issubclass(base, Exception) and base is not Exception
        try:
            _error_classes[kind] = type(kind, (ToolError, base), {}) if usable else ToolError
        except TypeError:
            _error_classes[kind] = ToolError
    return _error_classes[kind]


_ALL_SIGNALS = _signal.valid_signals()


class Channel:
    """The runtime's end of the control channel: frame writes, serialised by a lock.

    A frame is never left half written (the host would take the channel as broken and stop the
    runtime): a pipe takes a write of up to PIPE_BUF bytes whole or not at all, and a longer
    one is written with this thread's signals held, so a KeyboardInterrupt (an interrupt of the
    run) comes once the frame is whole. A signal handler that prints while this thread writes
    a frame has its own frame written right after, not in the middle (nor waiting for itself).
    """

    def __init__(self, out_fd: int) -> None:
        self._fd = out_fd
        self._lock = threading.Lock()
        self._writer = 0  # the thread writing now
        self._after: deque[bytes] = deque()  # frames of signal handlers that ran meanwhile

    def send(self, frame: dict) -> None:
        self.send_bytes(P.encode(frame))

    def send_bytes(self, data: bytes) -> None:
        me = threading.get_ident()
        if self._writer == me:  # a signal handler, inside this thread's own write
            self._after.append(data)
            return
        with self._lock:
            self._writer = me
            try:
                self._write(data)
                while self._after:
                    self._write(self._after.popleft())
            finally:
                self._writer = 0

    def _write(self, data: bytes) -> None:
        try:
            if len(data) <= select.PIPE_BUF:
                os.write(self._fd, data)  # whole or not at all
                return
            held = _signal.pthread_sigmask(_signal.SIG_BLOCK, _ALL_SIGNALS)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            finally:
                _signal.pthread_sigmask(_signal.SIG_SETMASK, held)
        except OSError:
            os._exit(P.CHANNEL_LOST)  # the program broke the channel: nothing left to serve


#: Bytes the plain form of an `out` frame (P.OUT_PLAIN) may not hold: those a JSON string may
#: not hold raw (control characters), and quote, backslash and DEL; newlines become DEL.
_NOT_PLAIN = bytes(range(32)).replace(b"\n", b"") + b'"\\\x7f'
_NOT_PLAIN_EACH = [bytes([byte]) for byte in _NOT_PLAIN]
#: Up to this many bytes, one translate() pass finds them quicker; above it, one memchr per
#: byte value (`in`) does: 0.4 against 0.65 ns per byte.
_SCAN_EACH = 2048


def encode_out(stream: int, text: str) -> bytes:
    """The `out` frame for `text`: the plain form where the text allows it (the JSON encoder's
    per-character loop cost 21 ms per MiB of 1 KiB lines in the runtime's python, and the host
    reads this form without its decoder too), else the JSON form."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > _SCAN_EACH:
        plain = not any(map(data.__contains__, _NOT_PLAIN_EACH))
    else:
        plain = len(data.translate(None, _NOT_PLAIN)) == len(data)
    if plain:
        return b"".join((P.OUT_PLAIN[stream], data.replace(b"\n", b"\x7f"), b'"}\n'))
    return P.encode({"t": P.OUT, "s": stream, "d": text})


class TextStream(io.TextIOBase):
    """sys.stdout / sys.stderr for the program: text becomes `out` frames.

    A line goes out at once, unless it comes within _BURST of the last frame (a loop of
    prints): then it waits up to _BURST for more; a partial line waits up to _FLUSH_DELAY.

    While a burst waits for its flush (`_hold`), a write only queues its text, without the
    lock (print() writes twice, and the lock and the rules cost most of a print): a deque's
    appends are thread-safe, a flush takes the texts queued so far off its left, and a write
    that finds the hold over once its text is queued makes sure a flush will take it.
    """

    def __init__(self, channel: Channel, stream: int, fd: int, flusher: Flusher) -> None:
        self._channel = channel
        self._stream = stream
        self._fd = fd
        self._flusher = flusher
        # Reentrant: a signal handler that prints while this thread writes must not deadlock.
        self._lock = threading.RLock()
        self._queue: deque[str] = deque()  # written, not sent yet
        self._size = 0  # about the chars queued (writes without the lock may miss a few)
        self._hold = False  # a burst's flush is due within _BURST: writes just queue
        self._flushing = False  # this stream sends now (a signal handler may write meanwhile)
        self._sent = 0.0  # when this stream last sent a frame (time.monotonic)
        self._due = _NEVER  # when the flusher is to send what waits here
        self.buffer = BinaryStream(self)

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        if self._hold and text.__class__ is str:
            self._queue.append(text)
            self._size += len(text)
            if self._hold and self._size < _FLUSH_AT:
                return len(text)  # the burst's flush, not begun yet, will take it
            with self._lock:
                self._settle(text)
            return len(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._queue.append(text)
            self._size += len(text)
            self._settle(text)
        return len(text)

    def _settle(self, text: str) -> None:
        """`text` was queued last: send or schedule what waits (holding the lock)."""
        if not self._queue:
            return  # a flush took it already
        if self._size >= _FLUSH_AT:
            self._flush_locked()
        elif "\n" in text:
            now = time.monotonic()
            if now - self._sent >= _BURST:
                self._flush_locked()
            elif not self._hold:
                self._hold = True
                if now + _BURST < self._due:
                    self._schedule(now + _BURST)
        elif self._due == _NEVER:
            self._schedule(time.monotonic() + _FLUSH_DELAY)

    def _schedule(self, due: float) -> None:
        self._due = due
        self._flusher.wake(self, due)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def sync(self) -> None:
        """flush(), unless nothing waits and no other thread sends (the usual case before a
        tool call): text is queued before it is taken, and taken only while _flushing."""
        if self._queue or self._flushing:
            self.flush()

    def _flush_locked(self) -> None:
        self._hold = False  # first: a write that queues after this takes the locked path
        self._due = _NEVER
        if self._flushing:  # a signal handler wrote during this thread's own send
            self._schedule(time.monotonic() + _BURST)
            return
        queue = self._queue
        if not queue:
            return
        self._flushing = True
        try:
            # All in C, so no signal handler runs between the pops and no text is dropped.
            text = "".join(itertools.islice(iter(queue.popleft, None), len(queue)))
            self._size = 0
            self._sent = time.monotonic()
            for start in range(0, len(text), _FRAME_TEXT):  # bounded frames, however big a write
                chunk = text[start : start + _FRAME_TEXT]
                self._channel.send_bytes(encode_out(self._stream, chunk))
        finally:
            self._flushing = False

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


class BinaryStream(io.RawIOBase):
    """sys.stdout.buffer: bytes are decoded (UTF-8, replacing bad bytes) into the text stream."""

    def __init__(self, text: TextStream) -> None:
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data: bytes) -> int:
        self._text.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self) -> None:
        self._text.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._text.fileno()


class Flusher(threading.Thread):
    """Sends what a stream holds once it is due: partial lines after _FLUSH_DELAY (so
    `print(end="")` still streams), the lines of a burst after _BURST.

    A signal handler that prints may call wake() while the main thread is inside wake(): so
    the lock is reentrant and the flusher is woken by releasing a bare lock (a C call that never
    blocks), not by an Event, whose set() takes a lock of its own in Python code.
    """

    def __init__(self) -> None:
        super().__init__(name="codemode-flusher", daemon=True)
        self._due: dict[TextStream, float] = {}  # stream -> when to flush it (monotonic)
        self._lock = threading.RLock()
        self._woken = threading.Lock()  # released: wake() was called since the last look
        self._woken.acquire()

    def wake(self, stream: TextStream, due: float) -> None:
        """Flush `stream` at `due` (time.monotonic), unless an earlier time is asked already."""
        with self._lock:
            if self._due.get(stream, _NEVER) <= due:
                return
            # min(): a handler's wake() may have come in between, asking for an earlier time.
            self._due[stream] = min(due, self._due.get(stream, _NEVER))
        try:
            self._woken.release()
        except RuntimeError:
            pass  # released already: the flusher looks anew anyway

    def run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                ready = [stream for stream, due in self._due.items() if due <= now]
                for stream in ready:
                    del self._due[stream]
                wait = min(self._due.values(), default=now + 3600) - now
            for stream in ready:
                stream.flush()
            if not ready:
                self._woken.acquire(timeout=wait)  # _due is read anew after a wake()


class FdPump:
    """Forwards what lands on the program's fd 1/2 pipes (subprocesses, os.write, C code)."""

    def __init__(self, channel: Channel, stream: int, read_fd: int) -> None:
        self._channel = channel
        self._stream = stream
        self._fd = self.fd = read_fd
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._ended = False
        os.set_blocking(read_fd, False)
        threading.Thread(target=self._run, name=f"codemode-fd{stream}", daemon=True).start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._ended:
            poller.poll()
            self.drain()

    def settle(self) -> None:
        """Return once a drain going on in the pump's thread has sent what it read."""
        if self._lock.locked():
            with self._lock:
                pass

    def drain(self) -> None:
        """Forward everything readable now; a sync point before call and done frames."""
        with self._lock:
            chunks, size = [], 0
            while not self._ended:
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    # Every writer closed the pipe (the program closed its fd): nothing more can
                    # come, and polling a hung-up pipe would spin.
                    self._ended = True
                    break
                chunks.append(data)
                size += len(data)
                if size >= _PUMP_FRAME:  # the host decodes this while the next is read
                    self._send(chunks)
                    chunks, size = [], 0
            self._send(chunks)

    def _send(self, chunks: list[bytes]) -> None:
        if chunks:
            text = self._decoder.decode(b"".join(chunks))
            if text:
                self._channel.send_bytes(encode_out(self._stream, text))


class Baseline:
    """The process as a fresh program finds it, taken before the first program runs and put
    back by reset(), so that a warm runtime's next program (a pool's next task) starts as a
    fresh one would: the environment variables, the working directory, the builtins, the
    modules (those a program imported are dropped; the attributes of the others are put
    back), sys.path and the import hooks, the warning filters, the signal handlers, the
    recursion limit and any trace or profile function. Threads a program left running cannot
    be undone: then reset() says the runtime must be replaced.

    Compiled modules cannot be loaded twice in one process (numpy refuses outright), and what
    a program imported along with one may be referred to by it: so the modules of a program
    that loaded a compiled one are all kept, as part of the runtime from then on (their
    attributes as they were when it ended).
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.environ = dict(os.environ)
        self.builtins = dict(builtins.__dict__)
        self.modules: dict[str, object] = {}
        self.attrs: list[tuple[dict, dict]] = []  # (a module's __dict__, its saved copy)
        self._adopt([name for name in sys.modules if name not in _OWN_MODULES])
        self.path = list(sys.path)
        self.meta_path = list(sys.meta_path)
        self.path_hooks = list(sys.path_hooks)
        self._filters = getattr(_warnings, "filters", [])  # the list warnings.filters is
        self.warnings = list(self._filters)
        self.signals = {s: _signal.getsignal(s) for s in _ALL_SIGNALS if s < _signal.NSIG}
        self.recursion = sys.getrecursionlimit()
        self.threads = _thread_count()

    def _adopt(self, names: list[str]) -> None:
        for name in names:
            module = self.modules[name] = sys.modules[name]
            if isinstance(module, types.ModuleType):
                self.attrs.append((module.__dict__, dict(module.__dict__)))

    def threads_left(self) -> int:
        """How many threads the programs started are still running."""
        return _thread_count() - self.threads

    def restore(self) -> None:
        """Put the process back as it was (the threads excepted: see threads_left)."""
        if sys.gettrace() is not None or sys.getprofile() is not None:
            sys.settrace(None)
            sys.setprofile(None)
        if os.environ != self.environ:  # by value: os.environ decodes anew on each read
            for key in [k for k in os.environ if k not in self.environ]:
                del os.environ[key]
            os.environ.update(self.environ)
        try:
            os.chdir(self.workdir)
        except OSError:
            pass  # removed by the program: the next one finds what a fresh runtime would
        if not _same(builtins.__dict__, self.builtins):
            _restore_mapping(builtins.__dict__, self.builtins)
        self._restore_modules()
        for current, saved in ((sys.path, self.path), (sys.meta_path, self.meta_path)):
            if current != saved:
                current[:] = saved
        if sys.path_hooks != self.path_hooks:
            sys.path_hooks[:] = self.path_hooks
            sys.path_importer_cache.clear()
        if self._filters != self.warnings:
            self._filters[:] = self.warnings
            getattr(_warnings, "_filters_mutated", lambda: None)()  # its cache of verdicts
        for signum, handler in self.signals.items():
            if _signal.getsignal(signum) is not handler:
                try:
                    _signal.signal(signum, handler)
                except (OSError, ValueError, TypeError):
                    pass  # one that cannot be set (SIGKILL) was never changed either
        if sys.getrecursionlimit() != self.recursion:
            sys.setrecursionlimit(self.recursion)

    def _restore_modules(self) -> None:
        modules = sys.modules
        new = [name for name in modules if name not in self.modules and name not in _OWN_MODULES]
        if _RUNTIME_MODULES.intersection(new):
            self._adopt([name for name in new if name in _RUNTIME_MODULES])
            new = [name for name in new if name not in _RUNTIME_MODULES]
        if any(_made_by_c(modules[name]) for name in new):
            self._adopt(new)  # kept: see the class's docstring
        else:
            for name in new:
                del modules[name]
        for name, module in self.modules.items():
            if modules.get(name) is not module:
                modules[name] = module
        for current, saved in self.attrs:
            if not _same(current, saved):
                _restore_mapping(current, saved, keep=_is_loaded_module)

    def note_path(self) -> None:
        """sys.path grew on the runtime's own account (a package directory appeared)."""
        self.path = list(sys.path)


#: Modules the runtime makes anew for each fresh namespace.
_OWN_MODULES = frozenset({"codemode"})
#: Modules the runtime imported for its own use after it started (runtime_import): kept by
#: resets like those it started with, so that each task does not import them again.
_RUNTIME_MODULES: set[str] = set()


def runtime_import(name: str) -> types.ModuleType:
    """Import a module the runtime needs now (not at start: each cold start would pay)."""
    module = sys.modules.get(name)
    if module is None:
        before = set(sys.modules)
        module = __import__(name)
        _RUNTIME_MODULES.update(set(sys.modules) - before)
    return module


_EXTENSION_SUFFIXES = tuple(_imp.extension_suffixes())


def _thread_count() -> int:
    """Threads started through `threading` or `_thread` that are still running."""
    count = getattr(_thread, "_count", None)
    return count() if count is not None else threading.active_count()


def _made_by_c(module: object) -> bool:
    """A module made by C code (an extension or a built-in): it cannot be made again."""
    try:
        origin = getattr(getattr(module, "__spec__", None), "origin", None)
    except Exception:  # anything may sit in sys.modules
        return False
    if not isinstance(origin, str):
        return False
    return origin == "built-in" or origin.endswith(_EXTENSION_SUFFIXES)


def _is_loaded_module(value: object) -> bool:
    """A submodule binding on its package: kept while the submodule stays loaded."""
    name = getattr(value, "__name__", None) if isinstance(value, types.ModuleType) else None
    return isinstance(name, str) and sys.modules.get(name) is value


def _same(current: dict, saved: dict) -> bool:
    """Whether two dicts hold the same items (values compared by identity first, in C)."""
    try:
        return current == saved
    except Exception:  # a value whose == is not a bool (an array put in place of another)
        return False


def _restore_mapping(current: dict, saved: dict, keep: object = None) -> None:
    """Make `current` hold `saved`'s items again (compared by identity); keys added since
    stay only if `keep(value)` says so."""
    for key in [k for k in current if k not in saved]:
        if keep is None or not keep(current[key]):
            del current[key]
    for key, value in saved.items():
        if key not in current or current[key] is not value:
            current[key] = value


class Runtime:
    """The persistent interpreter: a namespace, the tool stubs, and the calls in flight."""

    def __init__(self, channel: Channel, in_fd: int, sequenced: bool = False) -> None:
        self.channel = channel
        self._in_fd = in_fd
        # Sequenced (Daytona): batches a retried request delivered again are dropped. Chosen
        # once here (the same feed() either way), so the local pipes' reads pay nothing.
        splitter = P.LineSplitter()
        self._splitter = P.Sequenced(splitter) if sequenced else splitter
        # The thread that waits for a frame (the main thread between runs, a program thread
        # waiting for its tool's result) reads the channel itself, holding _lead; the reader
        # thread reads only while no one leads, so a reply needs no hand-off between threads.
        self._lead = threading.Lock()
        self._leader_poll = select.poll()
        self._leader_poll.register(in_fd, select.POLLIN)
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        if self._epoll is not None:
            os.set_blocking(in_fd, False)
            self._epoll.register(in_fd, select.EPOLLIN)
        # Waits for a tool's result and for the next request count their misses apart: a
        # request comes when the host pleases, and its long waits must not rest the spin for
        # results.
        self.spin = P.Spin()
        self.idle_spin = P.Spin(P.SPIN_MAX_OTHER)
        self._interrupt_self = False
        self._inbox: list[dict] = []
        self._inbox_ready = threading.Condition()
        self._pending: dict[int, tuple] = {}
        self._ids = itertools.count(1)
        self._running: str | None = None
        self._run_lock = threading.Lock()
        self._stop_early: set[str] = set()
        self._main_ident = threading.get_ident()
        self._pid = os.getpid()
        self._tool_names: list[str] = []
        self._stub_cache: dict[tuple, dict] = {}
        self._tools: list[dict] = []  # the last run frame's tools (a frame without any keeps them)
        self.streams: list[TextStream] = []
        self.pumps: list[FdPump] = []
        self._pump_fds: list[int] = []
        workdir = self._workdir = os.getcwd()  # the program may chdir; files stay relative to this
        self.baseline: Baseline | None = None  # taken once the runtime serves (serve)
        self.displayer = R.Displayer(channel.send_bytes, self.sync_output, warn)
        self.uploads = R.Uploads(workdir)
        self.artifacts = R.Artifacts(workdir)
        self._outputs = os.path.join(workdir, R.OUTPUTS)
        R.install_matplotlib_backend(self.displayer)
        self.namespace = self._fresh_namespace()

    # --- the control channel ---------------------------------------------------------------

    def read_control(self) -> None:
        """Reader thread: results wake their callers; run/reset go to the main loop."""
        if self._epoll is None:  # no epoll: this thread is the only reader, blocking
            while True:
                self._pump(os.read)
        while True:
            self._epoll.poll()  # the channel is left out of it while a thread leads
            with self._lead:
                self._pump(_read_nowait)

    def _pump(self, read: object) -> None:
        """Read what the channel has and dispatch it (by the one thread that reads now)."""
        try:
            data = read(self._in_fd, 65536)
        except InterruptedError:
            return
        except OSError:
            os._exit(P.CHANNEL_LOST)
        if data is None:
            return
        if not data:
            os._exit(0)  # the host has gone: nothing left to serve
        for line in self._splitter.feed(data):
            if line[:1] == b"{" or line.strip():  # a frame; blank lines are skipped
                self._dispatch(P.decode(line))

    def wait_leading(self, until: list, spin: P.Spin) -> bool:
        """Read the channel on this thread until the list `until` has something (what this
        thread dispatches puts it there); False if another thread leads (its reads dispatch to
        this one) or there is no epoll to keep the reader thread out."""
        if self._epoll is None or not self._lead.acquire(blocking=False):
            return False
        try:
            self._epoll.modify(self._in_fd, 0)  # the reader thread sleeps through this
            while not until:
                self._read_step(spin)
        finally:
            self._epoll.modify(self._in_fd, select.EPOLLIN)
            self._lead.release()
        return True

    def _read_step(self, spin: P.Spin) -> None:
        """Wait for the channel (a short spin first, as `spin` says), then read and dispatch."""
        start = time.perf_counter()
        end = start + spin.limit
        poll = self._leader_poll.poll
        caught = poll(0)
        while not caught and time.perf_counter() < end:
            if P.SPIN_YIELD:
                os.sched_yield()
            caught = poll(0)
        if not caught:
            poll()  # a signal (Ctrl-C) raises here, before anything was read
        self._pump(_read_nowait)
        if self._interrupt_self:
            # An interrupt frame this (main) thread read for itself: raised once everything
            # read is dispatched, so nothing is lost.
            self._interrupt_self = False
            raise KeyboardInterrupt
        spin.record(time.perf_counter() - start, bool(caught))

    def _dispatch(self, frame: dict) -> None:
        kind = frame["t"]
        if kind == P.RESULT:
            waiter = self._pending.pop(frame["id"], None)
            if waiter is not None:
                wake, reply = waiter
                reply.append(frame)
                wake()
        elif kind == P.INTERRUPT:
            with self._run_lock:
                if self._running is not None and frame.get("id") in (None, self._running):
                    if threading.get_ident() == self._main_ident:
                        self._interrupt_self = True  # leading: raised after dispatching
                    else:
                        import signal

                        signal.pthread_kill(self._main_ident, signal.SIGINT)
                elif frame.get("id") is not None:
                    # Its run frame is queued but not started: it stops as soon as it starts.
                    self._stop_early.add(frame["id"])
        else:
            with self._inbox_ready:
                self._inbox.append(frame)
                self._inbox_ready.notify()

    def next_request(self) -> dict:
        if not self._inbox:
            self.wait_leading(self._inbox, self.idle_spin)
        with self._inbox_ready:
            while not self._inbox:
                self._inbox_ready.wait()
            return self._inbox.pop(0)

    def sync_output(self) -> None:
        """Everything the program wrote so far goes out before the next control frame."""
        for stream in self.streams:
            stream.sync()
        # One syscall, no exception: the pipes are empty nearly always (select, not a shared
        # poll object: program threads call this at the same time). An empty pipe may still be
        # in the hands of its pump thread, sending what it read: wait for that (its lock).
        if self.pumps and select.select(self._pump_fds, (), (), 0)[0]:
            for pump in self.pumps:
                pump.drain()
        else:
            for pump in self.pumps:
                pump.settle()

    def add_pump(self, pump: FdPump) -> None:
        self.pumps.append(pump)
        self._pump_fds.append(pump.fd)

    # --- tool calls --------------------------------------------------------------------------

    def call(self, name: str, args: tuple, kwargs: dict) -> object:
        # A bare lock is the cheapest way to park this thread until the reader thread
        # releases it with the result: this is the hot path of every sync tool call.
        lock = threading.Lock()
        lock.acquire()
        reply: list = []
        call_id = self._start_call(name, args, kwargs, (lock.release, reply))
        try:
            if not self.wait_leading(reply, self.spin):
                lock.acquire()
        except BaseException:
            self._pending.pop(call_id, None)
            raise
        return self._finish_call(name, reply[0])

    async def call_async(self, name: str, args: tuple, kwargs: dict) -> object:
        import asyncio  # already imported: the program awaits in a running loop

        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(_resolve, future)

        reply: list = []
        call_id = self._start_call(name, args, kwargs, (wake, reply))
        try:
            await future
        except BaseException:
            self._pending.pop(call_id, None)
            raise
        return self._finish_call(name, reply[0])

    def _start_call(self, name: str, args: tuple, kwargs: dict, waiter: tuple) -> int:
        """Send the call; `waiter` is (wake, reply): the result is appended to `reply`, then
        `wake()` is called."""
        call_id = next(self._ids)
        frame = {"t": P.CALL, "id": call_id, "name": name, "args": list(args), "kwargs": kwargs}
        try:
            data = P.encode(frame)
        except (TypeError, ValueError) as exc:
            raise ToolArgumentError(f"{name}: arguments must be JSON values ({exc})") from None
        self._pending[call_id] = waiter
        self.sync_output()
        self.channel.send_bytes(data)
        return call_id

    @staticmethod
    def _finish_call(name: str, reply: dict) -> object:
        if reply.get("ok"):
            return reply.get("value")
        raise tool_error(name, reply.get("error") or {})

    def install_tools(self, tools: list[dict]) -> None:
        """Bind a stub for each tool: `name`, `external_name`, and their `_async` variants."""
        for old in self._tool_names:
            self.namespace.pop(old, None)
        self._tool_names = []
        for spec in tools:
            key = (spec["name"], spec.get("signature"), spec.get("doc"))
            stubs = self._stub_cache.get(key)
            if stubs is None:  # made once per tool and namespace: every run binds them
                stubs = self._stub_cache[key] = self._stubs(spec)
            for alias, stub in stubs.items():
                self.namespace[alias] = stub
                self._tool_names.append(alias)

    def _stubs(self, spec: dict) -> dict:
        name = spec["name"]
        runtime = self

        def stub(*args: object, **kwargs: object) -> object:
            return runtime.call(name, args, kwargs)

        async def stub_async(*args: object, **kwargs: object) -> object:
            return await runtime.call_async(name, args, kwargs)

        for fn, suffix in ((stub, ""), (stub_async, "_async")):
            fn.__name__ = fn.__qualname__ = name + suffix
            fn.__doc__ = f"{name}{spec.get('signature', '(...)')}\n\n{spec.get('doc') or ''}"
        return {
            name: stub,
            f"external_{name}": stub,
            f"{name}_async": stub_async,
            f"external_{name}_async": stub_async,
        }

    # --- running programs -------------------------------------------------------------------

    def _fresh_namespace(self) -> dict:
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        namespace.update(
            ToolError=ToolError,
            ToolArgumentError=ToolArgumentError,
            UnknownToolError=UnknownToolError,
            ToolRejected=ToolRejected,
            codemode=self._codemode_module(),
            display=self.displayer.display,
        )
        return namespace

    def _codemode_module(self) -> types.ModuleType:
        module = types.ModuleType("codemode", "Talk to the Code Mode host from the program.")
        channel = self.channel

        def preview(port: int) -> None:
            """Announce that the program serves HTTP on `port`; the host shows a link to it."""
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"preview() takes a TCP port, 1-65535, not {port!r:.40}")
            channel.send({"t": P.PREVIEW, "port": port})

        module.preview = preview
        module.display = self.displayer.display
        module.save = self.artifacts.save
        for helper in (R.HTML, R.Markdown, R.SVG, R.Latex, R.JSON, R.Image):
            setattr(module, helper.__name__, helper)
        module.ToolError = ToolError
        module.ToolRejected = ToolRejected
        sys.modules["codemode"] = module
        return module

    def reset(self) -> None:
        """A fresh namespace in a process put back as a fresh program finds it (Baseline);
        `clean` false if that cannot be (threads left running): the host replaces us."""
        left = self.baseline.threads_left() if self.baseline is not None else 0
        if left > 0:
            self.channel.send({"t": P.RESET_DONE, "clean": False, "threads": left})
            return
        if self.baseline is not None:
            try:
                self.baseline.restore()
            except Exception:  # something a program did that cannot be put back
                self.channel.send({"t": P.RESET_DONE, "clean": False, "threads": 0})
                return
        self.namespace = self._fresh_namespace()
        self._tool_names = []
        self._stub_cache.clear()  # a fresh namespace gets fresh stubs
        self.channel.send({"t": P.RESET_DONE})

    def execute(self, frame: dict) -> None:
        run_id = frame["id"]
        if "tools" in frame:  # absent: the host sends tools only when they changed
            self._tools = frame["tools"]
        self.install_tools(self._tools)  # bound again each run: a program may have rebound a name
        if "limits" in frame:  # absent: the last run's hold (the host sends them when changed)
            self._apply_limits(frame["limits"])
        reply = {"t": P.DONE, "id": run_id}
        with self._run_lock:
            self._running = run_id
            stopped = run_id in self._stop_early
            self._stop_early.clear()
        try:
            if stopped:
                raise KeyboardInterrupt
            if add_package_dirs() and self.baseline is not None:
                self.baseline.note_path()
            self._check_uploads()
            if "inputs" in frame:  # a task's input values, bound as variables before it runs
                self.namespace.update(frame["inputs"])
            value = run_program(frame["code"], self.namespace)
            reply.update(ok=True, **encode_value(value))
            bundle = R.value_bundle(value, self.displayer.limit)
            if bundle is not None:
                reply["bundle"] = bundle
        except BaseException as exc:  # the program's failure is data, whatever it raised
            reply.update(ok=False, error=describe_error(exc))
        synced = False
        try:
            if os.getpid() == self._pid:
                self._end_of_run()
                synced = True
        except BaseException as exc:  # interrupted while showing figures or sending files
            if reply["ok"]:
                reply = {"t": P.DONE, "id": run_id, "ok": False, "error": describe_error(exc)}
        finally:
            with self._run_lock:
                self._running = None
        if os.getpid() != self._pid:
            self._end_forked_child(reply)
        if not synced:
            self.sync_output()
        try:
            self.channel.send(reply)
        except (TypeError, ValueError):
            reply.update(value=None)
            self.channel.send(reply)

    def _apply_limits(self, limits: object) -> None:
        """The host's caps for this run's displays and artifacts (the host checks them too)."""
        limits = limits if isinstance(limits, dict) else {}
        self.displayer.limit = _whole(limits.get("display"), R.MAX_DISPLAY)
        self.artifacts.max_files = _whole(limits.get("artifacts"), R.MAX_ARTIFACTS)
        self.artifacts.max_bytes = _whole(limits.get("artifact_bytes"), R.MAX_ARTIFACT_BYTES)

    def _check_uploads(self) -> None:
        errors = self.uploads.take_errors()
        if errors:
            raise OSError(
                "the files for this run could not all be written into the sandbox: "
                + "; ".join(errors)
            )

    def _end_of_run(self) -> None:
        """Figures still open are shown and the run's files sent, as a cell ends in IPython."""
        R.flush_figures(self.displayer)
        self.sync_output()
        # Walking a missing outputs/ costs more than the rest of an empty run: look first.
        # (os.access first: isdir of a missing path raises and catches an OSError, costly here.)
        if self.artifacts.saved or (
            os.access(self._outputs, os.F_OK) and os.path.isdir(self._outputs)
        ):
            self.artifacts.send(self.channel.send_bytes, warn)
            self.sync_output()  # what sending them warned about, before the done frame

    def _end_forked_child(self, reply: dict) -> None:
        """A process the program forked reached the end of the program: it ends there, as a
        forked child of a script would, instead of answering for the runtime."""
        if not reply["ok"]:
            sys.stderr.write(reply["error"]["traceback"])
        for stream in self.streams:
            stream.flush()
        os._exit(0 if reply["ok"] else 1)

    def serve(self) -> None:
        threading.Thread(target=self.read_control, name="codemode-control", daemon=True).start()
        self.baseline = Baseline(self._workdir)  # the runtime's own threads and modules are up
        while True:
            try:
                frame = self.next_request()
                if frame["t"] == P.RUN:
                    self.execute(frame)
                elif frame["t"] == P.RESET:
                    self.reset()
                elif frame["t"] == P.PUT:
                    self.uploads.put(frame)
            except KeyboardInterrupt:
                continue  # an interrupt that arrived just after its run ended


#: Directories of the sandbox's own packages (pip --target): `--site DIR` arguments, and the
#: one pip fills inside a remote sandbox. Each is put on sys.path once it exists.
PACKAGE_DIRS = [os.path.expanduser("~/.codemode-packages")]


_package_dirs_seen: dict[str, int] = {}  # directory -> its mtime at the last look (-1: none)


def add_package_dirs() -> bool:
    """Before each run: package directories that appeared or changed (a pip install between
    runs) go on sys.path, and the import caches are dropped so their packages are found. A
    stat each when nothing changed: dropping the caches makes every later import slower.
    Whether anything changed."""
    changed = False
    for directory in PACKAGE_DIRS:
        mtime = -1
        if os.access(directory, os.F_OK):  # a missing dir (the usual case) raises nothing here
            try:
                mtime = os.stat(directory).st_mtime_ns
            except OSError:
                pass
        if _package_dirs_seen.get(directory) != mtime:
            _package_dirs_seen[directory] = mtime
            changed = True
            if mtime != -1 and directory not in sys.path:
                import site

                site.addsitedir(directory)
    if changed:
        import importlib

        importlib.invalidate_caches()
    return changed


def _whole(value: object, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _read_nowait(fd: int, size: int) -> bytes | None:
    """What the (non-blocking) channel has now, or None."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None


def warn(message: str) -> None:
    """A note for the person running the program, on its stderr."""
    sys.stderr.write(f"[codemode] {message}\n")
    sys.stderr.flush()


def _resolve(future: asyncio.Future) -> None:  # noqa: F821 - imported by its caller
    if not future.done():
        future.set_result(None)


def compile_program(code: str) -> tuple[types.CodeType, types.CodeType | None]:
    """The program's body, and its last expression separately (its value is the result)."""
    linecache.cache[CELL] = (len(code), None, code.splitlines(True), CELL)
    return _compiled(code)


@functools.lru_cache(maxsize=32)  # code objects are immutable: a program run again reuses them
def _compiled(code: str) -> tuple[types.CodeType, types.CodeType | None]:
    tree = compile(code, CELL, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)  # ast.parse
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    flags = _ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    body = compile(tree, CELL, "exec", flags=flags, dont_inherit=True)
    expr = compile(last, CELL, "eval", flags=flags, dont_inherit=True) if last else None
    return body, expr


_CO_COROUTINE = 0x0080  # inspect.CO_COROUTINE (inspect is not imported: it is slow to import)


def run_program(code: str, namespace: dict) -> object:
    body, expr = compile_program(code)
    is_async = any(c is not None and c.co_flags & _CO_COROUTINE for c in (body, expr))
    if not is_async:
        exec(body, namespace)
        return eval(expr, namespace) if expr is not None else None

    async def main() -> object:
        result = eval(body, namespace)
        if isinstance(result, types.CoroutineType):
            await result
        if expr is None:
            return None
        value = eval(expr, namespace)
        return await value if isinstance(value, types.CoroutineType) else value

    import asyncio  # only programs that await pay for it (a third of a cold start)

    return asyncio.run(main())


def encode_value(value: object) -> dict:
    if value is None:
        return {"value": None, "repr": None}
    text = repr(value)
    if len(text) > 10000:
        text = text[:10000] + "..."
    try:
        P.encode({"v": value})
    except (TypeError, ValueError, RecursionError):
        return {"value": None, "repr": text}
    return {"value": value, "repr": text}


def describe_error(exc: BaseException) -> dict:
    """Type, message and a traceback trimmed to the program's own frames and line numbers."""
    traceback = runtime_import("traceback")

    if isinstance(exc, SyntaxError):  # where the parser stopped is the whole story
        text = "".join(traceback.format_exception_only(type(exc), exc))
        return {
            "type": type(exc).__name__,
            "message": f"{exc.msg} (line {exc.lineno})",
            "traceback": text,
        }
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _HIDDEN_FILES:
        tb = tb.tb_next
    tb_exc = traceback.TracebackException(type(exc), exc, tb)  # any python3 of a sandbox image
    tb_exc.stack = traceback.StackSummary.from_list(
        [f for f in tb_exc.stack if os.path.abspath(f.filename) not in _HIDDEN_FILES]
    )
    kind = type(exc).__name__
    if isinstance(exc, ToolError) and exc.remote_type:
        kind = exc.remote_type if type(exc).__name__ == exc.remote_type else kind
    message = str(exc)
    return {"type": kind, "message": message, "traceback": "".join(tb_exc.format())}


def take_standard_fds() -> tuple[int, int, list[tuple[int, int]]]:
    """Move the control channel off fd 0/1 and give the program /dev/null and two pipes."""
    in_fd, out_fd = os.dup(0), os.dup(1)  # dup'd fds are not inherited by subprocesses
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    pipes = []
    for fd in (1, 2):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        pipes.append((fd, read_end))
    return in_fd, out_fd, pipes


#: The control channel's capacity toward the host (the default is 64 KiB): a burst of output
#: fills fewer, larger reads. Not more: a user's pipes share one budget across all their
#: sessions and programs (fs.pipe-user-pages-soft, 64 MiB), past which new pipes get a page.
_CHANNEL_PIPE = 1 << 18


def _widen_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _CHANNEL_PIPE)
    except (ImportError, AttributeError, OSError):
        pass  # not a pipe, or over the user's budget: the default capacity works too


def apply_limits(argv: list[str]) -> None:
    """`--limits MEM_MB,PROCS,CPU_S,FSIZE_MB` (0 = leave as is): set before any program runs,
    so the program and everything it starts inherit them."""
    if "--limits" not in argv:
        return
    import resource

    values = [int(v) for v in argv[argv.index("--limits") + 1].split(",")]
    kinds = (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE)
    scales = (1 << 20, 1, 1, 1 << 20)
    for kind, value, scale in zip(kinds, values, scales, strict=False):
        if value > 0:
            _soft, hard = resource.getrlimit(kind)
            limit = value * scale if hard == resource.RLIM_INFINITY else min(value * scale, hard)
            resource.setrlimit(kind, (limit, limit))


def take_ctrl_c() -> None:
    """SIGINT raises KeyboardInterrupt in the main thread: how an interrupt frame stops the
    program (Runtime._dispatch). Set here, not inherited: a signal ignored or blocked by
    whatever started the runtime stays so through exec (ipykernel ignores SIGINT between
    requests, so a spare started then had it ignored, and a shell ignores it in what it
    starts with `&`), and then no interrupt could stop a program."""
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, (_signal.SIGINT,))


def serve_session() -> None:
    take_ctrl_c()  # first: the threads started below inherit the mask
    in_fd, out_fd, pipes = take_standard_fds()
    _widen_pipe(out_fd)
    channel = Channel(out_fd)
    flusher = Flusher()
    flusher.start()
    runtime = Runtime(channel, in_fd, sequenced=P.SEQUENCED in sys.argv)
    for fd, read_end in pipes:
        runtime.add_pump(FdPump(channel, fd, read_end))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = TextStream(channel, P.STDOUT, 1, flusher)
    sys.stderr = TextStream(channel, P.STDERR, 2, flusher)
    runtime.streams = [sys.stdout, sys.stderr]
    channel.send({"t": P.READY, "pid": os.getpid(), "python": sys.version.split()[0]})
    runtime.serve()


class NeedTools(BaseException):
    """Replay mode: the program reached a call whose result is not known yet.

    A BaseException, so the program's `except Exception` cannot swallow it.
    """


def _print_display(*objs: object, **_options: object) -> None:
    """display() in replay mode, where no frames go: the text form of each object."""
    for obj in objs:
        print(R.mime_bundle(obj)[0]["text/plain"])


def serve_replay() -> None:
    """One execution of the replay protocol: known results are replayed, the first unknown
    call stops the program, and the last line (after the marker) says what happened."""
    import base64

    encoded = os.environ.pop("CODEMODE_REPLAY_B64", None)
    raw = base64.b64decode(encoded) if encoded else sys.stdin.buffer.read()
    request = P.decode(raw)
    known, marker = request["results"], request["marker"]
    wanted: list[dict] = []
    counter = itertools.count()

    def stub_for(name: str):
        def stub(*args: object, **kwargs: object) -> object:
            index = next(counter)
            if index < len(known):
                reply = known[index]
                if reply.get("ok"):
                    return reply.get("value")
                raise tool_error(name, reply.get("error") or {})
            wanted.append({"name": name, "args": list(args), "kwargs": kwargs})
            raise NeedTools

        stub.__name__ = name
        return stub

    namespace = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "ToolError": ToolError,
        "display": _print_display,
    }
    for spec in request["tools"]:
        namespace[spec["name"]] = namespace["external_" + spec["name"]] = stub_for(spec["name"])
    namespace.update(request.get("inputs") or {})
    outcome: dict = {"t": P.DONE, "id": 0}
    try:
        outcome.update(ok=True, **encode_value(run_program(request["code"], namespace)))
    except NeedTools:
        outcome = {"t": "need_tools", "calls": wanted}
    except BaseException as exc:
        if wanted:  # NeedTools was caught and replaced by the program's own error handling
            outcome = {"t": "need_tools", "calls": wanted}
        else:
            outcome.update(ok=False, error=describe_error(exc))
    sys.stdout.flush()
    sys.stdout.write("\n" + marker + P.encode(outcome).decode("utf-8"))
    sys.stdout.flush()


if __name__ == "__main__":
    apply_limits(sys.argv)
    if "--site" in sys.argv:
        PACKAGE_DIRS.insert(0, sys.argv[sys.argv.index("--site") + 1])
    if "--replay" in sys.argv:
        serve_replay()
    else:
        serve_session()
