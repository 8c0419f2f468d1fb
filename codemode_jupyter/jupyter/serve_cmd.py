"""`%codemode serve`: a Code Mode MCP server inside the kernel, for agents.

    %codemode serve [--port N] [--host 127.0.0.1] [--session NAME] [--approve NAMES|all]
                    [--token T] [--allow-remote] [--approval-timeout S]
    %codemode serve --stop

Agent programs run in their own Code Mode session (`agent` unless `--session` names another;
a cell's `%%codemode --session NAME` shares it), one at a time, on a thread of their own, with
the notebook's functions as tools (discovered before each run, as for a cell). The cell that
ran `serve` shows each agent run; approval cards appear there too.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from IPython.core.error import UsageError

from .discovery import ToolCache, discover
from .tool_output import ToolOutput

DEFAULT_SESSION = "agent"
#: The running server and what it registered, per magics instance.
_servers: dict[int, _Serving] = {}


class _Serving:
    def __init__(self, server: Any, shell: Any, refresh: Any) -> None:
        self.server, self.shell, self.refresh = server, shell, refresh


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%codemode serve", add_help=False, exit_on_error=False)
    p.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--session", default=DEFAULT_SESSION, help="the Code Mode session agents use")
    p.add_argument("--approve", metavar="NAMES|all", help="tools whose calls need approval")
    p.add_argument("--approval-timeout", type=float, default=300.0, metavar="S")
    p.add_argument("--token", help="the bearer token (default: a new random one)")
    p.add_argument("--allow-remote", action="store_true", help="listen on a non-loopback host")
    p.add_argument("--stop", action="store_true", help="stop the server")
    return p


def parse(line: str) -> argparse.Namespace:
    try:
        args, unknown = parser().parse_known_args(shlex.split(line))
    except (argparse.ArgumentError, ValueError, SystemExit) as exc:
        raise UsageError(f"%codemode serve: {exc}") from None
    if unknown:
        raise UsageError(
            f"%codemode serve: unknown options {' '.join(unknown)}; "
            "see %codemode serve --help in docs/agents.md"
        )
    return args


def session_for(magics: Any, name: str) -> Any:
    """The named Code Mode session (created with the magics' settings on first use)."""
    return magics.pool.named(name)


def serve(magics: Any, line: str) -> Any:
    """Run `%codemode serve LINE`; returns the server (None after --stop)."""
    args = parse(line)
    if args.stop:
        print(
            "codemode: MCP server stopped"
            if stop_server(magics)
            else "codemode: no MCP server is running"
        )
        return None
    try:
        from ..agents import require_mcp

        require_mcp()
    except ImportError as exc:
        raise UsageError(f"%codemode serve: {exc}") from None
    if id(magics) in _servers:
        stop_server(magics)  # a new serve replaces the old one (new port, token, options)
    server = _start(magics, args)
    _announce(server, args.session)
    return server


def _start(magics: Any, args: argparse.Namespace) -> Any:
    from ..agents.server import CodeModeServer
    from .agent_feed import AgentFeed

    shell = magics.shell
    in_kernel = getattr(shell, "kernel", None) is not None
    settings = magics.settings
    serving_cell = getattr(shell, "execution_count", 1) - 1  # IPython counts a cell first

    def record(job: Any, result: Any, entries: list[dict[str, Any]] | None) -> None:
        """Each finished agent run joins the Tools panel's recent runs, as an agent's, with
        the timeline its feed view recorded."""
        magics.record_agent_run(job.code, result, serving_cell, entries)

    feed = AgentFeed(
        widgets=in_kernel,
        on_finished=record,
        output_cap=settings.max_output,
        live_output_chars=settings.view_output_chars,
        rate=settings.view_updates_per_second,
    )
    cache = ToolCache()  # its own: discovery runs on the agent thread, not the cell's

    def tools() -> list[Any]:
        return discover(shell.user_ns, hidden=shell.user_ns_hidden, cache=cache).tool_list()

    approver = None
    if in_kernel:
        from ..agents.approval_card import WidgetApprover

        approver = WidgetApprover(feed.place)
    approve = _approve_option(args.approve)
    try:
        server = CodeModeServer(
            lambda: session_for(magics, args.session),
            tools=tools,
            approve=approve,
            approver=approver,
            approval_timeout=args.approval_timeout,
            host=args.host,
            port=args.port,
            token=args.token,
            allow_remote=args.allow_remote,
            observers=[feed.on_event],
            run_context=feed.capturing,
        ).start()
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
    _servers[id(magics)] = _Serving(server, shell, refresh)
    return server


def _approve_option(value: str | None) -> Any:
    if not value:
        return None
    if value.strip() == "all":
        return "all"
    return [name.strip() for name in value.split(",") if name.strip()]


def stop_server(magics: Any) -> bool:
    """Stop the magics' server (for `--stop`, kernel shutdown, `%unload_ext`). Returns
    whether one was running. Idempotent."""
    serving = _servers.pop(id(magics), None)
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
        feed.close()  # a run the stop cut short ends its live view
    return True


def shutdown(magics: Any) -> None:
    """Everything serve started (its sessions close with the magics' pool)."""
    stop_server(magics)


def client_snippet(server: Any) -> str:
    return (
        "import asyncio, httpx2\n"
        "from mcp import Client\n"
        "from mcp.client.streamable_http import streamable_http_client\n\n"
        "async def main():\n"
        f"    headers = {{'Authorization': 'Bearer {server.token}'}}\n"
        "    async with httpx2.AsyncClient(headers=headers) as http, Client(\n"
        f"            streamable_http_client('{server.url}', http_client=http)) as client:\n"
        "        result = await client.call_tool('run_code', {'code': 'print(1 + 1)'})\n"
        "        print(result.content[0].text)\n\n"
        "asyncio.run(main())\n"
    )


def _announce(server: Any, session: str) -> None:
    print(f"codemode: MCP server for session {session!r} at {server.url}")
    print(f"token: {server.token}")
    if not server.allow_remote:
        print("(loopback only; every request needs the token)")
    else:
        print(
            "WARNING: listening beyond this machine; anyone with the token can run code "
            "with this notebook's functions"
        )
    print("\nClient settings (JSON, e.g. for Claude Desktop, Cursor, VS Code):")
    print(json.dumps(server.client_config(), indent=2))
    print(
        f"\nClaude Code:\n  claude mcp add --transport http codemode {server.url} "
        f"--header 'Authorization: Bearer {server.token}'"
    )
    print("\nPython (the official mcp client):\n")
    print(client_snippet(server))
    feed = getattr(server, "feed", None)
    if feed is not None and feed.widget is not None:
        from IPython.display import display

        display(feed.widget)
