"""Daytona sandboxes that go away, and creations that happen twice: the real `daytona` SDK
against the loopback server, which can keep a deleted sandbox in "destroying" and answer a
creation that did succeed with a gateway timeout."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from conftest import FAST

from codemode_jupyter import CodeMode
from codemode_jupyter.backends.daytona.options import LABEL_SESSION
from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("daytona_faults_cleared")]

KEY = "loopback-sandboxes-key"


def connect(server: DaytonaLoopbackServer, **options: object) -> CodeMode:
    options.setdefault("retry", FAST)
    options.setdefault("session_label", uuid.uuid4().hex[:12])
    return CodeMode(backend="daytona", api_url=server.api_url, api_key=KEY, **options)


def wait_for(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    """Poll `condition` until it holds; fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def labelled(server: DaytonaLoopbackServer, session: str) -> dict[str, str]:
    """The server's sandboxes with this session label: id -> state."""
    return {
        sid: sb.dto["state"]
        for sid, sb in list(server.sandboxes.items())
        if sb.dto["labels"].get(LABEL_SESSION) == session
    }


# --- a sandbox on its way out -------------------------------------------------------------------


def test_a_sandbox_being_destroyed_is_replaced_not_restarted(server: DaytonaLoopbackServer) -> None:
    server.keep_destroying(60)
    with connect(server) as cm:
        cm.run("x = 1")
        old = cm.status()["sandbox"]
        server.delete_sandbox(old)  # from the dashboard, say
        wait_for(lambda: not cm.status()["runtime_alive"], "the runtime's end is noticed")
        result = cm.run("'x' in globals()")
        new = cm.status()["sandbox"]
        notice = cm.status().get("notice", "")
        assert server.sandboxes[old].dto["state"] == "destroying"  # still listed, going
    assert result.ok, result.error
    assert result.value is False and result.state_lost
    assert new != old
    assert "deleted" in notice and "lost" in notice
    assert server.counts.get("sandbox.start", 0) == 0  # never asked to start a dying sandbox


def test_a_sandbox_destroyed_mid_run_fails_the_run_then_is_replaced(
    server: DaytonaLoopbackServer,
) -> None:
    holder: dict[str, str] = {}

    def pull_the_plug() -> str:
        """Delete the sandbox from under the program."""
        server.delete_sandbox(holder["id"])
        return "gone"

    server.keep_destroying(60)
    with connect(server, tools=[pull_the_plug]) as cm:
        cm.run("x = 1")
        holder["id"] = old = cm.status()["sandbox"]
        result = cm.run("pull_the_plug()\nimport time\ntime.sleep(30)")
        after = cm.run("'x' in globals()")
        new = cm.status()["sandbox"]
    assert result.status == "crashed" and result.state_lost
    assert "deleted" in result.error.message and old in result.error.message
    assert after.ok and after.value is False
    assert new != old
    assert server.counts.get("sandbox.start", 0) == 0


def test_a_failed_sandbox_is_replaced_and_deleted(server: DaytonaLoopbackServer) -> None:
    with connect(server) as cm:
        cm.run("x = 1")
        old = cm.status()["sandbox"]
        server.fail_sandbox(old, "runner lost")
        wait_for(lambda: not cm.status()["runtime_alive"], "the runtime's end is noticed")
        result = cm.run("'x' in globals()")
        notice = cm.status().get("notice", "")
        wait_for(lambda: old not in server.sandboxes, "the failed sandbox is deleted")
    assert result.ok and result.value is False and result.state_lost, result.error
    assert "runner lost" in notice and "lost" in notice
    assert server.counts.get("sandbox.start", 0) == 0


def test_attaching_to_a_sandbox_being_destroyed_says_so(server: DaytonaLoopbackServer) -> None:
    server.keep_destroying(60)
    with connect(server) as owner:
        owner.run("1")
        doomed = owner.status()["sandbox"]
        server.delete_sandbox(doomed)
        server.reset_counts()
        with connect(server, sandbox=doomed) as cm:
            result = cm.run("1")
    assert result.status == "crashed"
    assert "was deleted" in result.error.message and doomed in result.error.message
    assert server.counts.get("sandbox.start", 0) == 0
    assert server.counts.get("sandbox.create", 0) == 0  # not someone else's to replace


# --- a creation that happened twice --------------------------------------------------------------


def test_a_creation_retried_after_a_gateway_timeout_leaves_one_sandbox(
    server: DaytonaLoopbackServer,
) -> None:
    server.inject("sandbox.create", status=504, served=True)  # created, then answered 504
    with connect(server) as cm:
        result = cm.run("1 + 1")
        ours = cm.status()["sandbox"]
        label = cm.backend.labels[LABEL_SESSION]
        assert server.counts["sandbox.create"] == 2
        wait_for(
            lambda: labelled(server, label) == {ours: "started"},
            f"only {ours} is left (found {labelled(server, label)})",
        )
        assert cm.run("2 + 2").value == 4
    assert result.ok and result.value == 2, result.error
    assert labelled(server, label) == {}


def test_creations_that_all_timed_out_are_deleted_at_close(server: DaytonaLoopbackServer) -> None:
    server.inject("sandbox.create", status=504, served=True, times=100)
    cm = connect(server)
    label = cm.backend.labels[LABEL_SESSION]
    result = cm.run("1")
    made = len(labelled(server, label))
    cm.close()
    assert result.status == "crashed"
    assert made == FAST.attempts + 1  # every attempt made one: Daytona did, the gateway lied
    assert labelled(server, label) == {}
