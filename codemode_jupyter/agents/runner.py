"""Agent programs run one at a time, in order, on a thread of their own.

Sync tools run on the thread that calls `CodeMode.run`, so agent programs get a dedicated
thread: the server's event loop stays free, and in a kernel the main thread stays free for
the person's cells and for widget clicks (approval cards).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from codemode_jupyter.agents.approval import ApprovalGate, ClientAsk
from codemode_jupyter.engine.session import CodeMode
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.result import RunError, RunResult

SessionSource = CodeMode | Callable[[], CodeMode]
#: Called with (job, event) for every event of every agent run (the feed, the server's log).
Observer = Callable[["Job", ev.Event], None]
#: Entered on the agent thread around each job's run (the feed captures tools' prints).
RunContext = Callable[["Job"], AbstractContextManager[Any]]


@dataclass
class Job:
    """One program an agent sent, queued or running."""

    id: int
    code: str
    reset: bool = False
    on_event: ev.EventCallback | None = None
    future: Future = field(default_factory=Future)
    cancelled: bool = False
    #: Asks the agent's client about guarded calls (MCP elicitation), when it can be asked.
    client_ask: ClientAsk | None = None
    #: The name of the session it runs in (`agent`, `agent-1`, ...).
    session_name: str = ""


class AgentRunner:
    """Runs jobs in order on one thread. `session` is a CodeMode or a factory called before
    each run (so a closed named session can be replaced); `tools`, if given, is called before
    each run for the current tool list (a notebook's functions change). `name` is the
    session's name; `ids` numbers jobs (shared by a server's runners: a run's id is unique)."""

    def __init__(
        self,
        session: SessionSource,
        *,
        tools: Callable[[], Iterable[Any] | None] | None = None,
        gate: ApprovalGate | None = None,
        observers: Iterable[Observer] = (),
        run_context: RunContext | None = None,
        name: str = "agent",
        ids: Iterable[int] | None = None,
    ) -> None:
        self.name = name
        self._session = session
        self._run_context = run_context
        self._tools = tools
        self.gate = gate
        self.observers: list[Observer] = list(observers)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._ids = iter(ids) if ids is not None else itertools.count(1)
        self._current: Job | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def session(self) -> CodeMode:
        return self._session if isinstance(self._session, CodeMode) else self._session()

    @property
    def started(self) -> bool:
        """Whether a program was ever sent to it."""
        return self._thread is not None

    @property
    def idle(self) -> bool:
        """No program runs and none waits."""
        with self._lock:
            return self._current is None and self._jobs.empty()

    def current_tools(self) -> list[Any] | None:
        """The tools agent programs get now (None: the session's own)."""
        listed = None if self._tools is None else self._tools()
        return None if listed is None else list(listed)

    def submit(
        self,
        code: str,
        *,
        reset: bool = False,
        on_event: ev.EventCallback | None = None,
        client_ask: ClientAsk | None = None,
    ) -> Job:
        """Queue a program; its future gives the RunResult."""
        job = Job(next(self._ids), code, reset, on_event, client_ask=client_ask)
        job.session_name = self.name
        with self._lock:
            if self._stopped:
                raise RuntimeError("the agent runner is stopped")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="codemode-agent-runs", daemon=True
                )
                self._thread.start()
            self._jobs.put(job)
        return job

    def cancel(self, job: Job) -> None:
        """Drop a queued job, or stop it if it runs (waiting approvals are rejected)."""
        job.cancelled = True
        job.future.cancel()
        with self._lock:
            running = self._current is job
        if running:
            if self.gate is not None:
                self.gate.withdraw_all("the run was cancelled")
            self.session().cancel()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running job, drop queued ones, and end the thread. Idempotent."""
        with self._lock:
            self._stopped = True
            thread, current = self._thread, self._current
        if current is not None:
            self.cancel(current)
        self._jobs.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stopped:
                self._drain()
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            with self._lock:
                self._current = job
            try:
                job.future.set_result(self._run(job))
            except BaseException as exc:
                job.future.set_exception(exc)
            finally:
                with self._lock:
                    self._current = None

    def _drain(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.cancel()

    def _run(self, job: Job) -> RunResult:
        session = self.session()

        def emit(event: ev.Event) -> None:
            for observer in list(self.observers):
                try:
                    observer(job, event)
                except Exception:
                    pass  # a broken view must not fail the agent's run
            if job.on_event is not None:
                job.on_event(event)

        tools = self.current_tools()
        gate = self.gate
        if gate is not None:
            tools = gate.guard(tools if tools is not None else session.tools, session)
            if job.client_ask is not None:
                gate.clients[id(session)] = job.client_ask
        context = self._run_context(job) if self._run_context is not None else nullcontext()
        try:
            with context:
                if job.reset:
                    session.reset()
                return session.run(job.code, on_event=emit, tools=tools)
        except RuntimeError as exc:
            if not any(word in str(exc) for word in _BUSY):
                raise
            result = busy_result(self.name, exc)
            emit(ev.RunFinished(result))
            return result
        finally:
            if gate is not None:
                gate.clients.pop(id(session), None)
                gate.withdraw_all("the run ended")


#: Words of the RuntimeErrors CodeMode raises when a program cannot start now.
_BUSY = ("already running", "while a program is running", "is closed")


def busy_result(name: str | None, exc: BaseException) -> RunResult:
    """The result of a program that could not start: the session runs another program (a
    person's cell) or is closed. A message for the model, no host traceback."""
    session = "the session" if name is None else f"the session {name!r}"
    message = (
        f"{session} is closed; nothing ran"
        if "closed" in str(exc)
        else f"{session} is busy: another program (a person's cell) is running in it; "
        "nothing ran. Send the program again when it has finished."
    )
    return RunResult(ok=False, status="error", error=RunError("SessionBusy", message))
