"""The loopback server's fault switches and counters: failed, slow or rate-limited requests,
log streams dropped at a chosen byte, sandboxes deleted, stopped or broken behind the client's
back. Thread-safe; also served under the admin endpoints.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from codemode_jupyter.testing.daytona_server.replies import error_reply
from codemode_jupyter.testing.daytona_server.sandbox import Command


@dataclass
class Fault:
    """An injected fault: for `times` matching requests, wait `delay` then answer `status`.

    With `served`, the request is carried out first and only its answer is replaced, as when
    a gateway times out on a request that did succeed behind it.
    """

    route: str | None
    status: int | None = None
    delay: float = 0.0
    times: int = 1
    served: bool = False


@dataclass
class LogDrop:
    """An injected log-stream fault: `times` streams are dropped (close 1011), each once
    `after` more messages have gone out. With `inside`, the drop waits for the next match of
    that pattern in the log and the stream's last message ends `offset` bytes into it."""

    times: int
    after: int
    inside: re.Pattern[bytes] | None = None
    offset: int = 1
    left: int = 0  # messages still to let through before the next drop


class Faults:
    """The fault switches and request counts of DaytonaLoopbackServer (server.py)."""

    def inject(
        self,
        route: str | None = None,
        *,
        status: int | None = None,
        delay: float = 0.0,
        times: int = 1,
        served: bool = False,
    ) -> None:
        """Make the next `times` requests to `route` (a route name, None for any) fail or stall.

        Route names are the keys of `counts`, e.g. "sandbox.create", "command.input". With
        `served`, each request takes effect and only then is answered with `status` (a
        creation that succeeded behind a gateway that timed out: `status=504, served=True`).
        """
        with self._lock:
            self._faults.append(Fault(route, status, delay, times, served))

    def drop_log_streams(
        self,
        times: int = 1,
        after_chunks: int = 0,
        *,
        inside: bytes | re.Pattern[bytes] | None = None,
        offset: int = 1,
    ) -> None:
        """Drop log websockets abnormally (close 1011), `times` times.

        Whichever stream (open or new) is about to send a message once `after_chunks` more
        messages have gone out is dropped instead; then the count restarts for the next drop.
        With `inside` (bytes, or a compiled bytes pattern), the drop happens partway into the
        next match in a command's log: the stream's last message ends `offset` bytes into it
        (inside a stream marker, a UTF-8 character, a frame...), as when the daemon's read
        ended there and the connection died. Each later drop looks past the previous one.
        """
        pattern = re.compile(re.escape(inside)) if isinstance(inside, bytes) else inside
        with self._lock:
            self._log_drop = LogDrop(times, after_chunks, pattern, offset, after_chunks)

    @property
    def log_drops_pending(self) -> int:
        """How many of the injected log-stream drops have not happened yet."""
        with self._lock:
            return self._log_drop.times if self._log_drop is not None else 0

    def keep_destroying(self, seconds: float) -> None:
        """Deleted sandboxes stay listed in state "destroying" for `seconds` (0: gone at once),
        refusing to start ("state change in progress"), as Daytona's API shows them."""
        with self._lock:
            self._destroying_seconds = seconds

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._rate_limits.clear()
            self._log_drop = None
            self._destroying_seconds = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Requests served so far, by route name (websockets under "command.logs.ws")."""
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def rate_limit(self, route: str, times: int, retry_after: float) -> None:
        """Answer the next `times` requests to `route` with 429 and `Retry-After: retry_after`
        (seconds), as Daytona does when a rate limit is hit; `rate_limited` counts them."""
        with self._lock:
            self._rate_limits.append([route, times, retry_after])

    def _take_rate_limit(self, route: str) -> web.Response | None:
        with self._lock:
            for limit in self._rate_limits:
                if limit[0] == route:
                    limit[1] -= 1
                    if limit[1] <= 0:
                        self._rate_limits.remove(limit)
                    self.rate_limited += 1
                    retry_after = f"{limit[2]:g}"
                    break
            else:
                return None
        return error_reply(429, "Rate limit exceeded", headers={"Retry-After": retry_after})

    def delete_sandbox(self, sandbox_id: str) -> None:
        """Delete a sandbox behind the client's back (as the dashboard or a cleanup job would)."""
        self._call(self._destroy, sandbox_id)

    def stop_sandbox(self, sandbox_id: str) -> None:
        """Stop a sandbox behind the client's back (as Daytona's idle auto-stop does)."""
        self._call(self._stop, sandbox_id)

    def fail_sandbox(self, sandbox_id: str, reason: str = "injected fault") -> None:
        """Put a sandbox in state "error" (its processes die), as a broken runner would."""
        self._call(lambda sid: self._fail(sid, reason), sandbox_id)

    def _call(self, fn: Callable[[str], Any], sandbox_id: str) -> None:
        assert self._loop is not None, "server not started"
        future = asyncio.run_coroutine_threadsafe(fn(sandbox_id), self._loop)
        future.result(timeout=10)

    def _take_fault(self, route: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.route in (None, route):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _log_cut(self, cmd: Command, start: int, end: int) -> int | None:
        """Where an injected drop cuts the message log[start:end] short (then the stream
        closes), or None to send it whole."""
        with self._lock:
            drop = self._log_drop
            if drop is None or drop.times <= 0:
                return None
            if drop.left > 0:
                drop.left -= 1
                return None
            cut = start
            if drop.inside is not None:
                # The cut point must lie in this message: past `start`, at most `end`.
                match = drop.inside.search(cmd.log, max(cmd.cut_floor, start - drop.offset + 1))
                if match is None or match.start() + drop.offset > end:
                    return None
                cut = match.start() + drop.offset
                cmd.cut_floor = match.start() + 1  # a replay is not cut at the same place
            drop.times -= 1
            drop.left = drop.after
            return cut

    async def _admin_counts(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts)

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset_counts()
        return web.json_response({})

    async def _admin_inject(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.inject(
            body.get("route"),
            status=body.get("status"),
            delay=body.get("delay", 0.0),
            times=body.get("times", 1),
            served=bool(body.get("served", False)),
        )
        return web.json_response({})

    async def _admin_drop(self, request: web.Request) -> web.Response:
        body = await request.json()
        inside = body.get("inside")
        self.drop_log_streams(
            body.get("times", 1),
            body.get("after_chunks", 0),
            inside=inside.encode() if inside is not None else None,
            offset=body.get("offset", 1),
        )
        return web.json_response({})

    async def _admin_keep_destroying(self, request: web.Request) -> web.Response:
        self.keep_destroying(float((await request.json()).get("seconds", 0)))
        return web.json_response({})

    async def _admin_clear(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({})

    async def _admin_delete(self, request: web.Request) -> web.Response:
        await self._destroy(request.match_info["sid"])
        return web.json_response({})

    async def _admin_stop(self, request: web.Request) -> web.Response:
        await self._stop(request.match_info["sid"])
        return web.json_response({})

    async def _admin_fail(self, request: web.Request) -> web.Response:
        await self._fail(request.match_info["sid"], "injected fault")
        return web.json_response({})
