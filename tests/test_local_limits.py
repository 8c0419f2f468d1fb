"""Limits that bound a local jail as a whole, tested with real jails and real programs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from conftest import dead_pid

import codemode_jupyter
from codemode_jupyter import CodeMode
from codemode_jupyter.backends.base import IsolationWarning
from codemode_jupyter.backends.local.backend import LocalBackend
from codemode_jupyter.backends.local.memory import find_cgroup_place

CGROUP_PLACE, WHY_NO_CGROUP = find_cgroup_place()
needs_cgroup = pytest.mark.skipif(CGROUP_PLACE is None, reason=f"no cgroup: {WHY_NO_CGROUP}")


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def my_cgroups() -> set[str]:
    """The jail cgroups this test process has made and not removed."""
    return {p.name for p in CGROUP_PLACE.parent.glob(f"codemode-{os.getpid()}-*")}


def memory_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "codemode-memory"]


# Three children that each touch 100 MiB: together more than a 256 MiB sandbox holds.
FORKED_HOGS = """
import os, time
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        hog = bytearray(100 * 1024 * 1024)
        time.sleep(600)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
'all children ended on their own'
"""


def test_a_hundred_threads_each_calling_a_tool_work_under_the_default() -> None:
    code = (
        "import threading\n"
        "results = []\n"
        "def work(i):\n"
        "    results.append(add(i, 1))\n"
        "threads = [threading.Thread(target=work, args=(i,)) for i in range(100)]\n"
        "for t in threads:\n"
        "    t.start()\n"
        "for t in threads:\n"
        "    t.join()\n"
        "sorted(results)"
    )
    with CodeMode(tools=[add]) as session:
        assert session.status()["memory"].startswith("1024 MiB (")
        r = session.run(code, timeout=60)
    assert r.ok, r.error
    assert r.value == list(range(1, 101))
    assert len(r.tool_calls) == 100


@pytest.mark.parametrize("enforcement", ["auto", "watchdog"])
def test_forked_children_over_the_limit_stop_the_sandbox(enforcement: str) -> None:
    with CodeMode(memory_mb=256, memory_enforcement=enforcement) as session:
        mechanism = re.fullmatch(r"256 MiB \((.+)\)", session.status()["memory"]).group(1)
        if enforcement == "watchdog":
            assert mechanism == "watchdog"
        session.run("kept = 1")
        r = session.run(FORKED_HOGS, timeout=120)
        assert r.status == "crashed" and r.state_lost, (r.status, r.error)
        assert "memory limit of 256 MiB" in r.error.message
        assert f"({mechanism})" in r.error.message
        again = session.run("'fresh runtime'")
        assert again.ok and again.value == "fresh runtime"


def test_the_watchdog_counts_pages_shared_after_fork_once() -> None:
    """Four processes share one 100 MiB heap: over 256 MiB by RSS, about 100 MiB in truth."""

    def watchdog_looked() -> int:
        memory = session._conn.transport.memory
        start, deadline = memory.polls, time.monotonic() + 30
        while memory.polls < start + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return memory.polls - start

    code = (
        "import os\n"
        "heap = bytearray(100 * 1024 * 1024)\n"
        "r, w = os.pipe()\n"
        "children = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.close(w)\n"
        "        os.read(r, 1)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "looked = watchdog_looked()\n"
        "os.close(w)\n"
        "for pid in children:\n"
        "    os.waitpid(pid, 0)\n"
        "looked"
    )
    with CodeMode(tools=[watchdog_looked], memory_mb=256, memory_enforcement="watchdog") as session:
        r = session.run(code, timeout=60)
    assert r.ok, r.error
    assert r.value >= 2


def test_the_replay_protocol_is_bounded_too() -> None:
    with CodeMode(protocol="replay", memory_mb=256) as session:
        r = session.run(FORKED_HOGS, timeout=120)
    assert r.status == "crashed", (r.status, r.error)
    assert "memory limit of 256 MiB" in r.error.message


def test_the_watchdog_thread_lives_only_as_long_as_its_runtime() -> None:
    before = set(memory_threads())
    with CodeMode(memory_enforcement="watchdog", spare=False) as session:
        assert session.run("1").ok
        (watchdog,) = set(memory_threads()) - before
        assert watchdog.is_alive()
    assert not watchdog.is_alive()


FILL = """
import errno, os
def fill(path):
    written = 0
    try:
        with open(path, 'wb') as f:
            while True:
                f.write(b'x' * (1 << 20))
                f.flush()
                written += 1 << 20
    except OSError as e:
        return errno.errorcode[e.errno], written >> 20
def write_one(path):
    try:
        open(path, 'w').write('x')
        return 'written'
    except OSError as e:
        return errno.errorcode[e.errno]
outcome = {place: fill(place + '/big') for place in ('/sandbox', '/tmp', '/dev/shm')}
outcome.update({place: write_one(place) for place in ('/evil', '/dev/evil', '/opt/evil')})
outcome
"""


def test_every_writable_place_is_bounded_and_full_is_enospc() -> None:
    with CodeMode(disk_mb=24, tmp_mb=16, shm_mb=8) as session:
        files = session.status()["files"]
        assert "/sandbox 24 MiB" in files and "/tmp 16 MiB" in files
        assert "/dev/shm 8 MiB" in files and "/ read-only" in files
        r = session.run(FILL, timeout=60)
    assert r.ok, r.error
    assert r.value["/sandbox"] == ["ENOSPC", 24]
    assert r.value["/tmp"] == ["ENOSPC", 16]
    assert r.value["/dev/shm"] == ["ENOSPC", 8]
    assert r.value["/evil"] == "EROFS"
    assert r.value["/dev/evil"] == "EROFS"
    assert r.value["/opt/evil"] == "EROFS"


def test_home_files_last_as_long_as_the_runtime() -> None:
    with CodeMode() as session:
        assert session.run("open('kept.txt', 'w').write('still here')").ok
        assert session.run("open('kept.txt').read()").value == "still here"
        session.reset()
        assert session.run("open('kept.txt').read()").value == "still here"
        # The home is the runtime's tmpfs: a new runtime (here asked for; after a crash the
        # run says state_lost) starts with an empty one.
        fresh = session.run("import os\nos.listdir('.')", fresh=True)
        assert fresh.ok and fresh.value == []


def test_status_names_the_memory_mechanism() -> None:
    with CodeMode() as session:
        memory = session.status()["memory"]
    assert re.fullmatch(r"1024 MiB \((cgroup v1|cgroup v2|watchdog)\)", memory), memory
    if CGROUP_PLACE is not None:
        assert memory == f"1024 MiB (cgroup v{CGROUP_PLACE.version})"
    with CodeMode(memory_enforcement="watchdog") as session:
        assert session.status()["memory"] == "1024 MiB (watchdog)"


@needs_cgroup
def test_no_cgroup_is_left_behind() -> None:
    before = my_cgroups()
    session = CodeMode(memory_enforcement="cgroup", spare=False)  # one runtime, one cgroup
    try:
        assert session.run("1").ok
        assert len(my_cgroups() - before) == 1
        crashed = session.run("import os\nos._exit(3)")
        assert crashed.status == "crashed"
        assert session.run("2").ok  # a new runtime, a new cgroup; the old one is gone
        assert len(my_cgroups() - before) == 1
        assert session.run("x = 1", fresh=True).ok
        assert len(my_cgroups() - before) == 1
    finally:
        session.close()
    assert my_cgroups() == before
    with CodeMode(protocol="replay") as replay:
        assert replay.run("add(1, 2)", tools=[add]).value == 3
    assert my_cgroups() == before


@needs_cgroup
def test_a_host_that_exits_without_closing_leaves_no_cgroup() -> None:
    program = (
        "from codemode_jupyter import CodeMode\n"
        "session = CodeMode()\n"
        "assert session.run('1').ok\n"
        "print(session._conn.transport.memory.path, flush=True)\n"
    )
    root = str(Path(codemode_jupyter.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    made = Path(done.stdout.strip())
    assert made.parent == CGROUP_PLACE.parent
    assert not made.exists()


@needs_cgroup
def test_cgroups_of_dead_hosts_are_swept() -> None:
    dead = str(dead_pid())
    orphan = CGROUP_PLACE.parent / f"codemode-{dead}-1-abcdef"
    orphan.mkdir()
    try:
        LocalBackend().close()
        assert not orphan.exists()
    finally:
        if orphan.exists():
            orphan.rmdir()


def test_isolation_none_says_the_bounds_are_not_enforced() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IsolationWarning)
        backend = LocalBackend(bwrap="/bin/false")
    try:
        details = backend.status().details
    finally:
        backend.close()
    assert "not bounded (isolation none)" in details["memory"]
    assert details["files"].startswith("not bounded (isolation none")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"memory_enforcement": "magic"}, "memory_enforcement must be one of"),
        ({"disk_mb": 0}, "disk_mb must be a whole number"),
        ({"shm_mb": "64"}, "shm_mb must be a whole number"),
        ({"tmp_mb": -1}, "tmp_mb must be a whole number"),
    ],
)
def test_bad_limits_are_refused_clearly(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalBackend(**options)
