"""The runtime's stdin and stdout as pipes to a local process, read by whichever thread waits."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
from typing import Any

from codemode_jupyter.backends.base import Transport
from codemode_jupyter.backends.local.memory import JailMemory
from codemode_jupyter.backends.local.placement import RuntimePlacement, current_cpu
from codemode_jupyter.backends.processes import child_pids, wait_gone
from codemode_jupyter.runtime import codemode_protocol as P

_WAKE = (1).to_bytes(8, sys.byteorder)  # what an eventfd takes (a pipe takes it too)
#: Bytes asked of one read of the runtime's channel. Small enough for malloc's heap: asking
#: 1 MiB for an 80-byte frame cost 15-20 µs in allocating and shrinking, 64 KiB about 1 µs.
_READ_SIZE = 1 << 16
#: Reads of one `read_nowait` while the pipe stays full (a burst of output, 1 MiB at most).
_READS_AT_ONCE = 16


def _wake_fds() -> tuple[int, int]:
    """An fd pair that ends a poll when written: one eventfd, or a pipe where there is none."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        return fd, fd
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    return read_end, write_end


class PipeTransport(Transport):
    """The runtime's stdin and stdout, as pipes to a local process.

    An fd number is used only while its pipe is open: stdin is closed under the write lock
    (so a tool result that comes after kill() is dropped, never written to whatever file the
    host opened next under that number), and stdout only by `close_reader`, which the
    connection calls once no thread waits on it any more.

    Reads are shared (`shared_reads`): stdout does not block, so the thread waiting for a frame
    can look for it itself (`ready`, `read_nowait`), and `wake` (an eventfd) ends a wait.
    """

    shared_reads = True

    def __init__(
        self, proc: subprocess.Popen, isolated: bool, memory: JailMemory | None = None
    ) -> None:
        self.proc = proc
        self.isolated = isolated
        self.memory = memory
        self._in: int | None = proc.stdin.fileno()
        self._out: int | None = proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._eof = False
        self._wake_r, self._wake_w = _wake_fds()
        self._wake_lock = threading.Lock()
        self._pollers = threading.local()  # a poll object may not be used by two threads at once
        self._tail: str | None = None
        self._placement = RuntimePlacement(proc.pid, 2 if isolated else 0)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._in is None:
                return  # killed: the runtime is gone
            try:
                written = os.write(self._in, data)
                if written < len(data):  # a full pipe took part of it: the rest, in turn
                    view = memoryview(data)[written:]
                    while view:
                        view = view[os.write(self._in, view) :]
            except OSError:
                pass  # the runtime is gone; read() reports it

    def read(self) -> bytes:
        while True:
            if self.ready(None):
                data = self.read_nowait()
                if data is not None:
                    return data

    def ready(self, timeout: float | None) -> bool:
        if self._eof or self._out is None:
            return True
        poller = getattr(self._pollers, "poller", None)
        if poller is None:
            poller = self._pollers.poller = select.poll()
            poller.register(self._out, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
        found = False
        for fd, _ in poller.poll(None if timeout is None else timeout * 1000):
            if fd != self._wake_r:
                found = True
            elif timeout != 0:  # a look leaves a wake-up for the wait it is meant to end
                with contextlib.suppress(OSError):
                    os.read(fd, 8)  # drained: the next wait sleeps again
        return found

    def read_nowait(self) -> bytes | None:
        with self._read_lock:
            if self._out is None or self._eof:
                return b""
            try:
                data = os.read(self._out, _READ_SIZE)
            except BlockingIOError:
                return None
            except OSError:
                data = b""
            self._eof = not data
            if len(data) < _READ_SIZE:
                return data
            return self._read_more(data)

    def _read_more(self, first: bytes) -> bytes:
        """The rest of a full pipe, in one piece (the caller holds the read lock)."""
        parts = [first]
        for _ in range(_READS_AT_ONCE - 1):
            try:
                more = os.read(self._out, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                more = b""
            if not more:
                self._eof = True  # reported by the next read_nowait, after these bytes
                break
            parts.append(more)
            if len(more) < _READ_SIZE:
                break
        return b"".join(parts)

    def separate(self) -> bool:
        """Move the runtime off the calling thread's CPU if it shares it (see placement.py);
        True if it was moved."""
        mine = current_cpu()
        if mine is None or self._in is None or self._placement.runtime_cpu() != mine:
            return False
        return self._placement.move_off(mine)

    def wake(self) -> None:
        with self._wake_lock:
            if self._wake_w is not None:
                with contextlib.suppress(BlockingIOError):  # already signalled
                    os.write(self._wake_w, _WAKE)

    def close_reader(self) -> None:
        with self._read_lock:
            if self._out is not None:
                self._out = None
                self.proc.stdout.close()
        with self._wake_lock:
            for fd in {self._wake_r, self._wake_w}:
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None

    def kill(self) -> None:
        inner = child_pids(self.proc.pid)  # bwrap's init in the jail's PID namespace
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        # The jail's init dies with bwrap and takes every process of the jail with it; wait
        # for that, so a runtime started next does not find the old one's processes still
        # counted against the jail's process limit.
        for pid in inner:
            wait_gone(pid, timeout=5.0)
        with self._lock:
            self._in = None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._placement.close()
        self._keep_stderr_tail()
        if self.memory is not None:
            self.memory.close()  # its cgroup goes too

    def alive(self) -> bool:
        return self._in is not None and self.proc.poll() is None

    def exit_info(self) -> str:
        code = self.proc.wait()
        if code > 128 and self.isolated:  # bwrap reports its child's signal as 128 + n
            code = 128 - code
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if code == P.CHANNEL_LOST:
            how += " (the runtime lost its control channel: the program closed it)"
        if self.memory is not None and self.memory.tripped():
            how += f" because {self.memory.verdict()}"
        elif code < 0 and -code == signal.SIGKILL:
            how += " (out of memory, a resource limit, or stopped by the host)"
        tail = self._keep_stderr_tail()
        return f"the runtime {how}" + (f": {tail}" if tail else "")

    def _keep_stderr_tail(self) -> str:
        """The last lines the runtime wrote to stderr, read once its process has ended."""
        if self._tail is None:
            self._tail = _read_tail(self.proc.stderr)
        return self._tail


def _read_tail(stream: Any) -> str:
    if stream is None or stream.closed:
        return ""
    try:
        os.set_blocking(stream.fileno(), False)
        data = stream.read() or b""
    except OSError:
        data = b""
    finally:
        stream.close()
    lines = data.decode(errors="replace").strip().splitlines()
    return "\n".join(lines[-5:])
