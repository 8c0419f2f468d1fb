"""Daytona pools through the real `daytona` SDK against the loopback server, with faults."""

from __future__ import annotations

import os
import re
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from codemode_jupyter import Pool
from codemode_jupyter.backends.daytona.errors import DaytonaAuthError
from codemode_jupyter.backends.daytona.retries import RetryPolicy
from codemode_jupyter.jupyter.headless import KernelSession
from codemode_jupyter.pool.scheduler import POOL_LABEL
from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

pytestmark = pytest.mark.timeout(90)

KEY = "loopback-pool-key"
# Short waits, but Retry-After up to 1 s is honoured as the server asks.
RETRY = RetryPolicy(attempts=3, backoff=0.01, max_backoff=1.0, request_timeout=5.0)


@pytest.fixture(scope="module")
def server() -> Iterator[DaytonaLoopbackServer]:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    with DaytonaLoopbackServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: DaytonaLoopbackServer) -> Iterator[None]:
    server.clear_faults()
    server.reset_counts()
    yield
    server.clear_faults()


def pool(server: DaytonaLoopbackServer, tools: list, **options: object) -> Pool:
    options.setdefault("retry", RETRY)
    options.setdefault("start_backoff", 0.05)
    return Pool(tools=tools, backend="daytona", api_url=server.api_url, api_key=KEY, **options)


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def live(server: DaytonaLoopbackServer) -> dict[str, dict]:
    return {sid: sb.dto for sid, sb in list(server.sandboxes.items())}


def test_pool_runs_tasks_on_labelled_sandboxes_and_deletes_them(server) -> None:
    code = "assert 'seen' not in globals()\nseen = 1\nadd(x, 1)"
    with pool(server, [add], size=3) as p:
        results = p.map(code, inputs=[{"x": i} for i in range(12)])
        sandboxes = live(server)
        server.reset_counts()
        warm = p.map("add(x, 1)", inputs=[{"x": 0}] * 3)
        counts = server.counts
    assert [r.value for r in results] == list(range(1, 13))
    assert {r.attempts[0].sandbox_id for r in results} <= set(sandboxes)
    assert len(sandboxes) == 3
    assert {dto["labels"][POOL_LABEL] for dto in sandboxes.values()} == {p.id}
    # A warm task: a reset, the program, one tool round; no new sandbox, no new upload.
    assert all(r.ok for r in warm)
    assert counts.get("command.input") == 3 * 3
    assert not {"sandbox.create", "files.upload", "session.exec"} & set(counts)
    assert live(server) == {}


def test_a_sandbox_deleted_mid_task_is_replaced_and_the_task_runs_again(server) -> None:
    doomed = threading.Event()

    def doom() -> bool:
        """Delete every sandbox, once."""
        if doomed.is_set():
            return False
        doomed.set()
        for sid in list(live(server)):
            server.delete_sandbox(sid)
        return True

    code = "if x == 2:\n    doom()\nadd(x, 10)"
    with pool(server, [add, doom], size=1) as p:
        results = p.map(code, inputs=[{"x": i} for i in range(5)])
        summary = p.summary()
    assert [r.value for r in results] == [10, 11, 12, 13, 14]
    hit = results[2]
    assert [a.status for a in hit.attempts] == ["crashed", "ok"]
    assert hit.attempts[0].sandbox_id != hit.attempts[1].sandbox_id
    assert summary["sandboxes_replaced"] == 1 and summary["retried"] == 1
    assert live(server) == {}


def test_a_burst_of_429s_is_waited_out_as_retry_after_asks(server) -> None:
    # More 429s than one creation's retries: some starts fail and the pool tries again.
    server.rate_limit("sandbox.create", times=5, retry_after=0.2)
    with pool(server, [add], size=3) as p:
        results = p.map("add(x, 1)", inputs=[{"x": i} for i in range(6)])
    assert [r.value for r in results] == list(range(1, 7))
    assert server.rate_limited == 5
    assert live(server) == {}


def test_server_errors_on_creation_are_retried_without_losing_a_task(server) -> None:
    server.inject("sandbox.create", status=503, times=4)
    with pool(server, [add], size=2) as p:
        results = p.map("add(x, 1)", inputs=[{"x": i} for i in range(4)])
        summary = p.summary()
    assert [r.value for r in results] == [1, 2, 3, 4]
    assert summary["status"] == {"ok": 4}
    assert live(server) == {}


def test_an_auth_failure_stops_the_whole_pool_at_once(server) -> None:
    p = Pool(
        tools=[add], backend="daytona", api_url=server.api_url, api_key="wrong", retry=RETRY, size=3
    )
    with p, pytest.raises(DaytonaAuthError, match="DAYTONA_API_KEY"):
        p.map("add(x, 1)", inputs=[{"x": i} for i in range(20)])
    assert p.summary()["tasks"] < 20  # stopped, not ground through task by task
    with pytest.raises(DaytonaAuthError):
        p.submit("1")
    assert live(server) == {}


def test_kernel_shutdown_deletes_the_sandboxes_of_a_pool_left_open(server) -> None:
    env = {**os.environ, "DAYTONA_API_URL": server.api_url, "DAYTONA_API_KEY": KEY}
    kernel = KernelSession(env=env)
    try:
        run = kernel.execute(
            textwrap.dedent("""
            from codemode_jupyter import Pool
            from codemode_jupyter.backends.daytona.retries import RetryPolicy
            pool = Pool(backend="daytona", size=2, retry=RetryPolicy(attempts=2))
            [r.value for r in pool.map("x * 2", inputs=[{"x": 1}, {"x": 2}])]
        """)
        )
        assert run.result == "[2, 4]", run.messages
        assert len(live(server)) == 2
    finally:
        kernel.shutdown()
    assert live(server) == {}


def test_a_runtime_that_died_is_restarted_in_the_same_sandbox(server) -> None:
    seen: set[int] = set()

    def first_time(x: int) -> bool:
        """True the first time x is seen."""
        fresh = x not in seen
        seen.add(x)
        return fresh

    code = "import os\nif x == 1 and first_time(x):\n    os._exit(3)\nadd(x, 10)"
    with pool(server, [add, first_time], size=1) as p:
        results = p.map(code, inputs=[{"x": i} for i in range(3)])
        summary = p.summary()
    assert [r.value for r in results] == [10, 11, 12]
    hit = results[1]
    assert [a.status for a in hit.attempts] == ["crashed", "ok"]
    assert "exited with code 3" in hit.attempts[0].error
    # The sandbox was fine: a new runtime in it, no new sandbox.
    assert hit.attempts[0].sandbox_id == hit.attempts[1].sandbox_id
    assert server.counts.get("sandbox.create") == 1
    assert summary["runtimes_restarted"] == 1 and summary["sandboxes_replaced"] == 0
    assert live(server) == {}


def test_the_circuit_breaker_fails_tasks_fast_while_daytona_is_down_and_recovers(
    server,
) -> None:
    server.inject("sandbox.create", status=503, times=10_000)
    no_retry = RetryPolicy(attempts=0, backoff=0.01, max_backoff=0.01, request_timeout=5.0)
    p = pool(server, [add], size=4, retry=no_retry, breaker_failures=3, breaker_cooldown=3600.0)
    with p:
        down = p.map("add(x, 1)", inputs=[{"x": i} for i in range(12)])
        creations = server.counts.get("sandbox.create", 0)
        assert p.status()["breaker"] == "open"
        server.clear_faults()
        # The cooldown has passed (the breaker's clock, moved on): the next task probes.
        later = time.monotonic() + 7200
        p._state.breaker._clock = lambda: later
        up = p.map("add(x, 1)", inputs=[{"x": i} for i in range(4)])
        assert p.status()["breaker"] == "closed"
        summary = p.summary()
    assert [r.status for r in down] == ["crashed"] * 12
    fast = [r for r in down if r.error.type == "ServiceUnavailable"]
    # Each start was one task's attempt; every other task ended without trying one.
    assert sum(len(r.attempts) for r in down) == creations
    assert sum(not r.attempts for r in fast) >= 12 - creations
    message = str(fast[0].error)
    assert re.search(r"\d+ starts in a row failed", message), message
    assert "Daytona" in message and "503" in message and "circuit breaker" in message
    # Starts stop once it is open: not one per attempt of every task.
    assert creations <= 3 + 4, creations
    assert [r.value for r in up] == [1, 2, 3, 4]
    assert summary["failed_fast"] == len(fast)
    assert live(server) == {}


def test_a_key_revoked_mid_map_stops_it_with_the_finished_results(server) -> None:
    def revoke() -> bool:
        """Revoke the pool's API key, as the dashboard would."""
        server.api_key = "revoked"
        return True

    try:
        with pool(server, [revoke], size=1) as p:
            with pytest.raises(DaytonaAuthError) as stopped:
                p.map(["1", "2", "revoke()\n3", "4", "5"])
            server.api_key = KEY  # so that closing can delete the sandbox
    finally:
        server.api_key = KEY
    results = stopped.value.results
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.value for r in results[:2]] == [1, 2] and all(r.ok for r in results[:2])
    assert all(r.result is None and r.status == "cancelled" for r in results[3:])
    assert live(server) == {}


def test_while_the_breaker_is_open_warm_sandboxes_take_the_tasks(server) -> None:
    # Daytona refuses new sandboxes (a quota reached, an outage) while one is already warm:
    # the tasks wait for it instead of failing.
    no_retry = RetryPolicy(attempts=0, backoff=0.01, max_backoff=0.01, request_timeout=5.0)
    pools: list[Pool] = []

    def hold() -> bool:
        """Wait until the pool's circuit breaker has opened (the other worker's start failed)."""
        breaker = pools[0]._state.breaker
        with breaker._cond:
            return breaker._cond.wait_for(lambda: breaker.state != "closed", 20)

    with pool(server, [add, hold], size=2, retry=no_retry, breaker_failures=1) as p:
        pools.append(p)
        assert p.map("add(1, 1)")[0].value == 2  # one warm sandbox
        server.inject("sandbox.create", status=503, times=10_000)
        # The warm sandbox holds in the first task until the second worker's start failed.
        results = p.map(
            ["hold()\nadd(0, 1)"] + ["add(x, 1)"] * 5,
            inputs=[{}] + [{"x": i} for i in range(1, 6)],
        )
        summary = p.summary()
    assert [r.value for r in results] == [1, 2, 3, 4, 5, 6], [str(r.error) for r in results]
    assert summary["failed_fast"] == 0
    tried = [r for r in results if len(r.attempts) == 2]
    assert len(tried) == 1 and tried[0].attempts[0].status == "crashed"  # its start failed
    assert {r.attempts[-1].sandbox for r in results} == {"sandbox-1"}
    assert live(server) == {}
