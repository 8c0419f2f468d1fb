"""The local jail's own packages: the jail has no network, so pip runs on the host, into a
directory kept per project (`.codemode/sandbox-packages-py<X.Y>` under the current directory, or
`packages_dir`), for the jail's python version; the jail mounts it read-only at JAIL_PACKAGES
and the runtime puts it on sys.path.

A failed install returns pip's own output and changes nothing else: the first install of a
session without a packages directory mounts it only after pip succeeded, and then says the
restart lost state.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from codemode_jupyter.backends.local.options import Mount
from codemode_jupyter.backends.packages import PIP_TIMEOUT, InstallResult, PackageSession

if TYPE_CHECKING:
    from codemode_jupyter.backends.local.backend import LocalBackend

JAIL_PACKAGES = "/opt/codemode-packages"  # where the local jail sees the project's directory


def python_version(python: str) -> str:
    """'X.Y' of a python executable (the jail's, which may differ from the host's)."""
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def default_dir(version: str) -> Path:
    """The project's sandbox packages for python `version`: beside the notebooks."""
    return Path.cwd() / ".codemode" / f"sandbox-packages-py{version}"


def pip_install_local(
    directory: Path, specs: list[str], version: str, timeout: float = PIP_TIMEOUT
) -> InstallResult:
    """pip on the host, into `directory`, for python `version` (binary wheels only when that
    is not the host's own version: nothing can be built for another interpreter)."""
    directory.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(directory),
        "--upgrade",
        "--no-input",
        "--disable-pip-version-check",
    ]
    if version != "{}.{}".format(*sys.version_info[:2]):
        argv += ["--python-version", version, "--only-binary=:all:"]
    try:
        proc = subprocess.run([*argv, *specs], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return InstallResult(False, f"pip did not finish within {timeout:g} s", str(directory))
    return InstallResult(proc.returncode == 0, proc.stdout + proc.stderr, str(directory))


def install_local(
    backend: LocalBackend, session: PackageSession, specs: list[str]
) -> InstallResult:
    """Into the backend's packages directory. A session without one has pip fill the
    project's directory first; only when pip succeeded is it mounted, which replaces a running
    runtime (a jail's mounts are fixed when it starts) and the output says its state was lost."""
    version = python_version(backend.python)
    if backend.packages_dir is not None:
        return pip_install_local(backend.packages_dir, specs, version)
    result = pip_install_local(default_dir(version), specs, version)
    if result.ok:
        result.output += _mount(backend, session, Path(result.where))
    return result


def _mount(backend: LocalBackend, session: PackageSession, directory: Path) -> str:
    """Mount `directory` for the session's runtimes from now on; the note for pip's output."""
    backend.use_packages_dir(directory)
    alive = session.status().get("runtime_alive")
    session.sandbox_changed()  # runtimes (the spare too) must start with the new mount
    if not alive:
        return ""
    return (
        "\n[codemode] the sandbox restarted to mount its packages directory; "
        "its earlier state was lost\n"
    )


def packages_dir(path: str | os.PathLike) -> Path:
    """The packages directory at `path`, made if missing."""
    directory = Path(path).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def packages_mount(directory: Path) -> Mount:
    """The jail's read-only mount of a packages directory."""
    return Mount(str(directory), JAIL_PACKAGES)
