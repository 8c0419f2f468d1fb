"""`cleanup_orphans`: delete the sandboxes codemode-jupyter made that no live session uses."""

from __future__ import annotations

import os
from dataclasses import dataclass

from codemode_jupyter.backends.daytona.backend import LIVE, DaytonaBackend
from codemode_jupyter.backends.daytona.errors import is_not_found
from codemode_jupyter.backends.daytona.options import (
    LABEL_CREATOR,
    LABEL_HOST,
    LABEL_PID,
    host_label,
)
from codemode_jupyter.backends.daytona.sandboxes import list_labelled, sandbox_state
from codemode_jupyter.backends.processes import pid_alive


@dataclass
class OrphanSandbox:
    """A sandbox `cleanup_orphans` found: what it is and what was done with it."""

    id: str
    state: str
    labels: dict[str, str]
    deleted: bool
    reason: str


def cleanup_orphans(
    *,
    api_key: str | None = None,
    api_url: str | None = None,
    target: str | None = None,
    dry_run: bool = False,
    all_hosts: bool = False,
    timeout: float = 120.0,
) -> list[OrphanSandbox]:
    """Find sandboxes labelled by codemode-jupyter that no live session uses, and delete them.

    A sandbox is kept if a backend in this process uses it, or if it was created on this host
    by a process that is still running. Sandboxes from other hosts are kept unless
    `all_hosts`. With `dry_run`, nothing is deleted.
    """
    backend = DaytonaBackend(api_key=api_key, api_url=api_url, target=target)
    LIVE.discard(backend)
    try:
        return backend._run(_cleanup(backend, dry_run, all_hosts), timeout, "cleaning up")
    finally:
        backend.close()


async def _cleanup(backend: DaytonaBackend, dry_run: bool, all_hosts: bool) -> list[OrphanSandbox]:
    client = await backend._daytona()
    in_use = {str(b._sandbox.id) for b in list(LIVE) if b._sandbox is not None}
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
