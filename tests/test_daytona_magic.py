"""`%%codemode` on the Daytona backend, in an in-process IPython shell, over the loopback server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

pytestmark = pytest.mark.timeout(60)
KEY = "loopback-magic-key"


ADD = '''
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b
'''


@pytest.fixture
def shell_and_server(capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[object, object]]:
    from IPython.core.interactiveshell import InteractiveShell

    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    with DaytonaLoopbackServer(api_key=KEY) as server:
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "codemode_jupyter")
        try:
            shell.run_line_magic("config", "CodeMode.backend = 'daytona'")
            shell.run_line_magic("config", "CodeMode.display = 'text'")
            options = {"api_url": server.api_url, "api_key": KEY}
            shell.run_line_magic("config", f"CodeMode.backend_options = {options!r}")
            shell.run_cell(ADD)  # a notebook function: the magic offers it as a tool
            yield shell, server
        finally:
            shell.run_line_magic("unload_ext", "codemode_jupyter")
            shell.run_line_magic("config", "CodeMode.backend = 'local'")
            shell.run_line_magic("config", "CodeMode.backend_options = {}")


def test_cells_share_state_and_unload_deletes_the_sandbox(
    shell_and_server: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    shell, server = shell_and_server
    first = shell.run_cell("%%codemode\nx = add(1, 2)\nprint('x is', x)")
    second = shell.run_cell("%%codemode\nx + 1")
    assert first.success and second.success and second.result == 4
    assert "x is 3" in capsys.readouterr().out
    assert len(server.sandboxes) == 1
    shell.run_line_magic("codemode", "cleanup --dry-run")
    assert "in use by this kernel" in capsys.readouterr().out
    shell.run_line_magic("unload_ext", "codemode_jupyter")
    assert server.sandboxes == {}
    shell.run_line_magic("load_ext", "codemode_jupyter")


def test_attach_uses_the_users_sandbox_and_keeps_it(
    shell_and_server: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    from daytona import Daytona, DaytonaConfig

    shell, server = shell_and_server
    mine = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url)).create()
    shell.run_line_magic("codemode", f"attach {mine.id}")
    result = shell.run_cell("%%codemode\nadd(20, 22)")
    assert result.success and result.result == 42
    shell.run_line_magic("unload_ext", "codemode_jupyter")
    assert list(server.sandboxes) == [mine.id]
    assert server.counts.get("sandbox.delete", 0) == 0
    shell.run_line_magic("load_ext", "codemode_jupyter")
