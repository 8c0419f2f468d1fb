"""The process a program runs in, set up once at start: the standard fds (the control
channel moved off them), the resource limits, Ctrl-C, and the package directories on sys.path
(looked at again before each run).

Part of the sandbox runtime (codemode_runtime.py): standard library only.
"""

from __future__ import annotations

import _signal
import os
import sys

#: Directories of the sandbox's own packages (pip --target): `--site DIR` arguments, and the
#: one pip fills inside a remote sandbox. Each is put on sys.path once it exists.
PACKAGE_DIRS = [os.path.expanduser("~/.codemode-packages")]


_package_dirs_seen: dict[str, int] = {}  # directory -> its mtime at the last look (-1: none)


def add_package_dirs() -> bool:
    """Before each run: package directories that appeared or changed (a pip install between
    runs) go on sys.path, and the import caches are dropped so their packages are found. A
    stat each when nothing changed: dropping the caches makes every later import slower.
    Whether anything changed."""
    changed = False
    for directory in PACKAGE_DIRS:
        mtime = -1
        if os.access(directory, os.F_OK):  # a missing dir (the usual case) raises nothing here
            try:
                mtime = os.stat(directory).st_mtime_ns
            except OSError:
                pass
        if _package_dirs_seen.get(directory) != mtime:
            _package_dirs_seen[directory] = mtime
            changed = True
            if mtime != -1 and directory not in sys.path:
                import site

                site.addsitedir(directory)
    if changed:
        import importlib

        importlib.invalidate_caches()
    return changed


def take_standard_fds() -> tuple[int, int, list[tuple[int, int]]]:
    """Move the control channel off fd 0/1 and give the program /dev/null and two pipes."""
    in_fd, out_fd = os.dup(0), os.dup(1)  # dup'd fds are not inherited by subprocesses
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    pipes = []
    for fd in (1, 2):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        pipes.append((fd, read_end))
    return in_fd, out_fd, pipes


#: The control channel's capacity toward the host (the default is 64 KiB): a burst of output
#: fills fewer, larger reads. Not more: a user's pipes share one budget across all their
#: sessions and programs (fs.pipe-user-pages-soft, 64 MiB), past which new pipes get a page.
_CHANNEL_PIPE = 1 << 18


def widen_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _CHANNEL_PIPE)
    except (ImportError, AttributeError, OSError):
        pass  # not a pipe, or over the user's budget: the default capacity works too


def apply_limits(argv: list[str]) -> None:
    """`--limits MEM_MB,PROCS,CPU_S,FSIZE_MB` (0 = leave as is): set before any program runs,
    so the program and everything it starts inherit them."""
    if "--limits" not in argv:
        return
    import resource

    values = [int(v) for v in argv[argv.index("--limits") + 1].split(",")]
    kinds = (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE)
    scales = (1 << 20, 1, 1, 1 << 20)
    for kind, value, scale in zip(kinds, values, scales, strict=False):
        if value > 0:
            _soft, hard = resource.getrlimit(kind)
            limit = value * scale if hard == resource.RLIM_INFINITY else min(value * scale, hard)
            resource.setrlimit(kind, (limit, limit))


def take_ctrl_c() -> None:
    """SIGINT raises KeyboardInterrupt in the main thread: how an interrupt frame stops the
    program (Control._dispatch). Set here, not inherited: a signal ignored or blocked by
    whatever started the runtime stays so through exec (ipykernel ignores SIGINT between
    requests, so a spare started then had it ignored, and a shell ignores it in what it
    starts with `&`), and then no interrupt could stop a program."""
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, (_signal.SIGINT,))
