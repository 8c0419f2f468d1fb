"""A runtime in the Daytona sandbox: its files uploaded once per sandbox (checked again after a
runtime ended on its own), and each runtime started in a session of its own.

A mixin of DaytonaBackend, on the backend's loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shlex
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from codemode_jupyter.backends.base import RUNTIME_FILES, runtime_sources
from codemode_jupyter.backends.daytona.errors import DaytonaBackendError
from codemode_jupyter.backends.daytona.logs import supported
from codemode_jupyter.backends.daytona.retries import RetryPolicy
from codemode_jupyter.backends.daytona.transport import EXIT_MARK, DaytonaTransport
from codemode_jupyter.runtime import codemode_protocol as P


class RuntimeStarts:
    """Upload the runtime's files and start runtimes in one DaytonaBackend's sandbox."""

    # What the backend holds (see DaytonaBackend.__init__).
    _home: str | None
    _runtime_dir: str | None
    _check_files: bool
    _session_id: str | None
    _step: str
    _kills: set[asyncio.Future[Any]]
    _transports: weakref.WeakSet[DaytonaTransport]
    retry: RetryPolicy
    call: Callable[..., Awaitable[Any]]  # a request, bounded and retried
    _sandbox_ready: Callable[[], Awaitable[Any]]  # the sandbox, running (sandboxes.py)

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
        command = f'python3 -I -u {script} {P.SEQUENCED}; echo "{EXIT_MARK}-{nonce} $?" >&2'
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
