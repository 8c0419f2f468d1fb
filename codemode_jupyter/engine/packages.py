"""The sandbox's own packages: `CodeMode(packages=[...])` and `%codemode pip install`.

When to install is decided here; how is the backend's (`Backend.install_packages`: the local
backend runs pip on the host into a folder its jail mounts, Daytona runs pip inside the
sandbox). Either way a failed install returns pip's own output and changes nothing else.
"""

from __future__ import annotations

from typing import Any

from codemode_jupyter.backends.packages import InstallResult
from codemode_jupyter.errors import PackageInstallError


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
    """Install `specs` for `session`'s sandbox (what `%codemode pip install` calls). A failed
    install leaves the session and its state as they were."""
    specs = check_specs(specs)
    return session.backend.install_packages(session, specs)


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
