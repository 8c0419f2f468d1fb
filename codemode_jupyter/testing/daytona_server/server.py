"""The loopback server: its lifecycle (served from a thread of its own), the HTTP plumbing
(authorization, counts, injected faults) and the routes of its parts.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from codemode_jupyter.testing.daytona_server.faults import Fault, Faults, LogDrop
from codemode_jupyter.testing.daytona_server.previews import PreviewRoutes
from codemode_jupyter.testing.daytona_server.replies import error_reply
from codemode_jupyter.testing.daytona_server.sandbox import DEFAULT_API_KEY, Sandbox, kill_tree
from codemode_jupyter.testing.daytona_server.sandboxes import SandboxRoutes
from codemode_jupyter.testing.daytona_server.toolbox import ToolboxRoutes

ADMIN = "/_admin"  # the fault switches and counts over HTTP


class DaytonaLoopbackServer(Faults, SandboxRoutes, ToolboxRoutes, PreviewRoutes):
    """The loopback server: start() serves on 127.0.0.1 from a background thread.

    `isolate`: None runs commands in the local jail when it exists, True requires it, False
    runs plain subprocesses. `network` lets sandboxes reach (and be reached on) the host's
    loopback, which preview links need to get through.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        root: str | Path | None = None,
        network: bool = False,
        isolate: bool | None = None,
        auto_stop_seconds_per_minute: float = 60.0,
        daemon_quirks: bool = True,
        log_read_size: int | None = 1024,
    ) -> None:
        self.api_key = api_key
        self.daemon_quirks = daemon_quirks
        self.log_read_size = log_read_size
        self.host = host
        self.port = port
        self.network = network
        self.isolate = isolate
        self.auto_stop_seconds_per_minute = auto_stop_seconds_per_minute
        self._own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="daytona-loopback-"))
        self.root.chmod(0o755)  # the jail runs commands as a uid of its own
        self.sandboxes: dict[str, Sandbox] = {}
        self._counts: collections.Counter[str] = collections.Counter()
        self._faults: list[Fault] = []
        self._log_drop: LogDrop | None = None
        self._destroying_seconds = 0.0
        self._rate_limits: list[list[Any]] = []  # [route, times left, Retry-After]: rate_limit()
        self.rate_limited = 0  # requests answered 429 by rate_limit()
        self._signed: dict[str, tuple[str, int, float]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._auto_stop: asyncio.Task[None]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The value for DAYTONA_API_URL."""
        return f"{self.base_url}/api"

    def start(self) -> DaytonaLoopbackServer:
        """Serve from a daemon thread; returns once the port is bound."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=serve, name="daytona-loopback", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        """Kill every sandbox's processes, stop serving and remove the temporary root."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = None
        for sandbox in list(self.sandboxes.values()):
            for cmd in sandbox.commands():
                kill_tree(cmd.proc)
            if sandbox.dto["state"] == "destroying":
                self._gone(sandbox.id)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DaytonaLoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start_site(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._auto_stop = asyncio.get_running_loop().create_task(self._auto_stop_loop())

    async def _shutdown(self) -> None:
        # Handlers still stalled by an injected delay must not hold up the shutdown.
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        for sandbox in self.sandboxes.values():
            for ws in list(sandbox.streams):
                await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path.startswith(ADMIN):
            return await handler(request)
        route = request.match_info.route.name or "unknown"
        if request.headers.get("Upgrade", "").lower() == "websocket":
            route += ".ws"
        with self._lock:
            self._counts[route] += 1
        if not route.startswith("preview") and not self._authorized(request):
            return error_reply(401, "Invalid credentials: check your API key")
        limited = self._take_rate_limit(route)  # rate_limit(): a 429 burst with Retry-After
        if limited is not None:
            return limited
        fault = self._take_fault(route)
        if fault is not None and fault.served:
            await handler(request)  # it happened; the client is told otherwise
            if fault.delay:
                await asyncio.sleep(fault.delay)
            return error_reply(fault.status or 504, f"injected fault ({fault.status or 504})")
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status:
                return error_reply(
                    fault.status,
                    f"injected fault ({fault.status})",
                    headers={"Retry-After": "0"} if fault.status == 429 else None,
                )
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        s, t = "/api/sandbox", "/toolbox/{sid}"
        routes: list[tuple[str, str, Callable, str]] = [
            ("POST", s, self.create_sandbox, "sandbox.create"),
            ("GET", s, self.list_sandboxes, "sandbox.list"),
            ("GET", s + "/{sid}", self.get_sandbox, "sandbox.get"),
            ("DELETE", s + "/{sid}", self.delete_sandbox_route, "sandbox.delete"),
            ("POST", s + "/{sid}/start", self.start_sandbox_route, "sandbox.start"),
            ("POST", s + "/{sid}/stop", self.stop_sandbox_route, "sandbox.stop"),
            ("GET", s + "/{sid}/toolbox-proxy-url", self.toolbox_proxy_url, "sandbox.toolbox_url"),
            ("GET", s + "/{sid}/ports/{port}/preview-url", self.preview_url, "sandbox.preview_url"),
            (
                "GET",
                s + "/{sid}/ports/{port}/signed-preview-url",
                self.signed_preview_url,
                "sandbox.signed_preview_url",
            ),
            ("GET", "/api/socket.io/", self.no_events, "events"),
            ("GET", t + "/user-home-dir", self.home_dir, "toolbox.home_dir"),
            ("POST", t + "/files/bulk-upload", self.bulk_upload, "files.upload"),
            ("POST", t + "/process/execute", self.execute, "process.execute"),
            ("POST", t + "/process/code-run", self.code_run, "process.code_run"),
            ("POST", t + "/process/session", self.create_session, "session.create"),
            ("GET", t + "/process/session", self.list_sessions, "session.list"),
            ("GET", t + "/process/session/{session}", self.get_session, "session.get"),
            ("DELETE", t + "/process/session/{session}", self.delete_session, "session.delete"),
            ("POST", t + "/process/session/{session}/exec", self.session_exec, "session.exec"),
            (
                "GET",
                t + "/process/session/{session}/command/{cmd}",
                self.get_command,
                "command.get",
            ),
            (
                "GET",
                t + "/process/session/{session}/command/{cmd}/logs",
                self.command_logs,
                "command.logs",
            ),
            (
                "POST",
                t + "/process/session/{session}/command/{cmd}/input",
                self.command_input,
                "command.input",
            ),
            ("*", "/preview/{sid}/{port}/{tail:.*}", self.preview_proxy, "preview.proxy"),
            ("*", "/preview-signed/{token}/{tail:.*}", self.signed_preview_proxy, "preview.signed"),
        ]
        for method, path, handler, name in routes:
            r.add_route(method, path, handler, name=name)
        r.add_get(ADMIN + "/counts", self._admin_counts)
        r.add_post(ADMIN + "/reset-counts", self._admin_reset)
        r.add_post(ADMIN + "/inject", self._admin_inject)
        r.add_post(ADMIN + "/drop-log-streams", self._admin_drop)
        r.add_post(ADMIN + "/clear-faults", self._admin_clear)
        r.add_post(ADMIN + "/keep-destroying", self._admin_keep_destroying)
        r.add_post(ADMIN + "/sandbox/{sid}/delete", self._admin_delete)
        r.add_post(ADMIN + "/sandbox/{sid}/stop", self._admin_stop)
        r.add_post(ADMIN + "/sandbox/{sid}/fail", self._admin_fail)
