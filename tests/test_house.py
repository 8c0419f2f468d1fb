"""The house's infrastructure: one exception root, no import circles, the engine below the
agents, one loop-on-a-thread for the pool's async tools, one progress bar."""

from __future__ import annotations

import asyncio
import inspect
import io
import subprocess
import sys
import threading

import grimp

import codemode_jupyter
from codemode_jupyter import errors
from codemode_jupyter.errors import CodeModeError, FrameError, UnknownToolError
from codemode_jupyter.model.result import RunError, RunResult
from codemode_jupyter.pool.tools import HostTools
from codemode_jupyter.support.progress import ProgressBar

#: Each public error with the builtin base code may catch it by (kept from before the root).
BUILTIN_BASES = {
    "ToolArgumentError": TypeError,
    "UnknownToolError": (NameError, ValueError),
    "ResultNotSerialisable": TypeError,
    "ToolRejected": PermissionError,
    "FrameError": ValueError,
    "BadDisplay": ValueError,
    "BackendConfigError": RuntimeError,
    "BackendOptionError": TypeError,
    "BackendNotInstalled": ImportError,
    "PackageInstallError": RuntimeError,
    "MissingExtraError": ImportError,
    "ToolArgumentsError": ValueError,
    "BatchError": ValueError,
    "PipUsageError": ValueError,
}


def test_every_public_error_has_the_one_root_and_keeps_its_builtin_base() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, BaseException) and cls is not CodeModeError
    }
    assert set(classes) == set(BUILTIN_BASES)
    for name, cls in classes.items():
        assert issubclass(cls, CodeModeError), name
        assert issubclass(cls, BUILTIN_BASES[name]), name
    assert codemode_jupyter.CodeModeError is CodeModeError


def test_the_modules_that_raised_them_still_name_the_same_classes() -> None:
    from codemode_jupyter.backends import BackendNotInstalled
    from codemode_jupyter.engine.calls import ResultNotSerialisable
    from codemode_jupyter.jupyter.discovery import UnknownToolError as NotDefined
    from codemode_jupyter.jupyter.errors import CodeModeError as CellError
    from codemode_jupyter.tools.tool import UnknownToolError as NotRegistered

    assert NotDefined is NotRegistered is UnknownToolError
    assert CellError is CodeModeError
    assert ResultNotSerialisable is errors.ResultNotSerialisable
    assert BackendNotInstalled is errors.BackendNotInstalled


def test_only_a_failed_run_replaces_ipythons_traceback() -> None:
    failed = RunResult(
        ok=False,
        status="error",
        error=RunError("ValueError", "bad", "Traceback:\n  line 1\nValueError: bad\n"),
    )
    cell = CodeModeError(failed)
    assert cell.result is failed and str(cell) == str(failed.error)
    assert cell._render_traceback_()[-1] == "ValueError: bad"
    assert not hasattr(FrameError("malformed"), "_render_traceback_")
    assert errors.BackendOptionError("x")._render_traceback_() == ["BackendOptionError: x"]


def test_the_package_has_no_import_circles() -> None:
    # An import made only for type checkers never runs, so it makes no circle (a mixin may
    # name the class it is mixed into for its annotations).
    graph = grimp.build_graph(
        "codemode_jupyter", include_external_packages=False, exclude_type_checking_imports=True
    )
    modules = sorted(m for m in graph.modules if m != "codemode_jupyter")
    edges = {
        m: {i for i in graph.find_modules_directly_imported_by(m) if i != "codemode_jupyter"}
        for m in modules
    }
    assert _cycles(edges) == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in edges.get(node, ()):
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_tool_definition_is_made_without_the_agents() -> None:
    script = (
        "import sys\n"
        "from codemode_jupyter import CodeMode\n"
        "def add(a: int, b: int) -> int:\n"
        "    return a + b\n"
        "cm = CodeMode([add])\n"
        "tool = cm.tool_definition('mcp')\n"
        "assert tool['name'] == 'run_code' and 'def add' in tool['description'], tool\n"
        "assert not [m for m in sys.modules if m.startswith('codemode_jupyter.agents')]\n"
        "cm.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_pools_async_tools_run_on_the_one_loop_thread_and_it_stops() -> None:
    async def twice(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    host = HostTools([twice])
    wrapped = host.tools[0].fn
    assert asyncio.run(wrapped(21)) == 42
    assert any(t.name == "codemode-pool-async-tools" for t in threading.enumerate())
    host.close()
    assert not any(t.name == "codemode-pool-async-tools" for t in threading.enumerate())


def test_the_progress_bar_counts_what_a_bar_cannot_show() -> None:
    stream = io.StringIO()
    bar = ProgressBar(20, "codemode-jupyter batch", stream)
    for i in range(20):
        bar.add(ok=i % 5 != 0, retried=int(i % 7 == 0))
    bar.close()
    last = stream.getvalue().strip().split("\r")[-1]
    assert "20/20" in last and "4 failed, 3 retried" in last
