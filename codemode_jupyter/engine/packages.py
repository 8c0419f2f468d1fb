"""The sandbox's own packages: `CodeMode(packages=[...])` and `%codemode pip install`.

Local backend: the jail has no network, so pip runs on the host, into a directory kept per
project (`.codemode/sandbox-packages-py<X.Y>` under the current directory, or `packages_dir`),
for the jail's python version; the jail mounts it read-only at JAIL_PACKAGES and the runtime
puts it on sys.path. Daytona: pip runs inside the sandbox (which has network), as a program of
the session, into REMOTE_PACKAGES in the sandbox's home. Either way a failed install returns
pip's own output and changes nothing else (the first local install of a session without a
packages directory mounts it only after pip succeeded, and then says the restart lost state).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codemode_jupyter.errors import PackageInstallError

JAIL_PACKAGES = "/opt/codemode-packages"  # where the local jail sees the project's directory
REMOTE_PACKAGES = "~/.codemode-packages"  # where pip installs inside a Daytona sandbox
PIP_TIMEOUT = 600.0


@dataclass
class InstallResult:
    ok: bool
    output: str  # pip's stdout and stderr
    where: str  # the directory the packages went to


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


#: Runs in the sandbox (Daytona): pip into REMOTE_PACKAGES, output and exit code as the value.
_REMOTE_PIP = """
import os, subprocess, sys
target = os.path.expanduser({target!r})
proc = subprocess.run([sys.executable, "-m", "pip", "install", "--target", target, "--upgrade",
                       "--no-input", "--disable-pip-version-check", *{specs!r}],
                      capture_output=True, text=True)
{{"ok": proc.returncode == 0, "output": proc.stdout + proc.stderr, "where": target}}
"""


def pip_install_remote(
    session: Any, specs: list[str], timeout: float = PIP_TIMEOUT
) -> InstallResult:
    """pip inside the session's sandbox, run as a program of the session."""
    result = session.run(
        _REMOTE_PIP.format(target=REMOTE_PACKAGES, specs=list(specs)), timeout=timeout, tools=[]
    )
    if not result.ok or not isinstance(result.value, dict):
        return InstallResult(
            False,
            f"pip could not run in the sandbox: {result.error}\n{result.stderr}",
            REMOTE_PACKAGES,
        )
    return InstallResult(
        bool(result.value["ok"]), str(result.value["output"]), str(result.value["where"])
    )


def installed(directory: Path) -> list[str]:
    """'name==version' of each distribution in a --target directory, sorted."""
    found = []
    for info in sorted(directory.glob("*.dist-info")) if directory.is_dir() else []:
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        found.append(f"{name}=={version}")
    return found


def check_specs(specs: Any) -> list[str]:
    """Requirement strings, as pip takes them; no options (a spec starting with '-')."""
    if isinstance(specs, str):
        specs = [specs]
    specs = list(specs or ())
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip() or spec.lstrip().startswith("-"):
            raise ValueError(
                f"packages must be requirement strings like 'tabulate>=0.9', not {spec!r:.60}"
            )
    return specs


def install(session: Any, specs: Any) -> InstallResult:
    """Install `specs` for `session`'s sandbox (what `%codemode pip install` calls).

    Local: into the backend's packages directory. A session without one has pip fill the
    project's directory first; only when pip succeeded is it mounted, which replaces a running
    runtime (a jail's mounts are fixed when it starts) and the output says its state was lost.
    A failed install leaves the session and its state as they were."""
    specs = check_specs(specs)
    backend = session.backend
    if getattr(backend, "name", "") != "local":
        return pip_install_remote(session, specs)
    version = python_version(backend.python)
    if backend.packages_dir is not None:
        return pip_install_local(backend.packages_dir, specs, version)
    result = pip_install_local(default_dir(version), specs, version)
    if result.ok:
        result.output += _mount(session, Path(result.where))
    return result


def _mount(session: Any, directory: Path) -> str:
    """Mount `directory` for the session's runtimes from now on; the note for pip's output."""
    session.backend.use_packages_dir(directory)
    alive = session.status().get("runtime_alive")
    session.sandbox_changed()  # runtimes (the spare too) must start with the new mount
    if not alive:
        return ""
    return (
        "\n[codemode] the sandbox restarted to mount its packages directory; "
        "its earlier state was lost\n"
    )


def install_pending(session: Any) -> None:
    """The session's `packages=` on its first run (again on later runs until they install);
    raises PackageInstallError with pip's output when pip fails."""
    pending, session._packages_pending = session._packages_pending, []
    if not pending:
        return
    try:
        result = install(session, pending)
    except BaseException:
        session._packages_pending = pending
        raise
    if not result.ok:
        session._packages_pending = pending
        raise PackageInstallError(f"pip could not install {' '.join(pending)}:\n{result.output}")
