"""`codemode-jupyter batch` and its results file: what `--out` may name, `--retry-failed`,
one line per task id, damaged lines, and one command at a time (real CLI runs, local jails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

pytestmark = pytest.mark.timeout(90)

KEY = "loopback-batch-key"  # the `server` fixture's key

TOOLS = '''
import os
import time

def record(x: int) -> int:
    """Note that task x ran (one line per run), and return x squared."""
    with open(os.environ["BATCH_LOG"], "a") as log:
        log.write(f"{x}\\n")
    return x * x

def crash_wanted() -> bool:
    """Whether the test wants the program's runtime to die."""
    return os.path.exists(os.environ["BATCH_CRASH"])

def wait_for_go() -> bool:
    """Block until the test's gate file exists (at most 60 s)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["BATCH_GO"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return True
'''

CRASH = "import os, signal\nif crash_wanted():\n    os.kill(os.getpid(), signal.SIGKILL)\n"


def write_tasks(tmp_path: Path, tasks: list[dict]) -> None:
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))


def start(
    tmp_path: Path, *extra: str, out: Path | None = None, env: dict | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        **(env or {}),
        "BATCH_LOG": str(tmp_path / "ran.log"),
        "BATCH_CRASH": str(tmp_path / "crash"),
        "BATCH_GO": str(tmp_path / "go"),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    out = tmp_path / "results.jsonl" if out is None else out
    command = [
        sys.executable,
        "-m",
        "codemode_jupyter.cli",
        "batch",
        str(tmp_path / "tasks.jsonl"),
    ]
    command += ["--tools", str(tmp_path / "tools.py"), "--out", str(out), "--concurrency", "2"]
    return subprocess.Popen(
        [*command, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def batch(
    tmp_path: Path, *extra: str, out: Path | None = None, env: dict | None = None
) -> tuple[int, str]:
    """Run the command to its end: (exit status, stderr)."""
    proc = start(tmp_path, *extra, out=out, env=env)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a command that hangs fails the test and is not left behind
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def ran(tmp_path: Path) -> list[int]:
    log = tmp_path / "ran.log"
    return sorted(map(int, log.read_text().split())) if log.exists() else []


def rows(path: Path) -> dict[str, dict]:
    """The results as pandas reads them: one row per task id, or the test fails."""
    frame = pd.read_json(path, lines=True, dtype=False)
    assert frame["id"].is_unique, frame["id"].tolist()
    return {r["id"]: r for r in frame.to_dict("records")}


SQUARES = [{"id": f"t{i}", "code": "record(x)", "inputs": {"x": i}} for i in range(3)]


# --- what --out may name -------------------------------------------------------------------


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_out_naming_the_tasks_file_is_refused_and_the_tasks_are_untouched(
    tmp_path: Path, link: str
) -> None:
    write_tasks(tmp_path, SQUARES)
    tasks = tmp_path / "tasks.jsonl"
    before = tasks.read_bytes()
    out = tasks
    if link == "symlink":
        out = tmp_path / "results.jsonl"
        out.symlink_to(tasks)
    elif link == "hardlink":
        out = tmp_path / "results.jsonl"
        os.link(tasks, out)
    code, err = batch(tmp_path, out=out)
    assert code == 2, err
    assert "(the same file): give another results file" in err
    assert tasks.read_bytes() == before
    assert ran(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"tasks.jsonl", "tools.py", out.name}
    )  # no lock file, temporary file or dropped lines left


def test_out_linking_to_a_notes_file_is_refused_and_the_notes_keep_every_line(
    tmp_path: Path,
) -> None:
    write_tasks(tmp_path, SQUARES)
    notes = tmp_path / "notes.txt"
    notes.write_text("remember the milk\nand the last line, with no newline")
    before = notes.read_bytes()
    out = tmp_path / "results.jsonl"
    out.symlink_to(notes)
    for given in (out, notes):
        code, err = batch(tmp_path, out=given)
        assert code == 2, err
        assert "is not a results file of codemode-jupyter batch" in err
        assert notes.read_bytes() == before
    assert ran(tmp_path) == []
    assert not (tmp_path / "notes.txt.lock").exists()


def test_results_with_another_hard_link_are_refused(tmp_path: Path) -> None:
    # A second name would escape the lock (two commands, each on its own name) and keep the
    # old lines when the file is rewritten.
    write_tasks(tmp_path, SQUARES)
    results = tmp_path / "results.jsonl"
    code, err = batch(tmp_path)
    assert code == 0, err
    os.link(results, tmp_path / "copy.jsonl")
    before = results.read_bytes()
    code, err = batch(tmp_path, out=tmp_path / "copy.jsonl")
    assert code == 2 and "has 1 other hard link(s)" in err, err
    assert results.read_bytes() == before and ran(tmp_path) == [0, 1, 2]


def test_out_that_is_a_fifo_or_a_dangling_link_is_refused(tmp_path: Path) -> None:
    write_tasks(tmp_path, SQUARES)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, err = batch(tmp_path, out=fifo)  # opening it to append would block forever
    assert code == 2 and "is not a regular file" in err, err
    dangling = tmp_path / "results.jsonl"
    dangling.symlink_to(tmp_path / "elsewhere" / "results.jsonl")
    code, err = batch(tmp_path, out=dangling)
    assert code == 2 and "a symlink to a file that does not exist" in err, err
    assert ran(tmp_path) == []


def test_a_symlink_to_earlier_results_is_followed_and_stays_a_symlink(tmp_path: Path) -> None:
    write_tasks(tmp_path, SQUARES)
    real = tmp_path / "real.jsonl"
    code, err = batch(tmp_path, out=real)
    assert code == 0, err
    link = tmp_path / "results.jsonl"
    link.symlink_to(real)
    # A damaged line makes the command rewrite the file: the link must still point at it.
    with real.open("a") as f:
        f.write("garbage\n")
    code, err = batch(tmp_path, out=link)
    assert code == 0 and "0 to run" in err, err
    assert link.is_symlink() and set(rows(link)) == {"t0", "t1", "t2"}
    assert (tmp_path / "real.jsonl.dropped").read_text() == "garbage\n"


# --- --retry-failed and one line per task ----------------------------------------------------


def test_retry_failed_reruns_crashed_tasks_and_keeps_one_line_per_task(tmp_path: Path) -> None:
    tasks = [
        {"id": "ok", "code": "record(x)", "inputs": {"x": 0}},
        {"id": "crash", "code": CRASH + "record(x)", "inputs": {"x": 1}},
        {"id": "error", "code": "record(x)\nraise ValueError('no')", "inputs": {"x": 2}},
    ]
    write_tasks(tmp_path, tasks)
    results = tmp_path / "results.jsonl"
    (tmp_path / "crash").touch()
    code, err = batch(tmp_path, "--max-attempts", "1")
    assert code == 0, err
    assert {k: r["status"] for k, r in rows(results).items()} == {
        "ok": "ok",
        "crash": "crashed",
        "error": "error",
    }
    (tmp_path / "crash").unlink()

    code, err = batch(tmp_path)  # without the flag, a recorded crash is a result
    assert code == 0 and "3 already in" in err and "0 to run" in err, err

    code, err = batch(tmp_path, "--retry-failed")
    assert code == 0 and "1 to run (1 again)" in err, err
    got = rows(results)
    assert {k: r["status"] for k, r in got.items()} == {
        "ok": "ok",
        "crash": "ok",
        "error": "error",  # the program's own failure is kept
    }
    assert got["crash"]["value"] == 1
    assert len(results.read_text().splitlines()) == 3
    assert ran(tmp_path) == [0, 1, 2]

    code, err = batch(tmp_path, "--retry-errors")
    assert code == 0 and "1 to run (1 again)" in err, err
    assert set(rows(results)) == {"ok", "crash", "error"}
    assert ran(tmp_path) == [0, 1, 2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ran.log",
        "results.jsonl",
        "tasks.jsonl",
        "tools.py",
    ]


def record_of(task_id: str, status: str, message: str) -> dict:
    """A result record as the command writes it, for a run that ended with `message`."""
    error = {"type": "Timeout", "message": message, "traceback": ""}
    result = {"ok": False, "status": status, "error": error, "value": None}
    return {
        "index": 0,
        "id": task_id,
        "inputs": None,
        "status": status,
        "ok": False,
        "value": None,
        "error": f"Timeout: {message}",
        "attempts": [],
        "duration": 1.0,
        "result": result,
    }


def test_retry_failed_reruns_a_program_that_never_started_even_as_a_timeout(
    tmp_path: Path,
) -> None:
    # A creation that outlasts the run's timeout (an outage) ends `timeout` with "the runtime
    # could not be started": the program never ran, so it counts as failed, not as a timeout.
    write_tasks(
        tmp_path, [{"id": f"t{i}", "code": "record(x)", "inputs": {"x": i}} for i in (1, 2)]
    )
    results = tmp_path / "results.jsonl"
    never = record_of("t1", "timeout", "the runtime could not be started: 503 Service Unavailable")
    slow = record_of("t2", "timeout", "the program ran longer than 60 s")
    results.write_text(json.dumps(never) + "\n" + json.dumps(slow) + "\n")
    code, err = batch(tmp_path, "--retry-failed")
    assert code == 0 and "1 to run (1 again)" in err, err
    assert ran(tmp_path) == [1]
    got = rows(results)
    assert (got["t1"]["status"], got["t2"]["status"]) == ("ok", "timeout")


def test_retry_failed_reruns_the_tasks_daytona_kept_from_starting(
    tmp_path: Path, server: DaytonaLoopbackServer
) -> None:
    write_tasks(tmp_path, SQUARES[:1])
    results = tmp_path / "results.jsonl"
    daytona = {"DAYTONA_API_URL": server.api_url, "DAYTONA_API_KEY": KEY}
    options = ("--backend", "daytona", "--concurrency", "1", "--max-attempts", "1")
    server.clear_faults()
    # Daytona refuses every creation (429s that ask for no wait, so the test is quick; a 503
    # outage ends the same way after the backend's backoff).
    server.rate_limit("sandbox.create", 1000, 0)
    try:
        code, err = batch(tmp_path, *options, env=daytona)
    finally:
        server.clear_faults()
    assert code == 0, err
    got = rows(results)
    assert {r["status"] for r in got.values()} <= {"crashed", "timeout"}, got
    assert all("could not be started" in r["error"] for r in got.values())
    assert ran(tmp_path) == []

    code, err = batch(tmp_path, *options, "--retry-failed", env=daytona)
    assert code == 0 and "1 to run (1 again)" in err, err
    assert {k: (r["status"], r["value"]) for k, r in rows(results).items()} == {"t0": ("ok", 0)}
    assert ran(tmp_path) == [0]
    assert server.sandboxes == {}  # the command deleted its sandboxes


@pytest.mark.parametrize(
    "damage",
    [
        '{"index": 1, "id": "t1", "status": "ok", "val',  # cut short by a kill
        '{"index": 1, "id": "t1", "status": "ok", "val\n',  # cut short, then a newline
        "[1, 2, 3]\n",  # JSON, but not a record
        '{"index": 1, "id": "t1", "status": 42}\n',  # a record with no known status
        "\x00\x00\x00\x00\n",  # zeroed by a crash of the file system
    ],
)
def test_a_damaged_last_line_is_set_aside_with_a_warning_and_its_task_runs_again(
    tmp_path: Path, damage: str
) -> None:
    write_tasks(tmp_path, SQUARES[:2])
    results = tmp_path / "results.jsonl"
    code, err = batch(tmp_path)
    assert code == 0, err
    first = results.read_text().splitlines()
    kept = next(line for line in first if json.loads(line)["id"] == "t0")
    results.write_text(kept + "\n" + damage)
    code, err = batch(tmp_path)
    assert code == 0, err
    assert "line 2 is not a result record" in err and "results.jsonl.dropped" in err
    assert "1 to run" in err
    got = rows(results)
    assert {k: r["value"] for k, r in got.items()} == {"t0": 0, "t1": 1}
    assert ran(tmp_path) == [0, 1, 1]
    dropped = (tmp_path / "results.jsonl.dropped").read_text()
    assert dropped == (damage if damage.endswith("\n") else damage + "\n")


# --- one command at a time -------------------------------------------------------------------


def test_a_second_command_on_the_same_results_is_refused_while_the_first_runs(
    tmp_path: Path,
) -> None:
    tasks = [
        {"id": f"t{i}", "code": "wait_for_go()\nrecord(x)", "inputs": {"x": i}} for i in range(4)
    ]
    write_tasks(tmp_path, tasks)
    first = start(tmp_path)
    try:
        # The first line is written once the first command holds the results file.
        line = first.stderr.readline()
        assert "4 to run" in line, line + first.communicate(timeout=30)[1]
        code, err = batch(tmp_path)
        assert code == 2, err
        assert "is being written by another batch command" in err
        assert f"(pid {first.pid})" in err
        (tmp_path / "go").touch()
        _, rest = first.communicate(timeout=60)
        assert first.returncode == 0, rest
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert ran(tmp_path) == [0, 1, 2, 3]  # each task ran once
    assert set(rows(tmp_path / "results.jsonl")) == {"t0", "t1", "t2", "t3"}
    assert not (tmp_path / "results.jsonl.lock").exists()
    code, err = batch(tmp_path)  # the lock is free again
    assert code == 0 and "0 to run" in err, err


def test_help_says_which_failures_run_again() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "codemode_jupyter.cli", "batch", "--help"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    text = " ".join(shown.split())
    assert "--retry-failed" in text and "program outcomes (error, timeout, limit) are kept" in text
    assert "--retry-errors" in text
