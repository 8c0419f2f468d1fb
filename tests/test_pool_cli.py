"""`codemode-jupyter batch`: results appended as they finish, killed halfway, resumed; and the
map cell (`run_map_cell`) in a real kernel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import loaded_kernel

pytestmark = pytest.mark.timeout(90)

TOOLS = '''
import os

def record(x: int) -> int:
    """Note that task x ran (one line per run), and return x squared."""
    with open(os.environ["BATCH_LOG"], "a") as log:
        log.write(f"{x}\\n")
    return x * x
'''


def batch(tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "BATCH_LOG": str(tmp_path / "ran.log"),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "codemode_jupyter.cli",
            "batch",
            str(tmp_path / "tasks.jsonl"),
            "--tools",
            str(tmp_path / "tools.py"),
            "--out",
            str(tmp_path / "results.jsonl"),
            "--concurrency",
            "2",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_batch_killed_halfway_then_resumed_keeps_each_result_once(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    # Tasks from the 11th on wait for a gate file the test creates only after the kill, so
    # the first run cannot finish before it is killed, whatever the machine's speed.
    (tmp_path / "tools.py").write_text(
        TOOLS
        + textwrap.dedent(f'''
        import time as _time

        def wait_for_go() -> bool:
            """Block until the test's gate file exists (at most 60 s)."""
            deadline = _time.monotonic() + 60
            while not os.path.exists({str(gate)!r}) and _time.monotonic() < deadline:
                _time.sleep(0.01)
            return True
    ''')
    )
    tasks = [{"id": f"t{i}", "code": "record(x)", "inputs": {"x": i}} for i in range(30)]
    for task in tasks[10:]:
        task["code"] = "wait_for_go()\nrecord(x)"
    (tmp_path / "tasks.jsonl").write_text("\n".join(json.dumps(t) for t in tasks) + "\n")

    # Three tool workers: a task blocked in wait_for_go must not hold up another's record().
    first = batch(tmp_path, "--tool-workers", "3")
    results = tmp_path / "results.jsonl"
    deadline = time.monotonic() + 60
    while len(lines(results)) < 10 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # a bounded poll for the file to hold 10 results
    if len(lines(results)) != 10:
        first.kill()
        pytest.fail(f"{len(lines(results))} results: {first.communicate()[1][-2000:]}")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=20)
    done_before = {json.loads(line)["id"] for line in lines(results)}
    assert done_before == {f"t{i}" for i in range(10)}

    gate.touch()
    second = batch(tmp_path)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err[-2000:]
    assert "10 already in" in err and "20 to run" in err
    records = [json.loads(line) for line in lines(results)]
    assert sorted(r["id"] for r in records) == sorted(t["id"] for t in tasks)
    assert {r["id"]: r["value"] for r in records} == {f"t{i}": i * i for i in range(30)}
    ran = (tmp_path / "ran.log").read_text().split()
    # record() comes after the gate, so no task in flight at the kill had called it: here
    # each task's record() ran once (a tool called before a kill runs again on resume).
    assert sorted(map(int, ran)) == list(range(30))

    third = batch(tmp_path)
    _, err = third.communicate(timeout=60)
    assert third.returncode == 0 and "0 to run" in err
    assert len(lines(results)) == 30


def test_batch_refuses_bad_task_files_before_running_anything(tmp_path: Path) -> None:
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "tasks.jsonl").write_text('{"code": "1", "id": "a"}\n{"code": "2", "id": "a"}\n')
    run = batch(tmp_path)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2 and "'a' appears twice" in err
    (tmp_path / "tasks.jsonl").write_text('{"code": "1"}\nnot json\n')
    run = batch(tmp_path)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2 and "tasks.jsonl:2: not JSON" in err
    assert not (tmp_path / "results.jsonl").exists() or lines(tmp_path / "results.jsonl") == []


def test_a_cut_short_results_line_is_dropped_and_its_task_runs_again(tmp_path: Path) -> None:
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "tasks.jsonl").write_text(
        "\n".join(json.dumps({"code": "record(x)", "inputs": {"x": i}}) for i in range(3)) + "\n"
    )
    done = {"id": "line 1", "status": "ok", "value": 0}
    (tmp_path / "results.jsonl").write_text(json.dumps(done) + '\n{"id": "line 2", "sta')
    run = batch(tmp_path)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    records = [json.loads(line) for line in lines(tmp_path / "results.jsonl")]
    assert sorted(r["id"] for r in records) == ["line 1", "line 2", "line 3"]
    assert sorted(map(int, (tmp_path / "ran.log").read_text().split())) == [1, 2]
    assert (tmp_path / "results.jsonl.dropped").read_text() == '{"id": "line 2", "sta\n'
    assert "line 2 is not a result record" in err


MAP_SETUP = """
import asyncio
from types import SimpleNamespace
from codemode_jupyter import Pool
from codemode_jupyter.jupyter.views.map_cell import run_map_cell

def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.\"\"\"
    return a + b

async def hold(n: int) -> int:
    \"\"\"Return n; wait a long time for n >= 3.\"\"\"
    if n >= 3:
        await asyncio.sleep(60)
    return n

def args(**kw):
    base = dict(map="items", concurrency=2, as_var="n", out="RESULTS", timeout=None,
                fresh=False, quiet=False)
    return SimpleNamespace(**{**base, **kw})

items = [1, 2, 3, 4, 5]
"""


def test_map_cell_in_a_real_kernel_with_progress_and_stop() -> None:
    with loaded_kernel() as kernel:
        assert kernel.execute(MAP_SETUP).ok
        run = kernel.execute(
            "run_map_cell(get_ipython(), lambda size: Pool(tools=[add], size=size), args(), "
            "'add(n, 10)')"
        )
        assert run.ok, run.messages
        assert "codemode map: 5 tasks: 5 ok" in run.displays()
        assert "codemode map progress" in run.displays()  # the display's constant text/plain
        # a DataFrame where pandas is installed, else a list of dicts
        table = kernel.execute(
            "rows = RESULTS.to_dict('records') if hasattr(RESULTS, 'to_dict') else RESULTS\n"
            "[(r['input'], r['status'], r['value']) for r in rows]"
        )
        assert table.result == (
            "[(1, 'ok', 11), (2, 'ok', 12), (3, 'ok', 13), (4, 'ok', 14), (5, 'ok', 15)]"
        )
        bad = kernel.execute(
            "run_map_cell(get_ipython(), lambda size: Pool(size=size), args(map='nothing'), '1')"
        )
        # IPython shows a UsageError as one line on stderr.
        assert "UsageError: %%codemode --map: no variable 'nothing'" in bad.stream("stderr")

        interrupted = []

        def stop_when_two_done(msg: dict) -> None:  # the stop button, pressed once
            if interrupted or msg["msg_type"] != "update_display_data":
                return
            if "2/5 done" in json.dumps(msg["content"]):
                interrupted.append(1)
                kernel.km.interrupt_kernel()

        stopped = kernel.execute(
            "run_map_cell(get_ipython(), lambda size: Pool(tools=[hold], size=size), "
            "args(out=None), 'hold(n)')",
            on_message=stop_when_two_done,
        )
        assert stopped.error is not None, stopped.messages
        assert stopped.error["ename"] == "KeyboardInterrupt"
        summary = "\n".join(stopped.displays())
        assert "stopped: the finished tasks were kept in codemode_map_results" in summary
        kept = kernel.execute(
            "rows = codemode_map_results\n"
            "rows = rows.to_dict('records') if hasattr(rows, 'to_dict') else rows\n"
            "[(r['input'], r['status']) for r in rows]"
        )
        statuses = dict(eval(kept.result))
        assert statuses[1] == statuses[2] == "ok"
        assert {statuses[3], statuses[4], statuses[5]} <= {"interrupted", "cancelled"}
