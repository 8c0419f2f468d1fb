"""What tools print while a run goes belongs to that run's view: its feed card, its cell's card.

An agent run's sync tools run on the agent thread, its async tools on the session's loop;
their prints would go out under whatever cell the kernel last attributed output to (the serve
cell, long finished, or a person's running cell). `ToolOutput` stands in for `sys.stdout` and
`sys.stderr` while the server runs: a write made inside `capture(sink)` (a context variable,
so it follows the run into its async tools) goes to `sink(stream, text)`, unless the sink
returns False (it has no place for it); every other write goes to the stream it replaced,
unchanged. A `%%codemode` cell captures its sync tools' prints the same way: they run on the
kernel's thread inside the cell's run, and its view files them under the call that printed.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

Sink = Callable[[str, str], "bool | None"]

_sink: contextvars.ContextVar[Sink | None] = contextvars.ContextVar(
    "codemode_tool_output", default=None
)


class _Routed:
    """A text stream: writes in a capture go to its sink, the rest to `target`."""

    def __init__(self, name: str, target: TextIO) -> None:
        self._name = name
        self.target = target

    def write(self, text: str) -> int:
        sink = _sink.get()
        if sink is None:
            return self.target.write(text)
        if text and sink(self._name, text) is False:
            return self.target.write(text)
        return len(text)

    def flush(self) -> None:
        if _sink.get() is None:
            self.target.flush()

    def __getattr__(self, name: str) -> Any:
        # encoding, isatty, fileno, ipykernel's own attributes: those of the real stream.
        return getattr(self.target, name)


class ToolOutput:
    """Installs the routed streams; `uninstall` puts the originals back where still ours."""

    def __init__(self) -> None:
        self._routed: dict[str, _Routed] = {}

    def install(self) -> None:
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if not isinstance(current, _Routed):
                routed = _Routed(name, current)
                self._routed[name] = routed
                setattr(sys, name, routed)

    def uninstall(self) -> None:
        for name, routed in self._routed.items():
            if getattr(sys, name) is routed:
                setattr(sys, name, routed.target)
        self._routed.clear()


@contextmanager
def capture(sink: Sink) -> Iterator[None]:
    """Writes to the routed streams from this context (and tasks it starts) go to `sink`."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def release() -> None:
    """Writes from here on in this context go to the real streams (a debugger opened in a
    tool talks to the person, not to the run's card); the capture's end restores it."""
    _sink.set(None)


@contextmanager
def to_the_person() -> Iterator[None]:
    """Writes in this block go to the real streams: the host talking to the person (a step
    prompt's answer refused) while a call runs, not the tool printing."""
    token = _sink.set(None)
    try:
        yield
    finally:
        _sink.reset(token)
