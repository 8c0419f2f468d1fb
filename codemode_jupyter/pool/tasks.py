"""A pool's tasks and what it reports about each: Task, Attempt, TaskResult.

A task is a program plus optional input values. The values are data, never code: they travel
as JSON in a field of the run frame of their own, and the runtime binds them as variables
before the program runs. The program's text is sent as written, so it may begin with
`from __future__ import annotations` and its tracebacks name its own lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from codemode_jupyter.engine.inputs import check_inputs
from codemode_jupyter.model.result import RunError, RunResult

__all__ = ["check_inputs"]


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
