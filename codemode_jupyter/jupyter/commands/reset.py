"""`%codemode reset`: empty the session's namespace."""

from __future__ import annotations

import argparse

from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import magic_arguments


@magic_arguments("%codemode reset")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """Empty the session's namespace (variables of earlier cells)."""
    context.current_session().reset()
    print("codemode: the session's namespace is reset")


COMMAND = Command("reset", "empty the session's namespace (variables of earlier cells)", run)
