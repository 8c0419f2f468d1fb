"""`%%codemode --backend daytona` in a real kernel, against the Daytona loopback server.

The kernel drives the real `daytona` SDK; the server (codemode_jupyter.testing) runs in this
test process and backs its sandboxes with the local jail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from codemode_jupyter.jupyter.headless import KernelSession
from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

KEY = "loopback-kernel-key"


@pytest.fixture(scope="module")
def server() -> Iterator[DaytonaLoopbackServer]:
    with DaytonaLoopbackServer(api_key=KEY) as srv:
        yield srv


def start_kernel(server: DaytonaLoopbackServer) -> KernelSession:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    session = KernelSession(env=env)
    assert session.execute("%load_ext codemode_jupyter").ok
    options = {"api_url": server.api_url, "api_key": KEY}
    assert session.execute(f"%config CodeMode.backend_options = {options!r}").ok
    return session


def test_daytona_cell_calls_notebook_tools(server: DaytonaLoopbackServer) -> None:
    kernel = start_kernel(server)
    try:
        assert kernel.execute("def add(a: int, b: int) -> int:\n    return a + b\n").ok
        execution = kernel.execute(
            "%%codemode --backend daytona\nprint(add(a=2, b=3))\nadd(a=1, b=1)"
        )
        assert execution.ok, execution.error
        assert execution.result == "2"
        transcript = next(t for t in execution.displays() if t != "codemode live view")
        assert transcript.startswith("5\n── codemode: ok, 2 tool calls in 2 rounds")
        # The session is the sandbox's: state persists in the next daytona cell.
        assert kernel.execute("%%codemode --backend daytona\nx = 41").ok
        assert kernel.execute("%%codemode --backend daytona\nx + 1").result == "42"
        created = [sid for sid, box in server.sandboxes.items() if box.commands()]
    finally:
        kernel.shutdown()
    # The sandbox the kernel created is deleted when the kernel shuts down.
    assert created and not set(created) & set(server.sandboxes)


def test_attach_runs_cells_in_an_existing_sandbox_and_keeps_it(server) -> None:
    from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

    client = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
    mine = client.create(CreateSandboxFromSnapshotParams()).id
    kernel = start_kernel(server)
    try:
        attached = kernel.execute(f"%codemode attach {mine}")
        assert attached.ok and mine in attached.stream()
        assert kernel.execute("%%codemode\nopen('note.txt', 'w').write('kept')").ok
        assert server.sandboxes[mine].commands()  # the cell ran there
        listed = kernel.execute("%codemode cleanup --dry-run")
        assert listed.ok, listed.error
        # The attached sandbox is the user's, not ours (the other test's was deleted).
        assert listed.stream() == "codemode: no sandboxes made by codemode-jupyter\n"
    finally:
        kernel.shutdown()
    assert mine in server.sandboxes  # attached: never deleted
    runtimes_ended = all(c.exit_code is not None for c in server.sandboxes[mine].commands())
    client.delete(client.get(mine))
    if not runtimes_ended:
        pytest.xfail("daytona backend: closing an attached sandbox's session does not wait "
                     "for its runtime to be killed, so the runtime outlives the kernel")
