"""A Daytona-compatible loopback server, for tests and offline development.

It speaks the subset of the Daytona control-plane and toolbox API that the `daytona` SDK uses
for codemode-jupyter (see docs/daytona.md): sandboxes (create, get, list, start, stop, delete,
preview links), sessions and session commands with a streaming logs websocket, command input,
one-shot `execute` and `code-run`, bulk upload and the user's home directory. Each sandbox is a
host directory; commands run inside the local backend's bubblewrap jail when it is available
(home `/home/daytona`, as on Daytona), else as plain subprocesses with the directory as home.

As Daytona's daemon does, it sends a command's log (each chunk behind a 3-byte stream marker)
in 1,024-byte reads, so a message may end inside a marker or a UTF-8 character.

Faults can be injected (HTTP status, slow responses, requests that succeed but are answered
with an error, log websockets dropped at a chosen byte, a sandbox that is deleted, stopped or
broken behind the client's back, deleted sandboxes that linger as "destroying") and every
request is counted by route, through the Python API (`DaytonaLoopbackServer`) or the admin
endpoints under `/_admin`.

    python -m codemode_jupyter.testing.daytona_server --port 3986
    export DAYTONA_API_URL=http://127.0.0.1:3986/api DAYTONA_API_KEY=loopback
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import collections
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

STDOUT_MARK = b"\x01\x01\x01"
STDERR_MARK = b"\x02\x02\x02"
JAIL_HOME = "/home/daytona"
DEFAULT_API_KEY = "loopback"
ORG_ID = "loopback-org"
_PATH = "/usr/local/bin:/usr/bin:/bin"
_ADMIN = "/_admin"


# --- the sandbox's processes ---------------------------------------------------------------------


class Runner:
    """Starts processes for one sandbox: in the local jail if asked and available, else plain."""

    def __init__(self, root: Path, *, network: bool, isolate: bool | None) -> None:
        self.workdir = root / "home"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jail = _make_jail(self.workdir, network) if isolate is not False else None
        if isolate and (self._jail is None or self._jail.isolation == "none"):
            raise RuntimeError("isolation requested but the local jail cannot isolate here")
        jailed = self._jail is not None and self._jail.isolation != "none"
        self.home = JAIL_HOME if jailed else str(self.workdir)
        self.isolation = self._jail.isolation if self._jail is not None else "none"

    def host_path(self, path: str) -> Path:
        """Where a sandbox path lives on the host; only the home directory is backed."""
        sandbox_path = path if path.startswith("/") else f"{self.home}/{path}"
        relative = os.path.relpath(os.path.normpath(sandbox_path), self.home)
        if relative == ".." or relative.startswith("../"):
            raise PermissionError(f"the loopback server only backs paths under {self.home}: {path}")
        return self.workdir / relative

    def popen(
        self, command: str, env: dict[str, str] | None = None, merge: bool = False
    ) -> subprocess.Popen:
        """Run a shell command in the sandbox (its own process group), pipes on all three fds."""
        pipes: dict[str, Any] = {
            "stdin": subprocess.PIPE,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.STDOUT if merge else subprocess.PIPE,
        }
        if self._jail is not None:
            environment = {**self._jail.environment(), **(env or {})}
            return self._jail.popen(["sh", "-c", command], env=environment, **pipes)
        environment = {"HOME": self.home, "PATH": _PATH, "LANG": "C.UTF-8", **(env or {})}
        return subprocess.Popen(
            ["sh", "-c", command],
            cwd=self.workdir,
            env=environment,
            start_new_session=True,
            **pipes,
        )

    def close(self) -> None:
        if self._jail is not None:
            self._jail.close()


def _make_jail(workdir: Path, network: bool) -> Any:
    try:
        from codemode_jupyter.backends.local.backend import Jail
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the server reports isolation itself
        return Jail(workdir, network=network, home=JAIL_HOME)


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a command and everything it started (its own process group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


class Command:
    """One session command: its process, its interleaved output log and its exit code."""

    def __init__(
        self, command: str, proc: subprocess.Popen, loop: asyncio.AbstractEventLoop, echo: bool
    ) -> None:
        self.id = uuid.uuid4().hex
        self.command = command
        self.proc = proc
        self.echo = echo
        self.chunks: list[tuple[int, bytes]] = []
        # The daemon's log file: each chunk behind its stream's marker, as its followers read it.
        self.log = bytearray()
        self.units: list[int] = []  # where each marked chunk ends in `log`
        self.cut_floor = 0  # injected log cuts look for their place past this point
        self.exit_code: int | None = None
        self._loop = loop
        self._changed = asyncio.Event()
        readers = [self._reader(proc.stdout, 1), self._reader(proc.stderr, 2)]
        threading.Thread(target=self._waiter, args=(readers,), daemon=True).start()

    def _reader(self, pipe: Any, stream: int) -> threading.Thread:
        def pump() -> None:
            fd = pipe.fileno()
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                self._loop.call_soon_threadsafe(self.feed, stream, data)

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        return thread

    def _waiter(self, readers: list[threading.Thread]) -> None:
        code = self.proc.wait()
        for reader in readers:
            reader.join(timeout=2)  # a background child may hold the pipe open forever
        with contextlib.suppress(RuntimeError):  # the loop may be closing
            self._loop.call_soon_threadsafe(self.finish, code)

    def feed(self, stream: int, data: bytes) -> None:
        self.chunks.append((stream, data))
        self.log += (STDOUT_MARK if stream == 1 else STDERR_MARK) + data
        self.units.append(len(self.log))
        self._notify()

    def finish(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code if code >= 0 else 128 - code
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def write_input(self, data: str) -> None:
        if self.echo:
            self.feed(1, data.encode())
        assert self.proc.stdin is not None
        self.proc.stdin.write(data.encode())
        self.proc.stdin.flush()

    def text(self, stream: int | None = None) -> str:
        data = b"".join(d for s, d in self.chunks if stream is None or s == stream)
        return data.decode("utf-8", "replace")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.command, "exitCode": self.exit_code}


@dataclass
class Sandbox:
    """A sandbox record: its DTO fields, its directory, its sessions and live log streams."""

    dto: dict[str, Any]
    root: Path
    runner: Runner
    sessions: dict[str, dict[str, Command]] = field(default_factory=dict)
    streams: dict[web.WebSocketResponse, Command] = field(default_factory=dict)
    preview_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    last_activity: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.dto["id"]

    @property
    def started(self) -> bool:
        return self.dto["state"] == "started"

    def commands(self) -> list[Command]:
        return [cmd for session in self.sessions.values() for cmd in session.values()]


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


# --- the server ----------------------------------------------------------------------------------


class DaytonaLoopbackServer:
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

    # --- lifecycle ---

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

    # --- fault switches and counters (thread-safe) ---

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

    # --- rate limiting (the pool's faults: a burst of 429s that say when to come back) ---

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
        return _error(429, "Rate limit exceeded", headers={"Retry-After": retry_after})

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

    # --- HTTP plumbing ---

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path.startswith(_ADMIN):
            return await handler(request)
        route = request.match_info.route.name or "unknown"
        if request.headers.get("Upgrade", "").lower() == "websocket":
            route += ".ws"
        with self._lock:
            self._counts[route] += 1
        if not route.startswith("preview") and not self._authorized(request):
            return _error(401, "Invalid credentials: check your API key")
        limited = self._take_rate_limit(route)  # rate_limit(): a 429 burst with Retry-After
        if limited is not None:
            return limited
        fault = self._take_fault(route)
        if fault is not None and fault.served:
            await handler(request)  # it happened; the client is told otherwise
            if fault.delay:
                await asyncio.sleep(fault.delay)
            return _error(fault.status or 504, f"injected fault ({fault.status or 504})")
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status:
                return _error(
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
        r.add_get(_ADMIN + "/counts", self._admin_counts)
        r.add_post(_ADMIN + "/reset-counts", self._admin_reset)
        r.add_post(_ADMIN + "/inject", self._admin_inject)
        r.add_post(_ADMIN + "/drop-log-streams", self._admin_drop)
        r.add_post(_ADMIN + "/clear-faults", self._admin_clear)
        r.add_post(_ADMIN + "/keep-destroying", self._admin_keep_destroying)
        r.add_post(_ADMIN + "/sandbox/{sid}/delete", self._admin_delete)
        r.add_post(_ADMIN + "/sandbox/{sid}/stop", self._admin_stop)
        r.add_post(_ADMIN + "/sandbox/{sid}/fail", self._admin_fail)

    # --- control plane ---

    def _lookup(self, request: web.Request, *, started: bool = False) -> Sandbox:
        key = request.match_info["sid"]
        sandbox = self.sandboxes.get(key) or next(
            (sb for sb in self.sandboxes.values() if sb.dto["name"] == key), None
        )
        if sandbox is None:
            raise _http_error(404, f"Sandbox with ID or name {key} not found")
        sandbox.last_activity = time.monotonic()
        if started and not sandbox.started:
            state = sandbox.dto["state"]
            raise _http_error(409, f"Sandbox {sandbox.id} is not started (state {state})")
        return sandbox

    async def create_sandbox(self, request: web.Request) -> web.Response:
        body = await request.json()
        sandbox_id = uuid.uuid4().hex[:12]
        root = self.root / sandbox_id
        runner = Runner(root, network=self.network, isolate=self.isolate)
        now = _now()
        dto = {
            "id": sandbox_id,
            "organizationId": ORG_ID,
            "name": body.get("name") or sandbox_id,
            "snapshot": body.get("snapshot") or "loopback-default",
            "user": body.get("user") or "daytona",
            "env": body.get("env") or {},
            "labels": body.get("labels") or {},
            "public": bool(body.get("public", False)),
            "networkBlockAll": not self.network,
            "kvm": False,
            "target": body.get("target") or "loopback",
            "cpu": 1,
            "gpu": 0,
            "memory": 1,
            "disk": 3,
            "state": "started",
            "desiredState": "started",
            "autoStopInterval": body.get("autoStopInterval", 15),
            "autoArchiveInterval": body.get("autoArchiveInterval", 10080),
            "autoDeleteInterval": body.get("autoDeleteInterval", -1),
            "createdAt": now,
            "updatedAt": now,
            "toolboxProxyUrl": f"{self.base_url}/toolbox",
        }
        self.sandboxes[sandbox_id] = Sandbox(dto, root, runner)
        return web.json_response(dto)

    async def list_sandboxes(self, request: web.Request) -> web.Response:
        wanted = json.loads(request.query.get("labels") or "{}")
        items = [
            sb.dto
            for sb in self.sandboxes.values()
            if all(sb.dto["labels"].get(k) == v for k, v in wanted.items())
        ]
        return web.json_response({"items": items, "nextCursor": None})

    async def get_sandbox(self, request: web.Request) -> web.Response:
        return web.json_response(self._lookup(request).dto)

    async def delete_sandbox_route(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        await self._destroy(sandbox.id)
        return web.json_response(sandbox.dto)

    async def start_sandbox_route(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        if sandbox.dto["state"] == "destroying":
            return _state_change_error()
        sandbox.dto.update(state="started", desiredState="started", updatedAt=_now())
        return web.json_response(sandbox.dto)

    async def stop_sandbox_route(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        if sandbox.dto["state"] == "destroying":
            return _state_change_error()
        await self._stop(sandbox.id)
        return web.json_response(sandbox.dto)

    async def toolbox_proxy_url(self, request: web.Request) -> web.Response:
        self._lookup(request)
        return web.json_response({"url": f"{self.base_url}/toolbox"})

    async def preview_url(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        port = int(request.match_info["port"])
        return web.json_response(
            {
                "sandboxId": sandbox.id,
                "url": f"{self.base_url}/preview/{sandbox.id}/{port}/",
                "token": sandbox.preview_token,
            }
        )

    async def signed_preview_url(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request)
        port = int(request.match_info["port"])
        expires = int(request.query.get("expiresInSeconds") or 60)
        token = secrets.token_urlsafe(16)
        self._signed[token] = (sandbox.id, port, time.time() + expires)
        return web.json_response(
            {
                "sandboxId": sandbox.id,
                "port": port,
                "token": token,
                "url": f"{self.base_url}/preview-signed/{token}/",
            }
        )

    async def no_events(self, request: web.Request) -> web.Response:
        # No socket.io: the SDK falls back to polling, which never waits here because
        # every state change is immediate.
        return _error(404, "events are not served by the loopback server")

    async def _destroy(self, sandbox_id: str) -> None:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.dto["state"] == "destroying":
            return
        await self._halt(sandbox)
        with self._lock:
            linger = self._destroying_seconds
        if linger > 0:
            sandbox.dto.update(state="destroying", desiredState="destroyed", updatedAt=_now())
            asyncio.get_running_loop().call_later(linger, self._gone, sandbox_id)
        else:
            self._gone(sandbox_id)

    def _gone(self, sandbox_id: str) -> None:
        """The end of a deletion: the record and the files go."""
        sandbox = self.sandboxes.pop(sandbox_id, None)
        if sandbox is None:
            return
        sandbox.dto.update(state="destroyed", desiredState="destroyed", updatedAt=_now())
        sandbox.runner.close()
        shutil.rmtree(sandbox.root, ignore_errors=True)

    async def _stop(self, sandbox_id: str) -> None:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is not None:
            await self._halt(sandbox)
            sandbox.dto.update(state="stopped", desiredState="stopped", updatedAt=_now())

    async def _fail(self, sandbox_id: str, reason: str) -> None:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is not None:
            await self._halt(sandbox)
            sandbox.dto.update(state="error", errorReason=reason, updatedAt=_now())

    async def _halt(self, sandbox: Sandbox) -> None:
        """Kill every process and cut every log stream, as a stopping machine would."""
        for cmd in sandbox.commands():
            kill_tree(cmd.proc)
        sandbox.sessions.clear()
        for ws in list(sandbox.streams):
            await ws.close(code=1011, message=b"sandbox is no longer running")

    async def _auto_stop_loop(self) -> None:
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            for sandbox in list(self.sandboxes.values()):
                minutes = sandbox.dto.get("autoStopInterval") or 0
                limit = minutes * self.auto_stop_seconds_per_minute
                if sandbox.started and limit > 0 and now - sandbox.last_activity > limit:
                    await self._stop(sandbox.id)

    # --- toolbox ---

    async def home_dir(self, request: web.Request) -> web.Response:
        return web.json_response({"dir": self._lookup(request, started=True).runner.home})

    async def bulk_upload(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        reader = await request.multipart()
        paths: dict[str, str] = {}
        async for part in reader:
            name = part.name or ""
            if name.endswith(".path"):
                paths[name[: -len(".path")]] = (await part.read()).decode()  # type: ignore[union-attr]
            elif name.endswith(".file"):
                key = name[: -len(".file")]
                target = paths.get(key) or part.filename or ""
                try:
                    host = sandbox.runner.host_path(target)
                except PermissionError as exc:
                    return _error(400, str(exc))
                host.parent.mkdir(parents=True, exist_ok=True)
                host.write_bytes(await part.read())  # type: ignore[union-attr]
        return web.Response(status=200)

    async def execute(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        body = await request.json()
        command = body["command"]
        if body.get("cwd"):
            command = f"cd {shlex.quote(body['cwd'])} && {command}"
        code, output = await self._run_once(sandbox, command, body.get("envs"), body.get("timeout"))
        if code is None:
            return _timeout_error()
        return web.json_response({"exitCode": code, "result": output})

    async def code_run(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        body = await request.json()
        encoded = base64.b64encode(body["code"].encode()).decode()
        argv = " ".join(shlex.quote(a) for a in body.get("argv") or [])
        command = f"printf '%s' '{encoded}' | base64 -d | python3 -u - {argv}"
        code, output = await self._run_once(sandbox, command, body.get("envs"), body.get("timeout"))
        if code is None:
            return _timeout_error()
        return web.json_response({"exitCode": code, "result": output, "artifacts": {"charts": []}})

    async def _run_once(
        self, sandbox: Sandbox, command: str, envs: dict | None, timeout: float | None
    ) -> tuple[int | None, str]:
        proc = sandbox.runner.popen(command, env=envs, merge=True)

        def wait() -> tuple[int | None, str]:
            try:
                out, _ = proc.communicate(timeout=timeout or 600)
            except subprocess.TimeoutExpired:
                kill_tree(proc)
                proc.communicate()
                return None, ""
            return proc.returncode, out.decode("utf-8", "replace")

        return await asyncio.get_running_loop().run_in_executor(None, wait)

    async def create_session(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        session_id = (await request.json())["sessionId"]
        if session_id in sandbox.sessions:
            return _error(409, f"session {session_id} already exists")
        sandbox.sessions[session_id] = {}
        return web.Response(status=201)

    def _session(self, request: web.Request) -> tuple[Sandbox, dict[str, Command]]:
        sandbox = self._lookup(request, started=True)
        session = sandbox.sessions.get(request.match_info["session"])
        if session is None:
            raise _http_error(404, f"session {request.match_info['session']} not found")
        return sandbox, session

    def _command(self, request: web.Request) -> Command:
        _, session = self._session(request)
        cmd = session.get(request.match_info["cmd"])
        if cmd is None:
            raise _http_error(404, f"command {request.match_info['cmd']} not found")
        return cmd

    async def list_sessions(self, request: web.Request) -> web.Response:
        sandbox = self._lookup(request, started=True)
        return web.json_response(
            [
                {"sessionId": sid, "commands": [c.to_json() for c in cmds.values()]}
                for sid, cmds in sandbox.sessions.items()
            ]
        )

    async def get_session(self, request: web.Request) -> web.Response:
        _, session = self._session(request)
        return web.json_response(
            {
                "sessionId": request.match_info["session"],
                "commands": [c.to_json() for c in session.values()],
            }
        )

    async def delete_session(self, request: web.Request) -> web.Response:
        sandbox, session = self._session(request)
        for cmd in session.values():
            kill_tree(cmd.proc)
            # As the daemon does, answer once the command is dead: a client that deleted the
            # session may rely on its processes being gone.
            with contextlib.suppress(asyncio.TimeoutError, subprocess.TimeoutExpired):
                await asyncio.wait_for(asyncio.to_thread(cmd.proc.wait, 5), 6)
            if cmd.proc.returncode is not None:
                cmd.finish(cmd.proc.returncode)
            for ws in [w for w, c in sandbox.streams.items() if c is cmd]:
                await ws.close(code=1000)
        # Two deletes of one session may both have waited above: the second finds it gone.
        sandbox.sessions.pop(request.match_info["session"], None)
        return web.Response(status=204)

    async def session_exec(self, request: web.Request) -> web.Response:
        sandbox, session = self._session(request)
        body = await request.json()
        proc = sandbox.runner.popen(body["command"])
        cmd = Command(
            body["command"],
            proc,
            asyncio.get_running_loop(),
            echo=not body.get("suppressInputEcho", False),
        )
        session[cmd.id] = cmd
        if body.get("runAsync") or body.get("async"):
            return web.json_response({"cmdId": cmd.id}, status=202)
        while cmd.exit_code is None:
            await cmd.changed()
        return web.json_response(
            {
                "cmdId": cmd.id,
                "output": cmd.text(),
                "stdout": cmd.text(1),
                "stderr": cmd.text(2),
                "exitCode": cmd.exit_code,
            }
        )

    async def get_command(self, request: web.Request) -> web.Response:
        return web.json_response(self._command(request).to_json())

    async def command_logs(self, request: web.Request) -> web.StreamResponse:
        cmd = self._command(request)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response(
                {"output": cmd.text(), "stdout": cmd.text(1), "stderr": cmd.text(2)}
            )
        sandbox, _ = self._session(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sandbox.streams[ws] = cmd
        try:
            await self._follow(cmd, ws)
        finally:
            sandbox.streams.pop(ws, None)
        return ws

    async def _follow(self, cmd: Command, ws: web.WebSocketResponse) -> None:
        """Send the whole log so far, then what is added to it, until the session goes.

        Messages are reads of `log_read_size` bytes of the log, as Daytona's daemon sends
        them (so a message may end inside a marker or a UTF-8 character), or with
        `log_read_size=None` one marked chunk each. With `daemon_quirks` (the default) the
        daemon's other habits too: messages padded with NULs to a multiple of 1024 bytes, and
        the stream stays open after the command ends. Without, it closes (1000) once the
        command has ended and all is sent.
        """
        sent = 0
        while not ws.closed:
            while sent < len(cmd.log) and not ws.closed:
                end = self._read_end(cmd, sent)
                cut = self._log_cut(cmd, sent, end)
                if cut is not None:  # what was read so far goes out, then the connection dies
                    if cut > sent:
                        await ws.send_bytes(bytes(cmd.log[sent:cut]))
                    await ws.close(code=1011, message=b"injected fault: log stream dropped")
                    return
                await ws.send_bytes(self._pad(bytes(cmd.log[sent:end])))
                sent = end
            if not self.daemon_quirks and cmd.exit_code is not None and sent == len(cmd.log):
                await ws.close(code=1000)
                return
            await cmd.changed()

    def _read_end(self, cmd: Command, start: int) -> int:
        if self.log_read_size:
            return min(len(cmd.log), start + self.log_read_size)
        return cmd.units[bisect.bisect_right(cmd.units, start)]

    def _pad(self, message: bytes) -> bytes:
        # The daemon sends its whole read buffer: a short read (the log's end, which is
        # always a chunk's end) comes padded with NULs.
        if self.daemon_quirks and len(message) % 1024:
            message += b"\x00" * (1024 - len(message) % 1024)
        return message

    async def command_input(self, request: web.Request) -> web.Response:
        cmd = self._command(request)
        data = (await request.json())["data"]
        if cmd.exit_code is not None:
            return _completed_error()
        try:
            cmd.write_input(data)
        except OSError:  # BrokenPipeError among them: the command's stdin is gone
            return _completed_error()
        return web.Response(status=204)

    # --- previews ---

    async def preview_proxy(self, request: web.Request) -> web.StreamResponse:
        sandbox = self.sandboxes.get(request.match_info["sid"])
        if sandbox is None:
            return _error(404, "sandbox not found")
        token = request.headers.get("X-Daytona-Preview-Token")
        if token != sandbox.preview_token and not self._authorized(request):
            return _error(401, "preview token required")
        return await self._forward(request, sandbox, int(request.match_info["port"]))

    async def signed_preview_proxy(self, request: web.Request) -> web.StreamResponse:
        entry = self._signed.get(request.match_info["token"])
        if entry is None or entry[2] < time.time():
            return _error(401, "invalid or expired signed preview URL")
        sandbox = self.sandboxes.get(entry[0])
        if sandbox is None:
            return _error(404, "sandbox not found")
        return await self._forward(request, sandbox, entry[1])

    async def _forward(self, request: web.Request, sandbox: Sandbox, port: int) -> web.Response:
        if not sandbox.started:
            return _error(502, "sandbox is not running")
        if not self.network:
            return _error(
                502,
                "sandbox network is isolated: start the server with --network "
                "to reach preview ports",
            )
        url = f"http://127.0.0.1:{port}/{request.match_info['tail']}"
        try:
            async with (
                ClientSession(timeout=ClientTimeout(total=30)) as client,
                client.request(
                    request.method, url, params=request.query, data=await request.read()
                ) as upstream,
            ):
                body = await upstream.read()
                return web.Response(
                    status=upstream.status, body=body, content_type=upstream.content_type
                )
        except OSError as exc:
            return _error(502, f"nothing answers on port {port} in the sandbox: {exc}")

    # --- admin ---

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


# --- helpers -------------------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _error(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"statusCode": status, "message": message}
    if code:
        body.update(code=code, source="DAYTONA_DAEMON")
    return web.json_response(body, status=status, headers=headers)


def _http_error(status: int, message: str) -> web.HTTPException:
    error = web.HTTPException(
        text=json.dumps({"statusCode": status, "message": message}), content_type="application/json"
    )
    error.set_status(status)
    return error


def _timeout_error() -> web.Response:
    return _error(408, "process execution timed out", code="PROCESS_EXECUTION_TIMEOUT")


def _completed_error() -> web.Response:
    return _error(410, "command already completed", code="COMMAND_ALREADY_COMPLETED")


def _state_change_error() -> web.Response:
    return _error(409, "Sandbox state change in progress")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m codemode_jupyter.testing.daytona_server",
        description="Serve a Daytona-compatible API on 127.0.0.1, sandboxes in the local jail.",
    )
    parser.add_argument("--port", type=int, default=3986)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--root", help="directory for sandbox files (default: a temporary one)")
    parser.add_argument(
        "--network",
        action="store_true",
        help="let sandboxes use the host network (needed for preview links)",
    )
    parser.add_argument("--no-jail", action="store_true", help="run commands without bubblewrap")
    parser.add_argument(
        "--log-read-size",
        type=int,
        default=1024,
        help="bytes per log message, as the daemon reads them (0: one per chunk)",
    )
    args = parser.parse_args(argv)
    server = DaytonaLoopbackServer(
        api_key=args.api_key,
        port=args.port,
        root=args.root,
        network=args.network,
        isolate=False if args.no_jail else None,
        log_read_size=args.log_read_size or None,
    )

    # Ctrl-C and `kill` (SIGTERM) both stop it cleanly: sandbox processes killed, the
    # temporary root removed. SIGINT is set explicitly: a shell's `&` would leave it ignored.
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.start()
    print(f"Daytona loopback server on {server.base_url}", flush=True)
    print(f"  export DAYTONA_API_URL={server.api_url} DAYTONA_API_KEY={args.api_key}", flush=True)
    print(
        f"  export NO_PROXY=127.0.0.1,localhost  # admin: {server.base_url}{_ADMIN}/counts",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
