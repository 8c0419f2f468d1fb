"""Pools of real local jails: order, concurrency, isolation between tasks, faults and retries."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
from test_kernel_lifecycle import descendants, wait_gone

from codemode_jupyter import Pool
from codemode_jupyter.pool.breaker import CircuitBreaker
from codemode_jupyter.pool.scheduler import CreationPacer

pytestmark = pytest.mark.timeout(60)


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


PROGRAM = (
    "assert 'leaked' not in globals(), 'state leaked from an earlier task'\n"
    "leaked = x\n"
    "total = 0\n"
    "for i in range(3):\n"
    "    total = add(total, x)\n"
    "(x, total)"
)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_fifty_tasks_keep_their_order_and_leak_no_state(size: int) -> None:
    with Pool(tools=[add], size=size) as pool:
        results = pool.map(PROGRAM, inputs=[{"x": i} for i in range(50)])
        summary = pool.summary()
    assert [r.status for r in results] == ["ok"] * 50, [str(r.error) for r in results]
    assert [r.value for r in results] == [[i, 3 * i] for i in range(50)]
    assert [r.index for r in results] == list(range(50))
    sandboxes = {r.sandbox for r in results}
    assert 1 <= len(sandboxes) <= size
    assert summary["status"] == {"ok": 50}
    assert summary["tools"]["add"]["calls"] == 150
    assert {"p50_ms", "p90_ms", "p99_ms", "max_ms"} <= set(summary["tools"]["add"])
    assert summary["sandboxes_started"] == len(sandboxes)


def test_async_tools_of_all_sandboxes_overlap_on_one_loop() -> None:
    # Each call waits until all four are in flight at once: only concurrent runs pass.
    arrived: list[int] = []
    everyone = asyncio.Event()

    async def meet(n: int) -> bool:
        """Wait for n callers."""
        arrived.append(n)
        if len(arrived) == n:
            everyone.set()
        try:
            await asyncio.wait_for(everyone.wait(), 20)
        except asyncio.TimeoutError:
            return False
        return True

    with Pool(tools=[meet], size=4) as pool:
        results = pool.map(["meet(4)"] * 4)
    assert [r.value for r in results] == [True] * 4
    assert len({r.sandbox for r in results}) == 4


def test_sync_tools_run_one_at_a_time_by_default_and_overlap_when_asked() -> None:
    lock = threading.Lock()
    inside = [0, 0]  # now, most at once

    def probe() -> int:
        """Count the callers inside."""
        with lock:
            inside[0] += 1
            inside[1] = max(inside)
        with lock:
            inside[0] -= 1
        return threading.get_ident()

    with Pool(tools=[probe], size=4) as pool:
        results = pool.map(["[probe() for _ in range(20)]"] * 8)
    assert inside[1] == 1
    assert len({ident for r in results for ident in r.value}) == 1  # always the same thread

    barrier = threading.Barrier(2, timeout=20)

    def pair() -> bool:
        """Wait for a second caller."""
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return False
        return True

    with Pool(tools=[pair], size=2, tool_workers=2) as pool:
        assert [r.value for r in pool.map(["pair()"] * 2)] == [True, True]


def test_a_runtime_killed_mid_task_is_restarted_and_the_task_runs_again() -> None:
    killed: set[int] = set()

    def first_time(x: int) -> bool:
        """True the first time x is seen."""
        fresh = x not in killed
        killed.add(x)
        return fresh

    code = (
        "import os, signal\n"
        "if x == 3 and first_time(x):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "add(x, 100)"
    )
    with Pool(tools=[add, first_time], size=2) as pool:
        results = pool.map(code, inputs=[{"x": i} for i in range(8)])
        summary = pool.summary()
    assert [r.value for r in results] == [i + 100 for i in range(8)]
    hit = results[3]
    assert [a.status for a in hit.attempts] == ["crashed", "ok"] and hit.retried
    assert "killed by signal 9" in hit.attempts[0].error
    # Only the runtime died: a fresh one in the same sandbox does, no new sandbox is made.
    assert hit.attempts[0].sandbox == hit.attempts[1].sandbox
    assert all(len(r.attempts) == 1 for i, r in enumerate(results) if i != 3)
    assert summary["retried"] == 1 and summary["sandboxes_replaced"] == 0
    assert summary["runtimes_restarted"] == 1


def test_a_task_that_always_kills_its_runtime_stops_after_max_attempts() -> None:
    with Pool(size=1, max_attempts=2) as pool:
        [result] = pool.map("import os\nos._exit(7)")
        after = pool.map("'fine'")[0]
    assert result.status == "crashed" and len(result.attempts) == 2
    # The final error says the pool gave up, after how many attempts, and the last cause.
    message = str(result.error)
    assert "the pool gave up after 2 attempts" in message, message
    assert "exited with code 7" in message and "next run" not in message
    assert after.ok and after.value == "fine"


def test_errors_timeouts_and_raising_tools_are_results_not_retried() -> None:
    def fails(x: int) -> int:
        """Raise for odd x."""
        if x % 2:
            raise RuntimeError(f"odd {x}")
        return x

    with Pool(tools=[fails], size=2) as pool:
        results = pool.map("fails(x)", inputs=[{"x": i} for i in range(4)])
        [timed_out] = pool.map("while True:\n    pass", timeout=1)
        retried = pool.map("raise ValueError('again')", retry_on=["error"], max_attempts=3)[0]
    assert [r.status for r in results] == ["ok", "error", "ok", "error"]
    assert "odd 1" in str(results[1].error)
    assert all(len(r.attempts) == 1 for r in results)
    assert timed_out.status == "timeout" and len(timed_out.attempts) == 1
    assert retried.status == "error" and len(retried.attempts) == 3


NASTY = [
    "')\nimport os; os._exit(1) #",
    '"""; raise SystemExit',
    "\\x00\\\\ \u2028 \ud7ff é 😀",
    {"nested": [1, 2.5, None, True, {"k": "v\n"}]},
]


def test_inputs_are_bound_as_data_whatever_they_hold() -> None:
    with Pool(size=1) as pool:
        results = pool.map("(value, other)", inputs=[{"value": v, "other": 1} for v in NASTY])
        [one] = pool.map("item", inputs=[{"item": "only"}])
        [bad_line] = pool.map("a = 1\nb = undefined_name", inputs=[{"z": 0}])
        [syntax] = pool.map("a = 1\n  b = 2", inputs=[{"z": 0}])
    assert [r.value for r in results] == [[v, 1] for v in NASTY]
    assert one.value == "only"
    # Tracebacks name the program's own lines, not those of the line binding the inputs.
    assert 'File "<cell>", line 2' in bad_line.error.traceback
    assert "(line 2)" in syntax.error.message


def test_inputs_leave_the_program_text_as_written() -> None:
    # A `from __future__` import must be the first statement: nothing may go before it.
    code = (
        "from __future__ import annotations\n"
        "def f(a: NotDefinedAnywhere) -> int:\n"
        "    return a + x\n"
        "f(1)"
    )
    with Pool(size=1) as pool:
        results = pool.map(code, inputs=[{"x": 1}, {"x": 2}])
    assert [r.value for r in results] == [2, 3], [str(r.error) for r in results]


WARM_DIRTY = """
import builtins, json, os, signal, sys, warnings, colorsys
start = [open("/proc/self/stat").read().split()[21], os.getcwd()]  # process start time
os.environ["LEAK"] = "1"
del os.environ["HOME"]
os.makedirs("d", exist_ok=True)
os.chdir("d")
builtins.leak = 1
builtins.divmod = None
json.dumps = None
colorsys.leak = 1
signal.signal(signal.SIGUSR1, lambda *a: None)
sys.path.append("/nowhere")
warnings.simplefilter("ignore")
sys.setrecursionlimit(123)
start
"""

WARM_CHECK = """
import builtins, json, os, signal, sys, warnings
fresh_colorsys = "colorsys" not in sys.modules
import colorsys
{
    "pid": open("/proc/self/stat").read().split()[21],
    "env": ("LEAK" in os.environ, "HOME" in os.environ),
    "cwd": os.getcwd(),
    "builtins": (hasattr(builtins, "leak"), builtins.divmod is not None),
    "json": json.dumps([1]),
    "imported": (fresh_colorsys, hasattr(colorsys, "leak")),
    "signal": signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,
    "path": "/nowhere" in sys.path,
    "warnings": len(warnings.filters) > 0 and warnings.filters[0][0] == "ignore",
    "recursion": sys.getrecursionlimit() != 123,
}
"""

LEAVE_A_THREAD = """
import threading
stop = threading.Event()
threading.Thread(target=stop.wait, args=(60,), daemon=True).start()
threading.active_count()
"""
THREADS = "import threading\nthreading.active_count()"


def test_a_warm_task_starts_as_a_fresh_program_would() -> None:
    with Pool(size=1) as pool:
        runs = pool.map([THREADS, WARM_DIRTY, WARM_CHECK, LEAVE_A_THREAD, THREADS])
    base, dirty, check, threads, after = runs
    assert dirty.ok and check.ok, (str(dirty.error), str(check.error))
    seen, (pid, cwd) = check.value, dirty.value
    assert seen.pop("pid") == pid  # the same warm runtime (process), not a new one
    assert seen == {
        "env": [False, True],
        "cwd": cwd,
        "builtins": [False, True],
        "json": "[1]",
        "imported": [True, False],
        "signal": True,
        "path": False,
        "warnings": False,
        "recursion": True,
    }
    # A thread the task left running cannot be undone: the next task gets a new runtime,
    # in the same sandbox, without that thread.
    assert threads.value == base.value + 1
    assert after.value == base.value
    assert {r.sandbox for r in runs} == {"sandbox-1"}


def test_a_map_stopped_by_ctrl_c_carries_the_finished_results() -> None:
    import os
    import signal

    def interrupt() -> None:
        """Ctrl-C, as a person at the terminal would press it."""
        os.kill(os.getpid(), signal.SIGINT)

    programs = ["1", "2", "interrupt()\nimport time\ntime.sleep(30)", "4", "5"]
    with Pool(tools=[interrupt], size=1) as pool:
        with pytest.raises(KeyboardInterrupt) as stopped:
            pool.map(programs)
        results = stopped.value.results
        assert pool.map("6")[0].value == 6  # the pool stays usable
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.value for r in results[:2]] == [1, 2] and all(r.ok for r in results[:2])
    assert results[2].status in ("interrupted", "cancelled")
    assert [r.status for r in results[3:]] == ["cancelled", "cancelled"]
    assert all(r.result is None for r in results[3:])


def test_bad_tasks_are_refused_before_anything_runs() -> None:
    with Pool(tools=[add], size=1) as pool:
        with pytest.raises(ValueError, match="not a valid Python variable name"):
            pool.map("1", inputs=[{"ok": 1}, {"not ok": 2}])
        with pytest.raises(ValueError, match="a tool's name"):
            pool.map("1", inputs=[{"add": 1}])
        with pytest.raises(ValueError, match="JSON data"):
            pool.map("1", inputs=[{"x": object()}])
        with pytest.raises(ValueError, match="2 programs but 1 inputs"):
            pool.map(["1", "2"], inputs=[{"x": 1}])
        with pytest.raises(ValueError, match="retry_on"):
            pool.map("1", retry_on=["nope"])
        assert pool.summary()["tasks"] == 0
    with pytest.raises(ValueError, match="size"):
        Pool(size=0)


def test_fresh_runtime_per_task() -> None:
    with Pool(size=1, fresh=True) as pool:
        results = pool.map("import os\nos.getpid()", inputs=[{"i": i} for i in range(3)])
    assert all(r.ok for r in results)


def test_cancel_keeps_finished_results_and_close_leaves_no_process() -> None:
    import os

    gate, both_in = threading.Event(), threading.Event()
    arrived = []

    def wait_gate() -> bool:
        """Block until the test opens the gate."""
        arrived.append(1)
        if len(arrived) == 2:
            both_in.set()
        return gate.wait(20)

    pool = Pool(tools=[wait_gate], size=2, tool_workers=2)
    first = pool.map("1")[0]
    blocked = [pool.submit("wait_gate()") for _ in range(2)]
    queued = [pool.submit("2") for _ in range(3)]
    assert both_in.wait(20)  # both sandboxes are busy in the tool
    jails = descendants(os.getpid())
    assert jails  # the sandboxes' processes
    pool.cancel()
    gate.set()
    assert first.ok
    assert [f.result(timeout=20).status for f in blocked] == ["interrupted", "interrupted"]
    assert all(f.cancelled() for f in queued)
    assert pool.map("3")[0].value == 3  # the pool stays usable
    pool.close()
    assert wait_gone(jails) == set()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit("1")


def test_a_forgotten_pool_is_closed_when_collected() -> None:
    import os

    pool = Pool(size=2)
    assert all(r.ok for r in pool.map(["1", "2"]))
    jails = descendants(os.getpid())
    assert jails
    del pool
    gc.collect()
    assert wait_gone(jails) == set()


def test_creation_pacer_spaces_creations_and_backs_off_after_failures() -> None:
    now = [100.0]
    pacer = CreationPacer(0.5, 1.0, threading.Event(), clock=lambda: now[0])
    assert [pacer.reserve() for _ in range(3)] == [0.0, 0.5, 1.0]
    now[0] = 110.0
    assert pacer.reserve() == 0.0
    pacer.failed()
    pacer.failed()  # two failures in a row: hold back 2 s
    assert pacer.reserve() == 2.0
    pacer.succeeded()
    pacer.failed()
    assert pacer.reserve() == pytest.approx(2.5)  # the next slot, or 1 s after now if later


def test_circuit_breaker_opens_after_failed_starts_and_probes_after_its_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker(3, 30.0, clock=lambda: now[0])
    a, b = object(), object()

    def admit(caller: object) -> str | None:
        return breaker.admit(caller, lambda: False)

    for _ in range(2):
        assert admit(a) is None
        breaker.failed(a, "HTTP 503")
    assert breaker.state == "closed"
    breaker.failed(b, "HTTP 503")  # the third in a row
    assert breaker.state == "open" and breaker.opened == 1
    outage = admit(a)
    assert outage is not None and "3 starts in a row failed" in outage and "HTTP 503" in outage
    now[0] = 31.0
    assert admit(a) is None  # half-open: a is the probe
    assert breaker.state == "half-open"
    breaker.failed(a, "HTTP 503 again")  # the probe failed: open for another cooldown
    assert "HTTP 503 again" in (admit(b) or "")
    now[0] = 62.0
    assert admit(b) is None
    breaker.release(b)  # b was cancelled before it started anything: another may probe
    assert admit(a) is None
    breaker.succeeded()
    assert breaker.state == "closed" and admit(b) is None
