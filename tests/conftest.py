"""Shared test helpers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from codemode_jupyter.jupyter.headless import KernelSession


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def loaded_kernel() -> Iterator[KernelSession]:
    """A real kernel with the extension loaded, shut down afterwards."""
    session = KernelSession()
    try:
        assert session.execute("%load_ext codemode_jupyter").ok
        yield session
    finally:
        session.shutdown()
