"""The engine: run a program once in a sandbox runtime and serve its tool calls on the host.

`CodeMode.run` is called on the thread that should execute sync tools (the kernel's main
thread in Jupyter, so `breakpoint()` in a tool works). That thread also reads the runtime's
frames while it waits for them (connection.py); an I/O thread of the connection reads between
runs and while a sync tool runs long, so a slow tool never stalls streaming. Async tools run
on a private event loop and may overlap. The engine knows neither Jupyter nor which backend
it drives.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codemode_jupyter.backends import (
    DEFAULT_BACKEND,
    Backend,
    BackendConfigError,
    BackendStatus,
    Transport,
    backend_class,
    create_backend,
    options_for,
    require_backend,
)
from codemode_jupyter.engine import options
from codemode_jupyter.engine import packages as packages_mod
from codemode_jupyter.engine.connection import Inbox, RuntimeConnection
from codemode_jupyter.engine.inputs import check_inputs
from codemode_jupyter.engine.replay import run_replay
from codemode_jupyter.engine.rich_run import RichOptions, RichRun
from codemode_jupyter.engine.run_state import Outcome, RunState
from codemode_jupyter.engine.serving import Serving
from codemode_jupyter.engine.spares import SpareRuntime
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.result import RunError, RunResult
from codemode_jupyter.runtime import codemode_protocol as P
from codemode_jupyter.support.loop_thread import LoopThread
from codemode_jupyter.tools.definition import TOOL_NAME, definition
from codemode_jupyter.tools.tool import ToolRegistry

HISTORY = 20


class _Resources:
    """What a session holds that must be released even if it is never closed: collected or
    not, its runtime (and the jail around it) must not outlive it. Nothing here refers back to
    the CodeMode, so the spare's thread cannot keep a forgotten session alive."""

    def __init__(self, backend: Backend | None, factory: Callable[[], Backend]) -> None:
        self.conn: RuntimeConnection | None = None
        self.backend = backend
        self._factory = factory
        self._backend_lock = threading.Lock()
        self.async_runner = LoopThread("codemode-async-tools")
        self.spare: SpareRuntime | None = None
        self.connects = 0  # runtimes this session has connected to

    def get_backend(self) -> Backend:
        with self._backend_lock:  # the spare's thread may ask at the same time
            if self.backend is None:
                self.backend = self._factory()
            return self.backend

    def connect(self, timeout: float | None, max_output: int) -> RuntimeConnection:
        """The spare if one is ready (or nearly), else a runtime started now."""
        # The next spare starts once this run is over (refill), not during it.
        conn = self.spare.take(timeout, refill=False) if self.spare is not None else None
        self.connects += 1
        return conn or RuntimeConnection(self.start_runtime(timeout), max_output)

    def refill(self) -> None:
        """Start the next spare if the last one was taken (after a run: never during one).
        After the session's first runtime, once the session is quiet: its runs reuse that
        runtime, so the spare is for later (fresh=True, a crash); after those, at once."""
        if self.spare is None:
            return
        if self.connects <= 1:
            self.spare.fill_when_quiet()
        else:
            self.spare.fill()

    def start_runtime(self, timeout: float | None = None) -> Transport:
        return self.get_backend().start_runtime(timeout=timeout)

    def release(self) -> None:
        if self.spare is not None:
            self.spare.close()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
        self.async_runner.close()
        if self.backend is not None:
            self.backend.close()


class CodeMode(Serving):
    """A Code Mode session: one sandbox runtime, its tools, and the programs run in it."""

    #: Runs `cm.handle_tool_call(...)`: agents/llm_tool.py's, set by the package's __init__
    #: (the engine does not import the agents, which are built on it).
    tool_call_handler: Callable[..., str] | None = None

    def __init__(
        self,
        tools: Iterable[Callable[..., Any]] = (),
        backend: str | Backend = DEFAULT_BACKEND,
        *,
        protocol: str = "session",
        timeout: float = 60.0,
        max_tool_calls: int = 1000,
        max_output: int = 1_000_000,
        network: bool = False,
        mounts: Iterable[Any] | None = None,
        memory_mb: int = 1024,
        sandbox: Any = None,
        pin_cpu: bool = False,
        spare: bool | None = None,
        max_display_bytes: int = RichOptions.max_display_bytes,
        max_displays: int = RichOptions.max_displays,
        files: Iterable[Any] = (),
        max_upload_bytes: int = RichOptions.max_upload_bytes,
        outputs_dir: str | os.PathLike | None = "codemode-outputs",
        max_artifacts: int = RichOptions.max_artifacts,
        max_artifact_bytes: int = RichOptions.max_artifact_bytes,
        packages: Iterable[str] | None = None,
        packages_dir: str | os.PathLike | None = None,
        **backend_options: Any,
    ) -> None:
        if protocol not in ("session", "replay"):
            raise ValueError("protocol must be 'session' or 'replay'")
        if isinstance(backend, str):
            require_backend(backend)  # an unknown name or a missing SDK fails here, not later
        self.protocol = protocol
        self.timeout = options.positive_seconds("timeout", timeout)
        self.max_tool_calls = options.count("max_tool_calls", max_tool_calls)
        self.max_output = options.count("max_output", max_output, 1)
        #: Displays and files: caps, uploads for every new runtime, where artifacts go.
        self.rich = RichOptions(
            max_display_bytes,
            max_displays,
            list(files),
            max_upload_bytes,
            None if outputs_dir is None else Path(outputs_dir),
            max_artifacts,
            max_artifact_bytes,
        )
        self._runs_started = 0
        #: Keep the host's engine threads and the local runtime on one CPU: sequential tool
        #: calls then wake no sleeping CPU (about half the latency on a small VM), but the
        #: program and all it starts share that CPU.
        self.pin_cpu = pin_cpu and hasattr(os, "sched_setaffinity")
        self._registry = ToolRegistry(tools)
        self._backend_arg = backend
        # Checked now, so a wrong option fails before anything starts; each backend takes the
        # shared options it has a use for (a Backend instance came with its own).
        if isinstance(backend, Backend):
            if backend_options:
                raise TypeError(
                    "backend options go to the backend's constructor: give them "
                    "to the Backend, or name the backend instead"
                )
            self._backend_options = None
        else:
            shared = {
                "network": network,
                "mounts": mounts,
                "memory_mb": memory_mb,
                "sandbox": sandbox,
            }
            if packages_dir is not None:
                backend_options = {**backend_options, "packages_dir": str(packages_dir)}
            self._backend_options = options_for(backend, shared, **backend_options)
        #: Installed before the first run (packages.py); kept until pip succeeds.
        self._packages_pending = packages_mod.check_specs(packages)
        self._res = _Resources(
            backend if isinstance(backend, Backend) else None,
            functools.partial(create_backend, str(backend), self._backend_options),
        )
        self._release = weakref.finalize(self, self._res.release)
        #: Keep a runtime started ahead of need (default: where the backend named says a spare
        #: helps, `Backend.spare_helps`).
        # A pinned session's runtimes must start on its pinned thread: no spare by default.
        if spare is None:
            named = isinstance(backend, str) and backend_class(backend).spare_helps
            spare = named and not self.pin_cpu
        self.spare = bool(spare)
        if self.spare and protocol == "session":
            start, cap = self._res.start_runtime, self.max_output
            self._res.spare = SpareRuntime(lambda: RuntimeConnection(start(), cap))
            self._res.spare.fill()
        self._run_lock = threading.Lock()
        self._status_cache: tuple[Backend, BackendStatus] | None = None
        self._current: RunState | None = None
        self.last_result: RunResult | None = None
        self.history: deque[RunResult] = deque(maxlen=HISTORY)
        self._closed = False

    @property
    def _conn(self) -> RuntimeConnection | None:
        return self._res.conn

    @property
    def _async(self) -> LoopThread:
        return self._res.async_runner

    # --- public API ---------------------------------------------------------------------

    @property
    def tools(self) -> ToolRegistry:
        return self._registry

    def set_tools(self, tools: Iterable[Callable[..., Any]]) -> None:
        self._registry = ToolRegistry(tools)

    @property
    def backend(self) -> Backend:
        return self._res.get_backend()

    def system_prompt(self) -> str:
        """The tools as Python stubs, with how to call them: the prompt for an LLM."""
        return self._registry.system_prompt()

    def tool_definition(
        self,
        format: str = "openai",
        *,
        tools: Iterable[Any] | None = None,
        name: str = TOOL_NAME,
    ) -> dict[str, Any]:
        """The Code Mode tool (`run_code`, described by the prompt) in the shape an LLM API
        takes: "openai", "openai-responses", "anthropic" or "mcp" (tools/definition.py)."""
        prompt = self.system_prompt() if tools is None else ToolRegistry(tools).system_prompt()
        return definition(prompt, format, name)

    def handle_tool_call(self, arguments: str | dict[str, Any] | None, **options: Any) -> str:
        """Run a `run_code` call from an LLM (its arguments, a dict or a JSON string) and
        return the text to send back as the tool result (agents/llm_tool.py)."""
        if CodeMode.tool_call_handler is None:
            raise RuntimeError("no tool call handler: import codemode_jupyter first")
        return CodeMode.tool_call_handler(self, arguments, **options)

    def status(self) -> dict[str, Any]:
        """Backend, isolation, whether a runtime is alive, and how many runs it has served."""
        backend = self.backend.status()
        return {
            "backend": backend.backend,
            "isolation": backend.isolation,
            "protocol": self.protocol,
            "runtime_alive": bool(self._conn and self._conn.alive),
            "spare_runtime": self._res.spare.state if self._res.spare else "off",
            "runs": len(self.history),
            "tools": self._registry.names(),
            **backend.details,
        }

    def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_tool_calls: int | None = None,
        on_event: ev.EventCallback | None = None,
        tools: Iterable[Any] | None = None,
        fresh: bool = False,
        files: Iterable[Any] | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> RunResult:
        """Run `code` once in the sandbox and return what happened.

        `files`: host files or folders ("path" or "path:dest") copied into the sandbox's work
        dir first (a missing one raises FileNotFoundError before anything runs).
        `inputs`: variable names to JSON values, bound before the program runs (its text is
        sent as it is: `from __future__` imports stay first).

        Sync tools run on this thread. A KeyboardInterrupt while waiting stops the program,
        records the interrupted result in `last_result`, and is raised again.
        """
        if self._closed:
            raise RuntimeError("this CodeMode is closed")
        if not isinstance(code, str):
            raise ValueError(f"code must be a str, not {type(code).__name__}")
        limits = (
            self.timeout if timeout is None else options.positive_seconds("timeout", timeout),
            self.max_tool_calls
            if max_tool_calls is None
            else options.count("max_tool_calls", max_tool_calls),
        )
        registry = ToolRegistry(tools) if tools is not None else self._registry
        inputs = check_inputs(inputs, set(registry.names()))  # bad ones fail before the run
        files = list(files or ())
        if files:
            self.rich.uploads(False, files)  # checked now: a missing file fails before the run
        packages_mod.install_pending(self)  # raises PackageInstallError with pip's output
        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("a program is already running in this CodeMode session")
        try:
            if self.protocol == "replay":
                result = self._run_replay(code, registry, limits, on_event, inputs)
            elif self.pin_cpu:
                with self._pinned():
                    result = self._run_session(
                        code, registry, limits, on_event, fresh, files, inputs
                    )
            else:
                result = self._run_session(code, registry, limits, on_event, fresh, files, inputs)
        finally:
            self._run_lock.release()
        return result

    @contextmanager
    def _pinned(self) -> Iterator[None]:
        """Hold the calling thread on one CPU for the run (pin_cpu); a runtime and an I/O
        thread started meanwhile inherit that CPU."""
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {max(before)})
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)

    def note_debugger_in_tool(self) -> None:
        """The sync tool running now stopped in a debugger: its time will not count against
        the run's timeout (called by the Jupyter breakpoint hook)."""
        run = self._current
        if run is not None:
            run.debugging = True

    @contextmanager
    def paused(self) -> Iterator[None]:
        """While inside, the current run waits for a person (an approval of an async call):
        its timeout does not run. Callable from any thread; overlapping pauses count once."""
        run = self._current
        if run is None:
            yield
            return
        run.pause()
        try:
            yield
        finally:
            run.resume()

    def cancel(self) -> None:
        """Stop the running program (from any thread); it ends within about a second."""
        run = self._current
        if run is not None:
            run.cancel_requested = True
            conn = run.connection
            if conn is not None:
                conn.post(Inbox.CANCEL, run)

    def reset(self) -> None:
        """A fresh namespace for the next run (the runtime restarts if it will not reset).

        Refused while a program runs: cancel it first, or wait for it.
        """
        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError(
                "cannot reset while a program is running in this session; "
                "cancel() it or wait for it to end"
            )
        try:
            self._reset_namespace()
        finally:
            self._run_lock.release()

    def _reset_namespace(self) -> None:
        conn = self._conn
        if conn is None or not conn.alive:
            return
        conn.lead()  # this thread reads the answer, as a run's does: no wait for the I/O thread
        try:
            if self._await_reset(conn):
                return
        finally:
            conn.follow()
        self._drop_runtime()

    @staticmethod
    def _await_reset(conn: RuntimeConnection) -> bool:
        """Ask the runtime to reset; whether it did (False: it cannot, or did not answer)."""
        conn.send({"t": P.RESET})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = conn.next_message(deadline - time.monotonic())
            if message is None or message[0] is Inbox.EOF:
                return False
            if message[0] is Inbox.RESET_DONE:
                # clean false: threads of the last program still run, only a new runtime is fresh
                return message[1].get("clean", True) is not False
        return False

    def close(self) -> None:
        """Stop the runtime and release the sandbox. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def __enter__(self) -> CodeMode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one run -----------------------------------------------------------------------

    def sandbox_changed(self) -> None:
        """The backend's set-up changed (a mount was added): the next run starts a runtime
        made with it, and the spare is made anew."""
        self._drop_runtime()
        self._status_cache = None
        if self._res.spare is not None:
            self._res.spare.renew()

    def _run_status(self) -> BackendStatus:
        """The backend's name and isolation, as each run reports them: asked once (a full
        status() looks at the jail's files and packages, too slow for every run)."""
        backend = self.backend
        cached = self._status_cache
        if cached is None or cached[0] is not backend:
            full = backend.status()
            cached = self._status_cache = (backend, BackendStatus(full.backend, full.isolation))
        return cached[1]

    def _drop_runtime(self) -> None:
        conn, self._res.conn = self._res.conn, None
        if conn is not None:
            conn.close()

    def _connection(self, fresh: bool, timeout: float) -> tuple[RuntimeConnection, bool, str]:
        """The live runtime (started if needed, within `timeout`), whether it is new, and, if
        the previous one ended between runs, how it ended (its state is gone: the run must
        say so)."""
        lost = ""
        conn = self._conn
        if conn is not None and not conn.alive:
            lost = conn.fault or conn.transport.exit_info()
            self._drop_runtime()
        if fresh:
            self._drop_runtime()
        if self._conn is None:
            self._res.conn = self._res.connect(timeout, self.max_output)
            return self._res.conn, True, lost
        return self._conn, False, lost

    def _run_replay(
        self,
        code: str,
        registry: ToolRegistry,
        limits: tuple[float, int],
        on_event: ev.EventCallback | None,
        inputs: dict[str, Any] | None = None,
    ) -> RunResult:
        run = RunState(on_event, self.max_output)
        status = self.backend.status()
        run.emit(ev.RunStarted(status.backend, status.isolation, True))
        outcome = run_replay(self.backend, code, registry, limits, run, inputs)
        return self._finish(run, outcome, status)

    def _run_session(
        self,
        code: str,
        registry: ToolRegistry,
        limits: tuple[float, int],
        on_event: ev.EventCallback | None,
        fresh: bool,
        files: Iterable[Any] | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> RunResult:
        run = RunState(on_event, self.max_output)
        self._runs_started += 1
        run.rich, run.files = RichRun(self.rich, self._runs_started, run.emit), files
        status = self._run_status()
        self._current = run
        try:
            return self._start_and_serve(run, code, registry, limits, status, fresh, inputs)
        except KeyboardInterrupt:
            raise
        except BackendConfigError:
            raise
        except Exception as exc:  # an engine fault must not escape run(): the run fails
            self._drop_runtime()
            error = RunError(
                "EngineError",
                f"the host failed serving the program "
                f"({type(exc).__name__}: {exc}); its runtime was replaced",
                traceback.format_exc(),
            )
            return self._finish(run, Outcome("crashed", error, state_lost=True), status)
        finally:
            self._current = None
            self._res.refill()
