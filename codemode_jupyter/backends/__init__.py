"""Backends: where a runtime lives. `create_backend` picks one by name.

Each backend lives in a module of its own, imported when it is first named, with its options
object (`Backend.options_type`): `options_for` checks options against it, so the engine knows
no backend by name.

The local backend needs nothing beyond the package. The Daytona backend needs the `daytona`
SDK, an optional extra (`pip install 'codemode-jupyter[daytona]'`): `require_backend` checks it
is there, and recent enough, before anything uses it, so a missing SDK is one clear error.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from codemode_jupyter.backends.base import (
    Backend,
    BackendConfigError,
    BackendOptionError,
    BackendOptions,
    BackendStatus,
    IsolationWarning,
    OneShot,
    Setting,
    Transport,
    set_session_label,
)
from codemode_jupyter.errors import BackendNotInstalled

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "Backend",
    "BackendConfigError",
    "BackendNotInstalled",
    "BackendOptionError",
    "BackendOptions",
    "BackendStatus",
    "IsolationWarning",
    "OneShot",
    "Setting",
    "Transport",
    "backend_class",
    "backends_that",
    "create_backend",
    "options_class",
    "options_for",
    "require_backend",
    "set_session_label",
]

#: Each backend by name: its module (imported when first named) and its class there. The only
#: place outside a backend's own package that names it: everything else asks the registry.
_CLASSES = {
    "local": (".local.backend", "LocalBackend"),
    "daytona": (".daytona.backend", "DaytonaBackend"),
}
#: Each backend's options class, in a module lighter than the backend's (Jupyter's settings).
_OPTIONS = {
    "local": (".local.options", "LocalOptions"),
    "daytona": (".daytona.options", "DaytonaOptions"),
}
BACKENDS = tuple(_CLASSES)
#: The backend used when none is named.
DEFAULT_BACKEND = BACKENDS[0]
#: The SDK each backend imports that only an extra of the same name installs.
_SDKS = {"daytona": "daytona"}


def backend_class(name: str) -> type[Backend]:
    """The backend class called `name`; ValueError for a name no backend has. Its module
    imports without its SDK (which only starting it needs)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown backend {name!r}: use " + " or ".join(map(repr, BACKENDS)))
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(module, __name__), cls)


def options_class(name: str) -> type[BackendOptions]:
    """The options class of backend `name` (without importing the backend itself)."""
    if name not in _OPTIONS:
        raise ValueError(f"unknown backend {name!r}: use " + " or ".join(map(repr, BACKENDS)))
    module, cls = _OPTIONS[name]
    return getattr(importlib.import_module(module, __name__), cls)


def backends_that(capability: str) -> tuple[str, ...]:
    """The names of the backends with `capability` (a true class attribute of Backend, such
    as "attaches" or "cleans_orphans"), in the registry's order."""
    return tuple(name for name in BACKENDS if getattr(backend_class(name), capability))


def options_for(
    name: str, shared: Mapping[str, Any] | None = None, **options: Any
) -> BackendOptions:
    """The options of backend `name`, checked: BackendOptionError names an option it does
    not have, and its own checks refuse bad values. `shared`: CodeMode's own keyword
    arguments, of which the backend takes those it uses."""
    return backend_class(name).options_type.build(options, shared)


def create_backend(name: str, options: BackendOptions | None = None, /, **kwargs: Any) -> Backend:
    """Make a backend by name (one of BACKENDS) from its options object, or from its
    options as keyword arguments (checked first: a wrong one starts nothing)."""
    cls = backend_class(name)
    options = cls.options_type.of(options, kwargs)
    require_backend(name)
    return cls(options)


def require_backend(name: str) -> None:
    """Raise ValueError for an unknown backend, BackendNotInstalled if its SDK is not usable."""
    backend_class(name)
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
        # Imported here: importlib.metadata costs a session's start tens of ms and some MiB.
        from importlib import metadata

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
