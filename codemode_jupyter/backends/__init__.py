"""Backends: where a runtime lives. `create_backend` picks one by name.

The local backend needs nothing beyond the package. The Daytona backend needs the `daytona`
SDK, an optional extra (`pip install 'codemode-jupyter[daytona]'`): `require_backend` checks it
is there, and recent enough, before anything uses it, so a missing SDK is one clear error.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from .base import Backend, BackendConfigError, BackendStatus, OneShot, Transport

__all__ = [
    "Backend",
    "BackendConfigError",
    "BackendNotInstalled",
    "BackendStatus",
    "OneShot",
    "Transport",
    "create_backend",
    "require_backend",
]

BACKENDS = ("local", "daytona")
#: The SDK each backend imports that only an extra of the same name installs.
_SDKS = {"daytona": "daytona"}


class BackendNotInstalled(BackendConfigError, ImportError):
    """The backend's SDK is missing (or too old): the message names the extra to install."""

    def _render_traceback_(self) -> list[str]:
        # IPython (a `%%codemode` cell) shows these lines instead of the host's stack: the
        # message is the whole story.
        return [f"{type(self).__name__}: {self}"]


def create_backend(name: str, **options: Any) -> Backend:
    """Make a backend by name ("local" or "daytona"); options go to its constructor."""
    require_backend(name)
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(**options)
    from .daytona import DaytonaBackend

    return DaytonaBackend(**options)


def require_backend(name: str) -> None:
    """Raise ValueError for an unknown backend, BackendNotInstalled if its SDK is not usable."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: use 'local' or 'daytona'")
    sdk = _SDKS.get(name)
    if sdk is None:
        return
    install = f"pip install 'codemode-jupyter[{name}]'"
    try:
        importlib.import_module(sdk)
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and exc.name == sdk
        why = "it is not installed" if missing else f"it fails to import ({exc})"
        message = f"the {name} backend needs the {sdk} SDK, but {why}: {install}"
        raise _not_installed(message, sdk) from exc
    too_old = _too_old(sdk, name)
    if too_old:
        raise _not_installed(f"the {name} backend needs {too_old}: {install}", sdk)


def _not_installed(message: str, sdk: str) -> BackendNotInstalled:
    error = BackendNotInstalled(message)
    error.name = sdk  # as ImportError.name: the module that is missing
    return error


def _too_old(sdk: str, extra: str) -> str | None:
    """'<sdk> <bound> (<version> is installed)' if the installed SDK is older than the range
    this package's extra asks for; None if it fits, or if either version is unknown (a source
    checkout run without installing). Only the lower bound is checked: a newer SDK may work."""
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version

        installed = Version(metadata.version(sdk))
        requires = metadata.requires("codemode-jupyter") or []
    except Exception:  # not installed as a distribution, or no `packaging`: nothing to check
        return None
    for line in requires:
        req = Requirement(line)
        if req.name != sdk or req.marker is None or not req.marker.evaluate({"extra": extra}):
            continue
        lows = [s for s in req.specifier if s.operator in (">=", ">")]
        if any(not s.contains(installed, prereleases=True) for s in lows):
            return f"{sdk}{req.specifier} ({installed} is installed)"
    return None
