"""`codemode-jupyter run NOTEBOOK`: execute a notebook headless and print what each cell produced.

    codemode-jupyter run notebooks/quickstart.ipynb [--timeout 300] [--save OUT.ipynb]

The notebook runs with nbclient in a kernel of this Python environment, on the configured
backend (local by default). Each code cell is printed with its outputs as text: streams,
the text/plain of displays and results (for a `%%codemode` cell, its transcript), and errors.
The exit status is 1 if a cell failed unexpectedly (cells marked `# NBVAL_RAISES_EXCEPTION`
or tagged `raises-exception` may fail).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def render_output(output: Any) -> str:
    """One output as plain text."""
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text", "")
        return text if output.get("name") != "stderr" else _prefix(text, "stderr| ")
    if kind in ("display_data", "execute_result"):
        data = output.get("data", {})
        if "application/vnd.jupyter.widget-view+json" in data:
            return ""  # the live view: its final state is in the transcript that follows
        text = data.get("text/plain", "")
        if kind == "execute_result":
            return f"Out[{output.get('execution_count')}]: {text}"
        return text
    if kind == "error":
        return _ANSI.sub("", "\n".join(output.get("traceback", [])))
    return ""


def render_notebook(nb: Any, out: TextIO) -> None:
    """Print each code cell with what it produced."""
    for index, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        out.write(f"──── cell {index} [{cell.get('execution_count') or ' '}] ────\n")
        out.write(cell.source.rstrip("\n") + "\n")
        shown = [render_output(o) for o in cell.get("outputs", [])]
        shown = [s.rstrip("\n") for s in shown if s and s.strip()]
        if shown:
            out.write("──── output:\n")
            out.write("\n".join(shown) + "\n")
        out.write("\n")


def _prefix(text: str, prefix: str) -> str:
    return "".join(prefix + line for line in text.splitlines(keepends=True))


def run(path: Path, timeout: float, save: Path | None, out: TextIO) -> int:
    from nbclient.exceptions import CellExecutionError

    from codemode_jupyter.jupyter.headless import execute_notebook

    try:
        nb = execute_notebook(path, timeout=timeout)
    except CellExecutionError as exc:
        out.write(f"codemode-jupyter: a cell failed in {path}:\n{_ANSI.sub('', str(exc))}\n")
        return 1
    render_notebook(nb, out)
    if save is not None:
        import nbformat

        nbformat.write(nb, save)
        out.write(f"saved the executed notebook to {save}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="codemode-jupyter", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="execute a notebook headless and print it")
    run_parser.add_argument("notebook", type=Path)
    run_parser.add_argument("--timeout", type=float, default=300.0, help="seconds per cell")
    run_parser.add_argument("--save", type=Path, help="write the executed notebook here")
    _add_serve_command(commands)
    from codemode_jupyter.cli.batch import add_parser as add_batch_parser

    add_batch_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "batch":
        from codemode_jupyter.cli.batch import main as batch_main

        return batch_main(args)
    if not args.notebook.is_file():
        parser.error(f"no such notebook: {args.notebook}")
    return run(args.notebook, args.timeout, args.save, sys.stdout)


def _add_serve_command(commands: Any) -> None:
    from codemode_jupyter.cli.serve import add_arguments

    serve = commands.add_parser(
        "serve",
        help="serve a module's functions as a Code Mode MCP server (needs the agents extra)",
    )
    add_arguments(serve)


def _serve(args: argparse.Namespace) -> int:
    from codemode_jupyter.agents import MissingExtraError
    from codemode_jupyter.cli.serve import run as serve

    try:
        return serve(args)
    except (MissingExtraError, ImportError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"codemode-jupyter serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
