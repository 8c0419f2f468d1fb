"""A pool's tasks and what it reports about each: Task, Attempt, TaskResult.

A task is a program plus optional input values. The values are data, never code: they travel
as JSON in a field of the run frame of their own, and the runtime binds them as variables
before the program runs. The program's text is sent as written, so it may begin with
`from __future__ import annotations` and its tracebacks name its own lines.
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from codemode_jupyter.model.result import RunError, RunResult


@dataclass
class Task:
    """One program to run, with the variables bound before it."""

    index: int
    code: str
    inputs: dict[str, Any] | None = None
    id: str | None = None  # the caller's name for it (the CLI's "id" field or line number)


@dataclass
class Attempt:
    """One try of a task on one sandbox."""

    sandbox: str  # the pool's name for the sandbox ("sandbox-3"), stable across its runs
    sandbox_id: str  # the backend's id (the Daytona sandbox id), "" for local jails
    status: str
    error: str = ""
    duration: float = 0.0
    queued: float = 0.0  # seconds waited for a sandbox to be created (pacing, backoff)


@dataclass
class TaskResult:
    """What became of a task: the RunResult of its last attempt, and every attempt made.

    `status` is the RunResult's, or "cancelled" for a task stopped before it ran.
    """

    index: int
    id: str | None
    inputs: dict[str, Any] | None
    result: RunResult | None
    attempts: list[Attempt] = field(default_factory=list)
    duration: float = 0.0  # from the first attempt's start to the end of the last

    @property
    def status(self) -> str:
        return self.result.status if self.result is not None else "cancelled"

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok

    @property
    def value(self) -> Any:
        return self.result.value if self.result is not None else None

    @property
    def error(self) -> RunError | None:
        return self.result.error if self.result is not None else None

    @property
    def retried(self) -> bool:
        return len(self.attempts) > 1

    @property
    def sandbox(self) -> str:
        """The sandbox that served the last attempt."""
        return self.attempts[-1].sandbox if self.attempts else ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the task's identity, outcome, attempts and the full RunResult."""
        return {
            "index": self.index,
            "id": self.id,
            "inputs": self.inputs,
            "status": self.status,
            "ok": self.ok,
            "value": self.value,
            "error": None if self.error is None else str(self.error),
            "attempts": [vars(a) for a in self.attempts],
            "duration": self.duration,
            "result": self.result.to_dict() if self.result is not None else None,
        }


def check_inputs(inputs: Any, reserved: set[str]) -> dict[str, Any] | None:
    """The inputs of one task as a dict of variable names to JSON-able values, or a clear
    ValueError naming what is wrong (before anything runs)."""
    if inputs is None:
        return None
    if not isinstance(inputs, Mapping):
        raise ValueError(
            f"a task's inputs must be a dict of variable names to values, not "
            f"{type(inputs).__name__}"
        )
    for name in inputs:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"input name {name!r} is not a valid Python variable name")
        if name in reserved:
            raise ValueError(f"input name {name!r} is a tool's name: the tool would be hidden")
    try:
        json.dumps(dict(inputs))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"a task's inputs must be JSON data (dicts, lists, str, numbers, bools, None): {exc}"
        ) from None
    return dict(inputs)
