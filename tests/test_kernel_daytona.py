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
        # In time order: the status, then each call before what the program printed after it.
        assert transcript.startswith(
            "── codemode: ok, 2 tool calls in 2 rounds\n  add(a=2, b=3) -> 5\n5\n"
        )
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
    assert runtimes_ended  # but our runtime in it is gone with the kernel


def test_a_notebook_with_tools_runs_on_daytona_through_nbclient(
    server: DaytonaLoopbackServer, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole notebook, executed by nbclient: %config daytona_* settings, notebook tools,
    state across cells, a round of parallel async calls, and the sandbox gone at shutdown."""
    import nbformat

    from codemode_jupyter.jupyter.headless import execute_notebook

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("DAYTONA_API_KEY", raising=False)
    monkeypatch.delenv("DAYTONA_API_URL", raising=False)
    cells = [
        "%load_ext codemode_jupyter",
        "%config CodeMode.backend = 'daytona'\n"
        f"%config CodeMode.daytona_api_url = {server.api_url!r}\n"
        f"%config CodeMode.daytona_api_key = {KEY!r}\n"
        "%config CodeMode.daytona_auto_stop_minutes = 5\n"
        "%config CodeMode.daytona_labels = {'project': 'nb-test'}",
        "def get_weather(city: str) -> dict:\n"
        '    """Current weather for a city."""\n'
        "    return {'city': city, 'temp_c': len(city)}\n\n"
        "async def slow_double(x: int) -> int:\n"
        '    """Twice x, after a pause."""\n'
        "    import asyncio\n"
        "    await asyncio.sleep(0)\n"
        "    return 2 * x",
        "%%codemode\n"
        "temps = {}\n"
        "for city in ['Paris', 'Oslo']:\n"
        "    temps[city] = get_weather(city)['temp_c']\n"
        "    print(city, temps[city])",
        "%%codemode --backend daytona\n"
        "import asyncio\n"
        "doubled = await asyncio.gather(*(slow_double_async(t) for t in temps.values()))\n"
        "doubled",
        "from daytona import Daytona, DaytonaConfig, ListSandboxesQuery\n"
        f"client = Daytona(DaytonaConfig(api_key={KEY!r}, api_url={server.api_url!r}))\n"
        "mine = list(client.list(ListSandboxesQuery(labels={'project': 'nb-test'})))\n"
        "print(len(mine), mine[0].labels['codemode-jupyter'], mine[0].auto_stop_interval)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    path = tmp_path / "daytona.ipynb"
    nbformat.write(nb, path)
    before = set(server.sandboxes)
    server.reset_counts()

    executed = execute_notebook(path, timeout=120)

    def text(cell: dict) -> str:
        parts = []
        for output in cell.outputs:
            if output.output_type == "stream":
                parts.append(output.text)
            elif "text/plain" in output.get("data", {}):
                parts.append(output.data["text/plain"])
        return "\n".join(parts)

    tools_cell, gather_cell = executed.cells[3], executed.cells[4]
    shown = text(tools_cell).splitlines()
    assert [line for line in shown if line in ("Paris 5", "Oslo 4")] == ["Paris 5", "Oslo 4"]
    assert shown.index("Paris 5") < shown.index("Oslo 4"), shown
    assert "ok, 2 tool calls in 2 rounds" in text(tools_cell)
    assert "[10, 8]" in text(gather_cell), text(gather_cell)
    assert "2 tool calls in 1 round" in text(gather_cell)
    run = next(
        o for o in gather_cell.outputs if "application/vnd.codemode.run+json" in o.get("data", {})
    )
    assert run.data["application/vnd.codemode.run+json"]["result"]["ok"]
    assert text(executed.cells[5]) == "1 true 5\n"  # our labels and auto-stop, as configured
    counts = server.counts
    assert counts["sandbox.create"] == 1  # one sandbox, shared by the cells
    # deleted at kernel shutdown
    assert counts["sandbox.delete"] == 1
    assert set(server.sandboxes) == before
