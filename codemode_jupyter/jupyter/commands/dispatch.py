"""`%codemode COMMAND ...`: find the command, parse its options with its parser, run it.

Each command lives in a module of its own here, with its parser (`@magic_arguments`); it gets
the magic as a `CommandContext` and never imports the magic.
"""

from __future__ import annotations

from IPython.core.error import UsageError

from codemode_jupyter.jupyter.commands import (
    attach,
    cleanup,
    debug,
    help,
    last,
    pip,
    prompt,
    reset,
    serve,
    status,
    tools,
)
from codemode_jupyter.jupyter.commands.base import Command, CommandContext

#: The commands in the order the help lists them.
COMMANDS: dict[str, Command] = {
    module.COMMAND.name: module.COMMAND
    for module in (tools, prompt, status, reset, last, debug, attach, cleanup, serve, pip, help)
}


def run_command(context: CommandContext, line: str) -> None:
    """Parse `line` (`NAME [args]`; empty: status) and run the command."""
    name, _, rest = line.strip().partition(" ")
    command = COMMANDS.get(name or "status")
    if command is None:
        raise UsageError(
            f"%codemode: unknown command {name!r}; one of: {', '.join(COMMANDS)} "
            "(or %%codemode as a cell magic to run a program; %codemode help says more)"
        )
    command.run(context, command.parser.parse_line(rest))
