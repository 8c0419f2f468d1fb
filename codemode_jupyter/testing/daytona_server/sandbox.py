"""A loopback sandbox: a host directory, the jail its commands run in, and its session
commands (their output, as Daytona's daemon logs it, and their input).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

STDOUT_MARK = b"\x01\x01\x01"
STDERR_MARK = b"\x02\x02\x02"
JAIL_HOME = "/home/daytona"
DEFAULT_API_KEY = "loopback"
ORG_ID = "loopback-org"
_PATH = "/usr/local/bin:/usr/bin:/bin"


# --- the sandbox's processes ---------------------------------------------------------------------


class Runner:
    """Starts processes for one sandbox: in the local jail if asked and available, else plain."""

    def __init__(self, root: Path, *, network: bool, isolate: bool | None) -> None:
        self.workdir = root / "home"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jail = _make_jail(self.workdir, network) if isolate is not False else None
        if isolate and (self._jail is None or self._jail.isolation == "none"):
            raise RuntimeError("isolation requested but the local jail cannot isolate here")
        jailed = self._jail is not None and self._jail.isolation != "none"
        self.home = JAIL_HOME if jailed else str(self.workdir)
        self.isolation = self._jail.isolation if self._jail is not None else "none"

    def host_path(self, path: str) -> Path:
        """Where a sandbox path lives on the host; only the home directory is backed."""
        sandbox_path = path if path.startswith("/") else f"{self.home}/{path}"
        relative = os.path.relpath(os.path.normpath(sandbox_path), self.home)
        if relative == ".." or relative.startswith("../"):
            raise PermissionError(f"the loopback server only backs paths under {self.home}: {path}")
        return self.workdir / relative

    def popen(
        self, command: str, env: dict[str, str] | None = None, merge: bool = False
    ) -> subprocess.Popen:
        """Run a shell command in the sandbox (its own process group), pipes on all three fds."""
        pipes: dict[str, Any] = {
            "stdin": subprocess.PIPE,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.STDOUT if merge else subprocess.PIPE,
        }
        if self._jail is not None:
            environment = {**self._jail.environment(), **(env or {})}
            return self._jail.popen(["sh", "-c", command], env=environment, **pipes)
        environment = {"HOME": self.home, "PATH": _PATH, "LANG": "C.UTF-8", **(env or {})}
        return subprocess.Popen(
            ["sh", "-c", command],
            cwd=self.workdir,
            env=environment,
            start_new_session=True,
            **pipes,
        )

    def close(self) -> None:
        if self._jail is not None:
            self._jail.close()


def _make_jail(workdir: Path, network: bool) -> Any:
    try:
        from codemode_jupyter.backends.local.jail import Jail
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the server reports isolation itself
        return Jail(workdir, network=network, home=JAIL_HOME)


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a command and everything it started (its own process group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


class Command:
    """One session command: its process, its interleaved output log and its exit code."""

    def __init__(
        self, command: str, proc: subprocess.Popen, loop: asyncio.AbstractEventLoop, echo: bool
    ) -> None:
        self.id = uuid.uuid4().hex
        self.command = command
        self.proc = proc
        self.echo = echo
        self.chunks: list[tuple[int, bytes]] = []
        # The daemon's log file: each chunk behind its stream's marker, as its followers read it.
        self.log = bytearray()
        self.units: list[int] = []  # where each marked chunk ends in `log`
        self.cut_floor = 0  # injected log cuts look for their place past this point
        self.exit_code: int | None = None
        self._loop = loop
        self._changed = asyncio.Event()
        readers = [self._reader(proc.stdout, 1), self._reader(proc.stderr, 2)]
        threading.Thread(target=self._waiter, args=(readers,), daemon=True).start()

    def _reader(self, pipe: Any, stream: int) -> threading.Thread:
        def pump() -> None:
            fd = pipe.fileno()
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                self._loop.call_soon_threadsafe(self.feed, stream, data)

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        return thread

    def _waiter(self, readers: list[threading.Thread]) -> None:
        code = self.proc.wait()
        for reader in readers:
            reader.join(timeout=2)  # a background child may hold the pipe open forever
        with contextlib.suppress(RuntimeError):  # the loop may be closing
            self._loop.call_soon_threadsafe(self.finish, code)

    def feed(self, stream: int, data: bytes) -> None:
        self.chunks.append((stream, data))
        self.log += (STDOUT_MARK if stream == 1 else STDERR_MARK) + data
        self.units.append(len(self.log))
        self._notify()

    def finish(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code if code >= 0 else 128 - code
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def write_input(self, data: str) -> None:
        if self.echo:
            self.feed(1, data.encode())
        assert self.proc.stdin is not None
        self.proc.stdin.write(data.encode())
        self.proc.stdin.flush()

    def text(self, stream: int | None = None) -> str:
        data = b"".join(d for s, d in self.chunks if stream is None or s == stream)
        return data.decode("utf-8", "replace")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.command, "exitCode": self.exit_code}


@dataclass
class Sandbox:
    """A sandbox record: its DTO fields, its directory, its sessions and live log streams."""

    dto: dict[str, Any]
    root: Path
    runner: Runner
    sessions: dict[str, dict[str, Command]] = field(default_factory=dict)
    streams: dict[web.WebSocketResponse, Command] = field(default_factory=dict)
    preview_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    last_activity: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.dto["id"]

    @property
    def started(self) -> bool:
        return self.dto["state"] == "started"

    def commands(self) -> list[Command]:
        return [cmd for session in self.sessions.values() for cmd in session.values()]
