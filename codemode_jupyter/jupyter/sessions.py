"""The engine sessions of one kernel: one per distinct sandbox setting, opened on first use.

A cell that changes backend, network, memory or backend options gets its own session (its own
sandbox); budgets (timeout, tool calls, output) apply to the existing one.
"""

from __future__ import annotations

import sys
from typing import Any

from codemode_jupyter.jupyter.config import CodeMode as Settings

#: Settings that are a run's budgets: changed between cells without a new sandbox.
BUDGETS = ("timeout", "max_tool_calls", "max_output")


def session_options(
    settings: Settings, backend: str | None = None, network: bool | None = None
) -> dict[str, Any]:
    """The engine's keyword arguments (a CodeMode's, a Pool's sandboxes') that the settings
    give, with a cell's `--backend` and `--network`: the one mapping of settings to sessions."""
    name = backend or settings.backend
    options: dict[str, Any] = {
        "backend": name,
        "protocol": settings.protocol,
        "timeout": settings.timeout,
        "max_tool_calls": settings.max_tool_calls,
        "max_output": settings.max_output,
        "network": settings.network,
        "memory_mb": settings.memory_mb,
        **settings.backend_settings(name),  # the chosen backend's own (`daytona_api_key`...)
        **settings.backend_options,
    }
    if backend:
        options["backend"] = backend
    if network:
        options["network"] = True
    return options


class SessionPool:
    """Engine sessions keyed by the settings that define their sandbox."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: dict[tuple[Any, ...], Any] = {}

    def get(self, backend: str | None = None, network: bool | None = None) -> Any:
        """The session for these overrides of the settings, opened if needed."""
        overrides: dict[str, Any] = {}
        if backend:
            overrides["backend"] = backend
        if network:
            overrides["network"] = True
        key = self.settings.session_key(**overrides)
        session = self.sessions.get(key)
        if session is None:
            session = self._open(overrides)
            self.sessions[key] = session
        else:
            self._apply_budgets(session)
        return session

    def named(self, name: str) -> Any:
        """The session called `name` (`%%codemode --session NAME`, an agent's session): its
        own namespace and sandbox, made with the settings on first use."""
        key = ("named", name)
        session = self.sessions.get(key)
        if session is None or getattr(session, "_closed", False):
            session = self.sessions[key] = self._open({})
        else:
            self._apply_budgets(session)
        return session

    def _open(self, overrides: dict[str, Any]) -> Any:
        from codemode_jupyter.engine.session import CodeMode as Engine

        return Engine(**session_options(self.settings, **overrides))

    def _apply_budgets(self, session: Any) -> None:
        # Budgets may change between cells (%config) without starting a new sandbox.
        for name in BUDGETS:
            if hasattr(session, name):
                setattr(session, name, getattr(self.settings, name))

    def close(self) -> None:
        """Close every session (kernel shutdown, %unload_ext). Idempotent."""
        sessions, self.sessions = list(self.sessions.values()), {}
        for session in sessions:
            try:
                session.close()
            except Exception as exc:
                print(f"codemode: closing a session failed: {exc}", file=sys.stderr)
