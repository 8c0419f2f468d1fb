"""What a run leaves behind: the RunResult and its parts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RunError:
    """Why a run failed: the sandbox's exception, or a budget or fault the host detected."""

    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@dataclass
class ToolCall:
    """One call the program made to a host tool."""

    id: int
    name: str
    args: dict[str, Any]
    round: int
    result: Any = None
    error: RunError | None = None
    duration: float = 0.0
    #: The host exception a tool raised, kept for `%codemode debug`; never serialised.
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "round": self.round,
            "result": self.result,
            "error": asdict(self.error) if self.error else None,
            "duration": self.duration,
        }


@dataclass
class Preview:
    """A port the program serves, and the URL that reaches it from the user's browser."""

    port: int
    url: str


@dataclass
class Artifact:
    """A file the program left under outputs/ (or passed to codemode.save()), now on the host."""

    name: str  # relative to outputs/ in the sandbox
    size: int
    sha256: str
    path: str  # where it is on the host


@dataclass
class RunResult:
    """The outcome of one `CodeMode.run`.

    `status` is one of "ok", "error", "timeout", "interrupted", "crashed", "limit".
    """

    ok: bool
    status: str
    stdout: str = ""
    stderr: str = ""
    value: Any = None
    value_repr: str | None = None
    error: RunError | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    rounds: int = 0
    previews: list[Preview] = field(default_factory=list)
    duration: float = 0.0
    state_lost: bool = False
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    backend: str = ""
    isolation: str = ""
    #: How many times the program was executed: 1, except in replay mode.
    executions: int = 1
    #: display() calls and figures, in order: {"data": {mime: ...}, "metadata": {...}}.
    displays: list[dict[str, Any]] = field(default_factory=list)
    displays_dropped: int = 0
    #: The value's rich representation ({mime: data}) when it has one beyond its text.
    value_bundle: dict[str, Any] | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    #: Files the program wrote that did not come back, each with why (caps, a bad name).
    artifacts_left: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the `result` of application/vnd.codemode.run+json)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["error"] = asdict(self.error) if self.error else None
        data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        data["previews"] = [asdict(p) for p in self.previews]
        data["artifacts"] = [asdict(a) for a in self.artifacts]
        return data
