"""Host process helpers the backends share: is a process alive, what it started, waiting for
it to go, and telling leftovers of dead processes by the pid in their names."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (under any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def owner_gone(name: str, prefix: str) -> bool:
    """For a leftover named `<prefix><pid>-...`: whether the process that made it has ended
    (names that do not fit are never anyone's leftovers)."""
    pid = name[len(prefix) :].split("-", 1)[0] if name.startswith(prefix) else ""
    return pid.isdigit() and not pid_alive(int(pid))


def child_pids(pid: int) -> list[int]:
    """The processes `pid`'s main thread started (empty once it has gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except (OSError, ValueError):
        return []


def wait_gone(pid: int, timeout: float) -> None:
    """Wait (bounded) until process `pid`, not necessarily our child, has exited."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill `proc`'s whole process group and reap `proc`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
