"""Events a run emits while it goes, for live views and other consumers.

Pass `on_event=callback` to `CodeMode.run`; the callback is called on the engine's I/O
thread for output events and on the calling thread for tool events, so it must be quick
and thread-safe (the Jupyter live view only appends to buffers and coalesces).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from codemode_jupyter.model.result import Preview, RunError, RunResult


@dataclass
class RunStarted:
    backend: str
    isolation: str
    fresh_runtime: bool


@dataclass
class Output:
    """A chunk of the program's stdout or stderr, as it was written."""

    stream: str  # "stdout" | "stderr"
    text: str


@dataclass
class ToolCallStarted:
    id: int
    name: str
    args: dict[str, Any]
    round: int


@dataclass
class ToolCallFinished:
    id: int
    name: str
    round: int
    result: Any
    error: RunError | None
    duration: float


@dataclass
class PreviewAnnounced:
    preview: Preview


@dataclass
class Display:
    """display() in the program (or a figure it showed): a MIME bundle, in order with output.

    `data` maps MIME types to text (binary types as base64) or JSON data, with "text/plain"
    always there; `metadata` is keyed the same way, as in a Jupyter display_data output."""

    data: dict[str, Any]
    metadata: dict[str, Any]


@dataclass
class RunFinished:
    result: RunResult


Event = Union[  # noqa: UP007 - a runtime alias, usable in isinstance() on Python 3.10 too
    RunStarted, Output, ToolCallStarted, ToolCallFinished, PreviewAnnounced, Display, RunFinished
]
EventCallback = Callable[[Event], None]
