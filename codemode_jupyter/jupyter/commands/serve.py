"""`%codemode serve`: a Code Mode MCP server inside the kernel, for agents.

    %codemode serve [--port N] [--host 127.0.0.1] [--session NAME] [--approve NAMES|all]
                    [--tools a,b] [--budget N] [--shared] [--token T] [--allow-remote]
                    [--approval-timeout S]
    %codemode serve --show-token
    %codemode serve --stop

Each MCP client's programs run in a Code Mode session of its own, NAME-1, NAME-2, ... (NAME:
`agent` unless `--session` names another; `--shared`: every client uses NAME), one at a time,
on a thread of their own. Each is a named session of the notebook: `%%codemode --session
agent-1` in a cell opens it, `%codemode status` lists them (the server's `agent_sessions()`).
Tools are the notebook's functions, discovered before each run as for a cell; `--tools` gives
the server's `allowed_tools` (the server keeps agents to those names). The cell that ran
`serve` shows each agent run; approval cards appear there too.

The token is never printed into the serving cell (a notebook is saved and shared; the token
would outlive its use there): the cell says how to get it, `%codemode serve --show-token`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from IPython.core.error import UsageError

from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import argument, magic_arguments
from codemode_jupyter.jupyter.discovery import ToolCache, discover
from codemode_jupyter.jupyter.views.tool_output import ToolOutput

DEFAULT_SESSION = "agent"
#: What the serving cell and the printed settings show instead of the token.
TOKEN_PLACEHOLDER = "<TOKEN: %codemode serve --show-token>"
#: The running server and what it registered, per magics instance (the context).
_servers: dict[int, _Serving] = {}


class _Serving:
    def __init__(self, server: Any, shell: Any, refresh: Any) -> None:
        self.server, self.shell, self.refresh = server, shell, refresh

    @property
    def sessions(self) -> list[str]:
        """The names of the Code Mode sessions agents run in, as the server knows them
        (each is the notebook's named session of that name)."""
        return list(self.server.agent_sessions())


@magic_arguments("%codemode serve")
@argument("--port", type=int, default=0, help="port (default: any free one)")
@argument(
    "--host",
    default="127.0.0.1",
    help="address to listen on; a non-loopback one needs --allow-remote (default: 127.0.0.1)",
)
@argument(
    "--session",
    default=DEFAULT_SESSION,
    metavar="NAME",
    help="the Code Mode session agents use, or the prefix of theirs when each client gets its "
    f"own (default: {DEFAULT_SESSION})",
)
@argument(
    "--approve", metavar="NAMES|all", help="tools whose calls wait for a person (default: none)"
)
@argument(
    "--approval-timeout",
    type=float,
    default=300.0,
    metavar="S",
    help="seconds a call waits for a decision before it is rejected (default: 300)",
)
@argument(
    "--tools",
    metavar="a,b",
    help="the only notebook functions an agent may call (default: every public function of "
    "the notebook)",
)
@argument(
    "--budget",
    type=int,
    metavar="N",
    help="characters of a whole result sent to the agent; the full record stays a resource "
    "(default: 20000)",
)
@argument(
    "--shared",
    action="store_true",
    help="every client shares one session, NAME (default: a session per client)",
)
@argument(
    "--token",
    metavar="T",
    help="the bearer token, at least 16 characters (default: a new random one per start)",
)
@argument(
    "--allow-remote", action="store_true", help="listen on a non-loopback --host (default: off)"
)
@argument(
    "--show-token",
    action="store_true",
    help="print the running server's token and client settings (that cell's output then holds "
    "the token: clear it before sharing the notebook)",
)
@argument("--stop", action="store_true", help="stop the server")
@argument("--help", action="store_true", help="this text")
def run(context: CommandContext, args: argparse.Namespace) -> Any:
    """Serve the notebook's tools to agents over MCP (needs the agents extra)."""
    # Returns the server (None after --stop, --show-token, --help).
    if args.help:
        print(run.parser.format_help().rstrip())  # type: ignore[attr-defined]
        return None
    if args.stop:
        stopped = stop_server(context)
        print("codemode: MCP server stopped" if stopped else "codemode: no MCP server is running")
        return None
    if args.show_token:
        show_token(context)
        return None
    try:
        from codemode_jupyter.agents import require_mcp

        require_mcp()
    except ImportError as exc:
        raise UsageError(f"%codemode serve: {exc}") from None
    if id(context) in _servers:
        stop_server(context)  # a new serve replaces the old one (new port, token, options)
    server = _start(context, args)
    _announce(server, args, server.current_tools)
    return server


def serve(context: CommandContext, line: str) -> Any:
    """`%codemode serve LINE` from code: the server, or None (--stop, --show-token, --help)."""
    return run(context, run.parser.parse_line(line))  # type: ignore[attr-defined]


def session_for(context: CommandContext, name: str) -> Any:
    """The named Code Mode session (created with the context's settings on first use)."""
    return context.pool.named(name)


def serving(context: CommandContext) -> _Serving | None:
    """The context's running server and what it keeps (None when none runs)."""
    return _servers.get(id(context))


def show_token(context: CommandContext) -> None:
    """`--show-token`: the token and ready-to-paste settings, in this cell only."""
    found = serving(context)
    if found is None:
        print("codemode: no MCP server is running (start one with %codemode serve)")
        return
    server = found.server
    print(f"token: {server.token}")
    print("(this output holds the token: clear it before you save or share the notebook)")
    print(settings_text(server, server.token))


def _only(tools_option: str | None) -> list[str] | None:
    if tools_option is None:
        return None
    return [name.strip() for name in tools_option.split(",") if name.strip()]


def _start(context: CommandContext, args: argparse.Namespace) -> Any:
    from codemode_jupyter.agents.server import CodeModeServer
    from codemode_jupyter.jupyter.views.agent_feed import AgentFeed

    shell = context.shell
    in_kernel = getattr(shell, "kernel", None) is not None
    settings = context.settings
    serving_cell = getattr(shell, "execution_count", 1) - 1  # IPython counts a cell first
    only = _only(args.tools)
    cache = ToolCache()  # its own: discovery runs on the agent thread, not the cell's

    def found() -> Any:
        return discover(shell.user_ns, hidden=shell.user_ns_hidden, cache=cache)

    _check_only(only, found())

    def tools() -> list[Any]:
        return found().tool_list()

    def record(job: Any, result: Any, entries: list[dict[str, Any]] | None) -> None:
        """Each finished agent run joins the Tools panel's recent runs, as an agent's, with
        the timeline its feed view recorded."""
        context.record_agent_run(job.code, result, serving_cell, entries)

    def session(name: str | None = None) -> Any:
        """An agent's Code Mode session: the client's own (the server names them NAME-1,
        NAME-2, ...), or NAME, the shared one. Each is a named session of the notebook, so
        `%%codemode --session NAME` opens it in a cell."""
        return session_for(context, name or args.session)

    feed = AgentFeed(
        widgets=in_kernel,
        on_finished=record,
        session=args.session,
        output_cap=settings.max_output,
        live_output_chars=settings.view_output_chars,
        rate=settings.view_updates_per_second,
    )
    approver = None
    if in_kernel:
        from codemode_jupyter.agents.approval_card import WidgetApprover

        approver = WidgetApprover(feed.place)
    options: dict[str, Any] = {
        "tools": tools,
        "approve": _approve_option(args.approve),
        "approver": approver,
        "approval_timeout": args.approval_timeout,
        "host": args.host,
        "port": args.port,
        "token": args.token,
        "allow_remote": args.allow_remote,
        "observers": [feed.on_event],
        "run_context": feed.capturing,
        "sessions": session,
        "shared": args.shared,
        "session_name": args.session,
        "allowed_tools": only,
        "budget": args.budget,
    }
    try:
        server = CodeModeServer(session, **options).start()
    except (ValueError, OSError) as exc:
        raise UsageError(f"%codemode serve: {exc}") from None
    server.feed = feed
    server.tool_output = ToolOutput()
    if in_kernel:
        server.tool_output.install()  # tools' prints during agent runs go to the feed

    def refresh(*_: Any) -> None:
        try:
            server.refresh_tools()
        except Exception as exc:  # the server is a convenience: a cell never fails by it
            print(f"codemode: could not update the MCP tool list: {exc}", file=sys.stderr)

    shell.events.register("post_run_cell", refresh)
    _servers[id(context)] = _Serving(server, shell, refresh)
    return server


def _check_only(only: list[str] | None, found: Any) -> None:
    """`--tools` names notebook functions: one that is not is refused at once (the server's
    `allowed_tools` then keeps agents to the named ones)."""
    if only is None:
        return
    unknown = [name for name in only if name not in found.tools]
    if unknown:
        available = ", ".join(found.tools) or "none"
        raise UsageError(
            f"%codemode serve --tools: not a function of the notebook: {', '.join(unknown)} "
            f"(available: {available})"
        )


def _approve_option(value: str | None) -> Any:
    if not value:
        return None
    if value.strip() == "all":
        return "all"
    return [name.strip() for name in value.split(",") if name.strip()]


def stop_server(context: CommandContext) -> bool:
    """Stop the context's server (for `--stop`, kernel shutdown, `%unload_ext`). Returns
    whether one was running. Idempotent."""
    serving = _servers.pop(id(context), None)
    if serving is None:
        return False
    try:
        serving.shell.events.unregister("post_run_cell", serving.refresh)
    except ValueError:
        pass
    serving.server.stop()
    serving.server.tool_output.uninstall()
    feed = getattr(serving.server, "feed", None)
    if feed is not None:
        feed.close()  # a run the stop cut short ends its live view; the cell says it stopped
    return True


def shutdown(context: CommandContext) -> None:
    """Everything serve started (its sessions close with the context's pool)."""
    stop_server(context)


def client_config(server: Any, token: str) -> dict[str, Any]:
    """The server's client settings with `token` in the place of its token."""
    text = json.dumps(server.client_config())
    return json.loads(text.replace(server.token, token))


def client_snippet(server: Any, token: str | None = None) -> str:
    token = server.token if token is None else token
    return (
        "import asyncio, httpx2\n"
        "from mcp import Client\n"
        "from mcp.client.streamable_http import streamable_http_client\n\n"
        "async def main():\n"
        f"    headers = {{'Authorization': 'Bearer {token}'}}\n"
        "    async with httpx2.AsyncClient(headers=headers) as http, Client(\n"
        f"            streamable_http_client('{server.url}', http_client=http)) as client:\n"
        "        result = await client.call_tool('run_code', {'code': 'print(1 + 1)'})\n"
        "        print(result.content[0].text)\n\n"
        "asyncio.run(main())\n"
    )


def agent_tools(tools: Any) -> list[str]:
    """The names of the tools agents may call now (`tools`: the serve's tool source)."""
    from codemode_jupyter.tools.tool import Tool

    return [Tool.from_callable(t).name for t in tools()]


def _announce(server: Any, args: argparse.Namespace, tools: Any) -> None:
    """What the serving cell shows: in a kernel, the feed (which draws this text while the
    server runs and says it stopped once it has); elsewhere, printed."""
    info = serve_info(server, args, agent_tools(tools))
    feed = getattr(server, "feed", None)
    if feed is not None and feed.widget is not None:
        feed.show(info)
    else:
        print(info["text"])


def serve_info(server: Any, args: argparse.Namespace, tools: list[str]) -> dict[str, Any]:
    """The server as the serving cell states it: where, which tools, which need approval,
    how to connect (the token left out: `--show-token`). `text` is all of it as lines."""
    shared = args.shared
    sessions = (
        f"session {args.session!r}"
        if shared
        else f"a session per client ({args.session}-1, {args.session}-2, ...)"
    )
    approve = _approve_option(args.approve)
    lines = [f"codemode: MCP server at {server.url} ({sessions})"]
    chosen = "--tools" if args.tools else "the notebook's public functions"
    lines.append(f"tools agents may call ({chosen}): {', '.join(tools) or 'none yet'}")
    if approve == "all":
        lines.append("approval: every call waits for a person")
    elif approve:
        lines.append(f"approval: calls to {', '.join(approve)} wait for a person")
    lines.append(
        "token: not shown, so the notebook never saves it; %codemode serve --show-token prints it"
    )
    if not server.allow_remote:
        lines.append("(loopback only; every request needs the token)")
    else:
        lines.append(
            "WARNING: listening beyond this machine; anyone with the token can run code "
            "with this notebook's functions"
        )
    settings = settings_text(server, TOKEN_PLACEHOLDER)
    return {
        "summary": "\n".join(lines),
        "settings": settings,
        "url": server.url,
        "session": args.session,
        "shared": shared,
        "tools": tools,
        "approve": ["all"] if approve == "all" else list(approve or []),
        "text": "\n".join([*lines, settings]),
    }


def settings_text(server: Any, token: str) -> str:
    return "\n".join(
        [
            "\nClient settings (JSON, e.g. for Claude Desktop, Cursor, VS Code):",
            json.dumps(client_config(server, token), indent=2),
            f"\nClaude Code:\n  claude mcp add --transport http codemode {server.url} "
            f"--header 'Authorization: Bearer {token}'",
            "\nPython (the official mcp client):\n",
            client_snippet(server, token),
        ]
    )


COMMAND = Command(
    "serve",
    "serve the notebook's tools to agents over MCP (needs the agents extra; "
    "%codemode serve --help lists the options)",
    run,
    "[--port N] [--host H] [--session NAME] [--approve NAMES|all] [--approval-timeout S] "
    "[--tools a,b] [--budget N] [--shared] [--token T] [--allow-remote] | --show-token | --stop",
)
