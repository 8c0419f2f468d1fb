"""`%codemode prompt`: the system prompt that describes the tools to a model."""

from __future__ import annotations

import argparse

from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import magic_arguments


@magic_arguments("%codemode prompt")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """Print the system prompt that describes the tools to a model."""
    session = context.current_session()
    session.set_tools(context.tools().tool_list())
    print(session.system_prompt())


COMMAND = Command("prompt", "print the system prompt that describes the tools to a model", run)
