"""Keeping a local runtime off the CPU of the host thread that talks to it.

Both ends of a run spin for a short while when they wait for a frame, which answers a call in
microseconds while they run on different CPUs. But Linux places a task woken by a pipe write
on the writer's CPU (a "sync" wake-up), so after a wait that slept, the runtime and the host
thread can end up sharing one CPU with the other CPUs idle; spinning there hands the CPU back
and forth, and every call then costs two context switches (twice the time of a call on two
CPUs, measured in bench/README.md). The load balancer splits two busy tasks only after
milliseconds, longer than most runs. So the host, when its spin finds its CPU crowded, looks
where the runtime's main thread runs, and if that is its own CPU, moves the runtime once to
another CPU it may use; the runtime's allowed CPUs are then restored at once, so the program
keeps every CPU it had.
"""

from __future__ import annotations

import contextlib
import os

from codemode_jupyter.backends.processes import child_pids


def current_cpu() -> int | None:
    """The CPU the calling thread runs on now (None where Linux's /proc does not say)."""
    try:
        with open("/proc/thread-self/stat", "rb") as f:
            return _cpu_field(f.read())
    except OSError:
        return None


def _cpu_field(stat: bytes) -> int | None:
    """Field 39 of a /proc/<pid>/stat line: the CPU the task last ran on."""
    try:
        return int(stat.rsplit(b")", 1)[1].split()[36])
    except (IndexError, ValueError):
        return None


class RuntimePlacement:
    """Where one runtime's main thread runs, and moving it off a CPU.

    The runtime is `depth` generations below `top_pid` (bwrap, then the jail's init, then the
    runtime: 2; an unjailed runtime: 0), found on first use; None while that is unclear.
    """

    def __init__(self, top_pid: int, depth: int) -> None:
        self._top_pid = top_pid
        self._depth = depth
        self._pid: int | None = None
        self._stat_fd: int | None = None

    def _runtime_pid(self) -> int | None:
        if self._pid is None:
            pid: int | None = self._top_pid
            for _ in range(self._depth):
                children = child_pids(pid)
                if not children:
                    return None
                # The first child: the jail's init also adopts what the program orphans.
                pid = min(children)
            with contextlib.suppress(OSError):
                self._stat_fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
                self._pid = pid
        return self._pid

    def runtime_cpu(self) -> int | None:
        """The CPU the runtime's main thread last ran on (None once it has gone)."""
        if self._runtime_pid() is None or self._stat_fd is None:
            return None
        try:
            return _cpu_field(os.pread(self._stat_fd, 1024, 0))
        except OSError:
            return None

    def move_off(self, cpu: int) -> bool:
        """Move the runtime's main thread to another of its CPUs; False if it has none."""
        pid = self._runtime_pid()
        if pid is None:
            return False
        try:
            allowed = os.sched_getaffinity(pid)
            if len(allowed - {cpu}) == 0:
                return False
            os.sched_setaffinity(pid, allowed - {cpu})  # returns once it has moved
            os.sched_setaffinity(pid, allowed)  # and it may run anywhere again
        except OSError:
            return False
        return True

    def close(self) -> None:
        fd, self._stat_fd = self._stat_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
