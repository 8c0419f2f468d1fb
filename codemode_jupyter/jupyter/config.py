"""The `CodeMode` configurable: `%config CodeMode.timeout = 60`, or `c.CodeMode.x` in a config file.

A class of its own, named `CodeMode` because that is the section users write; IPython's
`%config` finds configurables by class name, so the magics class itself could not answer to
`CodeMode.x`. The extension appends the one instance to `shell.configurables`.
"""

from __future__ import annotations

import math
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, TraitError, Unicode, validate
from traitlets.config import Configurable

from codemode_jupyter.backends import BACKENDS

#: Settings that define a sandbox: a cell that changes one of them gets its own session.
SESSION_KEYS = ("backend", "protocol", "network", "memory_mb", "backend_options")


class CodeMode(Configurable):
    """Settings of the `%%codemode` magic (the engine's `CodeMode` is configured from these)."""

    backend = Unicode("local", help="Where programs run: 'local' or 'daytona'.").tag(config=True)
    protocol = Enum(
        ["session", "replay"], "session", help="'session' (run once) or the 'replay' fallback."
    ).tag(config=True)
    timeout = Float(60.0, help="Seconds a cell's program may run.").tag(config=True)
    max_tool_calls = Int(1000, help="Tool calls a cell's program may make.").tag(config=True)
    max_output = Int(
        1_000_000, help="Characters of stdout (and of stderr) a run keeps; the rest is dropped."
    ).tag(config=True)
    network = Bool(False, help="Give the local sandbox network access.").tag(config=True)
    memory_mb = Int(1024, help="Memory limit of the local sandbox, in MiB.").tag(config=True)
    backend_options = Dict(
        help="Extra keyword arguments for the backend, e.g. {'sandbox': 'my-sandbox-id'}."
    ).tag(config=True)
    daytona_api_key = Unicode(
        "", help="Daytona API key; empty means the DAYTONA_API_KEY variable."
    ).tag(config=True)
    daytona_api_url = Unicode(
        "", help="Daytona API URL; empty means DAYTONA_API_URL or Daytona's cloud."
    ).tag(config=True)
    daytona_target = Unicode("", help="Daytona target region; empty means DAYTONA_TARGET.").tag(
        config=True
    )
    daytona_snapshot = Unicode("", help="Snapshot new Daytona sandboxes start from.").tag(
        config=True
    )
    daytona_language = Unicode("python", help="Language label of new Daytona sandboxes.").tag(
        config=True
    )
    daytona_auto_stop_minutes = Int(
        15, help="Idle minutes after which a Daytona sandbox we created stops itself."
    ).tag(config=True)
    daytona_labels = Dict(help="Extra labels for the Daytona sandboxes we create.").tag(config=True)
    display = Enum(
        ["auto", "rich", "text", "widget"],
        "auto",
        help="The run view: 'rich' (one display updated in place, drawn by the JupyterLab "
        "extension), 'text', or 'auto' (rich in a kernel, text in a terminal). 'widget' is the "
        "old name of 'rich'.",
    ).tag(config=True)
    view_output_chars = Int(
        20_000,
        help="Characters of output a live update shows (the newest); the finished run "
        "keeps up to max_output.",
    ).tag(config=True)
    view_updates_per_second = Float(10.0, help="At most this many live-view updates a second.").tag(
        config=True
    )

    # Each setting is checked where it is set: a bad `%config CodeMode.x = ...` raises a
    # TraitError naming the setting and keeps the value it had.

    @validate("backend")
    def _check_backend(self, proposal: Any) -> str:
        if proposal["value"] not in BACKENDS:
            raise TraitError(
                f"CodeMode.backend must be one of {', '.join(BACKENDS)}, not {proposal['value']!r}"
            )
        return proposal["value"]

    @validate("timeout", "view_updates_per_second")
    def _check_positive_seconds(self, proposal: Any) -> float:
        value = proposal["value"]
        if not (value > 0 and math.isfinite(value)):
            name = proposal["trait"].name
            raise TraitError(f"CodeMode.{name} must be a finite number above 0, not {value!r}")
        return value

    @validate("max_tool_calls", "max_output", "memory_mb", "view_output_chars")
    def _check_count(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            name = proposal["trait"].name
            raise TraitError(f"CodeMode.{name} must be 1 or more, not {proposal['value']!r}")
        return proposal["value"]

    @validate("daytona_auto_stop_minutes")
    def _check_minutes(self, proposal: Any) -> int:
        # 0 is Daytona's own "never stop by itself".
        if proposal["value"] < 0:
            raise TraitError(
                f"CodeMode.daytona_auto_stop_minutes must be 0 (never) or more, "
                f"not {proposal['value']!r}"
            )
        return proposal["value"]

    def daytona_options(self) -> dict[str, Any]:
        """The Daytona settings as the backend's keyword arguments (empty ones left out)."""
        options = {
            "api_key": self.daytona_api_key,
            "api_url": self.daytona_api_url,
            "target": self.daytona_target,
            "snapshot": self.daytona_snapshot,
            "language": self.daytona_language,
            "auto_stop_minutes": self.daytona_auto_stop_minutes,
            "labels": dict(self.daytona_labels),
        }
        return {key: value for key, value in options.items() if value not in ("", {}, None)}

    def session_key(self, **overrides: Any) -> tuple[Any, ...]:
        values = {key: getattr(self, key) for key in SESSION_KEYS}
        values.update(overrides)
        values["backend_options"] = repr(sorted(values["backend_options"].items()))
        # Daytona settings define a session only on Daytona: a local one keeps its state.
        uses_daytona = values["backend"] == "daytona"
        daytona = repr(sorted(self.daytona_options().items())) if uses_daytona else ""
        return (*(values[key] for key in SESSION_KEYS), daytona)
