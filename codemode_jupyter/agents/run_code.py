"""One `run_code` call of a client: its program run in the client's session, its progress.

The server (server.py) takes the request; this runs the job on the session's runner and hands
the engine's events over to the server's loop, in order, as progress notifications (at most one
each PROGRESS_INTERVAL) until the run ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from codemode_jupyter.agents.approval import ClientAsk
from codemode_jupyter.agents.results import MAX_EVENT_LINE, check_budget, event_line
from codemode_jupyter.agents.runner import AgentRunner, Job
from codemode_jupyter.agents.transport import on_gone
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.format import clip
from codemode_jupyter.model.result import RunResult


def client_key(ctx: Any) -> str | None:
    """Who sent this request: its MCP session id over HTTP; None for the one client of a
    stdio server and for a stateless HTTP request (no session): the shared session."""
    request = ctx.request_context.request
    if request is None:
        return None
    return request.headers.get("mcp-session-id") or None


async def run_job(
    runner: AgentRunner,
    code: str,
    reset: bool,
    ctx: Any,
    *,
    client_ask: ClientAsk | None = None,
) -> tuple[Job, RunResult]:
    """Queue the program, stream its events as progress notifications, return its result.
    The request's connection closing (the client timed out or left) cancels the program."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[ev.Event | None] = asyncio.Queue()

    def on_event(event: ev.Event) -> None:  # engine threads: hand over to this loop, in order
        if _progress_line(event) is not None:
            _post(loop, events.put_nowait, event)

    progress = Progress(ctx, lambda: events.put_nowait(_FLUSH))
    job: Job = runner.submit(
        code,
        reset=reset,
        on_event=on_event if progress.wanted else None,  # no progress: no wake-up per event
        client_ask=client_ask,
    )
    job.future.add_done_callback(lambda _: _post(loop, events.put_nowait, None))
    on_gone(ctx, lambda: runner.cancel(job))
    try:
        while (event := await events.get()) is not None:
            if event is _FLUSH:
                await progress.flush()
            elif (line := _progress_line(event)) is not None:
                await progress.add(line)
        await progress.flush()
        if job.future.cancelled():
            raise asyncio.CancelledError
        return job, job.future.result()
    except asyncio.CancelledError:  # the client cancelled or went away: stop the program
        runner.cancel(job)
        raise


_FLUSH: Any = object()  # the progress timer's wake-up, in the run's event queue
#: Seconds between two progress notifications of a run: the lines of the events in between
#: go together in the next one (each notification costs a round of the transport, which a
#: thousand tool calls would otherwise pay two thousand times).
PROGRESS_INTERVAL = 0.1


#: The request `_meta` key a client sets to size one result: `{"codemode/budget": 5000}`.
BUDGET_META = "codemode/budget"


def meta_budget(ctx: Any, default: int) -> int:
    """The result budget of this call: its `_meta` entry when valid, else the server's."""
    meta = getattr(ctx.request_context, "meta", None)
    value = meta.get(BUDGET_META) if isinstance(meta, dict) else getattr(meta, BUDGET_META, None)
    try:
        return check_budget(value) if value is not None else default
    except ValueError:
        return default


def _progress_line(event: ev.Event) -> str | None:
    if isinstance(event, ev.RunFinished):
        return None  # the end is the result itself: no notification for it
    return event_line(event)


def _progress_token(meta: Any) -> Any:
    if isinstance(meta, dict):
        return meta.get("progress_token", meta.get("progressToken"))
    return getattr(meta, "progress_token", None)


class Progress:
    """The progress notifications of one run, at most one per PROGRESS_INTERVAL, each with
    the lines of the events since the last (none if the client asked for no progress)."""

    def __init__(self, ctx: Any, wake: Callable[[], None]) -> None:
        self.ctx, self.wake = ctx, wake
        self.wanted = _progress_token(getattr(ctx.request_context, "meta", None)) is not None
        self.loop = asyncio.get_running_loop()
        self.pending: list[str] = []
        self.count = 0
        self.last = -PROGRESS_INTERVAL
        self.timer: asyncio.TimerHandle | None = None

    async def add(self, line: str) -> None:
        self.pending.append(line)
        due = self.last + PROGRESS_INTERVAL - self.loop.time()
        if due <= 0:
            await self.flush()
        elif self.timer is None:
            self.timer = self.loop.call_later(due, self.wake)

    async def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.pending:
            return
        lines, self.pending = self.pending, []
        self.count += len(lines)
        self.last = self.loop.time()
        await _progress(self.ctx, self.count, clip("\n".join(lines), MAX_EVENT_LINE))


def ended(future: concurrent.futures.Future[Any], timeout: float) -> bool:
    """Whether `future` ended (however) within `timeout` s."""
    concurrent.futures.wait([future], timeout)
    return future.done()


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[[Any], Any], arg: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:
        pass  # the loop is closed: the client left (stdio ended) and nobody awaits this run


async def _progress(ctx: Any, count: int, line: str) -> None:
    try:
        await ctx.report_progress(count, None, line)
    except Exception:
        pass  # a client that stopped listening still gets the result
