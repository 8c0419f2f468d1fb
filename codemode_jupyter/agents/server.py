"""A Code Mode MCP server: one `run_code` tool over Streamable HTTP (or stdio).

Built on the official `mcp` SDK (`MCPServer`). Over HTTP it listens on loopback by default and
every request must carry `Authorization: Bearer <token>` (a token is generated per start unless
one is given); a non-loopback host needs `allow_remote=True`. The HTTP server (uvicorn) runs on
a thread and event loop of its own, so it works inside a kernel whose main thread is busy or
idle; uvicorn installs no signal handlers off the main thread, so the kernel keeps Ctrl-C.

Programs run through an `AgentRunner`: one at a time, in order, in the given CodeMode session.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from .. import events as ev
from ..result import RunResult
from . import require_mcp
from .approval import ApprovalGate, Approver, QueueApprover
from .llm_tool import TOOL_NAME, tool_description
from .results import event_line, result_data, result_images, result_text
from .runner import AgentRunner, Job, Observer, RunContext, SessionSource

INSTRUCTIONS = (
    "Call run_code with a Python program that uses the tools described in its description; "
    "variables persist between programs unless reset is true."
)
APPROVAL_NOTE = (
    "\nCalls to {names} wait for a person's approval. A rejected call raises ToolError "
    "(its remote_type is 'ToolRejected', its message gives the reason) and the tool did not run.\n"
)
_START_TIMEOUT = 10.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CodeModeServer:
    """The MCP server for one Code Mode session.

    `session`: a CodeMode, or a factory called before each run. `tools`: called before each
    run (and by `refresh_tools`) for the current tools; None uses the session's own.
    `approve`: tool names (or "all") whose calls wait for `approver` (a QueueApprover by
    default, reachable as `server.approver`).
    """

    def __init__(
        self,
        session: SessionSource,
        *,
        tools: Callable[[], Iterable[Any]] | None = None,
        approve: Iterable[str] | str | None = None,
        approver: Approver | None = None,
        approval_timeout: float | None = 300.0,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        allow_remote: bool = False,
        name: str = "codemode-jupyter",
        path: str = "/mcp",
        observers: Iterable[Observer] = (),
        run_context: RunContext | None = None,
    ) -> None:
        require_mcp()
        if not is_loopback(host) and not allow_remote:
            raise ValueError(
                f"host {host!r} is not a loopback address: anyone who can reach it "
                "and has the token can run code with the notebook's tools; pass "
                "allow_remote=True (--allow-remote) to mean it"
            )
        if token is not None and len(token) < 16:
            raise ValueError("the token must be at least 16 characters")
        self.host, self.path, self.name = host, path, name
        self.allow_remote = allow_remote
        self._requested_port = port
        self.port: int | None = None
        self.token = token or secrets.token_urlsafe(32)
        self.approver = approver if approver is not None else QueueApprover()
        gate = None
        if approve:
            gate = ApprovalGate(
                self.approver,
                "all" if approve == "all" else list(approve),
                timeout=approval_timeout,
            )
        self.runner = AgentRunner(
            session, tools=tools, gate=gate, observers=observers, run_context=run_context
        )
        self._description = self.describe_tools()
        self.mcp, self._bus = self._build_mcp()
        self._legacy_sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None

    # --- the tool ------------------------------------------------------------------------

    def describe_tools(self) -> str:
        """The run_code description: the prompt for the current tools (+ who needs approval)."""
        runner = self.runner
        tools = runner.current_tools()
        text = tool_description(runner.session(), tools)
        gate = runner.gate
        if gate is not None:
            from ..tools import Tool

            listed = [
                Tool.from_callable(t)
                for t in (tools if tools is not None else runner.session().tools)
            ]
            names = [t.name for t in listed if gate.needs_approval(t)]
            if names:
                text += APPROVAL_NOTE.format(names=", ".join(names))
        return text

    def _build_mcp(self) -> tuple[Any, Any]:
        from mcp.server import MCPServer
        from mcp.server.subscriptions import InMemorySubscriptionBus

        bus = InMemorySubscriptionBus()
        server = MCPServer(
            self.name, instructions=INSTRUCTIONS, subscriptions=bus, log_level="WARNING"
        )
        server.add_tool(self._tool_function(), name=TOOL_NAME, description=self._description)
        server.middleware.append(self._remember_legacy_sessions)
        return server, bus

    def _tool_function(self) -> Callable[..., Any]:
        from mcp.server.mcpserver import Context
        from mcp_types import CallToolResult, ImageContent, TextContent

        runner = self.runner

        async def run_code(code: str, ctx: Context, reset: bool = False) -> CallToolResult:
            result = await run_job(runner, code, reset, ctx)
            images = [
                ImageContent(type="image", data=data, mime_type=mime)
                for mime, data in result_images(result)
            ]
            return CallToolResult(
                content=[TextContent(type="text", text=result_text(result)), *images],
                structured_content=result_data(result),
                is_error=not result.ok,
            )

        # Real objects, not this module's string annotations: the SDK reads them to find the
        # Context parameter and to build the input schema.
        run_code.__annotations__ = {
            "code": str,
            "ctx": Context,
            "reset": bool,
            "return": CallToolResult,
        }
        return run_code

    async def _remember_legacy_sessions(self, ctx: Any, call_next: Any) -> Any:
        """Handshake-era clients get tools/list_changed on their session; 2026-era ones
        through `subscriptions/listen` (the bus)."""
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        if getattr(ctx, "protocol_version", None) not in MODERN_PROTOCOL_VERSIONS:
            # ctx.session is a per-request proxy; the connection behind it lives as long as
            # the client's session (the SDK has no public handle on it yet).
            connection = getattr(getattr(ctx, "session", None), "_connection", None)
            if connection is not None and hasattr(connection, "send_tool_list_changed"):
                self._legacy_sessions.add(connection)
        return await call_next(ctx)

    def refresh_tools(self) -> bool:
        """Re-read the tool set; if the description changed, update the tool and tell the
        clients (tools/list_changed). Returns whether it changed. Call it from any thread."""
        description = self.describe_tools()
        if description == self._description:
            return False
        self._description = description
        loop = self._loop
        if loop is None or not loop.is_running():
            self._replace_tool()
            return True
        future = asyncio.run_coroutine_threadsafe(self._announce_change(), loop)
        future.result(timeout=10)
        return True

    def _replace_tool(self) -> None:
        self.mcp.remove_tool(TOOL_NAME)
        self.mcp.add_tool(self._tool_function(), name=TOOL_NAME, description=self._description)

    async def _announce_change(self) -> None:
        from mcp.server.subscriptions import ToolsListChanged

        self._replace_tool()  # on the server's loop: no listing sees the tool missing
        await self._bus.publish(ToolsListChanged())
        for session in list(self._legacy_sessions):
            try:
                await session.send_tool_list_changed()
            except Exception:
                self._legacy_sessions.discard(session)  # gone: nothing to tell

    # --- HTTP ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> CodeModeServer:
        """Listen (the port is bound before this returns, so a taken port fails here)."""
        if self.running:
            return self
        import uvicorn

        sock = _bind(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        app = self._guarded_app()
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, access_log=False
        )
        self._uvicorn = uvicorn.Server(config)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(sock, ready), name="codemode-mcp-http", daemon=True
        )
        self._thread.start()
        ready.wait(_START_TIMEOUT)
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._uvicorn.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the MCP server did not start")
            self._thread.join(0.02)
        if not self._thread.is_alive():
            raise RuntimeError("the MCP server stopped while starting (see the log above)")
        return self

    def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        ready.set()
        try:
            loop.run_until_complete(self._uvicorn.serve(sockets=[sock]))
        finally:
            sock.close()
            # Tasks the transport left (sse-starlette's shutdown watcher) end with the loop.
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    def _guarded_app(self) -> Callable[..., Any]:
        """The MCP app behind a bearer-token check: without the token, 401."""
        from mcp.server.transport_security import TransportSecuritySettings

        security = None
        if self.allow_remote:  # the Host header is the server's address: rebinding checks off
            security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        app = self.mcp.streamable_http_app(
            streamable_http_path=self.path, host=self.host, transport_security=security
        )
        expected = f"Bearer {self.token}".encode()

        async def guarded(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                given = dict(scope.get("headers") or ()).get(b"authorization", b"")
                if not hmac.compare_digest(given, expected):
                    await _unauthorized(send)
                    return
            await app(scope, receive, send)

        return guarded

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: running programs are cancelled, the port is closed, the thread ends."""
        self.runner.stop(timeout)
        server, thread = self._uvicorn, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout)
        self._thread = None

    def client_config(self) -> dict[str, Any]:
        """The JSON common MCP clients take (`mcpServers` entry for streamable HTTP)."""
        return {
            "mcpServers": {
                self.name: {
                    "type": "http",
                    "url": self.url,
                    "headers": {"Authorization": f"Bearer {self.token}"},
                }
            }
        }

    # --- stdio ---------------------------------------------------------------------------

    def run_stdio(self) -> None:
        """Serve over stdin/stdout until the client closes them (the CLI's stdio mode)."""
        try:
            self.mcp.run("stdio")
        finally:
            self.runner.stop()

    def __enter__(self) -> CodeModeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def run_job(runner: AgentRunner, code: str, reset: bool, ctx: Any) -> RunResult:
    """Queue the program, stream its events as progress notifications, return its result."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[ev.Event | None] = asyncio.Queue()

    def on_event(event: ev.Event) -> None:  # engine threads: hand over to this loop, in order
        loop.call_soon_threadsafe(events.put_nowait, event)

    job: Job = runner.submit(code, reset=reset, on_event=on_event)
    job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(events.put_nowait, None))
    count = 0
    try:
        while (event := await events.get()) is not None:
            line = event_line(event)
            if line is not None:
                count += 1
                await _progress(ctx, count, line)
        return job.future.result()
    except asyncio.CancelledError:  # the client cancelled or went away: stop the program
        runner.cancel(job)
        raise


async def _progress(ctx: Any, count: int, line: str) -> None:
    try:
        await ctx.report_progress(count, None, line)
    except Exception:
        pass  # a client that stopped listening still gets the result


async def _unauthorized(send: Any) -> None:
    body = b'{"error": "unauthorized: send Authorization: Bearer <token>"}'
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="codemode"'),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


__all__ = ["ApprovalGate", "CodeModeServer", "QueueApprover", "is_loopback", "run_job"]
