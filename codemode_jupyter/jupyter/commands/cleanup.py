"""`%codemode cleanup`: delete the Daytona sandboxes this machine's kernels left behind."""

from __future__ import annotations

import argparse

from codemode_jupyter.backends import backend_class, backends_that, require_backend
from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import argument, magic_arguments


@magic_arguments("%codemode cleanup")
@argument("--dry-run", action="store_true", help="only list them")
@argument("--all-hosts", action="store_true", help="sandboxes of every machine's kernels")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """Delete the Daytona sandboxes this machine's kernels left behind."""
    settings = context.settings
    found = []
    for name in backends_that("cleans_orphans"):
        require_backend(name)  # no SDK: say which extra to install, not "no API key"
        configured = {**settings.backend_settings(name), **settings.backend_options}
        found += backend_class(name).cleanup_orphans(
            configured, dry_run=args.dry_run, all_hosts=args.all_hosts
        )
    if not found:
        print("codemode: no sandboxes made by codemode-jupyter")
    for orphan in found:
        print(f"{orphan.id}  {orphan.state:<10}  {orphan.reason}")


COMMAND = Command(
    "cleanup",
    "delete the Daytona sandboxes this machine's kernels left behind",
    run,
    "[--dry-run] [--all-hosts]",
)
