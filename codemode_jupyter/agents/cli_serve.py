"""`codemode-jupyter serve MODULE_OR_FILE.py`: a module's functions as a Code Mode MCP server.

    codemode-jupyter serve mytools.py                       # stdio (for a client that starts it)
    codemode-jupyter serve mypkg.tools --transport http --port 8765

The tools are the module's public functions defined in it (or its `__all__`), plus anything
marked `@codemode_jupyter.tool`. Programs run in one Code Mode session (local sandbox by
default, or Daytona); over HTTP, on loopback with a bearer token, as in a notebook.
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

from ..tools import is_tool_marked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="MODULE_OR_FILE.py", help="a module name (mypkg.tools) or a Python file"
    )
    parser.add_argument("--backend", default="local", choices=("local", "daytona"))
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
    from ..engine import CodeMode
    from . import require_mcp
    from .approval import StdinApprover
    from .server import CodeModeServer

    require_mcp()
    module = load_module(args.target)
    tools = public_functions(module)
    if not tools:
        print(f"codemode-jupyter serve: {args.target} defines no public functions", file=sys.stderr)
        return 2
    approve = (
        None if not args.approve else ("all" if args.approve == "all" else args.approve.split(","))
    )
    approver = None
    if approve and args.transport == "http":
        approver = StdinApprover(_ask_on_terminal)
    elif approve:
        print(
            "codemode-jupyter serve: --approve needs --transport http (stdio is the "
            "client's channel, so there is no terminal to ask on)",
            file=sys.stderr,
        )
        return 2
    with CodeMode(tools, backend=args.backend, timeout=args.timeout) as cm:
        server = CodeModeServer(
            cm,
            approve=approve,
            approver=approver,
            host=args.host,
            port=args.port,
            token=args.token,
            allow_remote=args.allow_remote,
        )
        names = ", ".join(t.name for t in cm.tools)
        if args.transport == "stdio":
            print(f"codemode-jupyter: serving {names} over stdio", file=sys.stderr)
            server.run_stdio()
            return 0
        server.start()
        print(
            f"codemode-jupyter: serving {names} at {server.url}\ntoken: {server.token}\n"
            "Ctrl-C stops.",
            file=sys.stderr,
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0


def _ask_on_terminal(prompt: str) -> str:
    print(prompt, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip()
