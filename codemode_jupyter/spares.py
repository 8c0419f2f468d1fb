"""A runtime started ahead of need, so a session's next runtime does not wait for a start.

A jailed python takes 50-90 ms to start; a spare started in the background as soon as a session
exists (and again each time one is taken) makes the first run, a `fresh=True` run and the run
after a crash start at once. A spare is a runtime like any other: its own process, its own
namespace, its own private home, never used before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .backends import Transport

# Spares are started on threads that live as long as the process: a jail dies with the thread
# that started it (bubblewrap's --die-with-parent is the parent *thread's* death signal), so a
# short-lived thread would take its spare with it when it ends.
_launcher: ThreadPoolExecutor | None = None
_launcher_lock = threading.Lock()


def _launch(fn: Callable[[], None]) -> None:
    global _launcher
    with _launcher_lock:
        if _launcher is None:
            _launcher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="codemode-spare")
        _launcher.submit(fn)


class SpareRuntime:
    """Holds at most one started runtime; `take` hands it over and starts the next."""

    def __init__(self, start: Callable[[], Transport]) -> None:
        self._start = start
        self._lock = threading.Condition()
        self._ready: Transport | None = None
        self._starting = False
        self._closed = False
        self.problem = ""  # why the last start failed, if it did

    @property
    def state(self) -> str:
        """'ready', 'starting' or 'none', for status()."""
        with self._lock:
            return "ready" if self._ready else "starting" if self._starting else "none"

    def fill(self) -> None:
        """Start a spare in the background unless one is ready or on its way."""
        with self._lock:
            if self._closed or self._ready is not None or self._starting:
                return
            self._starting = True
        _launch(self._start_one)

    def _start_one(self) -> None:
        transport, problem = None, ""
        try:
            transport = self._start()
        except Exception as exc:  # the next run starts its own runtime and reports the fault
            problem = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._starting = False
            self.problem = problem
            if self._closed and transport is not None:
                transport.kill()
                transport = None
            self._ready = transport
            self._lock.notify_all()

    def wait_ready(self, timeout: float | None) -> Transport | None:
        """The spare once it is up (not handed over: it stays the spare), or None."""
        with self._lock:
            self._lock.wait_for(lambda: not self._starting, timeout)
            return self._ready

    def take(self, timeout: float | None) -> Transport | None:
        """The spare (waiting up to `timeout` for one being started), or None; then start the
        next one."""
        with self._lock:
            if self._starting:
                self._lock.wait_for(lambda: not self._starting, timeout)
            transport, self._ready = self._ready, None
        if transport is not None and not transport.alive():
            transport.kill()
            transport = None
        self.fill()
        return transport

    def close(self) -> None:
        """Kill the spare; one still starting is killed as soon as it is up."""
        with self._lock:
            self._closed = True
            transport, self._ready = self._ready, None
        if transport is not None:
            transport.kill()
