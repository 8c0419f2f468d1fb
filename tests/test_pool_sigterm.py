"""SIGTERM to a script using a Pool: its sandboxes, jail directories and processes go with it.

Each test runs a real script in a child process: a Pool whose tasks are all inside a program
when the script gets SIGTERM (what `kill`, systemd or a container runtime sends first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_kernel_lifecycle import descendants, wait_gone

from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

pytestmark = pytest.mark.timeout(90)

KEY = "loopback-sigterm-key"

SCRIPT = """
import json, sys
from codemode_jupyter import Pool

def running(n: int) -> bool:
    '''Say that task n is inside its program.'''
    print(f"running {n}", flush=True)
    return True

options = json.loads(sys.argv[1])
if "retry" in options:
    from codemode_jupyter.backends.daytona.retries import RetryPolicy
    options["retry"] = RetryPolicy(**options["retry"])
pool = Pool(tools=[running], size=2, tool_workers=2, **options)
pool.map("running(x)\\nimport time\\ntime.sleep(60)", inputs=[{"x": i} for i in range(4)])
"""


def run_until_busy(options: dict, tmp: Path) -> subprocess.Popen:
    """Start the script; return once both sandboxes are inside a task."""
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = [child.stdout.readline() for _ in range(2)]
    assert all(line.startswith("running") for line in lines), (lines, child.stderr.read())
    return child


def terminate(child: subprocess.Popen) -> str:
    child.send_signal(signal.SIGTERM)
    try:
        _, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        raise
    assert child.returncode == 128 + signal.SIGTERM, err
    return err


def jail_dirs(tmp: Path) -> list[Path]:
    return list(tmp.glob("codemode-jail-*"))


def test_sigterm_closes_the_local_jails_of_a_pool(tmp_path: Path) -> None:
    child = run_until_busy({"backend": "local"}, tmp_path)
    jails = descendants(child.pid)
    assert jails and jail_dirs(tmp_path)
    terminate(child)
    assert wait_gone(jails) == set()
    assert jail_dirs(tmp_path) == []


@pytest.fixture(scope="module")
def server() -> Iterator[DaytonaLoopbackServer]:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    with DaytonaLoopbackServer(api_key=KEY) as srv:
        yield srv


def test_sigterm_deletes_the_daytona_sandboxes_of_a_pool(
    server: DaytonaLoopbackServer, tmp_path: Path
) -> None:
    options = {
        "backend": "daytona",
        "api_url": server.api_url,
        "api_key": KEY,
        "retry": {"attempts": 2, "backoff": 0.01, "request_timeout": 5.0},
    }
    child = run_until_busy(options, tmp_path)
    assert len(server.sandboxes) == 2
    terminate(child)
    assert dict(server.sandboxes) == {}
