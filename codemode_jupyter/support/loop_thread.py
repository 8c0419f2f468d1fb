"""An asyncio event loop on a daemon thread of its own, for callers that are not async.

One helper serves every such job: the engine's async tools (which overlap on it), the Daytona
SDK's client (which must stay on one loop for its whole life), and awaiting a coroutine from
sync code on a thread whose own loop is busy (a kernel's). anyio's blocking portal does the
same, but anyio is not a dependency, and a portal's task group ends at the first stray task
that raises a BaseException, where a tool's stray task must not end every later async call.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

# asyncio itself is imported where a loop is made or used: a session whose tools are all sync
# never needs it, and importing it (with ssl) costs a python 11 MiB and 25 ms.

T = TypeVar("T")

_UNWIND = 2.0  # how long cancelled tasks may take to unwind when the loop stops


class LoopThread:
    """An event loop on a daemon thread, started on first use and stopped by `close()`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (started now if need be); RuntimeError once closed."""
        loop = self._loop
        if loop is not None:  # the common case takes no lock: a tool call's hot path
            return loop
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self.name} event loop is closed")
            if self._loop is None:
                import asyncio

                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=_serve, args=(loop,), name=self.name, daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coro` on the loop; its future may be waited on, or cancelled, from any thread."""
        try:
            loop = self.loop
        except RuntimeError:
            coro.close()  # never to run: no "never awaited" warning
            raise
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result, at most `timeout` s (then
        TimeoutError). Ctrl-C, like the wait running out, cancels the work too."""
        import asyncio

        future = self.submit(coro if timeout is None else asyncio.wait_for(coro, timeout))
        try:
            # The loop's own timeout ends the work; this one only guards a stalled loop.
            return future.result(None if timeout is None else timeout + 5)
        except (concurrent.futures.TimeoutError, asyncio.TimeoutError, TimeoutError):
            # (what a wait that ran out raises, by layer: distinct classes before Python 3.11)
            future.cancel()
            raise TimeoutError(f"no result within {timeout:g} s") from None
        except BaseException:
            future.cancel()
            raise

    def close(self, timeout: float = 5.0) -> None:
        """Stop the loop: what still runs is cancelled and given a moment to unwind, and the
        thread is waited for (at most `timeout` s). Idempotent; the loop cannot restart."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # closed already
            loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run `loop` until it is stopped on purpose; whatever a stray task raises (even
    SystemExit) is that task's problem, not the end of every later coroutine."""
    import asyncio

    asyncio.set_event_loop(loop)
    while True:
        try:
            loop.run_forever()
            break  # stopped by close()
        except BaseException:
            continue
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=_UNWIND))
        loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def run_coroutine(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` from sync code, even on a thread whose event loop is running."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(awaitable))
    # A loop already runs on this thread (a kernel's): await on a private one.
    private = LoopThread("codemode-await")
    try:
        return private.run(_await(awaitable))
    finally:
        private.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
