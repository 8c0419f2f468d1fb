"""The pool's workers (pool/scheduler.py's `Pool` drives them): the shared state, one thread
per sandbox, attempts and retries, creation pacing, and closing at exit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from codemode_jupyter.backends import BackendConfigError
from codemode_jupyter.engine.session import CodeMode
from codemode_jupyter.model.result import RunError, RunResult
from codemode_jupyter.pool.breaker import CircuitBreaker
from codemode_jupyter.pool.stats import PoolStats
from codemode_jupyter.pool.tasks import Attempt, Task, TaskResult
from codemode_jupyter.pool.tools import HostTools
from codemode_jupyter.support.exit_hooks import at_exit, exit_on_sigterm

#: The label every sandbox of one pool carries, on backends that label their sandboxes (with
#: the backend's usual ones, so `%codemode cleanup` and `codemode-jupyter cleanup` find them).
POOL_LABEL = "codemode-jupyter-pool"
STATUSES = ("ok", "error", "timeout", "interrupted", "crashed", "limit")
_START_FAILED = "the runtime could not be started"
#: How the engine ends a crash's message; a pool's next attempt is its own, not "the next run".
_ENGINE_CRASH_TAIL = "; its state was lost, and the next run starts a fresh runtime"
_MAX_BACKOFF = 30.0
_CLOSE_WAIT = 10.0  # seconds close() waits for running tasks to stop before closing anyway


class _Stopped(Exception):
    """The pool is closing (or the task was cancelled): the task does not run again."""


class _HandBack(Exception):
    """The circuit breaker is open and other sandboxes are warm: they take the task (with
    what it has so far), and the worker that could not start one ends."""

    def __init__(self, outcome: TaskResult) -> None:
        super().__init__()
        self.outcome = outcome


@dataclass(frozen=True)
class _RunOptions:
    timeout: float | None
    max_tool_calls: int | None
    max_attempts: int
    retry_on: frozenset[str]
    fresh: bool
    epoch: int  # the pool's cancel count when the task was submitted


class CreationPacer:
    """Spaces sandbox creations `interval` seconds apart, and after a failed start holds the
    next creations back for `backoff` seconds, doubling while starts keep failing."""

    def __init__(
        self,
        interval: float,
        backoff: float,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval, self.backoff, self._stop, self._clock = interval, backoff, stop, clock
        self._next = 0.0
        self._failures = 0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Book the next creation slot; the seconds to wait for it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    def wait(self) -> float:
        """Wait for a creation slot (raises _Stopped if the pool closes meanwhile)."""
        delay = self.reserve()
        if delay > 0 and self._stop.wait(delay):
            raise _Stopped
        return delay

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            hold = min(self.backoff * 2 ** (self._failures - 1), _MAX_BACKOFF)
            self._next = max(self._next, self._clock() + hold)

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0


class _Sandbox:
    def __init__(self, name: str, session: CodeMode) -> None:
        self.name = name
        self.session = session
        self.started = False  # a runtime came up in it at least once
        self.used = False  # a task ran in it: the next one needs a fresh namespace

    @property
    def backend_id(self) -> str:
        with contextlib.suppress(Exception):
            return str(self.session.status().get("sandbox", ""))
        return ""


class _State:
    """What the pool's threads and its finalizer share; never the Pool itself, so an
    abandoned pool is collected, and then closed."""

    def __init__(
        self,
        size: int,
        make_session: Callable[[], CodeMode],
        tools: HostTools,
        pacer: CreationPacer,
        breaker: CircuitBreaker,
        stop: threading.Event,
        backend: str,
    ) -> None:
        self.size = size
        self.make_session = make_session
        self.tools = tools
        self.pacer = pacer
        self.breaker = breaker
        self.stop = stop
        self.backend = backend
        self.stats = PoolStats()
        #: (future, task, options, its outcome so far if it was handed back), or None: stop
        self.queue: queue.SimpleQueue[
            tuple[concurrent.futures.Future, Task, _RunOptions, TaskResult | None] | None
        ] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.workers: list[threading.Thread] = []
        self.idle = 0
        self.queued: set[concurrent.futures.Future] = set()
        self.sandboxes: set[_Sandbox] = set()
        self.busy: set[_Sandbox] = set()
        self.names = itertools.count(1)
        self.epoch = 0
        self.fatal: BaseException | None = None
        self.closed = False

    # --- work ---

    def enqueue(self, task: Task, opts: _RunOptions) -> concurrent.futures.Future:
        future: concurrent.futures.Future[TaskResult] = concurrent.futures.Future()
        with self.lock:
            if self.fatal is not None:
                raise self.fatal
            if self.closed:
                raise RuntimeError("this Pool is closed")
            self.queued.add(future)
            self.queue.put((future, task, opts, None))
            if len(self.workers) < self.size and len(self.queued) > self.idle:
                name = f"codemode-pool-{len(self.workers) + 1}"
                # A daemon: interpreter exit never waits for a run (the finalizer stops them).
                worker = threading.Thread(target=self.work, name=name, daemon=True)
                self.workers.append(worker)
                worker.start()
        return future

    def work(self) -> None:
        """A worker: one sandbox, kept warm across the tasks it takes from the queue."""
        sandbox: _Sandbox | None = None
        while True:
            with self.lock:
                self.idle += 1
            item = self.queue.get()
            with self.lock:
                self.idle -= 1
            if item is None:
                break
            future, task, opts, prior = item
            with self.lock:
                self.queued.discard(future)
            # A task handed back is running already (a Future cannot go back to pending).
            if prior is None and not future.set_running_or_notify_cancel():
                continue
            try:
                outcome, sandbox = self.execute(task, opts, sandbox, prior)
            except _HandBack as back:
                self.hand_back(future, task, opts, back.outcome)
                return  # no sandbox to close: it could not start one
            except BaseException as exc:  # the pool's fatal error, or a bug: the caller sees it
                future.set_exception(exc)
            else:
                self.stats.task(outcome)
                future.set_result(outcome)
        if sandbox is not None:
            self.retire(sandbox)

    def hand_back(
        self, future: concurrent.futures.Future, task: Task, opts: _RunOptions, outcome: TaskResult
    ) -> None:
        """Queue `task` again for a warm sandbox's worker, and end this worker."""
        with self.lock:
            self.workers.remove(threading.current_thread())
            if not self.closed:
                self.queued.add(future)
                self.queue.put((future, task, opts, outcome))
                return
        self.stats.task(outcome)  # closing: what it has so far is its result
        future.set_result(outcome)

    def execute(
        self,
        task: Task,
        opts: _RunOptions,
        sandbox: _Sandbox | None,
        outcome: TaskResult | None = None,
    ) -> tuple[TaskResult, _Sandbox | None]:
        """Run `task` until it has a result, on `sandbox` or new ones; the sandbox to keep.
        `outcome`: what the task has so far (handed back by another worker)."""
        outcome = outcome or TaskResult(task.index, task.id, task.inputs, None)
        started = time.monotonic() - outcome.duration
        while True:
            if self.fatal is not None:
                raise self.fatal
            if self.closed or opts.epoch < self.epoch:
                break  # cancelled: what ran so far is kept
            outage = self._admit(sandbox, opts)
            if outage is not None:
                if self._others_warm(sandbox):
                    outcome.duration = time.monotonic() - started
                    raise _HandBack(outcome)
                outcome.result = self._outage(outage)
                break
            try:
                sandbox, queued = self._ready(sandbox, opts)
                result = self._attempt(sandbox, task, opts)
            except _Stopped:
                break
            finally:  # a probe that gave no verdict (stopped, or a bug) lets another probe
                self.breaker.release(threading.current_thread())
            outcome.result = result
            outcome.attempts.append(
                Attempt(
                    sandbox.name,
                    sandbox.backend_id,
                    result.status,
                    str(result.error or ""),
                    result.duration,
                    queued,
                )
            )
            start_failed = _start_failed(result)
            if start_failed or (result.status == "crashed" and not _sandbox_ok(sandbox)):
                self.retire(sandbox)  # replaced: the next attempt gets a new one
                self.stats.sandbox_replaced()
                sandbox = None
            elif result.status == "crashed":
                self.stats.runtime_restarted()  # the engine starts a fresh runtime in it
            if not self._again(outcome, opts, start_failed):
                if _retryable(outcome, opts, start_failed):
                    _say_gave_up(outcome)
                break
        outcome.duration = time.monotonic() - started
        return outcome, sandbox

    def _admit(self, sandbox: _Sandbox | None, opts: _RunOptions) -> str | None:
        """The circuit breaker's word before a new sandbox starts (a warm one needs none)."""
        if sandbox is not None and sandbox.started:
            return None
        return self.breaker.admit(
            threading.current_thread(), lambda: self.closed or opts.epoch < self.epoch
        )

    def _others_warm(self, mine: _Sandbox | None) -> bool:
        """Whether another worker holds a sandbox that has started (and needs no start)."""
        with self.lock:
            return any(s.started and s is not mine for s in self.sandboxes)

    def _outage(self, why: str) -> RunResult:
        """The result of a task the open circuit breaker stopped before it ran."""
        self.stats.task_failed_fast()
        return RunResult(
            ok=False,
            status="crashed",
            error=RunError("ServiceUnavailable", why),
            backend=self.backend,
            state_lost=True,
        )

    def _ready(self, sandbox: _Sandbox | None, opts: _RunOptions) -> tuple[_Sandbox, float]:
        """A sandbox for the next attempt (new ones wait for their creation slot)."""
        queued = 0.0
        if sandbox is None:
            with self.lock:
                if self.closed:
                    raise _Stopped
                sandbox = _Sandbox(f"sandbox-{next(self.names)}", self.make_session())
                self.sandboxes.add(sandbox)
        if not sandbox.started:
            queued = self.pacer.wait()
        elif sandbox.used and not opts.fresh:
            sandbox.session.reset()  # a fresh namespace: nothing leaks from the last task
        return sandbox, queued

    def _attempt(self, sandbox: _Sandbox, task: Task, opts: _RunOptions) -> RunResult:
        with self.lock:
            if self.closed:
                raise _Stopped
            self.busy.add(sandbox)
        try:
            result = sandbox.session.run(
                task.code,
                timeout=opts.timeout,
                max_tool_calls=opts.max_tool_calls,
                fresh=opts.fresh and sandbox.used,
                inputs=task.inputs,
            )
        except BackendConfigError as exc:
            self.fail(exc)
            raise
        finally:
            with self.lock:
                self.busy.discard(sandbox)
        sandbox.used = True
        self.stats.attempt(result.tool_calls)
        if _start_failed(result):
            self.pacer.failed()
            self.breaker.failed(threading.current_thread(), str(result.error))
        elif not sandbox.started:
            sandbox.started = True
            self.stats.sandbox_started()
            self.pacer.succeeded()
            self.breaker.succeeded()
        return result

    def _again(self, outcome: TaskResult, opts: _RunOptions, start_failed: bool) -> bool:
        if len(outcome.attempts) >= opts.max_attempts or self.closed or opts.epoch < self.epoch:
            return False
        # A program that never started has not run: retrying it loses and repeats nothing.
        return start_failed or outcome.status in opts.retry_on

    # --- stopping ---

    def retire(self, sandbox: _Sandbox) -> None:
        with self.lock:
            self.sandboxes.discard(sandbox)
        with contextlib.suppress(Exception):
            sandbox.session.close()

    def cancel(self) -> None:
        """Cancel the queued tasks and stop the running ones (they end `interrupted`)."""
        with self.lock:
            self.epoch += 1
            queued, self.queued = list(self.queued), set()
            busy = list(self.busy)
        for future in queued:
            future.cancel()
        for sandbox in busy:
            sandbox.session.cancel()

    def fail(self, exc: BaseException) -> None:
        """An error no retry can fix: every task stops, later submits raise it."""
        with self.lock:
            if self.fatal is None:
                self.fatal = exc
        self.cancel()

    def shutdown(self) -> None:
        """Stop everything and close every sandbox (idempotent; also the finalizer)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            workers = list(self.workers)
        self.stop.set()
        self.cancel()
        for _ in workers:
            self.queue.put(None)
        deadline = time.monotonic() + _CLOSE_WAIT
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(timeout=max(0.0, deadline - time.monotonic()))
        with self.lock:
            left, self.sandboxes = list(self.sandboxes), set()
        # In parallel: closing a remote sandbox is a request or two each.
        closers = [
            threading.Thread(target=_close_quietly, args=(s.session,), daemon=True) for s in left
        ]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join(timeout=max(1.0, deadline - time.monotonic()))
        self.tools.close()


_LIVE: weakref.WeakSet[_State] = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hooked = False


def _close_live_pools() -> None:
    for state in list(_LIVE):
        state.shutdown()


def _hook_exit() -> None:
    """Close the pools still open when the interpreter exits (a kernel shutting down, a
    script ended by SIGTERM: exit_on_sigterm)."""
    global _exit_hooked
    exit_on_sigterm()  # each time: only a pool made on the main thread can install it
    with _exit_hook_lock:
        if _exit_hooked:
            return
        _exit_hooked = True
    at_exit(_close_live_pools)


def _close_quietly(session: CodeMode) -> None:
    with contextlib.suppress(Exception):
        session.close()


def _start_failed(result: RunResult) -> bool:
    return result.error is not None and result.error.message.startswith(_START_FAILED)


def _sandbox_ok(sandbox: _Sandbox) -> bool:
    """After a crash: whether the sandbox itself is fine (only its runtime died)."""
    try:
        return sandbox.session.backend.sandbox_ok()
    except Exception:
        return False


def _retryable(outcome: TaskResult, opts: _RunOptions, start_failed: bool) -> bool:
    """The last attempt was a fault that is retried (a crash, a failed start), and only the
    attempt cap stopped it. (A program's own error, retried as `retry_on` asks, keeps its
    message as the program raised it.)"""
    return len(outcome.attempts) >= opts.max_attempts and (
        start_failed or (outcome.status == "crashed" and "crashed" in opts.retry_on)
    )


def _say_gave_up(outcome: TaskResult) -> None:
    """The final error says that the pool gave up, after how many attempts, and why."""
    error = outcome.error
    if error is None:
        return
    cause = error.message.removesuffix(_ENGINE_CRASH_TAIL)
    count = len(outcome.attempts)
    noun = "attempt" if count == 1 else "attempts"
    error.message = f"the pool gave up after {count} {noun}; the last: {cause}"
