"""The `CodeMode` configurable: `%config CodeMode.timeout = 60`, or `c.CodeMode.x` in a config file.

A class of its own, named `CodeMode` because that is the section users write; IPython's
`%config` finds configurables by class name, so the magics class itself could not answer to
`CodeMode.x`. The extension appends the one instance to `shell.configurables`.
"""

from __future__ import annotations

import math
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, TraitError, TraitType, Unicode, validate
from traitlets.config import Configurable

from codemode_jupyter.backends import BACKENDS, DEFAULT_BACKEND, Setting, options_class

#: Settings that define a sandbox: a cell that changes one of them gets its own session.
SESSION_KEYS = ("backend", "protocol", "network", "memory_mb", "backend_options")
_TRAITS: dict[type, type[TraitType]] = {
    str: Unicode,
    bool: Bool,
    int: Int,
    float: Float,
    dict: Dict,
}


def setting_name(backend: str, option: str) -> str:
    """The Jupyter setting of a backend's option: `<backend>_<option>`."""
    return f"{backend}_{option}"


def _trait(setting: Setting) -> TraitType:
    trait = _TRAITS[type(setting.default)]
    return trait(setting.default, help=setting.help).tag(config=True)


def _minimum_check(minimums: dict[str, int | float]) -> Any:
    """A validator of the backend settings that have a least value (`Setting.minimum`)."""

    @validate(*minimums)
    def _check_minimum(self: Configurable, proposal: Any) -> Any:
        name, value = proposal["trait"].name, proposal["value"]
        if value < minimums[name]:
            raise TraitError(f"CodeMode.{name} must be {minimums[name]} or more, not {value!r}")
        return value

    return _check_minimum


def _backend_settings() -> type[Configurable]:
    """The settings each backend's options class describes (`BackendOptions.settings`), as
    traits of a base class: `daytona_api_key` is the Daytona backend's `api_key`."""
    settings = {
        setting_name(name, option): setting
        for name in BACKENDS
        for option, setting in options_class(name).settings.items()
    }
    members: dict[str, Any] = {key: _trait(setting) for key, setting in settings.items()}
    minimums = {key: s.minimum for key, s in settings.items() if s.minimum is not None}
    if minimums:
        members["_check_minimum"] = _minimum_check(minimums)
    return type("BackendSettings", (Configurable,), members)


class CodeMode(_backend_settings()):  # type: ignore[misc]
    """Settings of the `%%codemode` magic (the engine's `CodeMode` is configured from these)."""

    backend = Unicode(
        DEFAULT_BACKEND, help="Where programs run: " + " or ".join(map(repr, BACKENDS)) + "."
    ).tag(config=True)
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

    def backend_settings(self, backend: str | None = None) -> dict[str, Any]:
        """The settings of `backend` (default: the configured one) as its options' keyword
        arguments, empty ones left out; {} for a name no backend has (opening it says so)."""
        name = backend or self.backend
        if name not in BACKENDS:
            return {}
        values = {
            option: getattr(self, setting_name(name, option))
            for option in options_class(name).settings
        }
        return {key: value for key, value in values.items() if value not in ("", {}, None)}

    def session_key(self, **overrides: Any) -> tuple[Any, ...]:
        values = {key: getattr(self, key) for key in SESSION_KEYS}
        values.update(overrides)
        values["backend_options"] = repr(sorted(values["backend_options"].items()))
        # A backend's own settings define a session only on that backend: another keeps its state.
        own = repr(sorted(self.backend_settings(values["backend"]).items()))
        return (*(values[key] for key in SESSION_KEYS), own)
