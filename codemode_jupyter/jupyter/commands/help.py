"""`%codemode help`: the options, the commands and examples."""

from __future__ import annotations

import argparse

from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import magic_arguments


@magic_arguments("%codemode help")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """This text, with examples."""
    print(context.help_text(examples=True))


COMMAND = Command("help", "this text, with examples", run)
