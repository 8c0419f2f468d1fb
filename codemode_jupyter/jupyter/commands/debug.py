"""`%codemode debug`: the post-mortem debugger in the last tool that raised."""

from __future__ import annotations

import argparse

from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import magic_arguments
from codemode_jupyter.jupyter.debugging import post_mortem


@magic_arguments("%codemode debug")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """Post-mortem debugger in the last tool that raised."""
    post_mortem(context.shell, context.last_result)


COMMAND = Command("debug", "post-mortem debugger in the last tool that raised", run)
