"""The Daytona backend: runtimes in Daytona sandboxes, through the official async `daytona` SDK.

One sandbox per backend, created on first use (labelled, stopping itself when idle, deleted on
close) or attached to a sandbox the caller owns (never deleted) (sandboxes.py). The runtime
files are uploaded once per sandbox and started as an async session command (runtime.py); its
stdout streams back through the command's logs websocket and the engine's frames go in through
`send_session_command_input`, one request per write (transport.py). Every request is bounded
and retried (retries.py). The SDK's async client lives on a private event loop in a daemon
thread; every wait on it is bounded, so nothing here can hang the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from codemode_jupyter.backends.base import Backend, BackendStatus, OneShot, Transport
from codemode_jupyter.backends.daytona.cleanup import OrphanSandbox, find_orphans
from codemode_jupyter.backends.daytona.errors import (
    DaytonaAuthError,
    DaytonaBackendError,
    DaytonaTimeout,
    chain,
    http_status,
    is_auth_error,
    is_transient,
)
from codemode_jupyter.backends.daytona.options import (
    API_KEY_HELP,
    DEFAULT_API_URL,
    LABEL_BACKEND,
    DaytonaOptions,
    default_labels,
    sandbox_id,
)
from codemode_jupyter.backends.daytona.packages import pip_install_remote
from codemode_jupyter.backends.daytona.retries import Retries, RetryPolicy
from codemode_jupyter.backends.daytona.runtime import RuntimeStarts
from codemode_jupyter.backends.daytona.sandboxes import SandboxLifecycle
from codemode_jupyter.backends.daytona.transport import DaytonaTransport
from codemode_jupyter.support.exit_hooks import at_exit
from codemode_jupyter.support.loop_thread import LoopThread

if TYPE_CHECKING:
    from codemode_jupyter.backends.packages import InstallResult, PackageSession

T = TypeVar("T")

#: The backends of this process not yet closed (`cleanup_orphans` keeps their sandboxes).
LIVE: weakref.WeakSet[DaytonaBackend] = weakref.WeakSet()


class DaytonaBackend(SandboxLifecycle, RuntimeStarts, Backend):
    """Runtimes in one Daytona sandbox (created, or attached with `sandbox=`); its options,
    credentials included, are DaytonaOptions'."""

    name = "daytona"
    label = "Daytona"
    options_type = DaytonaOptions
    # A spare runtime would hold a second session in the sandbox.
    spare_helps = False
    #: Daytona publishes 600 creations a minute for its first tier; half that leaves room
    #: for other clients of the same organisation.
    create_interval = 0.2
    attaches = True
    cleans_orphans = True

    @classmethod
    def labelled_options(cls, options: dict[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
        return {**options, "labels": {**(options.get("labels") or {}), **labels}}

    @classmethod
    def cleanup_orphans(
        cls, options: Mapping[str, Any], *, dry_run: bool = False, all_hosts: bool = False
    ) -> list[Any]:
        account = {k: v for k, v in options.items() if k in DaytonaOptions.account}
        return cleanup_orphans(dry_run=dry_run, all_hosts=all_hosts, **account)

    def install_packages(self, session: PackageSession, specs: list[str]) -> InstallResult:
        return pip_install_remote(session, specs)

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
        self._attach_id = sandbox_id(opts.sandbox)
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
        LIVE.add(self)

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
        LIVE.discard(self)
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
        retries = Retries(self.retry)
        while True:
            try:
                return await asyncio.wait_for(op(), timeout or self.retry.request_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_auth_error(exc):
                    raise DaytonaAuthError(
                        f"Daytona rejected the API key while trying to {what} "
                        f"(HTTP 401 from {self.endpoint}): {API_KEY_HELP}"
                    ) from exc
                if not is_transient(exc):
                    raise
                if not await retries.again(exc):
                    if http_status(exc) is None:
                        message = self._unreachable(what, retries.failures, exc)
                        raise DaytonaBackendError(message) from exc
                    raise

    def _unreachable(self, what: str, tries: int, exc: BaseException) -> str:
        timed_out = any(isinstance(e, (asyncio.TimeoutError, TimeoutError)) for e in chain(exc))
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

    # --- on the loop ---

    async def _daytona(self) -> Any:
        if self._client is None:
            from daytona import AsyncDaytona, DaytonaConfig

            config = DaytonaConfig(api_key=self.api_key, api_url=self.api_url, target=self.target)
            self._client = AsyncDaytona(config)
        return self._client

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


def _close_all() -> None:
    """At interpreter exit (kernel shutdown), delete the sandboxes we created."""
    for backend in list(LIVE):
        with contextlib.suppress(Exception):
            backend.close()


at_exit(_close_all)


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
    LIVE.discard(backend)
    in_use = {str(b._sandbox.id) for b in list(LIVE) if b._sandbox is not None}
    try:
        found = find_orphans(backend, in_use, dry_run, all_hosts)
        return backend._run(found, timeout, "cleaning up")
    finally:
        backend.close()
