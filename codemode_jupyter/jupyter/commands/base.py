"""What a `%codemode` command is: a function of (context, options) with its parser, and the
context it gets from the dispatcher instead of importing the magic."""

from __future__ import annotations

import argparse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from codemode_jupyter.jupyter.commands.usage import CommandParser
from codemode_jupyter.jupyter.config import CodeMode as Settings
from codemode_jupyter.jupyter.discovery import Discovery
from codemode_jupyter.jupyter.sessions import SessionPool
from codemode_jupyter.model.result import RunResult


class CommandContext(Protocol):
    """What a command may use of the magic (the magics instance is one)."""

    shell: Any
    settings: Settings
    pool: SessionPool
    last_result: RunResult | None
    #: The finished runs, newest last; each has `.result` and `.entries` (its timeline).
    runs: deque[Any]

    def current_session(self) -> Any:
        """The session the next plain `%%codemode` cell would use."""

    def tools(self) -> Discovery:
        """The tools a plain `%%codemode` cell would get now."""

    def record_agent_run(
        self,
        code: str,
        result: RunResult,
        execution_count: int | None,
        entries: list[dict[str, Any]] | None = None,
    ) -> None:
        """List an agent's run with the cells' runs."""

    def help_text(self, *, examples: bool = False) -> str:
        """The magic's whole help: its options, the commands, serve's options."""


@dataclass(frozen=True)
class Command:
    """One `%codemode NAME ...`: `run` is decorated with `@magic_arguments`."""

    name: str
    #: One line for the table of commands.
    summary: str
    run: Callable[[CommandContext, argparse.Namespace], Any]
    #: The arguments as the table of commands shows them.
    args: str = ""

    @property
    def parser(self) -> CommandParser:
        return self.run.parser  # type: ignore[attr-defined]
