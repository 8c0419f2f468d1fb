"""`%codemode cleanup`: delete the Daytona sandboxes this machine's kernels left behind."""

from __future__ import annotations

import argparse

from codemode_jupyter.backends import require_backend
from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import argument, magic_arguments

#: backend_options that say which Daytona account to use (what `cleanup` needs of them).
DAYTONA_ACCOUNT = ("api_key", "api_url", "target")


@magic_arguments("%codemode cleanup")
@argument("--dry-run", action="store_true", help="only list them")
@argument("--all-hosts", action="store_true", help="sandboxes of every machine's kernels")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """Delete the Daytona sandboxes this machine's kernels left behind."""
    require_backend("daytona")  # no SDK: say which extra to install, not "no API key"
    from codemode_jupyter.backends.daytona.backend import cleanup_orphans

    settings = context.settings
    configured = {**settings.daytona_options(), **settings.backend_options}
    account = {k: v for k, v in configured.items() if k in DAYTONA_ACCOUNT}
    found = cleanup_orphans(dry_run=args.dry_run, all_hosts=args.all_hosts, **account)
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
