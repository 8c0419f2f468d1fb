"""`%codemode attach SANDBOX_ID`: run cells in an existing sandbox of a backend that attaches
(Daytona)."""

from __future__ import annotations

import argparse

from codemode_jupyter.backends import backend_class, backends_that, require_backend
from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import argument, magic_arguments


@magic_arguments("%codemode attach")
@argument("sandbox_id", metavar="SANDBOX_ID", help="the Daytona sandbox")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """Run cells in an existing Daytona sandbox (never deleted)."""
    name = backends_that("attaches")[0]
    require_backend(name)  # no SDK: say which extra to install, before switching
    settings = context.settings
    settings.backend = name
    settings.backend_options = {**settings.backend_options, "sandbox": args.sandbox_id}
    label = backend_class(name).label
    print(
        f"codemode: %%codemode cells now run in {label} sandbox {args.sandbox_id} "
        "(attached: this kernel never deletes it)"
    )


COMMAND = Command(
    "attach", "run cells in an existing Daytona sandbox (never deleted)", run, "SANDBOX_ID"
)
