"""`%codemode tools`: the tools a `%%codemode` cell would get now."""

from __future__ import annotations

import argparse

from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import magic_arguments
from codemode_jupyter.model.format import plural


@magic_arguments("%codemode tools")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """List the tools a %%codemode cell would get now."""
    found = context.tools()
    count = len(found.tools)
    print(f"{plural(count, 'tool')}:" if count else "no tools defined")
    for tool in found.tools.values():
        prefix = "async " if tool.is_async else ""
        print(f"  {prefix}{tool.name}{tool.signature}")
        if tool.description:
            print(f"      {tool.description.splitlines()[0]}")
    for name, why in found.skipped.items():
        print(f"  (not a tool: {name}: {why})")


COMMAND = Command("tools", "list the tools a %%codemode cell would get now", run)
