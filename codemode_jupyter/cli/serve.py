"""`codemode-jupyter serve MODULE_OR_FILE.py`: a module's functions as a Code Mode MCP server.

    codemode-jupyter serve mytools.py                       # stdio (for a client that starts it)
    codemode-jupyter serve mypkg.tools --transport http --port 8765

The tools are the module's public functions defined in it (or its `__all__`), plus anything
marked `@codemode_jupyter.tool`; `--tools a,b` offers only those. Each client's programs run
in a Code Mode session of its own (local sandbox by default, or Daytona; `--shared`: one for
all); over HTTP, on loopback with a bearer token, as in a notebook. Calls to `--approve` tools
(and `@tool(approve=True)` ones) ask the client by MCP elicitation when it supports it, else
the terminal (HTTP), else they are rejected.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
import threading
import types
from pathlib import Path
from typing import Any

from codemode_jupyter.backends import BACKENDS, DEFAULT_BACKEND
from codemode_jupyter.tools.tool import Tool, is_tool_marked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="MODULE_OR_FILE.py", help="a module name (mypkg.tools) or a Python file"
    )
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
    parser.add_argument("--transport", default="stdio", choices=("stdio", "http"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: any free one)")
    parser.add_argument("--token", help="HTTP bearer token (default: a new random one)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument(
        "--approve",
        metavar="NAMES|all",
        help="tools whose calls wait for approval (answered on this terminal)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per program")
    parser.add_argument(
        "--tools", metavar="NAMES", help="comma-separated: the only tools an agent may call"
    )
    parser.add_argument(
        "--shared", action="store_true", help="one session for all clients (shared variables)"
    )
    parser.add_argument(
        "--budget", type=int, help="characters of a result sent to the model (default 20000)"
    )
    parser.add_argument(
        "--errors",
        default="result",
        choices=("result", "tool_error"),
        help="a failed program as a plain result (default) or an MCP error result",
    )


def load_module(target: str) -> types.ModuleType:
    """Import `target`: a path to a .py file, or a module name."""
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {target}")
        name = path.stem if path.stem.isidentifier() else "codemode_tools"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {target} as a module")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent.resolve()))  # its sibling imports work
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


def public_functions(module: types.ModuleType) -> list[Any]:
    """The module's tools: `__all__` if it has one, else the public functions it defines;
    `@tool`-marked callables too."""
    names = getattr(module, "__all__", None)
    found = []
    for name, obj in vars(module).items():
        if names is not None:
            chosen = name in names and callable(obj)
        else:
            chosen = (
                (inspect.isfunction(obj) or inspect.iscoroutinefunction(obj))
                and not name.startswith("_")
                and obj.__module__ == module.__name__
            )
        if chosen or (callable(obj) and is_tool_marked(obj)):
            found.append(obj)
    return found


def run(args: argparse.Namespace) -> int:
    from codemode_jupyter.agents import require_mcp
    from codemode_jupyter.agents.approval import NoApprover, StdinApprover
    from codemode_jupyter.agents.server import CodeModeServer
    from codemode_jupyter.engine.session import CodeMode

    require_mcp()
    module = load_module(args.target)
    tools = public_functions(module)
    if not tools:
        print(f"codemode-jupyter serve: {args.target} defines no public functions", file=sys.stderr)
        return 2
    allowed = _names(args.tools)
    if allowed is not None:
        unknown = sorted(set(allowed) - {Tool.from_callable(t).name for t in tools})
        if unknown:
            print(
                f"codemode-jupyter serve: --tools names no such tool: {', '.join(unknown)}",
                file=sys.stderr,
            )
            return 2
    approve = "all" if args.approve == "all" else _names(args.approve)
    # Over stdio the client's channel is the only one: approvals go to it (elicitation), or
    # the calls are rejected. Over HTTP the terminal answers when the client cannot.
    approver = StdinApprover(_ask_on_terminal) if args.transport == "http" else NoApprover()
    opened: list[CodeMode] = []

    def session(name: str) -> CodeMode:
        cm = CodeMode(tools, backend=args.backend, timeout=args.timeout)
        opened.append(cm)
        return cm

    shared = session("agent")
    try:
        server = CodeModeServer(
            shared,
            sessions=None if args.shared else session,
            shared=args.shared,
            allowed_tools=allowed,
            approve=approve,
            approver=approver,
            host=args.host,
            port=args.port,
            token=args.token,
            allow_remote=args.allow_remote,
            budget=args.budget,
            errors=args.errors,
        )
        names = ", ".join(allowed or [t.name for t in shared.tools])
        if args.transport == "stdio":
            print(f"codemode-jupyter: serving {names} over stdio", file=sys.stderr)
            server.run_stdio()
            return 0
        return _serve_http(server, names)
    finally:
        for cm in opened:
            cm.close()


def _serve_http(server: Any, names: str) -> int:
    server.start()
    print(
        f"codemode-jupyter: serving {names} at {server.url}\ntoken: {server.token}\nCtrl-C stops.",
        file=sys.stderr,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def _ask_on_terminal(prompt: str) -> str:
    print(prompt, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip()
