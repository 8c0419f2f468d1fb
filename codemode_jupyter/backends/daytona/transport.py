"""The byte stream to a runtime running as a Daytona session command."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import queue
import re
import threading
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from codemode_jupyter.backends.base import Transport
from codemode_jupyter.backends.daytona.errors import (
    DaytonaAuthError,
    http_status,
    is_auth_error,
    is_not_found,
)
from codemode_jupyter.backends.daytona.logs import (
    LogDemux,
    LogReplayMismatch,
    open_log_stream,
    read_log_stream,
)
from codemode_jupyter.backends.daytona.retries import Retries
from codemode_jupyter.runtime import codemode_protocol as P

if TYPE_CHECKING:
    from codemode_jupyter.backends.daytona.backend import DaytonaBackend

_MAX_STDERR = 8192
#: What the launching shell prints on stderr when the runtime exits (with a nonce and the code).
EXIT_MARK = "codemode-runtime-exit"


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
        self._exit_re = re.compile(rf"{EXIT_MARK}-{nonce} (-?\d+)\n?")
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
        retries = Retries(self._backend.retry)
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
            if self._logs.position > reached:
                retries.reset()
            if not await retries.again(error or Exception()):
                await self._fail(
                    f"lost the runtime's log stream from Daytona {retries.failures} times "
                    f"({error or 'closed'}); the run cannot continue"
                )
                return

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
