"""The options of `%%codemode` and the `%codemode` commands: parsers and help text.

Parsers are argparse's, made to raise IPython's UsageError (a short red line, no traceback)
with the usage line and the error instead of exiting. The same parsers write the help that
`%%codemode?`, `%codemode?` and `%codemode help` print, in plain text.
"""

from __future__ import annotations

import argparse
import re
import shlex
import textwrap
from typing import Any, NoReturn

from IPython.core.error import UsageError

from codemode_jupyter.jupyter.config import CodeMode as Settings


def _formatter(prog: str) -> argparse.HelpFormatter:
    # A fixed width: the help reads the same in every terminal and front end.
    return argparse.RawDescriptionHelpFormatter(prog, width=96, max_help_position=30)


class MagicParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageErrors with the usage line."""

    def __init__(self, prog: str, description: str = "", epilog: str = "") -> None:
        super().__init__(
            prog=prog,
            description=description,
            epilog=epilog,
            add_help=False,
            formatter_class=_formatter,
        )

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.format_usage().rstrip()}\n{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or f"{self.prog}: bad arguments")

    def parse_line(self, line: str) -> argparse.Namespace:
        try:
            words = shlex.split(line)
        except ValueError as exc:  # an unclosed quote
            self.error(str(exc))
        return self.parse_args(words)


def _default(name: str) -> Any:
    return Settings.class_traits()[name].default_value


def cell_parser() -> MagicParser:
    """`%%codemode [options]`: the options of a cell."""
    parser = MagicParser(
        "%%codemode",
        description="Run the cell's program in the sandbox; notebook functions are its tools.",
    )
    add = parser.add_argument
    add(
        "--backend",
        metavar="NAME",
        help=f"where to run: local or daytona (default: CodeMode.backend, {_default('backend')})",
    )
    add(
        "--timeout",
        type=float,
        metavar="S",
        help=f"seconds the program may run (default: CodeMode.timeout, {_default('timeout')})",
    )
    add(
        "--max-tool-calls",
        type=int,
        metavar="N",
        help="tool calls the program may make "
        f"(default: CodeMode.max_tool_calls, {_default('max_tool_calls')})",
    )
    add(
        "--tools",
        metavar="A,B",
        help="only these tools, comma-separated; names of imported functions opt them in "
        "(default: every function defined in the notebook)",
    )
    add(
        "--fresh",
        action="store_true",
        help="run in an empty namespace (default: variables of earlier cells are kept)",
    )
    add(
        "--out",
        metavar="NAME",
        help="store the RunResult in this notebook variable (default: not stored)",
    )
    add(
        "--preview",
        type=int,
        nargs="+",
        action="extend",
        metavar="PORT",
        default=[],
        help="show a link to a server the program runs on PORT; needs --network with the "
        "local backend (default: none)",
    )
    add(
        "--network",
        action="store_true",
        help="give the sandbox network access (default: CodeMode.network, off)",
    )
    add(
        "--quiet",
        action="store_true",
        help="no view and no transcript, only the output and the value (default: off)",
    )
    add(
        "--session",
        metavar="NAME",
        help="run in the named session, with its own variables and sandbox; the agents served "
        "by %%codemode serve use 'agent' or their own (%%codemode status lists them) "
        "(default: the notebook's session)",
    )
    add(
        "--step",
        action="store_true",
        help="ask at a prompt before each tool call: a (approve), r REASON (reject), or = JSON "
        "(return that value instead; the tool does not run) (default: off)",
    )
    add(
        "--upload",
        metavar="PATH[:DEST]",
        action="append",
        default=[],
        help="copy a host file or folder into the sandbox's work dir first; repeatable "
        "(default: none)",
    )
    add(
        "--map",
        metavar="NAME",
        help="run the cell once per item of the iterable NAME, on a pool of sandboxes "
        "(default: once)",
    )
    add(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="with --map: sandboxes at once (default: 4)",
    )
    add(
        "--as",
        dest="as_var",
        default="item",
        metavar="VAR",
        help="with --map: the variable each item is bound to (default: item)",
    )
    return parser


COMMAND_HELP = {
    "tools": ("", "list the tools a %%codemode cell would get now"),
    "prompt": ("", "print the system prompt that describes the tools to a model"),
    "status": ("", "backend, isolation, limits, tools and the last run"),
    "reset": ("", "empty the session's namespace (variables of earlier cells)"),
    "last": ("[--all]", "the last run's tool calls with timings (--all: every call)"),
    "debug": ("", "post-mortem debugger in the last tool that raised"),
    "attach": ("SANDBOX_ID", "run cells in an existing Daytona sandbox (never deleted)"),
    "cleanup": (
        "[--dry-run] [--all-hosts]",
        "delete the Daytona sandboxes this machine's kernels left behind",
    ),
    "serve": (
        "[--port N] [--host H] [--session NAME] [--approve NAMES|all] [--approval-timeout S] "
        "[--tools a,b] [--shared] [--token T] [--allow-remote] | --show-token | --stop",
        "serve the notebook's tools to agents over MCP (needs the agents extra; "
        "%codemode serve --help lists the options)",
    ),
    "pip": ("install PKG [PKG ...]", "make packages importable in the sandbox"),
    "help": ("", "this text, with examples"),
}

EXAMPLES = """\
examples:
  %%codemode
  weather = get_weather(city="Paris")      # calls the notebook function
  print(weather)

  %%codemode --timeout 5 --tools get_weather --out run
  [get_weather(city=c)["temp_c"] for c in ("Paris", "Oslo")]

  %%codemode --network --preview 8000
  import subprocess
  subprocess.Popen(["python", "-m", "http.server", "8000"])

  %%codemode --map cities --concurrency 4 --as city
  get_weather(city=city)["temp_c"]         # once per city, 4 sandboxes at once

  %%codemode --step
  get_weather(city="Paris")                # asks first: a, r REASON or = JSON

  %codemode last --all
  %config CodeMode.timeout = 120           # a setting for every cell"""


def command_parser(name: str) -> MagicParser:
    """The parser of `%codemode NAME ...`."""
    _, summary = COMMAND_HELP[name]
    parser = MagicParser(f"%codemode {name}", description=summary)
    if name == "last":
        parser.add_argument("--all", action="store_true", help="every call, not head and tail")
    elif name == "attach":
        parser.add_argument("sandbox_id", metavar="SANDBOX_ID", help="the Daytona sandbox")
    elif name == "cleanup":
        parser.add_argument("--dry-run", action="store_true", help="only list them")
        parser.add_argument(
            "--all-hosts", action="store_true", help="sandboxes of every machine's kernels"
        )
    return parser


#: Columns of the help text: narrow outputs (Notebook 7) then never wrap a line mid-word.
HELP_COLUMNS = 79
#: Width of the command column; a longer command puts its summary on the next line.
COMMAND_COLUMN = 30


def commands_text() -> str:
    lines = ["%codemode COMMAND: manage the session", ""]
    indent = " " * (COMMAND_COLUMN + 4)
    for name, (args, summary) in COMMAND_HELP.items():
        head = f"%codemode {name} {args}".strip()
        first = ""
        if len(head) <= COMMAND_COLUMN:
            first = f"  {head.ljust(COMMAND_COLUMN)}  "
        else:
            # Options stay whole ("[--port N]"): the line breaks between them only.
            words = re.findall(r"\[[^\]]*\]|\S+", head)
            lines += _fill(words, "  ", "      ")
        lines += textwrap.wrap(
            summary,
            HELP_COLUMNS,
            initial_indent=first or indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def _fill(words: list[str], first: str, rest: str) -> list[str]:
    """Words packed into lines of at most HELP_COLUMNS, never split."""
    lines = [first]
    for word in words:
        line = lines[-1]
        if line.strip() and len(line) + 1 + len(word) > HELP_COLUMNS:
            lines.append(rest + word)
        else:
            lines[-1] = line + (" " if line.strip() else "") + word
    return lines


def help_text(*, examples: bool = False) -> str:
    """What `%%codemode?` and `%codemode?` show; `%codemode help` adds examples."""
    from codemode_jupyter.jupyter.commands.serve import serve_help

    parts = [
        cell_parser().format_help().rstrip(),
        commands_text(),
        serve_help(),
        "Settings for every cell: %config CodeMode (e.g. %config CodeMode.timeout = 120).",
    ]
    if examples:
        parts.append(EXAMPLES)
    return "\n\n".join(parts)
