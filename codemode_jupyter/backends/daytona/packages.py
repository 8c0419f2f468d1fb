"""Packages in a Daytona sandbox: pip runs inside it (it has network), as a program of the
session, into REMOTE_PACKAGES in the sandbox's home."""

from __future__ import annotations

from codemode_jupyter.backends.packages import PIP_TIMEOUT, InstallResult, PackageSession

REMOTE_PACKAGES = "~/.codemode-packages"  # where pip installs inside a Daytona sandbox

#: Runs in the sandbox: pip into REMOTE_PACKAGES, output and exit code as the value.
_REMOTE_PIP = """
import os, subprocess, sys
target = os.path.expanduser({target!r})
proc = subprocess.run([sys.executable, "-m", "pip", "install", "--target", target, "--upgrade",
                       "--no-input", "--disable-pip-version-check", *{specs!r}],
                      capture_output=True, text=True)
{{"ok": proc.returncode == 0, "output": proc.stdout + proc.stderr, "where": target}}
"""


def pip_install_remote(
    session: PackageSession, specs: list[str], timeout: float = PIP_TIMEOUT
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
