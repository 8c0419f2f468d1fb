"""Shared test helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from codemode_jupyter.jupyter.headless import KernelSession


@contextmanager
def loaded_kernel() -> Iterator[KernelSession]:
    """A real kernel with the extension loaded, shut down afterwards."""
    session = KernelSession()
    try:
        assert session.execute("%load_ext codemode_jupyter").ok
        yield session
    finally:
        session.shutdown()
