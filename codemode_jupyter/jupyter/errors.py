"""How a failed `%%codemode` cell fails: short, with the sandbox's traceback, no host stack.

IPython calls `_render_traceback_()` on an exception that has it and shows those lines instead
of the host traceback; the error output's ename/evalue (what nbval compares) stay short and
deterministic.
"""

from __future__ import annotations

from codemode_jupyter.errors import CodeModeError, result_lines
from codemode_jupyter.model.result import RunResult

__all__ = ["CodeModeError", "CodeModeInterrupted", "interrupted_line", "result_lines"]


class CodeModeInterrupted(KeyboardInterrupt):
    """The stop button stopped the cell's program; the kernel lives on, and so does the
    session unless the program did not stop and its runtime was replaced (the run says so)."""

    def __init__(self, result: RunResult | None) -> None:
        self.result = result
        super().__init__(interrupted_line(result))

    def _render_traceback_(self) -> list[str]:
        return [f"CodeModeInterrupted: {self}"]


def interrupted_line(result: RunResult | None) -> str:
    """What an interrupted cell's error line says of the session: as its run's result does."""
    if result is not None and result.state_lost:
        return (
            "the program was interrupted; it did not stop, so its runtime was replaced: "
            "variables from earlier cells are gone"
        )
    if result is None:  # stopped before its program ran: nothing in the sandbox changed
        return "the cell was interrupted before its program ran; the session is still there"
    return "the program was interrupted; the session is still there"
