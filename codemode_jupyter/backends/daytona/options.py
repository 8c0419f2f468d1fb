"""The Daytona backend's options, its Jupyter settings, and the labels on its sandboxes."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from codemode_jupyter.backends.base import BackendOptions, Setting
from codemode_jupyter.backends.base import session_label as front_end_label
from codemode_jupyter.backends.daytona.retries import RetryPolicy

#: Labels on every sandbox this backend creates; `cleanup_orphans` finds them by the first.
LABEL_CREATOR = "codemode-jupyter"
LABEL_SESSION = "codemode-jupyter-session"
LABEL_HOST = "codemode-jupyter-host"
LABEL_PID = "codemode-jupyter-pid"
#: Unique to one backend: how it finds sandboxes it created but does not use.
LABEL_BACKEND = "codemode-jupyter-backend"

#: Where the SDK goes when neither api_url nor DAYTONA_API_URL says otherwise.
DEFAULT_API_URL = "https://app.daytona.io/api"
API_KEY_HELP = (
    "set DAYTONA_API_KEY to a valid key (https://app.daytona.io/dashboard/keys), "
    "or pass api_key=..."
)


@dataclass(frozen=True)
class DaytonaOptions(BackendOptions):
    """Options of the Daytona backend: one sandbox, created on first use or attached.

    Credentials left out come from DAYTONA_API_KEY / DAYTONA_API_URL / DAYTONA_TARGET when
    the backend is made.
    """

    backend: ClassVar[str] = "daytona"
    shared: ClassVar[frozenset[str]] = frozenset({"sandbox"})
    settings: ClassVar[Mapping[str, Setting]] = {
        "api_key": Setting("Daytona API key; empty means the DAYTONA_API_KEY variable."),
        "api_url": Setting("Daytona API URL; empty means DAYTONA_API_URL or Daytona's cloud."),
        "target": Setting("Daytona target region; empty means DAYTONA_TARGET."),
        "snapshot": Setting("Snapshot new Daytona sandboxes start from."),
        "language": Setting("Language label of new Daytona sandboxes.", "python"),
        "auto_stop_minutes": Setting(
            "Idle minutes after which a Daytona sandbox we created stops itself (0: never).",
            15,
            minimum=0,
        ),
        "labels": Setting("Extra labels for the Daytona sandboxes we create.", {}),
    }
    #: The settings that say which account to use (what `cleanup_orphans` takes).
    account: ClassVar[tuple[str, ...]] = ("api_key", "api_url", "target")

    api_key: str | None = None
    """The API key (default: DAYTONA_API_KEY)."""
    api_url: str | None = None
    """The API's URL (default: DAYTONA_API_URL, else Daytona's cloud)."""
    target: str | None = None
    """The target region (default: DAYTONA_TARGET, else the account's)."""
    sandbox: Any = None
    """A sandbox the caller owns to attach to (a Sandbox/AsyncSandbox or its id): used, never
    deleted. None: create one, deleted on close."""
    snapshot: str | None = None
    """The snapshot a new sandbox starts from (None: Daytona's default)."""
    language: str = "python"
    """The language label of a new sandbox."""
    auto_stop_minutes: int = 15
    """Idle minutes after which Daytona stops a sandbox we created."""
    auto_delete_minutes: int | None = None
    """Minutes after stopping after which Daytona deletes a sandbox we created (None: never)."""
    labels: Mapping[str, str] | None = None
    """Labels added to those of every sandbox we create (see LABEL_*)."""
    session_label: str | None = None
    """The session label of our sandboxes (default: what the front end named the session, in
    Jupyter the kernel's id; else a random one)."""
    retry: RetryPolicy | None = None
    """How every request is bounded and retried (None: RetryPolicy())."""
    create_timeout: float = 120.0
    """Seconds a sandbox may take to be created or started."""
    preview_expires: int = 3600
    """Seconds a signed preview link stays valid."""


def sandbox_id(sandbox: Any) -> str | None:
    """The id of the sandbox `sandbox=` names (None: create one)."""
    if sandbox is None:
        return None
    if isinstance(sandbox, str):
        return sandbox
    sandbox_id = getattr(sandbox, "id", None)
    if not sandbox_id:
        raise TypeError("sandbox= takes a daytona Sandbox/AsyncSandbox or a sandbox id")
    return str(sandbox_id)


def host_label() -> str:
    """This host, as a label value."""
    return socket.gethostname()[:63]  # label values are at most 63 characters


def default_labels(session_label: str | None = None) -> dict[str, str]:
    """The labels that mark a sandbox as ours: creator, kernel/session, host and process."""
    return {
        LABEL_CREATOR: "true",
        LABEL_SESSION: session_label or front_end_label() or uuid.uuid4().hex[:12],
        LABEL_HOST: host_label(),
        LABEL_PID: str(os.getpid()),
    }
