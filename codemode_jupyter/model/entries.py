"""The typed run model: a run's timeline entries and the run+json payload that carries them.

Entries are plain dicts at run time (the timeline builds them on the host's hot path, where a
class per entry would cost); these TypedDicts say what each holds, for type checkers, for the
JSON Schema the labextension's types are checked against (labextension/schema/run.schema.json,
see `run_schema`), and for every view built from a timeline.

A timeline lists what happened in order, so a print made after a tool call comes after it;
previews lead it (see `Timeline.add_preview`). The ending (status, value, error) is the
result, which travels next to the timeline in the payload.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from typing_extensions import NotRequired, TypedDict

CallState = Literal["running", "waiting", "ok", "error", "cancelled"]


class ErrorInfo(TypedDict):
    """An exception as the model keeps it (`RunError` as a dict)."""

    type: str
    message: str
    #: Left out of the data a saved notebook compares (it names machine paths).
    traceback: NotRequired[str]


class OutputEntry(TypedDict):
    """Text the program wrote; consecutive chunks of one stream merged. With `call`, what that
    tool printed on the host while it ran, after the call's entry."""

    kind: Literal["output"]
    stream: Literal["stdout", "stderr"]
    text: str
    call: NotRequired[int]


class Approval(TypedDict):
    """A paused call's approval (see jupyter/approval_marks.py)."""

    #: `waiting`, `approve`, `reject` or `return` (answered with a stand-in value).
    decision: str
    #: Who decided: `notebook`, `cell`, `timeout`, `client`, `run ended`.
    by: NotRequired[str]
    reason: NotRequired[str]
    #: The tool did not run: its result is the value a person gave.
    stand_in: NotRequired[bool]


class CallEntry(TypedDict):
    """A tool call, where it started. `args` (`city='Paris'`) and `result` are Python
    literals as the program sees them, cut at `timeline.REPR_LIMIT` characters."""

    kind: Literal["call"]
    id: int
    name: str
    round: int
    args: str
    state: CallState
    #: The result's repr, once the call is ok.
    result: NotRequired[str]
    #: Why it failed, once the call is in error.
    error: NotRequired[ErrorInfo]
    #: Seconds the tool took, once finished (without `waited`).
    duration: NotRequired[float]
    #: When the call waited for a person.
    approval: NotRequired[Approval]
    #: Seconds the call waited for a decision.
    waited: NotRequired[float]


class PreviewEntry(TypedDict):
    """A port the program serves, and the URL that reaches it from the user's browser."""

    kind: Literal["preview"]
    port: int
    #: Left out of the data a saved notebook compares.
    url: NotRequired[str]


class GapEntry(TypedDict):
    """Output dropped here to keep within a cap."""

    kind: Literal["gap"]
    chars: int


class DisplayEntry(TypedDict):
    """A display() of the program (or a figure it showed), where it happened. A live update
    may carry a stub: `data` holds only `text/plain`, `omitted` the size left out."""

    kind: Literal["display"]
    #: MIME type -> text (binary types as base64) or JSON data; `text/plain` always there.
    data: dict[str, Any]
    metadata: NotRequired[dict[str, Any]]
    omitted: NotRequired[int]


#: One entry of a timeline, told apart by `kind`.
Entry = Union[OutputEntry, CallEntry, PreviewEntry, GapEntry, DisplayEntry]  # noqa: UP007


class ArtifactInfo(TypedDict):
    """A file the program left under outputs/, now on the host (see views/artifacts.py)."""

    name: str
    size: int
    sha256: NotRequired[str]
    path: NotRequired[str]
    #: Its path relative to the notebook's folder, when it is under it.
    rel: NotRequired[str]
    #: A CSV's first lines.
    head: NotRequired[list[str]]


class PreviewInfo(TypedDict):
    port: int
    url: str


class ResultInfo(TypedDict, total=False):
    """The result part of the payload: `RunResult.to_dict()` without what the timeline
    carries (stdout, stderr, tool_calls, displays). A live update has status, duration,
    backend and isolation only; a saved run keeps what varies in the output's metadata."""

    ok: bool
    status: str
    value: Any
    value_repr: str | None
    error: ErrorInfo | None
    rounds: int
    previews: list[PreviewInfo]
    duration: float
    state_lost: bool
    stdout_dropped: int
    stderr_dropped: int
    backend: str
    isolation: str
    executions: int
    displays_dropped: int
    value_bundle: dict[str, Any] | None
    artifacts: list[ArtifactInfo]
    artifacts_left: list[str]


class AgentInfo(TypedDict):
    """A run an agent sent (`%codemode serve`)."""

    run: int
    session: str
    #: The serving cell's saved record, which also shows what the tools printed.
    record: NotRequired[bool]
    #: [stream, text] pairs the tools printed on the host during the run.
    tool_output: NotRequired[list[list[str]]]


class RunPayload(TypedDict):
    """`application/vnd.codemode.run+json`: a run, live or finished."""

    version: int
    code: str
    timeline: list[Entry]
    result: ResultInfo
    warnings: NotRequired[list[str]]
    agent: NotRequired[AgentInfo]


def run_schema() -> dict[str, Any]:
    """The JSON Schema of `RunPayload` (pydantic's, entries told apart by `kind`)."""
    from pydantic import Field, TypeAdapter

    entry = Annotated[
        Union[OutputEntry, CallEntry, PreviewEntry, GapEntry, DisplayEntry],  # noqa: UP007
        Field(discriminator="kind"),
    ]

    class Payload(RunPayload):
        timeline: list[entry]  # type: ignore[valid-type]

    Payload.__name__ = Payload.__qualname__ = "RunPayload"
    schema = TypeAdapter(Payload).json_schema()
    schema["title"] = "application/vnd.codemode.run+json"
    return schema
