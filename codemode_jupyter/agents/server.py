"""A Code Mode MCP server: one `run_code` tool over Streamable HTTP (or stdio).

Built on the official `mcp` SDK (`MCPServer`). Over HTTP it listens on loopback by default and
every request must carry `Authorization: Bearer <token>` (a token is generated per start unless
one is given); a non-loopback host needs `allow_remote=True`. The HTTP server (uvicorn) runs on
a thread and event loop of its own, so it works inside a kernel whose main thread is busy or
idle; uvicorn installs no signal handlers off the main thread, so the kernel keeps Ctrl-C.

Each client gets a Code Mode session of its own (`agent-1`, `agent-2`, ...; sessions.py) unless
`shared=True`; a session's programs run through an `AgentRunner`, one at a time, in order.
A result goes back within a budget of characters (results.py); the full record of each run is
the resource `codemode://runs/{id}`. Guarded tool calls ask the approver and, when the client
declares MCP elicitation, the client too (the first answer wins). A client that goes away
mid-run (its connection closes) stops its program.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import itertools
import json
import secrets
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from codemode_jupyter.agents import require_mcp
from codemode_jupyter.agents.approval import (
    ApprovalGate,
    ApprovalRequest,
    Approver,
    Decision,
    NoApprover,
    QueueApprover,
)
from codemode_jupyter.agents.elicitation import elicit
from codemode_jupyter.agents.llm_tool import (
    TOOL_NAME,
    check_errors,
    input_schema,
    only_tools,
    tool_description,
)
from codemode_jupyter.agents.results import (
    RUN_HISTORY,
    RUN_URI,
    RunRecords,
    check_budget,
    result_images,
    shape,
)
from codemode_jupyter.agents.run_code import client_key, ended, meta_budget, run_job
from codemode_jupyter.agents.runner import AgentRunner, Job, Observer, RunContext, SessionSource
from codemode_jupyter.agents.sessions import AgentSessions, SessionFactory, sibling
from codemode_jupyter.agents.transport import (
    bind,
    is_loopback,
    protocol_stdout,
    transport_security,
    unauthorized,
    watched,
)
from codemode_jupyter.engine.session import CodeMode
from codemode_jupyter.model import events as ev
from codemode_jupyter.support.loop_thread import LoopThread

INSTRUCTIONS = (
    "Call run_code with a Python program that uses the tools described in its description; "
    "variables persist between programs unless reset is true. A result shows the output's "
    "head and tail; the full record of run N is the resource codemode://runs/N."
)
RUN_TEMPLATE = "codemode://runs/{run_id}{?page}"
APPROVAL_NOTE = (
    "\nCalls to {names} wait for a person's approval. A rejected call raises ToolError "
    "(its remote_type is 'ToolRejected', its message gives the reason) and the tool did not run.\n"
)
_START_TIMEOUT = 10.0


class CodeModeServer:
    """The MCP server for Code Mode sessions.

    `session`: a CodeMode, or a factory called before each run (the shared session).
    `sessions`: makes a new client's session from its name (`agent-1`); by default each
    client gets a session made like `session` when that is a CodeMode (closed when the
    client ends or the server stops). `shared=True`: all clients use `session`.
    `tools`: called before each run (and by `refresh_tools`) for the current tools; None
    uses the session's own. `allowed_tools`: the only tool names an agent may call.
    `approve`: tool names (or "all") whose calls wait for `approver` (a QueueApprover by
    default, reachable as `server.approver`); tools marked `@tool(approve=True)` always do,
    and with no `approve` list and no approver they are rejected unless the agent's client
    answers by elicitation. `budget`: characters of a whole result (results.py).
    `errors`: "result" (a failed program is a plain result whose text says so) or
    "tool_error" (isError results).
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
        sessions: SessionFactory | None = None,
        shared: bool = False,
        session_name: str = "agent",
        allowed_tools: Iterable[str] | None = None,
        budget: int | None = None,
        errors: str = "result",
        run_history: int = RUN_HISTORY,
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
        self.budget = check_budget(budget)
        self.errors = check_errors(errors)
        self._requested_port = port
        self.port: int | None = None
        self.token = token or secrets.token_urlsafe(32)
        if approver is None:
            approver = QueueApprover() if approve else NoApprover()
        self.approver = approver
        self.gate = ApprovalGate(
            approver,
            "all" if approve == "all" else list(approve or ()),
            timeout=approval_timeout,
        )
        self.records = RunRecords(run_history)
        self.allowed_tools = None if allowed_tools is None else list(allowed_tools)
        self._tools = tools
        self.sessions = self._sessions(
            session, sessions, shared, session_name, observers, run_context
        )
        self._description = self.describe_tools()
        self.mcp, self._bus = self._build_mcp()
        self._legacy_sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._uvicorn: Any = None
        self._http: LoopThread | None = None  # the HTTP server's loop, on a thread of its own
        self._serving: concurrent.futures.Future[None] | None = None

    def _sessions(
        self,
        session: SessionSource,
        factory: SessionFactory | None,
        shared: bool,
        prefix: str,
        observers: Iterable[Observer],
        run_context: RunContext | None,
    ) -> AgentSessions:
        ids = itertools.count(1)  # one numbering for all runners: a run's id is unique
        observers = [self._record, *observers]

        def make_runner(name: str, source: SessionSource) -> AgentRunner:
            return AgentRunner(
                source,
                tools=self._current_tools,
                gate=self.gate,
                observers=observers,
                run_context=run_context,
                name=name,
                ids=ids,
            )

        own = factory is None  # sessions the server made itself, it closes
        if factory is None and not shared and isinstance(session, CodeMode):
            factory = sibling(session)
        return AgentSessions(
            session, make_runner, factory=None if shared else factory, prefix=prefix, own=own
        )

    def _record(self, job: Job, event: ev.Event) -> None:
        """Keep each finished run's full record (cancelled ones too)."""
        if isinstance(event, ev.RunFinished):
            self.records.add(job.id, job.code, event.result, session=job.session_name)

    @property
    def runner(self) -> AgentRunner:
        """The shared session's runner (stateless requests, `shared=True`)."""
        return self.sessions.shared

    def agent_sessions(self) -> dict[str, CodeMode]:
        """The agents' sessions by name (`agent-1`, ...; `agent` for the shared one once
        used): for `%codemode status`, and for `%%codemode --session NAME` to open one."""
        return self.sessions.sessions()

    # --- the tool ------------------------------------------------------------------------

    def _current_tools(self) -> list[Any] | None:
        listed = None if self._tools is None else list(self._tools())
        if self.allowed_tools is None:
            return listed
        if listed is None:
            listed = list(self.runner.session().tools)
        return only_tools(listed, self.allowed_tools)

    def current_tools(self) -> list[Any]:
        """The tools an agent may call now (the tool source, kept to `allowed_tools`)."""
        tools = self._current_tools()
        return list(self.runner.session().tools) if tools is None else tools

    def describe_tools(self) -> str:
        """The run_code description: the prompt for the current tools (+ who needs approval)."""
        from codemode_jupyter.tools.tool import Tool

        tools = self._current_tools()
        session = self.runner.session()
        text = tool_description(session, tools)
        listed = [Tool.from_callable(t) for t in (tools if tools is not None else session.tools)]
        names = [t.name for t in listed if self.gate.needs_approval(t)]
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
        self._add_tool(server)
        server.middleware.append(self._remember_legacy_sessions)
        records = self.records

        @server.resource(
            "codemode://runs",
            name="runs",
            description="The runs whose records are kept, oldest first: id, uri, session, status.",
            mime_type="application/json",
        )
        def run_list() -> str:
            return json.dumps(records.index())

        @server.resource(
            RUN_TEMPLATE,
            name="run",
            description="The full record of an agent's run: its program, all output, every "
            "tool call with arguments and result, displays, artifacts (the last "
            f"{records.keep} runs are kept). A record over about 700 kB comes in pages "
            '(?page=N): {"page", "pages", "text"}, the texts joined being the record.',
            mime_type="application/json",
        )
        def run_record(run_id: str, page: int = 1) -> str:
            from mcp.server.mcpserver.exceptions import ResourceError

            try:
                return records.page(int(run_id), page)
            except ValueError:
                raise ResourceError(f"{run_id!r} is not a run id (a number)") from None
            except KeyError as exc:
                raise ResourceError(exc.args[0]) from None

        return server, bus

    def _add_tool(self, server: Any) -> None:
        from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
        from pydantic import ConfigDict, StrictBool, StrictStr

        server.add_tool(self._tool_function(), name=TOOL_NAME, description=self._description)
        tool = server._tool_manager.get_tool(TOOL_NAME)

        class RunCodeArguments(ArgModelBase):
            # The schema the model is given is the one checked: no unknown arguments, and
            # no "yes" taken for true.
            model_config = ConfigDict(extra="forbid")
            code: StrictStr
            reset: StrictBool = False

        tool.fn_metadata.arg_model = RunCodeArguments
        tool.parameters = input_schema()

    def _tool_function(self) -> Callable[..., Any]:
        from mcp.server.mcpserver import Context
        from mcp_types import CallToolResult, ImageContent, TextContent

        async def run_code(code: str, ctx: Context, reset: bool = False) -> CallToolResult:
            runner = self.sessions.runner_for(client_key(ctx))
            questions = self._client_ask(ctx, code)
            job, result = await run_job(runner, code, reset, ctx, client_ask=questions)
            if questions is not None:
                await questions.settled()  # a withdrawn question is told before the result
            budget = meta_budget(ctx, self.budget)
            shaped = shape(result, budget, RUN_URI.format(id=job.id))
            images = [
                ImageContent(type="image", data=data, mime_type=mime)
                for mime, data in result_images(result)
            ]
            return CallToolResult(
                content=[TextContent(type="text", text=shaped.text), *images],
                structured_content=shaped.data,
                is_error=not result.ok and self.errors == "tool_error",
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

    def _client_ask(self, ctx: Any, code: str) -> _ClientQuestions | None:
        """Asks this request's client about guarded calls, if it declared elicitation and the
        transport can carry a request to it (the stateless HTTP protocol cannot)."""
        session = ctx.request_context.session
        capabilities = getattr(session, "client_capabilities", None)
        if capabilities is None or capabilities.elicitation is None:
            return None
        if not getattr(session, "can_send_request", True):
            return None
        return _ClientQuestions(ctx, code)

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
        if not self.running or self._http is None:
            self._replace_tool()
            return True
        self._http.run(self._announce_change(), timeout=10)
        return True

    def _replace_tool(self) -> None:
        self.mcp.remove_tool(TOOL_NAME)
        self._add_tool(self.mcp)

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
    def _loop(self) -> asyncio.AbstractEventLoop | None:
        """The HTTP server's loop while it serves."""
        return self._http.loop if self.running and self._http is not None else None

    @property
    def running(self) -> bool:
        return self._serving is not None and not self._serving.done()

    def start(self) -> CodeModeServer:
        """Listen (the port is bound before this returns, so a taken port fails here)."""
        if self.running:
            return self
        import uvicorn

        sock = bind(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        app = self._guarded_app()
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, access_log=False
        )
        self._uvicorn = uvicorn.Server(config)
        self._http = LoopThread("codemode-mcp-http")
        self._serving = serving = self._http.submit(self._uvicorn.serve(sockets=[sock]))
        serving.add_done_callback(lambda _: sock.close())
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._uvicorn.started and not serving.done():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the MCP server did not start")
            concurrent.futures.wait([serving], 0.02)
        if serving.done():
            self._http.close()
            raise RuntimeError("the MCP server stopped while starting (see the log above)")
        return self

    def _guarded_app(self) -> Callable[..., Any]:
        """The MCP app behind a bearer-token check (without the token, 401) and a watch on
        each request's connection (a client gone mid-run stops its program)."""
        _speak_handshake_era(self.mcp)
        app = self.mcp.streamable_http_app(
            streamable_http_path=self.path,
            host=self.host,
            transport_security=transport_security(self.host, self.allow_remote),
        )
        expected = f"Bearer {self.token}".encode()
        sessions = self.sessions

        async def guarded(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = dict(scope.get("headers") or ())
            if not hmac.compare_digest(headers.get(b"authorization", b""), expected):
                await unauthorized(send)
                return
            if scope.get("method") == "DELETE" and b"mcp-session-id" in headers:
                # The client ends its MCP session: its programs stop, its session closes.
                sessions.release(headers[b"mcp-session-id"].decode("latin-1"))
            await watched(app, scope, receive, send)

        return guarded

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: running programs are cancelled, the port is closed, the thread ends,
        the sessions the server made are closed."""
        self.sessions.stop(timeout)
        server, serving, http = self._uvicorn, self._serving, self._http
        if server is not None:
            server.should_exit = True
        if serving is not None and http is not None:
            if not ended(serving, timeout) and server is not None:
                server.force_exit = True
                ended(serving, timeout)
            # Tasks the transport left (sse-starlette's shutdown watcher) end with the loop.
            http.close(timeout)
        self._serving = self._http = None

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
        """Serve over stdin/stdout until the client closes them (the CLI's stdio mode).

        stdout is the protocol's channel: while serving, what tools print (sys.stdout and
        file descriptor 1) goes to stderr, and only the transport writes to the real stdout.
        """
        import anyio

        try:
            with protocol_stdout() as wire:
                anyio.run(self._serve_stdio, wire)
        finally:
            self.sessions.stop()

    async def _serve_stdio(self, wire: Any) -> None:
        import anyio
        from mcp.server.stdio import stdio_server

        lowlevel = self.mcp._lowlevel_server  # MCPServer.run_stdio_async, with our stdout
        async with stdio_server(stdout=anyio.wrap_file(wire)) as (read, write):
            await lowlevel.run(read, write, lowlevel.create_initialization_options())

    def __enter__(self) -> CodeModeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ClientQuestions:
    """A ClientAsk for one request: asks its client (elicitation) from the agent thread, and
    keeps the questions in flight, so the request ends only once a question the notebook
    answered first has been withdrawn (its `notifications/cancelled` written; after the
    result the request's stream would be closed)."""

    def __init__(self, ctx: Any, code: str) -> None:
        self.ctx, self.code = ctx, code
        self.loop = asyncio.get_running_loop()
        self.asking: set[asyncio.Task[Any]] = set()

    def __call__(
        self, request: ApprovalRequest, timeout: float | None
    ) -> concurrent.futures.Future[Decision]:
        return asyncio.run_coroutine_threadsafe(self._ask(request, timeout), self.loop)

    async def _ask(self, request: ApprovalRequest, timeout: float | None) -> Decision:
        task = asyncio.current_task()
        assert task is not None
        self.asking.add(task)
        try:
            return await elicit(self.ctx, request, self.code, timeout)
        finally:
            self.asking.discard(task)

    async def settled(self) -> None:
        """Wait for the questions still in flight (withdrawn ones end as they are told)."""
        if self.asking:
            await asyncio.gather(*self.asking, return_exceptions=True)


def _speak_handshake_era(server: Any) -> None:
    """Over HTTP, answer `server/discover` with handshake-era versions only, so clients make
    the `initialize` handshake (the SDK's "auto" mode falls back to it): a client then has an
    MCP session (its own Code Mode session, approvals by elicitation over its back channel),
    which the stateless 2026-07-28 protocol does not give. A request sent statelessly anyway
    is still served, in the shared session. (Over stdio the first request fixes the era of
    the one connection, so discover is left alone there.)"""
    import mcp_types as types
    from mcp_types.version import LATEST_HANDSHAKE_VERSION

    lowlevel = server._lowlevel_server  # replacing discover is the SDK's documented way

    async def discover(ctx: Any, params: Any) -> Any:
        return types.DiscoverResult(
            supported_versions=[LATEST_HANDSHAKE_VERSION],
            capabilities=lowlevel.get_capabilities(protocol_version=ctx.protocol_version),
            instructions=lowlevel.instructions,
        )

    lowlevel.add_request_handler("server/discover", types.RequestParams, discover)


__all__ = ["ApprovalGate", "CodeModeServer", "QueueApprover", "is_loopback", "run_job"]
