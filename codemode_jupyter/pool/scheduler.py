"""Many programs at once: a pool of sandboxes, each a CodeMode session, sharing the host's tools.

    with Pool(tools=[search], backend="local", size=4) as pool:
        results = pool.map("hits = search(q)\\nlen(hits)", inputs=[{"q": "a"}, {"q": "b"}])

Each sandbox is served by a thread of its own (the engine serves a run on the calling thread),
started lazily up to `size`. A thread keeps its sandbox warm between tasks and gives each task
a fresh namespace (`reset()`, or a fresh runtime with `fresh=True`).

Faults lose nothing: a run that ends `crashed` (the runtime died, the sandbox was deleted, the
host lost it) or whose runtime could not start is retried from the start, up to
`max_attempts`, and the TaskResult lists every attempt; the last one's error says when the pool
gave up. The retry gets a fresh runtime in the same sandbox if the backend says the sandbox
itself is fine (only the runtime died), else a new sandbox. A program's own error, a timeout
or a tool that raised is a result, not retried unless `retry_on` says so. A BackendConfigError
(a rejected API key) stops the whole pool at once. New sandboxes are paced
(`create_interval`) so that starting `size` of them does not trip a rate limit, and a start
that failed holds later creations back (doubling `start_backoff`); Daytona's own 429s are
retried by the backend as the server's Retry-After asks. After `breaker_failures` failed
starts in a row, the circuit breaker (breaker.py) fails the tasks that need a new sandbox
at once with the outage as their error (or, while other sandboxes are warm, hands them to
those), and probes the service again after `breaker_cooldown`.

Everything is closed on `close()` / leaving the `with`, on Ctrl-C or SIGTERM in map() (the
exception raised carries the finished results, `.results`), and at interpreter exit (kernel
shutdown, SIGTERM: exit_hooks.py) through a weakref finalizer.
"""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from codemode_jupyter.backends import BACKENDS, DEFAULT_BACKEND, backend_class, require_backend
from codemode_jupyter.engine import options as check
from codemode_jupyter.engine.session import CodeMode
from codemode_jupyter.pool.breaker import CircuitBreaker
from codemode_jupyter.pool.tasks import Task, TaskResult, check_inputs
from codemode_jupyter.pool.tools import HostTools
from codemode_jupyter.pool.workers import (
    _LIVE,
    POOL_LABEL,
    STATUSES,
    CreationPacer,
    _hook_exit,
    _RunOptions,
    _State,
)


class Pool:
    """Run many Code Mode programs concurrently over up to `size` sandboxes.

    `tools` are shared by every sandbox: sync ones run on `tool_workers` host threads (1 by
    default: notebook functions are rarely thread-safe), async ones on one host event loop.
    After `breaker_failures` failed sandbox starts in a row, tasks that need a new sandbox
    end at once (ServiceUnavailable) until a probe `breaker_cooldown` seconds later starts
    one. Other keyword arguments go to each sandbox's `CodeMode` (budgets, `network`,
    `memory_mb`, Daytona's `api_key`, `labels`, `retry`...).
    """

    def __init__(
        self,
        tools: Iterable[Callable[..., Any]] = (),
        backend: str = DEFAULT_BACKEND,
        *,
        size: int = 4,
        timeout: float = 60.0,
        max_attempts: int = 3,
        retry_on: Iterable[str] = ("crashed",),
        fresh: bool = False,
        tool_workers: int = 1,
        create_interval: float | None = None,
        start_backoff: float = 1.0,
        breaker_failures: int = 5,
        breaker_cooldown: float = 30.0,
        **options: Any,
    ) -> None:
        if not isinstance(backend, str):
            raise ValueError(
                f"a Pool's backend is a name ({' or '.join(map(repr, BACKENDS))}): each "
                "sandbox needs a backend of its own"
            )
        require_backend(backend)
        check.count("size", size, 1)
        check.count("tool_workers", tool_workers, 1)
        self._defaults = self._run_options(timeout, None, max_attempts, retry_on, fresh, 0)
        kind = backend_class(backend)
        # Unless told otherwise, as the backend paces creations (a service's rate limit).
        interval = kind.create_interval if create_interval is None else float(create_interval)
        if interval < 0 or start_backoff < 0 or breaker_cooldown < 0:
            raise ValueError(
                "create_interval, start_backoff and breaker_cooldown must be 0 or more seconds"
            )
        check.count("breaker_failures", breaker_failures, 1)
        self.id = uuid.uuid4().hex[:12]
        self.backend = backend
        self.size = size
        options = kind.labelled_options(options, {POOL_LABEL: self.id})
        # A spare runtime per sandbox pays off only when tasks take fresh runtimes.
        options.setdefault("spare", bool(fresh))
        # Bad options fail here, before any sandbox starts.
        CodeMode(backend=backend, timeout=timeout, **{**options, "spare": False}).close()
        tools_host = HostTools(tools, tool_workers)
        self._tool_names = tools_host.names
        stop = threading.Event()

        def make_session() -> CodeMode:
            return CodeMode(tools=tools_host.tools, backend=backend, timeout=timeout, **options)

        self._state = _State(
            size,
            make_session,
            tools_host,
            CreationPacer(interval, start_backoff, stop),
            CircuitBreaker(breaker_failures, float(breaker_cooldown)),
            stop,
            backend,
        )
        self._finalizer = weakref.finalize(self, self._state.shutdown)
        _LIVE.add(self._state)
        _hook_exit()

    @staticmethod
    def _run_options(
        timeout: float | None,
        max_tool_calls: int | None,
        max_attempts: int,
        retry_on: Iterable[str],
        fresh: bool,
        epoch: int,
    ) -> _RunOptions:
        if timeout is not None:
            timeout = check.positive_seconds("timeout", timeout)
        if max_tool_calls is not None:
            check.count("max_tool_calls", max_tool_calls)
        check.count("max_attempts", max_attempts, 1)
        retry = frozenset([retry_on] if isinstance(retry_on, str) else retry_on)
        unknown = retry - set(STATUSES)
        if unknown:
            raise ValueError(
                f"retry_on: unknown status {sorted(unknown)}; statuses are {', '.join(STATUSES)}"
            )
        return _RunOptions(timeout, max_tool_calls, max_attempts, retry, bool(fresh), epoch)

    # --- running ---

    def submit(
        self,
        code: str,
        inputs: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        **run_options: Any,
    ) -> concurrent.futures.Future:
        """Queue one program; its Future gives a TaskResult (or the pool's fatal error).

        `run_options`: timeout, max_tool_calls, max_attempts, retry_on, fresh (this task's,
        instead of the pool's).
        """
        task = self._task(0, code, inputs, id)
        return self._state.enqueue(task, self._options(run_options))

    def map(
        self,
        programs: str | Iterable[str],
        inputs: Iterable[dict[str, Any]] | None = None,
        **run_options: Any,
    ) -> list[TaskResult]:
        """Run each program (or one program once per item of `inputs`, whose keys are bound
        as variables); the TaskResults in input order.

        Ctrl-C (or SIGTERM) cancels what is left. Whatever stops map() (that, or the pool's
        fatal error) carries this map's results in `.results`, in input order: a finished
        task's TaskResult, and for each unfinished one a TaskResult with no result (status
        "cancelled"; it may have begun, so its tool calls may have happened).
        """
        futures = self._submit_all(programs, inputs, run_options)
        try:
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            self._raise_fatal()
            concurrent.futures.wait(futures)
            self._raise_fatal()
        except BaseException as exc:
            self.cancel()
            exc.results = [self._finished(f, task) for f, task in futures.items()]
            raise
        return [self._outcome(f, task) for f, task in futures.items()]

    def as_completed(
        self,
        programs: str | Iterable[str],
        inputs: Iterable[dict[str, Any]] | None = None,
        **run_options: Any,
    ) -> Iterator[TaskResult]:
        """As map(), but yields each TaskResult as it finishes (`.index` is its position).
        Closing the iterator early (or Ctrl-C) cancels the tasks not yet finished."""
        futures = self._submit_all(programs, inputs, run_options)
        finished = False
        try:
            for future in concurrent.futures.as_completed(futures):
                self._raise_fatal()
                yield self._outcome(future, futures[future])
            finished = True
        finally:
            if not finished:
                for future in futures:
                    future.cancel()
                self.cancel()

    def cancel(self) -> None:
        """Cancel every queued task and stop the running ones; finished results are kept.
        The pool stays usable."""
        self._state.cancel()

    def summary(self) -> dict[str, Any]:
        """Tasks by status, retries, attempts, sandboxes started and replaced, runtimes
        restarted, tasks failed fast, throughput, task duration and per-tool call counts and
        latency percentiles."""
        return self._state.stats.summary()

    def status(self) -> dict[str, Any]:
        state = self._state
        with state.lock:
            return {
                "backend": self.backend,
                "size": self.size,
                "pool": self.id,
                "sandboxes": len(state.sandboxes),
                "running": len(state.busy),
                "queued": len(state.queued),
                "breaker": state.breaker.state,
                "closed": state.closed,
            }

    def close(self) -> None:
        """Stop what runs, drop what is queued, close every sandbox. Idempotent."""
        self._finalizer()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ---

    def _options(self, given: dict[str, Any]) -> _RunOptions:
        unknown = set(given) - {"timeout", "max_tool_calls", "max_attempts", "retry_on", "fresh"}
        if unknown:
            raise TypeError(f"unknown run option(s): {', '.join(sorted(unknown))}")
        d = self._defaults
        return self._run_options(
            given.get("timeout", d.timeout),
            given.get("max_tool_calls", d.max_tool_calls),
            given.get("max_attempts", d.max_attempts),
            given.get("retry_on", d.retry_on),
            given.get("fresh", d.fresh),
            self._state.epoch,
        )

    def _task(self, index: int, code: Any, inputs: Any, task_id: str | None) -> Task:
        if not isinstance(code, str):
            raise ValueError(f"task {index}: a program must be a str, not {type(code).__name__}")
        try:
            bound = check_inputs(inputs, self._tool_names)
        except ValueError as exc:
            raise ValueError(f"task {index}: {exc}") from None
        return Task(index, code, bound, task_id)

    def _tasks(
        self, programs: str | Iterable[str], inputs: Iterable[dict[str, Any]] | None
    ) -> list[Task]:
        """Every task checked before any is queued: a bad one loses nothing."""
        if isinstance(programs, str):
            items = [None] if inputs is None else list(inputs)
            pairs = [(programs, item) for item in items]
        else:
            codes = list(programs)
            items = [None] * len(codes) if inputs is None else list(inputs)
            if len(items) != len(codes):
                raise ValueError(f"{len(codes)} programs but {len(items)} inputs")
            pairs = list(zip(codes, items, strict=True))
        return [self._task(i, code, item, None) for i, (code, item) in enumerate(pairs)]

    def _submit_all(
        self,
        programs: str | Iterable[str],
        inputs: Iterable[Any] | None,
        run_options: dict[str, Any],
    ) -> dict[concurrent.futures.Future, Task]:
        tasks = self._tasks(programs, inputs)
        opts = self._options(run_options)
        return {self._state.enqueue(task, opts): task for task in tasks}

    def _raise_fatal(self) -> None:
        if self._state.fatal is not None:
            raise self._state.fatal

    @staticmethod
    def _outcome(future: concurrent.futures.Future, task: Task) -> TaskResult:
        if future.cancelled():
            return TaskResult(task.index, task.id, task.inputs, None)
        return future.result()

    @staticmethod
    def _finished(future: concurrent.futures.Future, task: Task) -> TaskResult:
        """The task's TaskResult if it has finished, else one with no result."""
        if future.done() and not future.cancelled() and future.exception() is None:
            return future.result()
        return TaskResult(task.index, task.id, task.inputs, None)
