"""How a failed `%%codemode` cell fails: short, with the sandbox's traceback, no host stack.

IPython calls `_render_traceback_()` on an exception that has it and shows those lines instead
of the host traceback; the error output's ename/evalue (what nbval compares) stay short and
deterministic.
"""

from __future__ import annotations

from codemode_jupyter.model.result import RunResult

_HINTS = {
    "timeout": "raise the limit with --timeout S or %config CodeMode.timeout",
    "limit": "raise the limit with --max-tool-calls N or %config CodeMode.max_tool_calls",
    "crashed": "the runtime was replaced; variables from earlier cells are gone",
}


#: Statuses where the host stopped the program: the sandbox's traceback ends in the
#: KeyboardInterrupt used to stop it, which is how, not why; the summary line says why.
_STOPPED = ("timeout", "limit", "interrupted")


def _lines(result: RunResult) -> list[str]:
    error = result.error
    lines = error.traceback.rstrip("\n").split("\n") if error and error.traceback else []
    if result.status in _STOPPED and lines and lines[-1].strip() == "KeyboardInterrupt":
        lines.pop()
    summary = str(error) if error else result.status
    if lines and summary.strip().startswith(lines[-1].strip()):
        lines[-1] = summary  # the same line, or the summary says more ("... (line 2)")
    else:
        lines.append(summary)
    hint = _HINTS.get(result.status)
    if hint:
        lines.append(f"({hint})")
    return lines


class CodeModeError(Exception):
    """The cell's program did not finish ok: it raised, timed out, crashed or hit a limit."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        error = result.error
        super().__init__(str(error) if error else result.status)

    def _render_traceback_(self) -> list[str]:
        return _lines(self.result)


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
