"""`%codemode status` (and a bare `%codemode`): backend, isolation, limits, tools, last run."""

from __future__ import annotations

import argparse

from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.serve import serving
from codemode_jupyter.jupyter.commands.usage import magic_arguments
from codemode_jupyter.model.format import format_duration


@magic_arguments("%codemode status")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """Backend, isolation, limits, tools and the last run."""
    session = context.current_session()
    info = dict(session.status())
    info.setdefault("display", context.settings.display)
    info["tools"] = ", ".join(context.tools().tools) or "none"
    last = context.last_result
    info["last_run"] = f"{last.status} ({format_duration(last.duration)})" if last else "none yet"
    if last is not None and last.state_lost:
        info["state"] = "lost in the last run (the runtime was replaced)"
    elif info.get("runtime_alive"):
        info["state"] = "variables kept between cells (clear: %codemode reset, --fresh)"
    else:
        info["state"] = "empty (the next run starts a fresh runtime)"
    info.update(agent_status(context))
    width = max(len(str(key)) for key in info)
    for key, value in info.items():
        print(f"{str(key).ljust(width)}  {value}")


def agent_status(context: CommandContext) -> dict[str, str]:
    """`%codemode serve`'s server and the sessions its agents ran in (each is a named
    session: `%%codemode --session NAME` opens it in a cell)."""
    found = serving(context)
    if found is None:
        return {"mcp_server": "not running (%codemode serve starts one)"}
    described = []
    for name in found.sessions:
        session = context.pool.sessions.get(("named", name))
        last = getattr(session, "last_result", None) if session is not None else None
        state = f"last run {last.status}" if last is not None else "no run yet"
        described.append(f"{name} ({state})")
    return {
        "mcp_server": found.server.url,
        "agent_sessions": (
            ", ".join(described) + "; open one with %%codemode --session NAME"
            if described
            else "none yet (an agent's first program opens one)"
        ),
    }


COMMAND = Command("status", "backend, isolation, limits, tools and the last run", run)
