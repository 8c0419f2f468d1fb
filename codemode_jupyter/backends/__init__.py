"""Backends: where a runtime lives. `create_backend` picks one by name."""

from __future__ import annotations

from typing import Any

from .base import Backend, BackendConfigError, BackendStatus, OneShot, Transport

__all__ = [
    "Backend",
    "BackendConfigError",
    "BackendStatus",
    "OneShot",
    "Transport",
    "create_backend",
]


def create_backend(name: str, **options: Any) -> Backend:
    """Make a backend by name ("local" or "daytona"); options go to its constructor."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(**options)
    if name == "daytona":
        from .daytona import DaytonaBackend

        return DaytonaBackend(**options)
    raise ValueError(f"unknown backend {name!r}: use 'local' or 'daytona'")
