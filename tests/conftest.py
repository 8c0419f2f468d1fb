"""Shared test helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from codemode_jupyter.backends.daytona.retries import RetryPolicy
from codemode_jupyter.jupyter.headless import KernelSession

#: Retries quick enough for Daytona tests that inject faults.
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, request_timeout=5.0)


def dead_pid() -> int:
    """The pid of a process that has exited (for sweeps of what dead processes left)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


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


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Daytona loopback server for the test module, accepting the module's `KEY`."""
    from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    with DaytonaLoopbackServer(api_key=request.module.KEY) as srv:
        yield srv


@pytest.fixture
def daytona_faults_cleared(server: Any) -> Iterator[None]:
    """The loopback server with no faults and zeroed route counts, before and after a test."""
    server.clear_faults()
    server.reset_counts()
    yield
    server.clear_faults()


def tool_returns(messages: list[Any]) -> list[Any]:
    """What the tools returned so far in a pydantic-ai conversation (for a FunctionModel)."""
    from pydantic_ai.messages import ToolReturnPart

    return [
        p.content
        for m in messages
        for p in getattr(m, "parts", [])
        if isinstance(p, ToolReturnPart)
    ]
