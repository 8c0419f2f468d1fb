"""The parsers of `%%codemode` and the `%codemode` commands, and the help they write.

Options are declared with IPython's `@magic_arguments()` / `@argument(...)` on the magic and on
each command's function. The parser they build is IPython's `MagicArgumentParser` (its errors
are UsageErrors, a short red line and no traceback, never SystemExit) with two changes: the
error carries the usage line, and the help is plain text of a fixed width. The same parsers
write what `%%codemode?`, `%codemode?` and `%codemode help` print.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from IPython.core import magic_arguments as ipython_arguments
from IPython.core.error import UsageError

from codemode_jupyter.jupyter.config import CodeMode as Settings

F = TypeVar("F", bound=Callable[..., Any])


def _formatter(prog: str) -> argparse.HelpFormatter:
    # A fixed width: the help reads the same in every terminal and front end. (IPython's own
    # formatter writes reStructuredText, which a notebook shows as is.)
    return argparse.RawDescriptionHelpFormatter(prog, width=96, max_help_position=30)


class CommandParser(ipython_arguments.MagicArgumentParser):
    """IPython's magic parser, with errors that carry the usage line and plain help."""

    def __init__(self, prog: str, description: str = "", **kwds: Any) -> None:
        kwds.setdefault("formatter_class", _formatter)
        super().__init__(prog, description=description, **kwds)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.format_usage().rstrip()}\n{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or f"{self.prog}: bad arguments")

    def parse_line(self, line: str) -> argparse.Namespace:
        """The options in the rest of a magic's line (quoted as in a shell)."""
        try:
            return self.parse_argstring(line)
        except ValueError as exc:  # an unclosed quote
            self.error(str(exc))


class magic_arguments(ipython_arguments.magic_arguments):
    """IPython's `@magic_arguments(name)`, building a `CommandParser` named `name`.

    The `@argument` decorators below it add the options, in the order they are written; the
    parser is the function's `.parser`, its description the function's docstring.
    """

    def __call__(self, func: F) -> F:
        if not getattr(func, "has_arguments", False):
            func.has_arguments = True  # type: ignore[attr-defined]
            func.decorators = []  # type: ignore[attr-defined]
        name = self.name or ipython_arguments.real_name(func)
        parser = CommandParser(name, description=(func.__doc__ or "").strip())
        group = None
        for decorator in func.decorators[::-1]:  # type: ignore[attr-defined]
            group = decorator.add_to_parser(parser, group) or group
        func.parser = parser  # type: ignore[attr-defined]
        return func


argument = ipython_arguments.argument


def default_of(name: str) -> Any:
    """The default of the `CodeMode` setting `name`, for the help text."""
    return Settings.class_traits()[name].default_value


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


#: Columns of the help text: narrow outputs (Notebook 7) then never wrap a line mid-word.
HELP_COLUMNS = 79
#: Width of the command column; a longer command puts its summary on the next line.
COMMAND_COLUMN = 30


def commands_text(commands: Iterable[Any]) -> str:
    """The table of `%codemode COMMAND`s: each command's name, arguments and summary, within
    HELP_COLUMNS (an option such as `[--port N]` is never split)."""
    lines = ["%codemode COMMAND: manage the session", ""]
    indent = " " * (COMMAND_COLUMN + 4)
    for command in commands:
        head = f"%codemode {command.name} {command.args}".strip()
        first = ""
        if len(head) <= COMMAND_COLUMN:
            first = f"  {head.ljust(COMMAND_COLUMN)}  "
        else:
            words = re.findall(r"\[[^\]]*\]|\S+", head)
            lines += _fill(words, "  ", "      ")
        lines += textwrap.wrap(
            command.summary,
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


def help_text(cell: argparse.ArgumentParser, commands: Any, *, examples: bool = False) -> str:
    """What `%%codemode?` and `%codemode?` show; `%codemode help` adds examples.

    `cell` is the cell magic's parser, `commands` the commands by name (serve's options are
    listed in full).
    """
    parts = [
        cell.format_help().rstrip(),
        commands_text(commands.values()),
        commands["serve"].parser.format_help().rstrip(),
        "Settings for every cell: %config CodeMode (e.g. %config CodeMode.timeout = 120).",
    ]
    if examples:
        parts.append(EXAMPLES)
    return "\n\n".join(parts)
