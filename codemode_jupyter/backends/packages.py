"""What every backend's package installer shares: its result and what it asks of a session.

Each backend installs in its own way (`Backend.install_packages`): the local one runs pip on
the host into a folder the jail mounts (local/packages.py), Daytona runs pip inside the sandbox
(daytona/packages.py). engine/packages.py decides when to install.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

PIP_TIMEOUT = 600.0


@dataclass
class InstallResult:
    ok: bool
    output: str  # pip's stdout and stderr
    where: str  # the directory the packages went to


class PackageSession(Protocol):
    """What an installer may ask of the engine's session (a CodeMode)."""

    def run(self, code: str, *, timeout: float | None = None, tools: Any = None) -> Any:
        """Run a program in the session's sandbox (pip inside it)."""

    def status(self) -> dict[str, Any]:
        """The session's status (whether a runtime is alive)."""

    def sandbox_changed(self) -> None:
        """The sandbox's setup changed: runtimes (a spare too) must start afresh."""


def installed(directory: Path) -> list[str]:
    """'name==version' of each distribution in a --target directory, sorted."""
    found = []
    for info in sorted(directory.glob("*.dist-info")) if directory.is_dir() else []:
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        found.append(f"{name}=={version}")
    return found
