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

This file is the runtime's main loop and what a program binds by name (ToolError and the
tool stubs); the modules next to it each do one job: codemode_protocol (frames),
codemode_channel (frames out, the program's stdout/stderr), codemode_control (frames in),
codemode_program (compile and run a program), codemode_baseline (a warm runtime put back
between programs), codemode_process (fds, limits, signals, package dirs), codemode_rich
(displays, files). The host ships the files listed in runtime/__init__.py's RUNTIME_FILES.
"""

from __future__ import annotations

# Modules a session's start and a plain run do not need (base64, signal, traceback) are
# imported where they are used: every import here is paid by each cold start.
import builtins
import functools
import io
import itertools
import os
import select
import sys
import threading
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import codemode_protocol as P
import codemode_rich as R
from codemode_baseline import Baseline, runtime_import
from codemode_channel import Channel, FdPump, Flusher, TextStream
from codemode_control import Control
from codemode_process import (
    PACKAGE_DIRS,
    add_package_dirs,
    apply_limits,
    take_ctrl_c,
    take_standard_fds,
    widen_pipe,
)
from codemode_program import encode_value, run_program

_HERE = sys.path.pop(0)  # the runtime's directory: its modules are imported


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


class Runtime(Control):
    """The persistent interpreter: a namespace, the tool stubs, and the calls in flight."""

    def __init__(self, channel: Channel, in_fd: int, sequenced: bool = False) -> None:
        super().__init__(in_fd, sequenced)
        self.channel = channel
        self._ids = itertools.count(1)
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

    # --- output ------------------------------------------------------------------------------

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


def _whole(value: object, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def warn(message: str) -> None:
    """A note for the person running the program, on its stderr."""
    sys.stderr.write(f"[codemode] {message}\n")
    sys.stderr.flush()


def _resolve(future: asyncio.Future) -> None:  # noqa: F821 - imported by its caller
    if not future.done():
        future.set_result(None)


@functools.cache
def _hidden_files() -> frozenset[str]:
    """The runtime's own files (every module next to this one): left out of a program's
    tracebacks, so that it sees its own frames and not the runtime's internals."""
    return frozenset(os.path.join(_HERE, name) for name in os.listdir(_HERE))


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
    hidden = _hidden_files()
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in hidden:
        tb = tb.tb_next
    tb_exc = traceback.TracebackException(type(exc), exc, tb)  # any python3 of a sandbox image
    tb_exc.stack = traceback.StackSummary.from_list(
        [f for f in tb_exc.stack if os.path.abspath(f.filename) not in hidden]
    )
    kind = type(exc).__name__
    if isinstance(exc, ToolError) and exc.remote_type:
        kind = exc.remote_type if type(exc).__name__ == exc.remote_type else kind
    message = str(exc)
    return {"type": kind, "message": message, "traceback": "".join(tb_exc.format())}


def serve_session() -> None:
    take_ctrl_c()  # first: the threads started below inherit the mask
    in_fd, out_fd, pipes = take_standard_fds()
    widen_pipe(out_fd)
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
