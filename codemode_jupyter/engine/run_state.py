"""One run while it goes (`RunState`) and how it ended (`Outcome`).

Shared by the session engine and the replay fallback: both record output and calls here, and
`RunState.result` is the one place a RunResult is assembled.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from codemode_jupyter.backends import BackendStatus
from codemode_jupyter.engine.rich_run import RichRun
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.output import CappedText
from codemode_jupyter.model.result import Preview, RunError, RunResult, ToolCall


class _RunIds:
    """Random run ids (24 hex digits each), read from the OS's CSPRNG 256 at a time: one
    urandom call per run cost a tenth of a warm empty run's host time."""

    PER_READ = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[str] = []

    def next(self) -> str:
        with self._lock:
            if not self._ids:
                pool = os.urandom(12 * self.PER_READ).hex()
                self._ids = [pool[i : i + 24] for i in range(0, len(pool), 24)]
            return self._ids.pop()

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._ids = []


_run_ids = _RunIds()
if hasattr(os, "register_at_fork"):  # a forked process draws its own ids
    os.register_at_fork(after_in_child=_run_ids.forget)


@dataclass
class Outcome:
    """How a run ended: its status (as RunResult.status), and the program's value or error."""

    status: str
    error: RunError | None = None
    value: Any = None
    value_repr: str | None = None
    state_lost: bool = False  # the runtime was replaced: the program's state is gone
    value_bundle: dict | None = None  # the value's rich representation (MIME bundle)

    @classmethod
    def from_done(cls, frame: dict) -> Outcome:
        """What a `done` frame reports (the replay's last line has the same fields)."""
        error = None
        if not frame.get("ok"):
            raw = frame.get("error") or {}
            error = RunError(
                raw.get("type", "Error"), raw.get("message", ""), raw.get("traceback", "")
            )
        return cls(
            "ok" if error is None else "error",
            error,
            frame.get("value"),
            frame.get("repr"),
            value_bundle=frame.get("bundle"),
        )


class RunState:
    """The state of one run while it goes."""

    def __init__(self, on_event: ev.EventCallback | None, max_output: int) -> None:
        # Unguessable, so nothing a program left running can forge the next run's frames.
        self.id = _run_ids.next()
        self.on_event = on_event
        self.stdout = CappedText(max_output)
        self.stderr = CappedText(max_output)
        self.calls: list[ToolCall] = []
        self.wire_ids: dict[int, int] = {}  # per-run call id -> the runtime's id for the call
        self.in_flight: set[int] = set()
        self.async_calls: list[Future] = []
        self.unsent: list[bytes] = []
        self.rounds = 0
        self.executions = 1  # the replay fallback runs the program once per tool round
        self.previews: list[Preview] = []
        self.preview_ports: set[int] = set()
        self.started = time.perf_counter()
        self.state_lost = False
        self.paused = 0.0  # time spent in a debugger inside tools: not counted by the timeout
        self.paused_lock = threading.Lock()
        self.pauses = 0  # pauses going on now (async calls waiting for a person)
        self.pause_started = 0.0
        self.debugging = False
        self.listener_failure = ""
        self.connection: Any = None  # the RuntimeConnection, once the run has one
        self.cancel_requested = False
        self.rich: RichRun | None = None  # displays and artifacts (session runs)
        self.files: Iterable[Any] | None = None  # uploaded before this run

    def display(self, frame: dict) -> None:
        """A display frame (from the I/O thread, in order with output)."""
        if self.rich is not None:
            self.rich.display(frame)

    def artifact(self, frame: dict) -> None:
        """A chunk of a file the program left under outputs/ (from the I/O thread)."""
        if self.rich is not None:
            self.rich.artifact(frame)

    def emit(self, event: ev.Event) -> None:
        """Tell the listener; a listener that fails is noted once and never stops the run."""
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception as exc:
            if not self.listener_failure:
                self.listener_failure = (
                    f"[codemode] the on_event listener raised {type(exc).__name__}: {exc} "
                    f"(on {type(event).__name__}); the run went on without it\n"
                )

    def output(self, stream: int, text: str) -> None:
        (self.stderr if stream == 2 else self.stdout).append(text)
        self.emit(ev.Output("stderr" if stream == 2 else "stdout", text))

    def pause(self) -> None:
        with self.paused_lock:
            self.pauses += 1
            if self.pauses == 1:
                self.pause_started = time.perf_counter()

    def resume(self) -> None:
        with self.paused_lock:
            self.pauses -= 1
            if self.pauses == 0:
                self.paused += time.perf_counter() - self.pause_started

    def cancel_async_calls(self) -> None:
        """A run's async calls end with it: no late result can reach a later run."""
        for future in self.async_calls:
            future.cancel()
        self.async_calls.clear()

    def result(self, outcome: Outcome, status: BackendStatus) -> RunResult:
        """The run's RunResult, as it ended with `outcome` on a backend in `status`."""
        bundle = outcome.value_bundle
        if self.rich is not None:  # it counts against the display caps (before their note)
            bundle = self.rich.value_bundle(bundle)
        rich, notes = self.rich.finish() if self.rich is not None else ({}, [])
        for note in notes:
            self.stderr.append(note)
        if self.listener_failure:
            self.stderr.append(self.listener_failure)
        return RunResult(
            ok=outcome.status == "ok",
            status=outcome.status,
            stdout=self.stdout.text(),
            stderr=self.stderr.text(),
            value=outcome.value,
            value_repr=outcome.value_repr,
            error=outcome.error,
            tool_calls=self.calls,
            rounds=self.rounds,
            previews=self.previews,
            duration=time.perf_counter() - self.started,
            state_lost=outcome.state_lost or self.state_lost,
            stdout_dropped=self.stdout.dropped,
            stderr_dropped=self.stderr.dropped,
            backend=status.backend,
            isolation=status.isolation,
            executions=self.executions,
            value_bundle=bundle,
            **rich,
        )
