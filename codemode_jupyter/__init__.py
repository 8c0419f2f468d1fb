"""codemode-jupyter: run Code Mode programs in a sandbox; their tool calls run on the host."""

from .engine import CodeMode
from .pool import Pool
from .pool_tasks import TaskResult
from .result import Preview, RunError, RunResult, ToolCall
from .tools import Tool, ToolRegistry, tool

__all__ = [
    "CodeMode",
    "Pool",
    "Preview",
    "RunError",
    "RunResult",
    "TaskResult",
    "Tool",
    "ToolCall",
    "ToolRegistry",
    "load_ipython_extension",
    "tool",
    "unload_ipython_extension",
]
__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext codemode_jupyter`: register the magics, the tools comm and the hooks."""
    from .jupyter.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """`%unload_ext codemode_jupyter`: close the sessions and remove the hooks."""
    from .jupyter.extension import unload_ipython_extension as unload

    unload(ipython)
