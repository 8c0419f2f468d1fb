"""A runtime started ahead of need, so a session's next runtime does not wait for a start.

A jailed python takes 50-90 ms to start; a spare started in the background as soon as a session
exists (and again each time one is taken) makes the first run, a `fresh=True` run and the run
after a crash start at once. A spare is a runtime like any other: its own process, its own
namespace, its own private home, never used before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from codemode_jupyter.engine.connection import RuntimeConnection

#: How long a spare may take to say it is ready before it is given up (and killed).
READY_WAIT = 30.0
#: After a session's first run took the spare, the next one starts once no run has ended for
#: this long: runs back to back keep the CPU that a starting python would take from them.
QUIET = 0.5

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

    def __init__(self, start: Callable[[], RuntimeConnection]) -> None:
        self._start = start
        self._lock = threading.Condition()
        self._ready: RuntimeConnection | None = None
        self._starting = False
        self._closed = False
        self._generation = 0  # bumped when the sandbox's set-up changes: older spares are stale
        self._timer: threading.Timer | None = None  # a fill waiting for the session to be quiet
        self._last_run = 0.0
        self.problem = ""  # why the last start failed, if it did

    @property
    def state(self) -> str:
        """'ready', 'starting' or 'none', for status()."""
        with self._lock:
            if self._ready:
                return "ready"
            return "starting" if self._starting or self._timer else "none"

    def fill(self) -> None:
        """Start a spare in the background unless one is ready or on its way."""
        with self._lock:
            if self._closed or self._ready is not None or self._starting:
                return
            self._starting = True
            timer, self._timer = self._timer, None  # a fill waiting for quiet is this one
        if timer is not None:
            timer.cancel()
        _launch(self._start_one)

    def fill_when_quiet(self) -> None:
        """As fill(), once no run has ended for QUIET seconds (call it as each run ends)."""
        with self._lock:
            self._last_run = time.monotonic()
            if self._closed or self._ready is not None or self._starting or self._timer:
                return
            self._arm(QUIET)

    def _arm(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._when_quiet)
        self._timer.name, self._timer.daemon = "codemode-spare-timer", True
        self._timer.start()

    def _when_quiet(self) -> None:
        with self._lock:
            if self._timer is None or self._closed:
                return
            left = self._last_run + QUIET - time.monotonic()
            if left > 0:
                self._arm(left)
                return
            self._timer = None
        self.fill()

    def _fill_now(self) -> None:
        """A fill waiting for quiet starts now (someone waits for the spare)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            self.fill()

    def _start_one(self) -> None:
        with self._lock:
            generation = self._generation
        conn, problem = None, ""
        try:
            conn = self._start()
            # Up means its ready frame came: python has started and the runtime listens.
            if not conn.ready.wait(READY_WAIT) or not conn.alive:
                problem = conn.fault or "the spare runtime did not become ready"
                conn.close()
                conn = None
        except Exception as exc:  # the next run starts its own runtime and reports the fault
            problem = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._starting = False
            self.problem = problem
            stale = generation != self._generation
            if (self._closed or stale) and conn is not None:
                conn.close()
                conn = None
            self._ready = conn
            self._lock.notify_all()
        if stale:
            self.fill()

    def renew(self) -> None:
        """The sandbox's set-up changed (a mount was added): drop the spare, start a new one."""
        with self._lock:
            self._generation += 1
            conn, self._ready = self._ready, None
        if conn is not None:
            conn.close()
        self.fill()

    def wait_ready(self, timeout: float | None) -> RuntimeConnection | None:
        """The spare once it is up (not handed over: it stays the spare), or None."""
        self._fill_now()
        with self._lock:
            self._lock.wait_for(lambda: not self._starting, timeout)
            return self._ready

    def take(self, timeout: float | None, refill: bool = True) -> RuntimeConnection | None:
        """The spare (waiting up to `timeout` for one being started), or None; then start the
        next one, unless `refill` is False (the caller calls fill() once its run is over: a
        python starting meanwhile would take the CPU that run needs)."""
        with self._lock:
            if self._starting:
                self._lock.wait_for(lambda: not self._starting, timeout)
            conn, self._ready = self._ready, None
        if conn is not None and not (conn.alive and conn.transport.alive()):
            conn.close()
            conn = None
        if refill:
            self.fill()
        return conn

    def close(self) -> None:
        """Kill the spare; one still starting is killed as soon as it is up, and waited for."""
        with self._lock:
            self._closed = True
            conn, self._ready = self._ready, None
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            # One still starting is closed by its starter: wait for that, so a closed session
            # leaves no process or fd behind when close() returns.
            self._lock.wait_for(lambda: not self._starting, READY_WAIT)
        if conn is not None:
            conn.close()
        if timer is not None and timer is not threading.current_thread():
            timer.join()  # cancelled: it ends at once, and leaves no thread behind
