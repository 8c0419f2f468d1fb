"""Debugging tools from a cell: breakpoint() inside a tool, and a post-mortem of a tool.

ipykernel imports debugpy, whose breakpoint hook does nothing unless a visual debugger is
attached (ipykernel issue #897): a tool's breakpoint() would be skipped silently. For the
length of a run, breakpoint() opens IPython's debugger instead, unless a debugger client is
attached (then its hook is kept). Time spent in that call does not count against the timeout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from codemode_jupyter.model.result import RunResult


@contextmanager
def breakpoints_stop_in_tools(session: Any) -> Iterator[None]:
    """Make `breakpoint()` inside a tool open IPython's debugger while the block runs."""
    original = sys.breakpointhook

    def hook(*args: Any, **kwargs: Any) -> Any:
        session.note_debugger_in_tool()
        if os.environ.get("PYTHONBREAKPOINT") == "0" or debugpy_attached():
            return original(*args, **kwargs)
        from IPython.core.debugger import set_trace

        from codemode_jupyter.jupyter.views.tool_output import release

        release()  # the debugger talks to the person, not to the run's card
        return set_trace(sys._getframe(1))

    sys.breakpointhook = hook
    try:
        yield
    finally:
        sys.breakpointhook = original


def debugpy_attached() -> bool:
    debugpy = sys.modules.get("debugpy")
    try:
        return bool(debugpy and debugpy.is_client_connected())
    except Exception:
        return False


def post_mortem(shell: Any, result: RunResult | None) -> None:
    """Open the shell's debugger in the last tool of `result` that raised."""
    calls = [c for c in (result.tool_calls if result else []) if c.exception is not None]
    if not calls:
        print("codemode: the last run has no tool that raised")
        return
    call = calls[-1]
    exc = call.exception
    assert exc is not None
    print(f"codemode: post-mortem of {call.name} (call #{call.id}): {exc!r}")
    debugger = shell.debugger_cls()
    debugger.reset()
    debugger.interaction(None, exc.__traceback__)
