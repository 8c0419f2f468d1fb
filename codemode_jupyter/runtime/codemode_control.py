"""The reading end of the runtime's control channel: frames in, a tool's result to the
thread waiting for it, an interrupt to the main thread, requests (run, reset, put) to the main
loop. The thread that waits for a frame reads the channel itself (wait_leading), so a result
needs no hand-off between threads.

Part of the sandbox runtime (codemode_runtime.py): standard library only.
"""

from __future__ import annotations

import os
import select
import threading
import time

import codemode_protocol as P


class Control:
    """What reads the control channel, and the state its frames act on (calls in flight, the
    run going on, the requests waiting)."""

    def __init__(self, in_fd: int, sequenced: bool = False) -> None:
        self._in_fd = in_fd
        # Sequenced (Daytona): batches a retried request delivered again are dropped. Chosen
        # once here (the same feed() either way), so the local pipes' reads pay nothing.
        splitter = P.LineSplitter()
        self._splitter = P.Sequenced(splitter) if sequenced else splitter
        # The thread that waits for a frame (the main thread between runs, a program thread
        # waiting for its tool's result) reads the channel itself, holding _lead; the reader
        # thread reads only while no one leads, so a reply needs no hand-off between threads.
        self._lead = threading.Lock()
        self._leader_poll = select.poll()
        self._leader_poll.register(in_fd, select.POLLIN)
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        if self._epoll is not None:
            os.set_blocking(in_fd, False)
            self._epoll.register(in_fd, select.EPOLLIN)
        # Waits for a tool's result and for the next request count their misses apart: a
        # request comes when the host pleases, and its long waits must not rest the spin for
        # results.
        self.spin = P.Spin()
        self.idle_spin = P.Spin(P.SPIN_MAX_OTHER)
        self._interrupt_self = False
        self._inbox: list[dict] = []
        self._inbox_ready = threading.Condition()
        self._pending: dict[int, tuple] = {}  # call id -> (wake, reply): see Runtime._start_call
        self._running: str | None = None
        self._run_lock = threading.Lock()
        self._stop_early: set[str] = set()
        self._main_ident = threading.get_ident()

    def read_control(self) -> None:
        """Reader thread: results wake their callers; run/reset go to the main loop."""
        if self._epoll is None:  # no epoll: this thread is the only reader, blocking
            while True:
                self._pump(os.read)
        while True:
            self._epoll.poll()  # the channel is left out of it while a thread leads
            with self._lead:
                self._pump(_read_nowait)

    def _pump(self, read: object) -> None:
        """Read what the channel has and dispatch it (by the one thread that reads now)."""
        try:
            data = read(self._in_fd, 65536)
        except InterruptedError:
            return
        except OSError:
            os._exit(P.CHANNEL_LOST)
        if data is None:
            return
        if not data:
            os._exit(0)  # the host has gone: nothing left to serve
        for line in self._splitter.feed(data):
            if line[:1] == b"{" or line.strip():  # a frame; blank lines are skipped
                self._dispatch(P.decode(line))

    def wait_leading(self, until: list, spin: P.Spin) -> bool:
        """Read the channel on this thread until the list `until` has something (what this
        thread dispatches puts it there); False if another thread leads (its reads dispatch to
        this one) or there is no epoll to keep the reader thread out."""
        if self._epoll is None or not self._lead.acquire(blocking=False):
            return False
        try:
            self._epoll.modify(self._in_fd, 0)  # the reader thread sleeps through this
            while not until:
                self._read_step(spin)
        finally:
            self._epoll.modify(self._in_fd, select.EPOLLIN)
            self._lead.release()
        return True

    def _read_step(self, spin: P.Spin) -> None:
        """Wait for the channel (a short spin first, as `spin` says), then read and dispatch."""
        start = time.perf_counter()
        end = start + spin.limit
        poll = self._leader_poll.poll
        caught = poll(0)
        while not caught and time.perf_counter() < end:
            if P.SPIN_YIELD:
                os.sched_yield()
            caught = poll(0)
        if not caught:
            poll()  # a signal (Ctrl-C) raises here, before anything was read
        self._pump(_read_nowait)
        if self._interrupt_self:
            # An interrupt frame this (main) thread read for itself: raised once everything
            # read is dispatched, so nothing is lost.
            self._interrupt_self = False
            raise KeyboardInterrupt
        spin.record(time.perf_counter() - start, bool(caught))

    def _dispatch(self, frame: dict) -> None:
        kind = frame["t"]
        if kind == P.RESULT:
            waiter = self._pending.pop(frame["id"], None)
            if waiter is not None:
                wake, reply = waiter
                reply.append(frame)
                wake()
        elif kind == P.INTERRUPT:
            with self._run_lock:
                if self._running is not None and frame.get("id") in (None, self._running):
                    if threading.get_ident() == self._main_ident:
                        self._interrupt_self = True  # leading: raised after dispatching
                    else:
                        import signal

                        signal.pthread_kill(self._main_ident, signal.SIGINT)
                elif frame.get("id") is not None:
                    # Its run frame is queued but not started: it stops as soon as it starts.
                    self._stop_early.add(frame["id"])
        else:
            with self._inbox_ready:
                self._inbox.append(frame)
                self._inbox_ready.notify()

    def next_request(self) -> dict:
        if not self._inbox:
            self.wait_leading(self._inbox, self.idle_spin)
        with self._inbox_ready:
            while not self._inbox:
                self._inbox_ready.wait()
            return self._inbox.pop(0)


def _read_nowait(fd: int, size: int) -> bytes | None:
    """What the (non-blocking) channel has now, or None."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
