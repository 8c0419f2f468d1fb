"""The Daytona sandbox's lifecycle: created on first use or attached, recovered after a fault
(restarted when stopped, replaced when gone), and twins of a retried creation deleted.

A mixin of DaytonaBackend: these run on the backend's loop and keep their state on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from codemode_jupyter.backends.daytona.errors import DaytonaBackendError, is_not_found
from codemode_jupyter.backends.daytona.options import LABEL_BACKEND

_WAKING = frozenset({"starting", "restoring", "creating", "pending_build", "building_snapshot"})


class SandboxLifecycle:
    """The sandbox of one DaytonaBackend, made ready for the next runtime."""

    # What the backend holds (see DaytonaBackend.__init__).
    _client: Any
    _sandbox: Any
    _sandbox_task: asyncio.Task[Any] | None
    _attach_id: str | None
    _owned: bool
    _suspect: bool
    _extras_possible: bool
    _session_id: str | None
    _check_files: bool
    _home: str | None
    _runtime_dir: str | None
    _notice: str
    _step: str
    api_key: str
    api_url: str | None
    target: str | None
    snapshot: str | None
    language: str
    auto_stop_minutes: int
    auto_delete_minutes: int | None
    create_timeout: float
    labels: dict[str, str]

    call: Callable[..., Awaitable[Any]]  # a request, bounded and retried
    _daytona: Callable[[], Awaitable[Any]]  # the SDK's client
    keep: Callable[[Awaitable[Any]], asyncio.Task[Any]]  # a task the loop holds on to

    async def sandbox_problem(self, sandbox: Any) -> str | None:
        """A message if the sandbox was deleted or is not running, else None."""
        try:
            await self.call("check the sandbox", lambda: sandbox.refresh_data(), timeout=None)
        except Exception as exc:
            if is_not_found(exc):
                self._suspect = True
                return f"the Daytona sandbox {sandbox.id} was deleted"
            return None
        leaving = sandbox_leaving(sandbox)
        if leaving is not None:
            self._suspect = True
            return f"the Daytona sandbox {sandbox.id} {leaving}"
        state = sandbox_state(sandbox)
        if state != "started":
            self._suspect = True
            return f"the Daytona sandbox {sandbox.id} is no longer running (state {state})"
        return None

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
            leaving = sandbox_leaving(old)
        except Exception as exc:
            if not is_not_found(exc):
                raise
            leaving = "was deleted"
        if leaving is not None:
            # A sandbox being destroyed (or broken) refuses to start: never wait for it.
            if self._owned and sandbox_state(old) in ("error", "build_failed"):
                self.keep(self._delete_quietly(old))
            self._home = self._runtime_dir = None
            self._sandbox = await self._create(await self._daytona())
            self._notice = (
                f"sandbox {old.id} {leaving}; created {self._sandbox.id} "
                "(its files and the program's state were lost)"
            )
            return
        if sandbox_state(old) != "started":
            await self._ensure_started(old)
            self._notice = f"sandbox {old.id} had stopped; restarted it (program state was lost)"

    async def _ensure_started(self, sandbox: Any) -> None:
        state = sandbox_state(sandbox)
        if state == "started":
            return
        leaving = sandbox_leaving(sandbox)
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
                lambda: list_labelled(client, {LABEL_BACKEND: self.labels[LABEL_BACKEND]}),
            )
        except Exception:
            return  # best effort: they are labelled, `cleanup_orphans` finds them later
        for sandbox in found:
            if str(sandbox.id) != keep and sandbox_state(sandbox) not in (
                "destroying",
                "destroyed",
            ):
                await self._delete_quietly(sandbox)

    async def _delete_quietly(self, sandbox: Any) -> None:
        with contextlib.suppress(Exception):
            await self.call("delete a sandbox", lambda: sandbox.delete())


def sandbox_state(sandbox: Any) -> str:
    """The sandbox's state, as Daytona names it."""
    value = getattr(sandbox, "state", None)
    return str(getattr(value, "value", value) or "unknown")


def sandbox_leaving(sandbox: Any) -> str | None:
    """Why a sandbox will not run again (deleted or being deleted, failed), else None.

    Right after a delete Daytona shows the sandbox as "destroying" for a while, and refuses to
    start it ("state change in progress"): it is as good as gone.
    """
    current = sandbox_state(sandbox)
    desired = getattr(sandbox, "desired_state", None)
    if current in ("destroying", "destroyed") or getattr(desired, "value", desired) == "destroyed":
        return "was deleted"
    if current in ("error", "build_failed"):
        reason = getattr(sandbox, "error_reason", None)
        return f"failed (state {current}{f': {reason}' if reason else ''})"
    return None


async def list_labelled(client: Any, labels: dict[str, str]) -> list[Any]:
    from daytona import ListSandboxesQuery

    return [sandbox async for sandbox in client.list(ListSandboxesQuery(labels=labels))]
