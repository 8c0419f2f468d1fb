"""The contract between the engine and a backend: start a runtime, move its bytes, clean up.

A backend knows nothing of frames or tools. It starts the sandbox runtime
(`python3 -I -u <runtime dir>/codemode_runtime.py`) somewhere, and hands the engine a
Transport: bytes written go to the runtime's stdin, bytes read come from its stdout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"
RUNTIME_FILES = ("codemode_protocol.py", "codemode_rich.py", "codemode_runtime.py")


def runtime_sources() -> dict[str, bytes]:
    """The files the sandbox needs, by name: stdlib-only Python, uploaded or mounted as-is."""
    return {name: (RUNTIME_DIR / name).read_bytes() for name in RUNTIME_FILES}


class BackendConfigError(RuntimeError):
    """The backend cannot work until the user changes its configuration (e.g. a rejected key):
    raised to the caller rather than reported as one failed run."""


class Transport(ABC):
    """A byte stream to one live runtime process."""

    #: Hold tool results until every call of the round has finished, then send them in one
    #: write (remote backends, where each write is a request). Local pipes send at once.
    batch_results: bool = False

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes to the runtime's stdin. Thread-safe; one call is one batch."""

    @abstractmethod
    def read(self) -> bytes:
        """Block until the runtime's stdout has bytes; b"" once it has gone for good.

        Called only from the engine's I/O thread.
        """

    @abstractmethod
    def kill(self) -> None:
        """Stop the runtime now (and everything it started). read() then returns b"" soon."""

    @abstractmethod
    def exit_info(self) -> str:
        """After EOF: how the runtime ended (exit code or signal) and the tail of its stderr."""


@dataclass
class OneShot:
    """What a one-shot execution (replay mode) printed, stdout and stderr merged."""

    output: str
    exit_code: int
    error: str = ""  # what stopped it, when the backend knows (e.g. the memory limit)


@dataclass
class BackendStatus:
    backend: str
    isolation: str
    details: dict[str, str] = field(default_factory=dict)


class Backend(ABC):
    """Where runtimes live. One Backend per CodeMode session."""

    name: str = ""

    @abstractmethod
    def start_runtime(self, timeout: float | None = None) -> Transport:
        """Start a fresh runtime process and return its transport, within `timeout` seconds
        (the run's remaining time) when given; raise if that cannot be done."""

    @abstractmethod
    def run_oneshot(self, code: str, timeout: float) -> OneShot:
        """Run a self-contained Python program once (the replay fallback) and return its output."""

    @abstractmethod
    def preview_url(self, port: int) -> str:
        """A URL that reaches `port` inside the sandbox from the user's browser."""

    @abstractmethod
    def status(self) -> BackendStatus:
        """Backend name, isolation level and whatever else a user would want to see."""

    def close(self) -> None:  # noqa: B027 - most backends have nothing to release
        """Release the sandbox. Idempotent."""
