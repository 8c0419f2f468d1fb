"""codemode-jupyter: run Code Mode programs in a sandbox; their tool calls run on the host."""

from typing import TYPE_CHECKING, Any

from codemode_jupyter.engine.session import CodeMode
from codemode_jupyter.errors import CodeModeError
from codemode_jupyter.model import events
from codemode_jupyter.model.result import Preview, RunError, RunResult, ToolCall
from codemode_jupyter.tools.tool import Tool, ToolRegistry, tool

if TYPE_CHECKING:
    from codemode_jupyter.pool.scheduler import Pool
    from codemode_jupyter.pool.tasks import TaskResult

__all__ = [
    "CodeMode",
    "CodeModeError",
    "Pool",
    "Preview",
    "RunError",
    "RunResult",
    "TaskResult",
    "Tool",
    "ToolCall",
    "ToolRegistry",
    "events",
    "load_ipython_extension",
    "tool",
    "unload_ipython_extension",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Pool and TaskResult, imported on first use: a session that runs programs one at a
    time does not pay for the pool's modules (uuid, statistics and what they import)."""
    if name == "Pool":
        from codemode_jupyter.pool.scheduler import Pool

        return Pool
    if name == "TaskResult":
        from codemode_jupyter.pool.tasks import TaskResult

        return TaskResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _handle_tool_call(cm: CodeMode, arguments: Any, **options: Any) -> str:
    """`cm.handle_tool_call(...)`: the agents' code, wired here because the engine sits below
    the agents and does not import them."""
    from codemode_jupyter.agents.llm_tool import handle_tool_call

    return handle_tool_call(cm, arguments, **options)


CodeMode.tool_call_handler = _handle_tool_call


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext codemode_jupyter`: register the magics, the tools comm and the hooks."""
    from codemode_jupyter.jupyter.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """`%unload_ext codemode_jupyter`: close the sessions and remove the hooks."""
    from codemode_jupyter.jupyter.extension import unload_ipython_extension as unload

    unload(ipython)
