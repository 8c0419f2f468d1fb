"""Approvals as part of a run's record: which call waited, who decided what, how long it took.

A paused call's timeline entry gets `approval` (`{"decision": "waiting" | "approve" |
"reject" | "return", "by": ..., "reason": ..., "value": ...}`) and, once decided, `waited`:
the seconds a person took, which are left out of the call's `duration` (the tool's own time).
While it waits, the call's state is `waiting` rather than `running`. A call answered with a
value (`return`, stepping a cell) did not run: its result is the stand-in value.

An approval request does not carry the run's call number, so a request is linked to the call
that asks: the newest call of that tool still in flight without a mark (a sync tool asks as
it starts, so that is the one).
"""

from __future__ import annotations

import threading
import time
from typing import Any


class ApprovalMarks:
    """The approvals of one run, by call id. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: dict[int, dict[str, Any]] = {}

    def link(self, running: list[int]) -> int | None:
        """Mark the newest of `running` (ids of calls of the asking tool in flight, oldest
        first) without a mark as waiting; returns its id (None if there is none)."""
        with self._lock:
            free = [call_id for call_id in running if call_id not in self._marks]
            if not free:
                return None
            self._marks[free[-1]] = {"decision": "waiting", "since": time.monotonic()}
            return free[-1]

    def decided(
        self, call_id: int, action: str, by: str, reason: str = "", value: Any = None
    ) -> None:
        with self._lock:
            mark = self._marks.get(call_id)
            if mark is None or mark["decision"] != "waiting":
                return
            mark.update(decision=action, by=by, reason=reason)
            if action == "return":
                mark["value"] = value
            mark["waited"] = time.monotonic() - mark["since"]

    def apply(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The entries with the approvals of their calls (copies where changed)."""
        with self._lock:
            marks = {k: dict(v) for k, v in self._marks.items()}
        return with_approvals(entries, marks)


def with_approvals(
    entries: list[dict[str, Any]], marks: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    shown = []
    for entry in entries:
        mark = marks.get(entry.get("id")) if entry.get("kind") == "call" else None
        if mark is None:
            shown.append(entry)
            continue
        entry = dict(entry)
        if mark["decision"] == "waiting":
            if entry.get("state") == "running":
                entry["state"] = "waiting"
            entry["approval"] = {"decision": "waiting"}
        else:
            approval = {k: mark[k] for k in ("decision", "by", "reason") if mark.get(k)}
            if mark["decision"] == "return":
                approval["stand_in"] = True  # the tool did not run
            entry["approval"] = approval
            waited = float(mark.get("waited", 0.0))
            entry["waited"] = waited
            if isinstance(entry.get("duration"), (int, float)):
                entry["duration"] = max(entry["duration"] - waited, 0.0)
        shown.append(entry)
    return shown
