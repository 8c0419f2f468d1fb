"""Host tools shared by every sandbox of a pool.

Each sandbox of a pool is served by a thread of its own, and the engine runs a sync tool on
the thread that serves the run. Left like that, a notebook function would be called from
several threads at once, which few of them survive. So the pool wraps each sync tool to run
on a worker pool of `workers` threads (1 by default: one call at a time, always on the same
thread), and each async tool to run on one event loop of the host, where calls from all the
sandboxes overlap. The wrappers keep the function's signature and docstring
(`functools.wraps`), so validation, stubs and the prompt are those of the original.
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable, Iterable
from typing import Any

from codemode_jupyter.support.loop_thread import LoopThread
from codemode_jupyter.tools.tool import Tool


class HostTools:
    """The executor for sync tools and the loop for async ones, and the wrapped tools."""

    def __init__(self, tools: Iterable[Callable[..., Any] | Tool], workers: int = 1) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="codemode-pool-tool"
        )
        self._async = LoopThread("codemode-pool-async-tools")  # started by the first async call
        self.tools = [self._wrap(Tool.from_callable(fn)) for fn in tools]

    def _wrap(self, tool: Tool) -> Tool:
        fn = tool.fn
        if tool.is_async:
            host_loop = self._async

            @functools.wraps(fn)
            async def on_host_loop(*args: Any, **kwargs: Any) -> Any:
                import asyncio

                # Cancelling the run's call cancels this await, and wrap_future passes the
                # cancellation on to the task on the host's loop.
                return await asyncio.wrap_future(host_loop.submit(fn(*args, **kwargs)))

            wrapped: Callable[..., Any] = on_host_loop
        else:
            executor = self._executor

            @functools.wraps(fn)
            def on_worker(*args: Any, **kwargs: Any) -> Any:
                return executor.submit(fn, *args, **kwargs).result()

            wrapped = on_worker
        return Tool(wrapped, name=tool.name, description=tool.description)

    @property
    def names(self) -> set[str]:
        return {t.name for t in self.tools}

    def close(self) -> None:
        """Stop the loop (cancelling what runs on it) and the workers. Idempotent."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._async.close(timeout=2)
