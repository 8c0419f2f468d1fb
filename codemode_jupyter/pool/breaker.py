"""A pool's circuit breaker: while every sandbox start fails, stop trying and say so.

Each start that fails has already been retried by the backend (Daytona's 5xx, 429s and lost
connections), so `threshold` of them in a row means the service is down, not a blip. The
breaker then opens: tasks that need a new sandbox end at once with the outage as their error
instead of each waiting out its own failed starts. After `cooldown` seconds it is half-open:
the next task that needs a sandbox is the probe, and tasks arriving meanwhile wait for its
verdict. A probe that starts a runtime closes the breaker (the pool works as before); one that
fails opens it for another `cooldown`. Warm sandboxes are never held back: they need no start,
and while there are some, the pool hands them the tasks instead of failing them (pool.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_LOOK = 0.25  # how often a task waiting for the probe looks whether it was cancelled


class CircuitBreaker:
    """Counts failed sandbox starts in a row and decides whether the next one may go."""

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold, self.cooldown, self._clock = threshold, cooldown, clock
        self._failures = 0  # failed starts in a row
        self._last = ""  # why the last one failed
        self._opened_at: float | None = None
        self._probe: object | None = None  # the caller testing the service, when half-open
        self.opened = 0  # how many times the breaker opened
        self._cond = threading.Condition()

    @property
    def state(self) -> str:
        with self._cond:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._probe is not None else "open"

    def admit(self, caller: object, stopped: Callable[[], bool]) -> str | None:
        """Before a sandbox start: None to go ahead, else the outage to fail the task with.

        While a probe is out, waits for its verdict (or until `stopped()`: then None, and the
        caller finds itself stopped)."""
        with self._cond:
            while self._opened_at is not None:
                if self._probe is None:
                    if self._clock() - self._opened_at < self.cooldown:
                        return self._outage()
                    self._probe = caller
                    return None
                if self._probe is caller or stopped():
                    return None
                self._cond.wait(_LOOK)
            return None

    def failed(self, caller: object, why: str) -> None:
        """A start failed (after the backend's own retries)."""
        with self._cond:
            self._failures += 1
            self._last = why
            if self._probe is caller or (
                self._opened_at is None and self._failures >= self.threshold
            ):
                self.opened += self._opened_at is None
                self._opened_at = self._clock()
                self._probe = None
                self._cond.notify_all()

    def succeeded(self) -> None:
        """A runtime started: the service works."""
        with self._cond:
            self._failures = 0
            self._opened_at = self._probe = None
            self._cond.notify_all()

    def release(self, caller: object) -> None:
        """`caller` will not start a sandbox after all (cancelled): another may probe."""
        with self._cond:
            if self._probe is caller:
                self._probe = None
                self._cond.notify_all()

    def _outage(self) -> str:
        return (
            f"the pool stopped starting sandboxes: {self._failures} starts in a row failed "
            f"(the last: {self._last}); it tries again {self.cooldown:g} s after the last "
            "failure (circuit breaker open), so this task did not run"
        )
