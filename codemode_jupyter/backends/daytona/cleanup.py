"""Orphans: the sandboxes codemode-jupyter made that no live session uses, found and deleted.

`DaytonaBackend.cleanup_orphans` (and `cleanup_orphans` in backend.py) drive it with a backend
of their own; this module knows the rules, not how a backend is made."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from codemode_jupyter.backends.daytona.errors import is_not_found
from codemode_jupyter.backends.daytona.options import (
    LABEL_CREATOR,
    LABEL_HOST,
    LABEL_PID,
    host_label,
)
from codemode_jupyter.backends.daytona.sandboxes import list_labelled, sandbox_state
from codemode_jupyter.backends.processes import pid_alive

if TYPE_CHECKING:
    from codemode_jupyter.backends.daytona.backend import DaytonaBackend


@dataclass
class OrphanSandbox:
    """A sandbox `cleanup_orphans` found: what it is and what was done with it."""

    id: str
    state: str
    labels: dict[str, str]
    deleted: bool
    reason: str


async def find_orphans(
    backend: DaytonaBackend, in_use: set[str], dry_run: bool, all_hosts: bool
) -> list[OrphanSandbox]:
    """The labelled sandboxes, each deleted unless a live session uses it (`in_use`: the ids
    this process's backends hold) or `dry_run`."""
    client = await backend._daytona()
    found = []
    listed = await backend.call(
        "list sandboxes", lambda: list_labelled(client, {LABEL_CREATOR: "true"})
    )
    for sandbox in listed:
        labels = dict(sandbox.labels or {})
        keep = _keep_reason(str(sandbox.id), labels, in_use, all_hosts)
        deleted = False
        if keep is None and not dry_run:
            try:
                await backend.call("delete a sandbox", lambda sandbox=sandbox: sandbox.delete())
                deleted = True
            except Exception as exc:
                if not is_not_found(exc):
                    keep = f"could not delete: {exc}"
                deleted = keep is None
        found.append(
            OrphanSandbox(
                str(sandbox.id),
                sandbox_state(sandbox),
                labels,
                deleted,
                keep or ("deleted" if deleted else "orphan (dry run)"),
            )
        )
    return found


def _keep_reason(
    sandbox_id: str, labels: dict[str, str], in_use: set[str], all_hosts: bool
) -> str | None:
    if sandbox_id in in_use:
        return "in use by this kernel"
    if labels.get(LABEL_HOST) == host_label():
        pid = labels.get(LABEL_PID, "")
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            return f"in use by process {pid} on this host"
    elif not all_hosts:
        return f"created on another host ({labels.get(LABEL_HOST, '?')})"
    return None
