"""The memory bound of one local jail as a whole: every process in it, and its files in RAM.

Where the host lets us make one, each jail gets a memory cgroup of its own (cgroup v2, as root
or in a subtree systemd delegated to the user; else cgroup v1 as root): the kernel counts the
real memory of all the jail's processes and of the tmpfs files they write, and swap cannot
dodge the limit. Where no cgroup can be made, a watchdog thread sums the proportional resident
memory (PSS) of the jail's processes. Either way, a jail that goes over its limit is stopped
whole (not just its largest process, so a program never runs on with a child silently gone),
and the run says it was the sandbox's memory limit. Without a pidfd (Linux < 5.3) neither can
guard a jail, and the runtime falls back to a per-process address-space limit ("rlimit").
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import select
import signal
import threading
import time
import weakref
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from codemode_jupyter.backends.base import BackendConfigError
from codemode_jupyter.backends.processes import owner_gone

ENFORCEMENTS = ("auto", "cgroup", "watchdog")
_PREFIX = "codemode-"
_names = itertools.count(1)
# The watchdog polls sooner the closer a jail is to its limit, assuming a program can fill
# memory at about this rate; far from the limit it polls twice a second.
_FILL_RATE = 2 << 30
_POLL_MIN, _POLL_MAX = 0.02, 0.5
_MAX_WALK = 100_000  # processes the watchdog visits per poll, at most
_PAGE = os.sysconf("SC_PAGE_SIZE")


class MemoryUnavailable(BackendConfigError):
    """The requested way of bounding memory cannot work on this host."""


class JailMemory:
    """The memory bound of one jail: attach its first process, learn whether it tripped,
    close (stop the jail, remove what was made). A guard thread lives as long as the jail."""

    label = ""

    def __init__(self, limit_mb: int) -> None:
        self.limit_mb = limit_mb
        self.limit = limit_mb << 20
        self._lock = threading.Lock()
        self._pidfd: int | None = None
        self._thread: threading.Thread | None = None
        self._tripped = False
        self._released = False

    def prepare(self) -> None:
        """Called just before the jail's first process is started: work that attach() would
        otherwise wait for may begin now, in the background."""

    def attach(self, pid: int) -> None:
        """Bound the jail whose first process is `pid`; it must not have started anything yet
        (so that everything it starts is born inside the bound)."""
        self._pidfd = os.pidfd_open(pid)
        _live.add(self)
        try:
            self._enter(pid)
        finally:
            self._prepared()
        self._thread = threading.Thread(target=self._guard, name="codemode-memory", daemon=True)
        self._thread.start()

    def tripped(self) -> bool:
        """Whether the limit stopped this jail."""
        return self._tripped

    def verdict(self) -> str:
        return (
            f"the sandbox went over its memory limit of {self.limit_mb} MiB ({self.label}); "
            "everything in it was stopped"
        )

    def close(self) -> None:
        """Stop the jail if it still runs and remove what was made for it. Idempotent."""
        self._prepared()
        self._kill_jail()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)
        self._release()

    # --- for the mechanisms ----------------------------------------------------------------

    def _enter(self, pid: int) -> None:
        """Put process `pid` under the bound."""

    def _prepared(self) -> None:
        """Wait for what prepare() began (called by attach and close)."""

    def _watch(self) -> None:
        """Return once the jail has ended (killing it first if it goes over its limit)."""
        self._wait_end(None)

    def _cleanup(self) -> None:
        """Remove what was made for the jail (called once, after it ended)."""

    def _wait_end(self, timeout: float | None, *extra: int) -> list[int]:
        """Wait until the jail's first process ends or an `extra` fd is readable."""
        pidfd = self._pidfd
        if pidfd is None:
            return []
        return _poll([pidfd, *extra], timeout)

    def _trip(self) -> None:
        self._tripped = True
        self._kill_jail()

    def _kill_jail(self) -> None:
        # Under the lock, so a pidfd closed by _release is never used (its number may
        # already belong to another jail's pidfd).
        with self._lock:
            if self._pidfd is not None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def _guard(self) -> None:
        try:
            self._watch()
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        self._cleanup()


_live: weakref.WeakSet[JailMemory] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit, stop the jails still running and remove their cgroups: their guard threads
    are daemons, which would die before they could."""
    for memory in list(_live):
        memory.close()


class CgroupMemory(JailMemory):
    """A memory cgroup of its own for one jail, removed when the jail ends."""

    def __init__(self, limit_mb: int, place: CgroupPlace) -> None:
        super().__init__(limit_mb)
        self.version = place.version
        self.label = f"cgroup v{place.version}"
        self.path = place.parent / f"{_PREFIX}{os.getpid()}-{next(_names)}-{os.urandom(3).hex()}"
        self._oom_events: int | None = None
        self._primer: threading.Thread | None = None
        self.path.mkdir()
        try:
            self._configure()
        except BaseException:
            self._cleanup()
            raise

    def tripped(self) -> bool:
        return self._tripped or self._oom_kills() > 0

    def _configure(self) -> None:
        limit = str(self.limit)
        if self.version == 2:
            _write(self.path / "memory.max", limit)
            _write_if_present(self.path / "memory.swap.max", "0")  # swap cannot dodge it
            _write_if_present(self.path / "memory.oom.group", "1")  # an OOM kill takes all
            return
        _write(self.path / "memory.limit_in_bytes", limit)
        if not _write_if_present(self.path / "memory.memsw.limit_in_bytes", limit):
            _write_if_present(self.path / "memory.swappiness", "0")  # no swap accounting
        # cgroup v1 has no group kill: the guard thread hears of the OOM through an eventfd
        # and stops the whole jail.
        self._oom_events = os.eventfd(0, os.EFD_CLOEXEC)
        control = os.open(self.path / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _write(self.path / "cgroup.event_control", f"{self._oom_events} {control}")
        finally:
            os.close(control)

    def prepare(self) -> None:
        # Moving a process between cgroup v1 groups takes the kernel's cgroup_threadgroup_rwsem
        # for writing, which first waits for an RCU grace period (5-15 ms on a small VM) unless
        # another move took it moments before. So a thread of ours moves itself, into the
        # cgroup it is in already, while bwrap starts: the jail's move then finds the wait
        # passed. Nothing of the jail runs meanwhile: it waits for attach() as before.
        if self.version == 1:
            self._primer = threading.Thread(
                target=_move_self, args=(self.path.parent,), name="codemode-cgroup", daemon=True
            )
            self._primer.start()

    def _prepared(self) -> None:
        primer, self._primer = self._primer, None
        if primer is not None:
            primer.join()

    def _enter(self, pid: int) -> None:
        _write(self.path / "cgroup.procs", str(pid))

    def _watch(self) -> None:
        events = self._oom_events
        while True:
            ready = self._wait_end(None, *([events] if events is not None else []))
            if not ready or self._pidfd in ready:
                return
            os.eventfd_read(events)
            self._trip()

    def _oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            counters = dict(line.split() for line in (self.path / name).read_text().splitlines())
        except (OSError, ValueError):
            return 0
        return sum(int(counters.get(key, 0)) for key in ("oom_kill", "oom_group_kill"))

    def _cleanup(self) -> None:
        # Read the verdict while the counters still exist; then empty and remove the group.
        self._tripped = self.tripped()
        if self._oom_events is not None:
            os.close(self._oom_events)
            self._oom_events = None
        _remove_cgroup(self.path, self.version)


class WatchdogMemory(JailMemory):
    """A thread that sums the PSS of the jail's processes and stops the jail when over."""

    label = "watchdog"
    polls = 0  # measurements taken so far

    def _enter(self, pid: int) -> None:
        self._init = pid

    def _watch(self) -> None:
        interval = _POLL_MIN
        while not self._wait_end(interval):
            used = _resident(_descendants(self._init), self.limit)
            self.polls += 1
            if used > self.limit:
                self._trip()
                self._wait_end(None)
                return
            interval = min(max((self.limit - used) / _FILL_RATE, _POLL_MIN), _POLL_MAX)


@dataclass(frozen=True)
class CgroupPlace:
    """Where jail cgroups are made: a directory of a cgroup hierarchy with memory control."""

    version: int  # 1 or 2
    parent: Path


class MemoryPolicy:
    """How jails of one backend are bounded, chosen once: `enforcement` is "auto" (a cgroup
    if possible, else the watchdog), "cgroup" (or fail) or "watchdog"."""

    def __init__(self, limit_mb: int, enforcement: str = "auto", *, isolated: bool = True) -> None:
        check_enforcement(enforcement)
        self.limit_mb = limit_mb
        self.place: CgroupPlace | None = None
        self.problem = ""
        if not isolated:
            self.mechanism = "rlimit"
            self.problem = "isolation none"
        elif not _pidfds_work():
            if enforcement != "auto":
                raise MemoryUnavailable(
                    f"memory_enforcement={enforcement!r} needs pidfds (Linux 5.3 or later)"
                )
            self.mechanism = "rlimit"
            self.problem = "this kernel has no pidfd (Linux 5.3+)"
        elif enforcement == "watchdog":
            self.mechanism = "watchdog"
        else:
            self.place, self.problem = find_cgroup_place()
            if self.place is None and enforcement == "cgroup":
                raise MemoryUnavailable(f"no memory cgroup can be made here: {self.problem}")
            self.mechanism = f"cgroup v{self.place.version}" if self.place else "watchdog"

    def new_bound(self) -> JailMemory | None:
        """The bound for one new jail (None: the runtime limits each process itself)."""
        if self.place is not None:
            return CgroupMemory(self.limit_mb, self.place)
        if self.mechanism == "watchdog":
            return WatchdogMemory(self.limit_mb)
        return None

    def describe(self) -> str:
        if self.mechanism == "rlimit":
            return (
                f"{self.limit_mb} MiB of address space per process; the sandbox as a whole "
                f"is not bounded ({self.problem})"
            )
        return f"{self.limit_mb} MiB ({self.mechanism})"


def check_enforcement(enforcement: object) -> None:
    if enforcement not in ENFORCEMENTS:
        raise ValueError(
            f"memory_enforcement must be one of {', '.join(ENFORCEMENTS)}, not {enforcement!r}"
        )


# --- finding a place for cgroups ---------------------------------------------------------------


@cache
def find_cgroup_place() -> tuple[CgroupPlace | None, str]:
    """Where this process may make memory cgroups (v2 preferred), or why nowhere."""
    reasons = []
    for version in (2, 1):
        for parent in _candidate_parents(version):
            problem = _probe(parent, version)
            if not problem:
                return CgroupPlace(version, parent), ""
            reasons.append(f"{parent}: {problem}")
    return None, "; ".join(reasons) or "no memory cgroup hierarchy is mounted"


def _candidate_parents(version: int) -> list[Path]:
    """Our own cgroup first; for v2 also its parent, since a v2 cgroup that holds processes
    (ours does: us) cannot give memory control to children, while its parent can."""
    own = _own_cgroup(version)
    if own is None:
        return []
    mount_point, path = own
    if version == 2 and path != mount_point:
        return [path, path.parent]
    return [path]


def _own_cgroup(version: int) -> tuple[Path, Path] | None:
    """(mount point of the hierarchy, our cgroup's directory in it)."""
    mounts = _cgroup_mounts()
    for line in _read("/proc/self/cgroup").splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if version == 2 and hierarchy == "0" and not controllers:
            key = "cgroup2"
        elif version == 1 and "memory" in controllers.split(","):
            key = "memory"
        else:
            continue
        if key in mounts:
            mount_point, root = mounts[key]
            relative = os.path.relpath(path, root)
            return Path(mount_point), Path(mount_point) / ("" if relative == "." else relative)
    return None


def _cgroup_mounts() -> dict[str, tuple[str, str]]:
    """{"cgroup2" | "memory": (mount point, root of the mount)} from /proc/self/mountinfo."""
    found: dict[str, tuple[str, str]] = {}
    for line in _read("/proc/self/mountinfo").splitlines():
        fields, _, tail = line.partition(" - ")
        parts, rest = fields.split(), tail.split()
        if len(parts) < 5 or len(rest) < 3:
            continue
        if rest[0] == "cgroup2":
            found.setdefault("cgroup2", (parts[4], parts[3]))
        elif rest[0] == "cgroup" and "memory" in rest[2].split(","):
            found.setdefault("memory", (parts[4], parts[3]))
    return found


def _probe(parent: Path, version: int) -> str:
    """'' if a jail cgroup with a memory limit can be made under `parent`, else why not."""
    if version == 2 and "memory" not in _read(parent / "cgroup.subtree_control").split():
        return "memory control is not delegated to its children"
    # v2 moves a process only for those who may write the common ancestor's cgroup.procs.
    if not os.access(parent, os.W_OK) or not os.access(parent / "cgroup.procs", os.W_OK):
        return "not writable by us"
    try:
        probe = CgroupMemory(64, CgroupPlace(version, parent))
    except OSError as exc:
        return f"cannot make a cgroup there ({exc})"
    probe.close()
    return ""


def sweep_orphaned_cgroups() -> None:
    """Remove the (empty) jail cgroups of processes that died without removing them."""
    place, _ = find_cgroup_place()
    if place is None:
        return
    for path in place.parent.glob(f"{_PREFIX}*-*"):
        if owner_gone(path.name, _PREFIX):
            with contextlib.suppress(OSError):
                path.rmdir()


# --- helpers ---------------------------------------------------------------------------------


def _remove_cgroup(path: Path, version: int, timeout: float = 5.0) -> None:
    """Kill whatever is still in the cgroup, wait (bounded) until it is empty, remove it."""
    deadline = time.monotonic() + timeout
    killed = version == 2 and _write_if_present(path / "cgroup.kill", "1")
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return  # left for sweep_orphaned_cgroups; never block the host for long
        if not killed:
            for pid in _read(path / "cgroup.procs").split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.01)  # processes killed a moment ago are still leaving


def _move_self(group: Path) -> None:
    """Move the calling thread (alone) into the cgroup v1 `group`: with `group` the cgroup
    the process is in (the parent of its jails' groups, see _candidate_parents), this changes
    nothing but passes the kernel's wait for the next move (CgroupMemory.prepare)."""
    with contextlib.suppress(OSError):
        _write(group / "tasks", str(threading.get_native_id()))


def _descendants(root: int) -> list[int]:
    """`root` and every process below it (threads' children included)."""
    found, todo = [], [root]
    while todo and len(found) < _MAX_WALK:
        pid = todo.pop()
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            todo.extend(int(child) for child in _read(f"/proc/{pid}/task/{tid}/children").split())
    return found


def _resident(pids: list[int], limit: int) -> int:
    """Resident memory of `pids` in bytes. RSS is a counter the kernel keeps (cheap to read),
    but counts pages shared after a fork once per process; PSS counts them once in all, but
    the kernel walks every page to compute it. PSS <= RSS, so PSS only when RSS is over."""
    rss = sum(_rss(pid) for pid in pids)
    return rss if rss <= limit else sum(_pss(pid) for pid in pids)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _pss(pid: int) -> int:
    """Proportional resident memory of `pid` in bytes: pages shared after a fork are counted
    once in all, not once per process."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return 0


@cache
def _pidfds_work() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (OSError, AttributeError):
        return False
    return hasattr(signal, "pidfd_send_signal")


def _poll(fds: list[int], timeout: float | None) -> list[int]:
    """The fds of `fds` that are readable within `timeout` (poll: any fd number works)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    wait = -1 if timeout is None else max(0, round(timeout * 1000))
    return [fd for fd, _ in poller.poll(wait)]


def _read(path: str | Path) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _write_if_present(path: Path, value: str) -> bool:
    try:
        _write(path, value)
    except FileNotFoundError:
        return False
    return True
