"""A runtime that dies in a live Daytona sandbox is started again there, not in a new sandbox.

The real `daytona` SDK against the loopback server (sandboxes in the local jail).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from conftest import FAST

from codemode_jupyter import CodeMode
from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("daytona_faults_cleared")]

KEY = "loopback-restart-key"

CRASH = "import os\nos._exit(3)"


@pytest.fixture
def cm(server: DaytonaLoopbackServer) -> Iterator[CodeMode]:
    with CodeMode(backend="daytona", api_url=server.api_url, api_key=KEY, retry=FAST) as session:
        assert session.run("kept = 1").ok
        yield session


def sessions(server: DaytonaLoopbackServer, sandbox_id: str) -> set[str]:
    return set(server.sandboxes[sandbox_id].sessions)


def test_a_crashed_runtime_restarts_in_the_same_sandbox_in_a_new_session(
    server: DaytonaLoopbackServer, cm: CodeMode
) -> None:
    sandbox_id = cm.status()["sandbox"]
    before = sessions(server, sandbox_id)
    server.reset_counts()
    crashed = cm.run(CRASH)
    assert crashed.status == "crashed"
    assert "exited with code 3" in str(crashed.error)
    again = cm.run("print('again')\n'kept' in globals()")
    assert (again.status, again.stdout, again.value) == ("ok", "again\n", False)
    assert cm.status()["sandbox"] == sandbox_id
    counts = server.counts
    # Same sandbox, files still there: no creation, no upload, nothing deleted but the
    # crashed runtime's session (and whatever its program left running in it).
    assert not {"sandbox.create", "sandbox.delete", "files.upload"} & set(counts), counts
    assert counts["session.delete"] == 1 and counts["session.exec"] == 1
    assert before.isdisjoint(sessions(server, sandbox_id))
    assert len(sessions(server, sandbox_id)) == 1


def test_runtime_files_removed_from_the_sandbox_are_uploaded_again(
    server: DaytonaLoopbackServer, cm: CodeMode
) -> None:
    sandbox_id = cm.status()["sandbox"]
    runner = server.sandboxes[sandbox_id].runner
    shutil.rmtree(runner.host_path(".codemode-jupyter"))  # as a cleanup in the sandbox would
    server.reset_counts()
    assert cm.run(CRASH).status == "crashed"
    again = cm.run("print('again')")
    assert (again.status, again.stdout) == ("ok", "again\n"), again.error
    counts = server.counts
    assert counts["files.upload"] == 1
    assert "sandbox.create" not in counts
    assert cm.status()["sandbox"] == sandbox_id


def test_a_stopped_sandbox_restarts_with_the_runtime_it_already_has(
    server: DaytonaLoopbackServer, cm: CodeMode
) -> None:
    sandbox_id = cm.status()["sandbox"]
    server.stop_sandbox(sandbox_id)
    server.reset_counts()
    first = cm.run("print('after')")  # may be the run that finds the runtime gone
    again = first if first.ok else cm.run("print('after')")
    assert (again.status, again.stdout) == ("ok", "after\n"), again.error
    counts = server.counts
    assert counts["sandbox.start"] == 1
    assert not {"sandbox.create", "files.upload"} & set(counts), counts
    assert counts["process.execute"] == 1  # the files checked, not uploaded again


def test_each_runtime_has_a_session_of_its_own(server: DaytonaLoopbackServer) -> None:
    # With a spare runtime: the crashed one's session goes, the spare's stays and takes over.
    with CodeMode(
        backend="daytona", api_url=server.api_url, api_key=KEY, retry=FAST, spare=True
    ) as cm:
        assert cm.run("1").ok
        sandbox_id = cm.status()["sandbox"]
        assert cm.run(CRASH).status == "crashed"
        again = cm.run("print('again')")
        assert (again.status, again.stdout) == ("ok", "again\n"), again.error
        assert cm.run("print('still')").stdout == "still\n"
        # No session holds two runtimes: deleting the crashed one's spared the spare.
        live = server.sandboxes[sandbox_id].sessions.values()
        assert all(len(commands) <= 1 for commands in live)
