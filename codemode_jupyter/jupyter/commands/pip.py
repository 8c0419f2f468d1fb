"""`%codemode pip install PKG ...`: packages for the sandbox (see engine/packages.py).

`pip_command(session, words)` takes the words after `pip`; it prints pip's own
output and returns whether pip succeeded. A failed install changes nothing else: the session
and its state stay as they were.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any, TextIO

from IPython.core.error import UsageError

from codemode_jupyter.engine.packages import install
from codemode_jupyter.errors import PipUsageError
from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import argument, magic_arguments

USAGE = "usage: %codemode pip install PKG [PKG ...]   (requirement strings, no pip options)"


def parse(words: str | list[str]) -> list[str]:
    """The requirement strings of `install PKG ...`; PipUsageError for anything else."""
    parts = shlex.split(words) if isinstance(words, str) else list(words)
    if len(parts) < 2 or parts[0] != "install":
        raise PipUsageError(USAGE)
    specs = parts[1:]
    if any(spec.startswith("-") for spec in specs):
        raise PipUsageError(f"pip options are not passed through ({USAGE})")
    return specs


def pip_command(session: Any, words: str | list[str], out: TextIO | None = None) -> bool:
    """Install the packages named in `words` for `session`'s sandbox; print pip's output."""
    specs = parse(words)
    out = out or sys.stdout
    result = install(session, specs)
    out.write(result.output if result.output.endswith("\n") else result.output + "\n")
    verdict = "installed" if result.ok else "pip failed; nothing else changed"
    out.write(f"[codemode] {verdict} ({' '.join(specs)} -> {result.where})\n")
    return result.ok


@magic_arguments("%codemode pip")
@argument(
    "words",
    nargs=argparse.REMAINDER,
    metavar="install PKG [PKG ...]",
    help="requirement strings, no pip options",
)
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """Make packages importable in the sandbox."""
    try:
        pip_command(context.current_session(), args.words)
    except PipUsageError as exc:
        raise UsageError(str(exc)) from None


COMMAND = Command("pip", "make packages importable in the sandbox", run, "install PKG [PKG ...]")
