"""The Daytona backend: runtimes in Daytona sandboxes, through the official async `daytona` SDK.

One sandbox per backend, created on first use (labelled, stopping itself when idle, deleted on
close) or attached to a sandbox the caller owns (never deleted). The runtime files are uploaded
once per sandbox and started as an async session command; its stdout streams back through the
command's logs websocket and the engine's frames go in through `send_session_command_input`,
one request per write. The SDK's async client lives on a private event loop in a daemon
thread; every wait on it is bounded, so nothing here can hang the kernel.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import itertools
import math
import os
import queue
import random
import re
import secrets
import shlex
import socket
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlparse

from codemode_jupyter.backends.base import (
    RUNTIME_FILES,
    Backend,
    BackendConfigError,
    BackendOptions,
    BackendStatus,
    OneShot,
    Transport,
    runtime_sources,
)
from codemode_jupyter.backends.daytona.logs import (
    LogDemux,
    LogReplayMismatch,
    open_log_stream,
    read_log_stream,
    supported,
)
from codemode_jupyter.backends.processes import pid_alive
from codemode_jupyter.runtime import codemode_protocol as P
from codemode_jupyter.support.exit_hooks import at_exit
from codemode_jupyter.support.loop_thread import LoopThread

T = TypeVar("T")

#: Labels on every sandbox this backend creates; `cleanup_orphans` finds them by the first.
LABEL_CREATOR = "codemode-jupyter"
LABEL_SESSION = "codemode-jupyter-session"
LABEL_HOST = "codemode-jupyter-host"
LABEL_PID = "codemode-jupyter-pid"
#: Unique to one backend: how it finds sandboxes it created but does not use.
LABEL_BACKEND = "codemode-jupyter-backend"

#: Where the SDK goes when neither api_url nor DAYTONA_API_URL says otherwise.
DEFAULT_API_URL = "https://app.daytona.io/api"
API_KEY_HELP = (
    "set DAYTONA_API_KEY to a valid key (https://app.daytona.io/dashboard/keys), "
    "or pass api_key=..."
)
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_MAX_STDERR = 8192
_EXIT_MARK = "codemode-runtime-exit"
_WAKING = frozenset({"starting", "restoring", "creating", "pending_build", "building_snapshot"})


class DaytonaBackendError(RuntimeError):
    """Daytona could not do what the backend needed; the message says what and why."""


class DaytonaAuthError(DaytonaBackendError, BackendConfigError):
    """The API key is missing or rejected. Never retried."""


class DaytonaTimeout(DaytonaBackendError):
    """A wait on Daytona ran out of time (the work it waited for may carry on)."""


@dataclass
class RetryPolicy:
    """Bounded retries with exponential backoff for 429, 5xx, timeouts and lost connections."""

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    request_timeout: float = 30.0

    def delay(self, attempt: int, exc: BaseException) -> float:
        retry_after = _retry_after(exc)
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base * random.uniform(0.5, 1.0)  # jitter, so parallel kernels do not march


@dataclass(frozen=True)
class DaytonaOptions(BackendOptions):
    """Options of the Daytona backend: one sandbox, created on first use or attached.

    Credentials left out come from DAYTONA_API_KEY / DAYTONA_API_URL / DAYTONA_TARGET when
    the backend is made.
    """

    backend: ClassVar[str] = "daytona"
    shared: ClassVar[frozenset[str]] = frozenset({"sandbox"})

    api_key: str | None = None
    """The API key (default: DAYTONA_API_KEY)."""
    api_url: str | None = None
    """The API's URL (default: DAYTONA_API_URL, else Daytona's cloud)."""
    target: str | None = None
    """The target region (default: DAYTONA_TARGET, else the account's)."""
    sandbox: Any = None
    """A sandbox the caller owns to attach to (a Sandbox/AsyncSandbox or its id): used, never
    deleted. None: create one, deleted on close."""
    snapshot: str | None = None
    """The snapshot a new sandbox starts from (None: Daytona's default)."""
    language: str = "python"
    """The language label of a new sandbox."""
    auto_stop_minutes: int = 15
    """Idle minutes after which Daytona stops a sandbox we created."""
    auto_delete_minutes: int | None = None
    """Minutes after stopping after which Daytona deletes a sandbox we created (None: never)."""
    labels: Mapping[str, str] | None = None
    """Labels added to those of every sandbox we create (see LABEL_*)."""
    session_label: str | None = None
    """The session label of our sandboxes (default: the kernel's id)."""
    retry: RetryPolicy | None = None
    """How every request is bounded and retried (None: RetryPolicy())."""
    create_timeout: float = 120.0
    """Seconds a sandbox may take to be created or started."""
    preview_expires: int = 3600
    """Seconds a signed preview link stays valid."""


# --- error classification ------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an SDK or generated-client exception, if there is one."""
    for err in _chain(exc):
        for attr in ("status_code", "status"):
            value = getattr(err, attr, None)
            if isinstance(value, int):
                return value
    return None


def _retry_after(exc: BaseException) -> float | None:
    for err in _chain(exc):
        headers = getattr(err, "headers", None) or {}
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            value = headers.get("Retry-After") or headers.get("retry-after")
            if value is not None:
                return max(0.0, float(value))
    return None


def is_auth_error(exc: BaseException) -> bool:
    from daytona import DaytonaAuthenticationError

    auth_types = (DaytonaAuthError, DaytonaAuthenticationError)
    return isinstance(exc, auth_types) or http_status(exc) == 401


def is_not_found(exc: BaseException) -> bool:
    from daytona import DaytonaNotFoundError

    return isinstance(exc, DaytonaNotFoundError) or http_status(exc) == 404


def is_transient(exc: BaseException) -> bool:
    """Worth another try: rate limits, server errors, timeouts, connections that failed."""
    import aiohttp
    from daytona import DaytonaConnectionError, DaytonaTimeoutError

    if is_auth_error(exc):
        return False
    status = http_status(exc)
    if status is not None:
        return status in _TRANSIENT_STATUS
    network = (
        asyncio.TimeoutError,
        TimeoutError,
        ConnectionError,
        aiohttp.ClientError,
        DaytonaConnectionError,
        DaytonaTimeoutError,
    )
    return any(isinstance(err, network) for err in _chain(exc))


# --- the transport -------------------------------------------------------------------------------


class DaytonaTransport(Transport):
    """The byte stream to a runtime running as a Daytona session command.

    Reads come from the command's logs websocket, demultiplexed as bytes (daytona_logs), and
    reconnected if it drops: the daemon replays the log from its start, and reading resumes at
    the byte after the last one read. Writes are queued and sent in order by one task, a
    request each, so the engine never waits on the network. The runtime's exit is seen
    through a marker the launching shell prints on stderr.
    """

    batch_results = True

    def __init__(
        self, backend: DaytonaBackend, sandbox: Any, session_id: str, cmd_id: str, nonce: str
    ) -> None:
        self._backend = backend
        self._sandbox = sandbox
        self._session_id = session_id
        self._cmd_id = cmd_id
        self._exit_re = re.compile(rf"{_EXIT_MARK}-{nonce} (-?\d+)\n?")
        self._inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._stderr = ""
        self._logs = LogDemux()
        self._stderr_decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.Lock()
        self._ended = False
        self._info = ""
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def sandbox_id(self) -> str:
        return str(self._sandbox.id)

    def begin(self) -> None:
        """Start the log follower and the input sender (on the backend's loop)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._send_loop())]
        for task in self._tasks:
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # A bug in a task must still end the transport, or the engine would wait forever.
        if not task.cancelled() and task.exception() is not None:
            self._end(f"the Daytona transport failed: {task.exception()!r}")

    # --- Transport API ---

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._ended:
                return  # the reader has seen (or will see) EOF; exit_info says why
        with contextlib.suppress(RuntimeError):  # loop closed: the backend is closing
            self._backend.loop.loop.call_soon_threadsafe(self._outbox.put_nowait, data)

    def read(self) -> bytes:
        data = self._inbox.get()
        if not data:
            self._inbox.put(b"")  # every later read sees EOF too
        return data

    def kill(self) -> None:
        if self._end("the runtime was stopped"):
            with contextlib.suppress(RuntimeError):  # loop closed: the sandbox went with it
                self._backend.loop.loop.call_soon_threadsafe(self._backend.kill_session, self)

    def stop_quietly(self) -> bool:
        """End without deleting the session (the caller does it); False if already ended."""
        return self._end("the runtime was stopped")

    def exit_info(self) -> str:
        tail = self._exit_re.sub("", self._stderr).strip()
        return f"{self._info}\n{tail[-2000:]}" if tail else self._info

    # --- ending ---

    def _end(self, info: str) -> bool:
        """Mark the runtime gone with `info`; the reader gets EOF. False if it already was."""
        with self._lock:
            if self._ended:
                return False
            self._ended, self._info = True, info
        self._inbox.put(b"")
        with contextlib.suppress(RuntimeError):  # loop closed: nothing left to cancel
            self._backend.loop.loop.call_soon_threadsafe(self._cancel_tasks)
        return True

    def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def _kill_session(self) -> None:
        """Delete the session, which kills the runtime and everything it started."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._sandbox.process.delete_session(self._session_id),
                self._backend.retry.request_timeout,
            )

    async def _fail(self, info: str, suspect: bool = True) -> None:
        if suspect:  # before the engine sees the end: it asks sandbox_ok() right after
            self._backend.suspect_sandbox()
        if self._end(info):
            # Shielded: _end cancels this very task, and the session must still go.
            await asyncio.shield(self._backend.kill_session(self))

    # --- output ---

    def _on_message(self, message: bytes) -> None:
        for stream, data in self._logs.feed(message):
            if stream == 1:
                if not self._ended:
                    self._inbox.put(data)  # the engine splits and decodes frames itself
            else:
                self._on_stderr(data)

    def _on_stderr(self, data: bytes) -> None:
        text = self._stderr_decoder.decode(data)
        self._stderr = (self._stderr + text)[-_MAX_STDERR:]
        match = self._exit_re.search(self._stderr)
        if match and self._end(f"the runtime exited with code {match.group(1)}"):
            self._exited()

    def _exited(self) -> None:
        """The runtime ended on its own, its sandbox alive: the next one starts there, in a
        new session (deleting this one ends what the program left running), once its files
        are checked (the program may have removed them)."""
        self._backend.check_runtime_files()
        self._backend.kill_session(self)

    async def _follow(self) -> None:
        """Stream the command's logs until the runtime ends, reconnecting a dropped stream."""
        failures = 0
        process = self._sandbox.process
        while True:
            self._logs.restart()
            reached = self._logs.position
            error: BaseException | None = None
            try:
                stream = await open_log_stream(process, self._session_id, self._cmd_id)
                await read_log_stream(stream, self._on_message)
            except asyncio.CancelledError:
                raise
            except LogReplayMismatch as exc:  # resuming would corrupt the output: stop here
                await self._fail(f"Daytona: {exc}", suspect=False)
                return
            except Exception as exc:
                error = exc
            verdict = await self._diagnose(error)
            if verdict is not None:
                await self._fail(*verdict)
                return
            # Only drops in a row count: a long session may lose its stream now and then.
            failures = 1 if self._logs.position > reached else failures + 1
            if failures > self._backend.retry.attempts:
                await self._fail(
                    f"lost the runtime's log stream from Daytona {failures} times "
                    f"({error or 'closed'}); the run cannot continue"
                )
                return
            await asyncio.sleep(self._backend.retry.delay(failures - 1, error or Exception()))

    async def _diagnose(self, error: BaseException | None) -> tuple[str, bool] | None:
        """Why the log stream ended: (message, sandbox suspect) to end with, None to reconnect."""
        process = self._sandbox.process
        try:
            command = await self._backend.call(
                "check the runtime",
                lambda: process.get_session_command(self._session_id, self._cmd_id),
            )
        except Exception as exc:
            if is_auth_error(exc):
                return str(exc), False
            gone = await self._backend.sandbox_problem(self._sandbox)
            if gone:
                return gone, True
            if is_not_found(exc):
                return "the runtime's Daytona session was deleted", False
            return f"lost contact with the Daytona sandbox {self.sandbox_id}: {exc}", True
        if command.exit_code is not None and error is None:
            self._backend.check_runtime_files()
            return f"the runtime exited with code {command.exit_code}", False
        return None  # still running (or exited with output left to drain): reconnect

    # --- input ---

    async def _send_loop(self) -> None:
        for batch in itertools.count(1):
            data = await self._outbox.get()
            while not self._outbox.empty():  # whatever queued meanwhile rides along
                data += self._outbox.get_nowait()
            # Numbered: a request retried after the toolbox had carried it out (a 504 from a
            # gateway after the input was written) delivers the batch twice, and the runtime
            # (started SEQUENCED) drops the second one. Writes are whole frames.
            text = (P.batch_line(batch) + data).decode("utf-8", "replace")
            try:
                await self._send(text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._fail(*await self._send_failure(exc))
                return

    async def _send(self, text: str) -> None:
        """One batch in one request, retried as `call` does; each retry is counted."""
        process = self._sandbox.process
        tries = 0

        def send() -> Awaitable[None]:
            nonlocal tries
            tries += 1
            return process.send_session_command_input(self._session_id, self._cmd_id, text)

        try:
            await self._backend.call("send to the runtime", send)
        finally:
            self._backend.inputs_resent += max(0, tries - 1)

    async def _send_failure(self, exc: Exception) -> tuple[str, bool]:
        if isinstance(exc, DaytonaAuthError):
            return str(exc), False
        if http_status(exc) == 410:
            return "the runtime has exited", False
        gone = await self._backend.sandbox_problem(self._sandbox)
        return gone or f"could not send to the runtime: {exc}", True


# --- the backend ---------------------------------------------------------------------------------


_LIVE: weakref.WeakSet[DaytonaBackend] = weakref.WeakSet()


class DaytonaBackend(Backend):
    """Runtimes in one Daytona sandbox (created, or attached with `sandbox=`); its options,
    credentials included, are DaytonaOptions'."""

    name = "daytona"
    options_type = DaytonaOptions

    def __init__(self, options: DaytonaOptions | None = None, /, **kwargs: Any) -> None:
        """Takes a DaytonaOptions, or its fields as keyword arguments."""
        self.options = opts = DaytonaOptions.of(options, kwargs)
        self.api_key = opts.api_key or os.environ.get("DAYTONA_API_KEY") or None
        if not self.api_key:
            raise DaytonaAuthError(f"the Daytona backend needs an API key: {API_KEY_HELP}")
        self.api_url = opts.api_url or os.environ.get("DAYTONA_API_URL") or None
        self.target = opts.target or os.environ.get("DAYTONA_TARGET") or None
        self.snapshot = opts.snapshot
        self.language = opts.language
        self.auto_stop_minutes = opts.auto_stop_minutes
        self.auto_delete_minutes = opts.auto_delete_minutes
        self.retry = opts.retry or RetryPolicy()
        self.create_timeout = opts.create_timeout
        self.preview_expires = opts.preview_expires
        self.labels = {
            **default_labels(opts.session_label),
            **(opts.labels or {}),
            LABEL_BACKEND: uuid.uuid4().hex[:12],
        }
        # Set once a creation was retried: the first try may have made a sandbox too (a
        # gateway timeout on a creation that succeeded), which `_delete_extras` looks for.
        self._extras_possible = False
        self._attach_id = _sandbox_id(opts.sandbox)
        self._owned = self._attach_id is None
        self._client: Any = None
        self._sandbox: Any = None
        self._home: str | None = None
        self._runtime_dir: str | None = None
        self._session_id: str | None = None
        self._suspect = False
        self._notice = ""
        #: Input requests sent again after a failure that may have hidden their delivery;
        #: the runtime dropped any batch that arrived twice (SEQUENCED).
        self.inputs_resent = 0
        self._check_files = False  # verify the uploaded runtime files before the next start
        self._transports: weakref.WeakSet[DaytonaTransport] = weakref.WeakSet()
        self._background: set[asyncio.Future[Any]] = set()
        self._kills: set[asyncio.Future[Any]] = set()  # sessions of old runtimes being deleted
        self._sandbox_task: asyncio.Task[Any] | None = None
        self._step = ""
        self._closed = False
        _bypass_proxy_for_loopback(self.api_url)
        self.loop = LoopThread("codemode-daytona")
        _LIVE.add(self)

    @property
    def endpoint(self) -> str:
        """The API URL requests go to."""
        return self.api_url or DEFAULT_API_URL

    # --- Backend API ---

    def start_runtime(self, timeout: float | None = None) -> Transport:
        """Start a runtime, waiting at most `timeout` s (a run's deadline) if given.

        If the wait runs out while the sandbox is being created or started, that goes on in
        the background and the next start picks it up, so a slow Daytona makes progress
        across runs instead of leaking half-made sandboxes.
        """
        budget = self.create_timeout + 6 * self.retry.request_timeout
        if timeout is None or timeout >= budget:
            return self._run(self._start_runtime(), budget, "starting the runtime")
        limit = max(timeout, 0.1)
        try:
            return self._run(self._start_runtime(), limit, "starting the runtime")
        except DaytonaTimeout:
            raise DaytonaTimeout(
                f"Daytona: no runtime within the run's {timeout:g} s timeout: still waiting to "
                f"{self._step or 'start the runtime'} ({self.endpoint} is "
                "slow or not answering); the next run carries on from there"
            ) from None

    def run_oneshot(self, code: str, timeout: float) -> OneShot:
        budget = timeout + self.create_timeout + 2 * self.retry.request_timeout
        return self._run(self._oneshot(code, timeout), budget, "running the program")

    def preview_url(self, port: int) -> str:
        return self._run(
            self._preview_url(port), 3 * self.retry.request_timeout, "getting a preview link"
        )

    def status(self) -> BackendStatus:
        details = {
            "sandbox": str(getattr(self._sandbox, "id", "") or self._attach_id or ""),
            "attached": "yes" if not self._owned else "no",
            "api_url": self.endpoint,
        }
        if self.target:
            details["target"] = self.target
        if self._notice:
            details["notice"] = self._notice
        if self.inputs_resent:
            details["inputs_resent"] = str(self.inputs_resent)
        return BackendStatus("daytona", "daytona", details)

    def sandbox_ok(self) -> bool:
        return self._sandbox is not None and not self._suspect

    def close(self) -> None:
        """Stop runtimes, delete the sandbox if we created it, release the client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        with contextlib.suppress(Exception):
            self._run(self._release(), 2 * self.retry.request_timeout, "releasing the sandbox")
        self.loop.close()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        """Run `coro` on the backend's loop and wait at most `timeout` s; Ctrl-C cancels it."""
        try:
            return self.loop.run(coro, timeout)
        except TimeoutError:
            raise DaytonaTimeout(f"Daytona: {what} took longer than {timeout:g} s") from None
        except DaytonaBackendError:
            raise
        except Exception as exc:
            raise DaytonaBackendError(f"Daytona: {what} failed: {exc}") from exc

    # --- used by transports ---

    async def call(
        self, what: str, op: Callable[[], Awaitable[T]], *, timeout: float | None = None
    ) -> T:
        """Await `op()` with a timeout, retrying transient failures with backoff.

        An authentication failure raises DaytonaAuthError at once.
        """
        policy = self.retry
        for attempt in range(policy.attempts + 1):
            try:
                return await asyncio.wait_for(op(), timeout or policy.request_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_auth_error(exc):
                    raise DaytonaAuthError(
                        f"Daytona rejected the API key while trying to {what} "
                        f"(HTTP 401 from {self.endpoint}): {API_KEY_HELP}"
                    ) from exc
                if attempt >= policy.attempts or not is_transient(exc):
                    if is_transient(exc) and http_status(exc) is None:
                        message = self._unreachable(what, attempt + 1, exc)
                        raise DaytonaBackendError(message) from exc
                    raise
                await asyncio.sleep(policy.delay(attempt, exc))
        raise AssertionError("unreachable")

    def _unreachable(self, what: str, tries: int, exc: BaseException) -> str:
        timed_out = any(isinstance(e, (asyncio.TimeoutError, TimeoutError)) for e in _chain(exc))
        why = "no answer" if timed_out else f"cannot connect ({exc})"
        return (
            f"Daytona: could not {what}: {why} from {self.endpoint} after {tries} "
            f"attempt{'s' if tries > 1 else ''}; check DAYTONA_API_URL and the network"
        )

    def keep(self, coro: Awaitable[T]) -> asyncio.Task[T]:
        """Run `coro` as a task the loop holds on to until it ends."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def suspect_sandbox(self) -> None:
        """The sandbox may be gone or stopped: check it before the next runtime starts."""
        self._suspect = True

    def kill_session(self, transport: DaytonaTransport) -> asyncio.Task[None]:
        """Delete a runtime's session in the background (on the loop): it kills the runtime
        and all its program started. The next runtime starts once it is gone."""
        task = self.keep(transport._kill_session())
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)
        return task

    def check_runtime_files(self) -> None:
        """A runtime ended on its own: check its files are there before the next one starts."""
        self._check_files = True

    async def sandbox_problem(self, sandbox: Any) -> str | None:
        """A message if the sandbox was deleted or is not running, else None."""
        try:
            await self.call("check the sandbox", lambda: sandbox.refresh_data(), timeout=None)
        except Exception as exc:
            if is_not_found(exc):
                self._suspect = True
                return f"the Daytona sandbox {sandbox.id} was deleted"
            return None
        leaving = _leaving(sandbox)
        if leaving is not None:
            self._suspect = True
            return f"the Daytona sandbox {sandbox.id} {leaving}"
        state = _state(sandbox)
        if state != "started":
            self._suspect = True
            return f"the Daytona sandbox {sandbox.id} is no longer running (state {state})"
        return None

    # --- on the loop ---

    async def _daytona(self) -> Any:
        if self._client is None:
            from daytona import AsyncDaytona, DaytonaConfig

            config = DaytonaConfig(api_key=self.api_key, api_url=self.api_url, target=self.target)
            self._client = AsyncDaytona(config)
        return self._client

    async def _sandbox_ready(self) -> Any:
        """The sandbox, running. Created (or found, or recovered) in a task of its own, which
        a caller that stops waiting (a run's deadline) leaves going for the next caller."""
        if self._sandbox is not None and not self._suspect:
            return self._sandbox
        task = self._sandbox_task
        if task is None or task.done():
            task = self._sandbox_task = asyncio.ensure_future(self._ensure_sandbox())
            # Its caller may have stopped waiting: the failure is seen by the next one.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(task)

    async def _ensure_sandbox(self) -> Any:
        if self._sandbox is not None and not self._suspect:
            return self._sandbox
        self._step = "create the sandbox" if self._sandbox is None else "check the sandbox"
        client = await self._daytona()
        if self._sandbox is None and self._attach_id is not None:
            attach_id = self._attach_id
            self._sandbox = await self.call("find the sandbox", lambda: client.get(attach_id))
            await self._ensure_started(self._sandbox)
        elif self._sandbox is None:
            self._sandbox = await self._create(client)
        else:
            await self._recover()
        self._suspect = False
        return self._sandbox

    async def _recover(self) -> None:
        """After a fault: restart a stopped sandbox, replace one that is gone or going."""
        old = self._sandbox
        self._session_id = None
        self._check_files = True  # kept across a stop; checked, not uploaded again
        try:
            await self.call("check the sandbox", lambda: old.refresh_data())
            leaving = _leaving(old)
        except Exception as exc:
            if not is_not_found(exc):
                raise
            leaving = "was deleted"
        if leaving is not None:
            # A sandbox being destroyed (or broken) refuses to start: never wait for it.
            if self._owned and _state(old) in ("error", "build_failed"):
                self.keep(self._delete_quietly(old))
            self._home = self._runtime_dir = None
            self._sandbox = await self._create(await self._daytona())
            self._notice = (
                f"sandbox {old.id} {leaving}; created {self._sandbox.id} "
                "(its files and the program's state were lost)"
            )
            return
        if _state(old) != "started":
            await self._ensure_started(old)
            self._notice = f"sandbox {old.id} had stopped; restarted it (program state was lost)"

    async def _ensure_started(self, sandbox: Any) -> None:
        state = _state(sandbox)
        if state == "started":
            return
        leaving = _leaving(sandbox)
        if leaving is not None:
            raise DaytonaBackendError(
                f"Daytona: the sandbox {sandbox.id} {leaving}; it cannot be used"
            )
        if state in _WAKING:
            await self.call(
                "wait for the sandbox",
                lambda: sandbox.wait_for_sandbox_start(timeout=self.create_timeout),
                timeout=self.create_timeout + 5,
            )
            return
        await self.call(
            "start the sandbox",
            lambda: sandbox.start(timeout=self.create_timeout),
            timeout=self.create_timeout + 5,
        )

    async def _create(self, client: Any) -> Any:
        from daytona import CreateSandboxFromSnapshotParams

        params = CreateSandboxFromSnapshotParams(
            language=self.language,
            snapshot=self.snapshot,
            labels=dict(self.labels),
            auto_stop_interval=self.auto_stop_minutes,
            auto_delete_interval=self.auto_delete_minutes,
        )
        attempts = 0

        async def create() -> Any:
            nonlocal attempts
            attempts += 1
            return await client.create(params, timeout=self.create_timeout)

        try:
            sandbox = await self.call("create a sandbox", create, timeout=self.create_timeout + 5)
        finally:
            # A retried request may have succeeded the first time too (a gateway timeout).
            self._extras_possible = self._extras_possible or attempts > 1
        self._owned = True
        if self._extras_possible:
            self.keep(self._delete_extras(client, keep=str(sandbox.id)))
        return sandbox

    async def _delete_extras(self, client: Any, keep: str | None) -> None:
        """Delete the sandboxes this backend created and does not use (all but `keep`)."""
        try:
            found = await self.call(
                "list our sandboxes",
                lambda: _list_labelled(client, {LABEL_BACKEND: self.labels[LABEL_BACKEND]}),
            )
        except Exception:
            return  # best effort: they are labelled, `cleanup_orphans` finds them later
        for sandbox in found:
            if str(sandbox.id) != keep and _state(sandbox) not in ("destroying", "destroyed"):
                await self._delete_quietly(sandbox)

    async def _delete_quietly(self, sandbox: Any) -> None:
        with contextlib.suppress(Exception):
            await self.call("delete a sandbox", lambda: sandbox.delete())

    async def _ensure_runtime_dir(self, sandbox: Any) -> str:
        """Upload the runtime files once per sandbox, to a directory named by their hash, and
        again if they are found missing (checked after a runtime ended on its own)."""
        known = self._runtime_dir
        if known is not None and (
            not self._check_files or await self._runtime_files_present(sandbox, known)
        ):
            self._check_files = False
            return known
        from daytona import FileUpload

        sources = runtime_sources()
        digest = hashlib.sha256(b"".join(sources[name] for name in sorted(sources))).hexdigest()
        if self._home is None:
            self._home = await self.call("find the home directory", sandbox.get_user_home_dir)
        directory = f"{str(self._home).rstrip('/')}/.codemode-jupyter/{digest[:16]}"
        files = [
            FileUpload(source=data, destination=f"{directory}/{name}")
            for name, data in sources.items()
        ]
        await self.call("upload the runtime", lambda: sandbox.fs.upload_files(files))
        self._runtime_dir, self._check_files = directory, False
        return directory

    async def _runtime_files_present(self, sandbox: Any, directory: str) -> bool:
        paths = " ".join(shlex.quote(f"{directory}/{name}") for name in RUNTIME_FILES)
        response = await self.call(
            "check the runtime files", lambda: sandbox.process.exec(f"ls -- {paths}")
        )
        return response.exit_code == 0

    async def _ensure_session(self, sandbox: Any) -> str:
        """A new session for the next runtime (or the one a failed start left empty)."""
        if self._session_id is None:
            session_id = f"codemode-{uuid.uuid4().hex[:12]}"
            await self.call("create a session", lambda: sandbox.process.create_session(session_id))
            self._session_id = session_id
        return self._session_id

    async def _start_runtime(self) -> DaytonaTransport:
        from daytona import SessionExecuteRequest

        sandbox = await self._sandbox_ready()
        if not supported(sandbox.process):
            from importlib.metadata import version

            raise DaytonaBackendError(
                f"this version of the daytona SDK ({version('daytona')}) cannot hand over a "
                "command's raw log stream; install the version codemode-jupyter requires"
            )
        self._step = "upload the runtime"
        directory = await self._ensure_runtime_dir(sandbox)
        self._step = "start the runtime"
        if self._kills:  # the last runtime's session is being deleted: it goes first
            await asyncio.wait(list(self._kills), timeout=self.retry.request_timeout)
        session_id = await self._ensure_session(sandbox)
        nonce = secrets.token_hex(8)
        # The shell reports the runtime's exit on stderr: Daytona's follow stream stays open
        # after a command ends, so this marker is how the reader learns of it.
        script = shlex.quote(f"{directory}/codemode_runtime.py")
        command = f'python3 -I -u {script} {P.SEQUENCED}; echo "{_EXIT_MARK}-{nonce} $?" >&2'
        request = SessionExecuteRequest(command=command, run_async=True, suppress_input_echo=True)
        response = await self.call(
            "start the runtime",
            lambda: sandbox.process.execute_session_command(session_id, request),
        )
        # One session per runtime: deleting it (to stop the runtime and what its program
        # started) never touches another, a spare's or the next one's.
        self._session_id = None
        transport = DaytonaTransport(self, sandbox, session_id, response.cmd_id, nonce)
        transport.begin()
        self._transports.add(transport)
        return transport

    async def _oneshot(self, code: str, timeout: float) -> OneShot:
        sandbox = await self._sandbox_ready()
        seconds = max(1, math.ceil(timeout))
        try:
            response = await self.call(
                "run the program",
                lambda: sandbox.process.code_run(code, timeout=seconds),
                timeout=seconds + self.retry.request_timeout,
            )
        except Exception as exc:
            if http_status(exc) == 408 or isinstance(exc, asyncio.TimeoutError):
                return OneShot("", -1)  # the sandbox stopped it at its timeout
            raise
        return OneShot(
            response.result or "", response.exit_code if response.exit_code is not None else -1
        )

    async def _preview_url(self, port: int) -> str:
        """A URL that opens in a browser: signed (token inside), else the plain preview link."""
        sandbox = await self._sandbox_ready()
        try:
            signed = await self.call(
                "sign a preview link",
                lambda: sandbox.create_signed_preview_url(
                    port, expires_in_seconds=self.preview_expires
                ),
            )
            return str(signed.url)
        except DaytonaAuthError:
            raise
        except Exception:
            link = await self.call("get a preview link", lambda: sandbox.get_preview_link(port))
            return str(link.url)

    async def _release(self) -> None:
        if self._sandbox_task is not None and not self._sandbox_task.done():
            # A creation still under way: if Daytona finishes it anyway, the sandbox is
            # labelled, and `cleanup_orphans` removes it once this process has ended.
            self._sandbox_task.cancel()
        sandbox, client = self._sandbox, self._client
        self._sandbox = self._client = None
        live = [t for t in list(self._transports) if t.stop_quietly()]
        if sandbox is not None and self._owned:
            await self._delete_quietly(sandbox)
        if client is not None and self._extras_possible:
            # One more look for a twin that showed up late; an attached sandbox has no such
            # label. Bounded: closing must not wait out a stalled API's retries.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._delete_extras(client, keep=None), self.retry.request_timeout
                )
        elif live:  # the user's sandbox stays, our runtimes in it do not
            await asyncio.gather(*(t._kill_session() for t in live), return_exceptions=True)
        if self._background:  # kills already under way finish before the loop goes
            await asyncio.wait(list(self._background), timeout=self.retry.request_timeout)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)


# --- helpers -------------------------------------------------------------------------------------


def _state(sandbox: Any) -> str:
    state = getattr(sandbox, "state", None)
    return str(getattr(state, "value", state) or "unknown")


def _leaving(sandbox: Any) -> str | None:
    """Why a sandbox will not run again (deleted or being deleted, failed), else None.

    Right after a delete Daytona shows the sandbox as "destroying" for a while, and refuses to
    start it ("state change in progress"): it is as good as gone.
    """
    state = _state(sandbox)
    desired = getattr(sandbox, "desired_state", None)
    if state in ("destroying", "destroyed") or getattr(desired, "value", desired) == "destroyed":
        return "was deleted"
    if state in ("error", "build_failed"):
        reason = getattr(sandbox, "error_reason", None)
        return f"failed (state {state}{f': {reason}' if reason else ''})"
    return None


async def _list_labelled(client: Any, labels: dict[str, str]) -> list[Any]:
    from daytona import ListSandboxesQuery

    return [sandbox async for sandbox in client.list(ListSandboxesQuery(labels=labels))]


def _sandbox_id(sandbox: Any) -> str | None:
    if sandbox is None:
        return None
    if isinstance(sandbox, str):
        return sandbox
    sandbox_id = getattr(sandbox, "id", None)
    if not sandbox_id:
        raise TypeError("sandbox= takes a daytona Sandbox/AsyncSandbox or a sandbox id")
    return str(sandbox_id)


def _kernel_id() -> str | None:
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:
        return None
    return name.removeprefix("kernel-").removesuffix(".json") or None


def _host_label() -> str:
    return socket.gethostname()[:63]  # label values are at most 63 characters


def default_labels(session_label: str | None = None) -> dict[str, str]:
    """The labels that mark a sandbox as ours: creator, kernel/session, host and process."""
    return {
        LABEL_CREATOR: "true",
        LABEL_SESSION: session_label or _kernel_id() or uuid.uuid4().hex[:12],
        LABEL_HOST: _host_label(),
        LABEL_PID: str(os.getpid()),
    }


def _bypass_proxy_for_loopback(api_url: str | None) -> None:
    # aiohttp honours HTTP(S)_PROXY; a local API (the loopback server) must not go through one.
    host = urlparse(api_url or "").hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return
    for key in ("NO_PROXY", "no_proxy"):
        entries = [e for e in os.environ.get(key, "").split(",") if e]
        missing = [h for h in ("127.0.0.1", "localhost") if h not in entries]
        if missing:
            os.environ[key] = ",".join(entries + missing)


@dataclass
class OrphanSandbox:
    """A sandbox `cleanup_orphans` found: what it is and what was done with it."""

    id: str
    state: str
    labels: dict[str, str]
    deleted: bool
    reason: str


def cleanup_orphans(
    *,
    api_key: str | None = None,
    api_url: str | None = None,
    target: str | None = None,
    dry_run: bool = False,
    all_hosts: bool = False,
    timeout: float = 120.0,
) -> list[OrphanSandbox]:
    """Find sandboxes labelled by codemode-jupyter that no live session uses, and delete them.

    A sandbox is kept if a backend in this process uses it, or if it was created on this host
    by a process that is still running. Sandboxes from other hosts are kept unless
    `all_hosts`. With `dry_run`, nothing is deleted.
    """
    backend = DaytonaBackend(api_key=api_key, api_url=api_url, target=target)
    _LIVE.discard(backend)
    try:
        return backend._run(_cleanup(backend, dry_run, all_hosts), timeout, "cleaning up")
    finally:
        backend.close()


async def _cleanup(backend: DaytonaBackend, dry_run: bool, all_hosts: bool) -> list[OrphanSandbox]:
    client = await backend._daytona()
    in_use = {str(b._sandbox.id) for b in list(_LIVE) if b._sandbox is not None}
    found = []
    listed = await backend.call(
        "list sandboxes", lambda: _list_labelled(client, {LABEL_CREATOR: "true"})
    )
    for sandbox in listed:
        labels = dict(sandbox.labels or {})
        keep = _keep_reason(str(sandbox.id), labels, in_use, all_hosts)
        deleted = False
        if keep is None and not dry_run:
            try:
                await backend.call("delete a sandbox", lambda sandbox=sandbox: sandbox.delete())
                deleted = True
            except Exception as exc:
                if not is_not_found(exc):
                    keep = f"could not delete: {exc}"
                deleted = keep is None
        found.append(
            OrphanSandbox(
                str(sandbox.id),
                _state(sandbox),
                labels,
                deleted,
                keep or ("deleted" if deleted else "orphan (dry run)"),
            )
        )
    return found


def _keep_reason(
    sandbox_id: str, labels: dict[str, str], in_use: set[str], all_hosts: bool
) -> str | None:
    if sandbox_id in in_use:
        return "in use by this kernel"
    if labels.get(LABEL_HOST) == _host_label():
        pid = labels.get(LABEL_PID, "")
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            return f"in use by process {pid} on this host"
    elif not all_hosts:
        return f"created on another host ({labels.get(LABEL_HOST, '?')})"
    return None


def _close_all() -> None:
    """At interpreter exit (kernel shutdown), delete the sandboxes we created."""
    for backend in list(_LIVE):
        with contextlib.suppress(Exception):
            backend.close()


at_exit(_close_all)
