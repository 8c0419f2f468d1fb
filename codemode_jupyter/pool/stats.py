"""A pool's summary: tasks by status, retries, sandboxes, runtimes restarted, tasks the circuit
breaker failed fast, and per-tool call counts and latency percentiles (from every attempt's
tool calls, as the programs saw them: queueing for the sync tool worker included)."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, defaultdict
from typing import Any

from codemode_jupyter.pool.tasks import TaskResult


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of `samples` (seconds), in milliseconds."""
    if not samples:
        return {}
    if len(samples) == 1:
        p50 = p90 = p99 = samples[0]
    else:
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        p50, p90, p99 = cuts[49], cuts[89], cuts[98]
    return {
        "p50_ms": round(p50 * 1000, 3),
        "p90_ms": round(p90 * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
        "max_ms": round(max(samples) * 1000, 3),
    }


class PoolStats:
    """Counters a pool updates from its worker threads; `summary()` reads them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.statuses: Counter[str] = Counter()
        self.retried = 0
        self.attempts = 0
        self.sandboxes_started = 0
        self.sandboxes_replaced = 0
        self.runtimes_restarted = 0  # after a crash, in a sandbox that was still fine
        self.failed_fast = 0  # tasks the open circuit breaker ended before they ran
        self.task_durations: list[float] = []
        self.tool_durations: defaultdict[str, list[float]] = defaultdict(list)
        self.tool_errors: Counter[str] = Counter()

    def sandbox_started(self) -> None:
        with self._lock:
            self.sandboxes_started += 1

    def sandbox_replaced(self) -> None:
        with self._lock:
            self.sandboxes_replaced += 1

    def runtime_restarted(self) -> None:
        with self._lock:
            self.runtimes_restarted += 1

    def task_failed_fast(self) -> None:
        with self._lock:
            self.failed_fast += 1

    def attempt(self, calls: list[Any]) -> None:
        """One attempt ended, with these tool calls."""
        with self._lock:
            self.attempts += 1
            for call in calls:
                self.tool_durations[call.name].append(call.duration)
                if call.error is not None:
                    self.tool_errors[call.name] += 1

    def task(self, task: TaskResult) -> None:
        with self._lock:
            self.statuses[task.status] += 1
            self.retried += task.retried
            if task.result is not None:
                self.task_durations.append(task.duration)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            done = sum(self.statuses.values())
            elapsed = time.monotonic() - self.started
            return {
                "tasks": done,
                "status": dict(self.statuses),
                "retried": self.retried,
                "attempts": self.attempts,
                "sandboxes_started": self.sandboxes_started,
                "sandboxes_replaced": self.sandboxes_replaced,
                "runtimes_restarted": self.runtimes_restarted,
                "failed_fast": self.failed_fast,
                "elapsed_s": round(elapsed, 3),
                "tasks_per_s": round(done / elapsed, 2) if elapsed > 0 else 0.0,
                "task_duration": percentiles(self.task_durations),
                "tools": {
                    name: {
                        "calls": len(samples),
                        "errors": self.tool_errors[name],
                        **percentiles(samples),
                    }
                    for name, samples in sorted(self.tool_durations.items())
                },
            }
