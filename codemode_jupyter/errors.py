"""codemode-jupyter's public errors, under one root: `except CodeModeError` catches any of them.

Each keeps the builtin base it had (ValueError, TypeError, ImportError, ...), so code that
catches those still does. Errors private to one backend stay in that backend's package.
A `%%codemode` cell whose program failed raises `CodeModeError(result)` itself: IPython then
shows the sandbox's traceback, short, instead of the host's stack.
"""

from __future__ import annotations

from typing import Any

from codemode_jupyter.model.result import RunResult

_HINTS = {
    "timeout": "raise the limit with --timeout S or %config CodeMode.timeout",
    "limit": "raise the limit with --max-tool-calls N or %config CodeMode.max_tool_calls",
    "crashed": "the runtime was replaced; variables from earlier cells are gone",
}

#: Statuses where the host stopped the program: the sandbox's traceback ends in the
#: KeyboardInterrupt used to stop it, which is how, not why; the summary line says why.
_STOPPED = ("timeout", "limit", "interrupted")


def result_lines(result: RunResult) -> list[str]:
    """A failed run as the lines IPython shows: the sandbox's traceback, the summary, a hint."""
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
    """The root of codemode-jupyter's errors; raised as itself (with `result`) when a cell's
    program did not finish ok: it raised, timed out, crashed or hit a limit."""

    result: RunResult | None = None

    def __init__(self, *args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], RunResult):
            self.result = result = args[0]
            args = (str(result.error) if result.error else result.status,)
        super().__init__(*args)

    @property
    def _render_traceback_(self) -> Any:
        # Only a failed run has lines of its own; other errors show IPython's usual traceback
        # (IPython asks with hasattr, which an AttributeError answers no).
        if self.result is None:
            raise AttributeError("_render_traceback_")
        result = self.result
        return lambda: result_lines(result)


class MessageOnly:
    """An error whose message is the whole story: IPython (a `%%codemode` cell) shows these
    lines instead of the host's stack."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


# -- tools ----------------------------------------------------------------------------------


class ToolArgumentError(CodeModeError, TypeError):
    """The arguments of a tool call do not fit the tool's signature."""


class UnknownToolError(CodeModeError, NameError, ValueError):
    """A call, or `--tools`, named a tool that is not registered (or not defined in the
    notebook). A NameError as in Python, and a ValueError as `--tools` raised before."""


class ResultNotSerialisable(CodeModeError, TypeError):
    """A tool's result cannot cross to the program as JSON."""


class ToolRejected(CodeModeError, PermissionError):
    """A person (or the approval timeout) refused a tool call; the tool did not run."""


# -- engine ---------------------------------------------------------------------------------


class FrameError(CodeModeError, ValueError):
    """A frame from the runtime that does not fit the protocol."""


class BadDisplay(CodeModeError, ValueError):
    """A display frame (or a done frame's bundle) that does not fit the protocol."""


# -- backends -------------------------------------------------------------------------------


class BackendConfigError(CodeModeError, RuntimeError):
    """The backend cannot work until the user changes its configuration (e.g. a rejected key):
    raised to the caller rather than reported as one failed run."""


class BackendOptionError(MessageOnly, BackendConfigError, TypeError):
    """An option the backend does not have (a TypeError, as for any unexpected keyword)."""


class BackendNotInstalled(MessageOnly, BackendConfigError, ImportError):
    """The backend's SDK is missing (or too old): the message names the extra to install."""


class PackageInstallError(MessageOnly, BackendConfigError):
    """pip could not install the session's packages; the message is pip's own output."""


# -- front ends -----------------------------------------------------------------------------


class MissingExtraError(CodeModeError, ImportError):
    """A feature needs an extra (e.g. `agents`) that is not installed."""


class ToolArgumentsError(CodeModeError, ValueError):
    """The model's arguments for `run_code` do not fit its schema."""


class BatchError(CodeModeError, ValueError):
    """Bad input (tasks file, tools file, results file): the message says which and why."""


class PipUsageError(CodeModeError, ValueError):
    """Bad words after `%codemode pip`; the magic shows it as a UsageError."""
