"""The local backend: runtimes in a bubblewrap jail on this machine, no account, no daemon.

The jail has its own mount, PID, IPC, UTS and network namespaces, read-only system
directories, a private writable home, /tmp and /dev/shm of bounded size (everything else,
"/" included, is read-only), and an environment built from scratch (jail.py). Its memory is
bounded as a whole (memory.py). When the host runs as root, the jail also runs as an unused uid
of its own, so the process limit is the jail's alone and the host's root-only files stay
closed. Where namespaces are not available it runs unisolated, and says so (once, loudly)
rather than failing or pretending. The runtime talks over pipes (transport.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codemode_jupyter.backends.base import (
    RUNTIME_DIR,
    Backend,
    BackendStatus,
    OneShot,
    Transport,
    runtime_sources,
)
from codemode_jupyter.backends.local.bytecode import runtime_bytecode
from codemode_jupyter.backends.local.jail import Jail, find_python, world_reachable
from codemode_jupyter.backends.local.memory import sweep_orphaned_cgroups
from codemode_jupyter.backends.local.options import Limits, LocalOptions, Mount
from codemode_jupyter.backends.local.packages import (
    JAIL_PACKAGES,
    install_local,
    packages_dir,
    packages_mount,
)
from codemode_jupyter.backends.local.transport import PipeTransport
from codemode_jupyter.backends.packages import installed
from codemode_jupyter.backends.processes import owner_gone

if TYPE_CHECKING:
    from codemode_jupyter.backends.packages import InstallResult, PackageSession

__all__ = ["Jail", "LocalBackend", "LocalOptions", "Mount"]

RUNTIME_MOUNT = "/opt/codemode"
#: What the jail's python runs: the runtime, as a script, from its cached bytecode.
_RUNTIME_START = "codemode_runtime_start.py"
_TMP_PREFIX = "codemode-jail-"


class LocalBackend(Backend):
    """Runtimes in a local jail; one private work dir per backend (that is, per session)."""

    name = "local"
    label = "local"
    options_type = LocalOptions
    spare_helps = True  # a spare is a process, ready in the background

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
            self.packages_dir = packages_dir(opts.packages_dir)
            mounts.append(packages_mount(self.packages_dir))
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
        directory = packages_dir(path)
        if self.jail.uid is not None and not world_reachable(str(directory)):
            raise ValueError(
                f"the sandbox's user cannot read {directory} (a folder on its "
                "path is private): choose a packages_dir it can read"
            )
        self.packages_dir = directory
        self.jail.mounts.append(packages_mount(directory))

    def install_packages(self, session: PackageSession, specs: list[str]) -> InstallResult:
        """pip on the host into the packages directory (see packages.py)."""
        return install_local(self, session, specs)

    def _site_argv(self) -> list[str]:
        if self.packages_dir is None:
            return []
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


def _sweep_orphaned_dirs() -> None:
    """Remove the work dirs of sessions whose process died without closing them (killed
    kernels): their names carry the pid that made them."""
    for path in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        if owner_gone(path.name, _TMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
