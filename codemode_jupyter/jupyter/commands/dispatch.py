"""`%codemode COMMAND ...`: one function per command, each with its parser (usage.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from codemode_jupyter.jupyter.commands.usage import COMMAND_HELP, command_parser, help_text
from codemode_jupyter.jupyter.debugging import post_mortem
from codemode_jupyter.model.format import clip, format_duration, plural
from codemode_jupyter.model.result import RunResult

if TYPE_CHECKING:
    from codemode_jupyter.jupyter.commands.context import CommandContext

#: backend_options that say which Daytona account to use (what `cleanup` needs of them).
DAYTONA_ACCOUNT = ("api_key", "api_url", "target")
#: `%codemode last` shows this many calls from the start and from the end of a long run.
LAST_HEAD = LAST_TAIL = 10

Command = Callable[["CommandContext", argparse.Namespace], None]


def run_command(magics: CommandContext, line: str) -> None:
    """Parse `line` (`NAME [args]`; empty: status) and run the command."""
    name, _, rest = line.strip().partition(" ")
    name = name or "status"
    if name not in COMMANDS and name not in RAW_COMMANDS:
        raise UsageError(
            f"%codemode: unknown command {name!r}; one of: {', '.join(COMMAND_HELP)} "
            "(or %%codemode as a cell magic to run a program; %codemode help says more)"
        )
    if name in RAW_COMMANDS:  # they parse their own words
        RAW_COMMANDS[name](magics, rest)
        return
    COMMANDS[name](magics, command_parser(name).parse_line(rest))


def tools(magics: CommandContext, args: argparse.Namespace) -> None:
    found = magics.tools()
    count = len(found.tools)
    print(f"{plural(count, 'tool')}:" if count else "no tools defined")
    for tool in found.tools.values():
        prefix = "async " if tool.is_async else ""
        print(f"  {prefix}{tool.name}{tool.signature}")
        if tool.description:
            print(f"      {tool.description.splitlines()[0]}")
    for name, why in found.skipped.items():
        print(f"  (not a tool: {name}: {why})")


def prompt(magics: CommandContext, args: argparse.Namespace) -> None:
    session = magics.current_session()
    session.set_tools(magics.tools().tool_list())
    print(session.system_prompt())


def status(magics: CommandContext, args: argparse.Namespace) -> None:
    session = magics.current_session()
    info = dict(session.status())
    info.setdefault("display", magics.settings.display)
    info["tools"] = ", ".join(magics.tools().tools) or "none"
    last = magics.last_result
    info["last_run"] = f"{last.status} ({format_duration(last.duration)})" if last else "none yet"
    if last is not None and last.state_lost:
        info["state"] = "lost in the last run (the runtime was replaced)"
    elif info.get("runtime_alive"):
        info["state"] = "variables kept between cells (clear: %codemode reset, --fresh)"
    else:
        info["state"] = "empty (the next run starts a fresh runtime)"
    info.update(agent_status(magics))
    width = max(len(str(key)) for key in info)
    for key, value in info.items():
        print(f"{str(key).ljust(width)}  {value}")


def agent_status(magics: CommandContext) -> dict[str, str]:
    """`%codemode serve`'s server and the sessions its agents ran in (each is a named
    session: `%%codemode --session NAME` opens it in a cell)."""
    from codemode_jupyter.jupyter.commands.serve import serving

    found = serving(magics)
    if found is None:
        return {"mcp_server": "not running (%codemode serve starts one)"}
    described = []
    for name in found.sessions:
        session = magics.pool.sessions.get(("named", name))
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


def reset(magics: CommandContext, args: argparse.Namespace) -> None:
    magics.current_session().reset()
    print("codemode: the session's namespace is reset")


def last(magics: CommandContext, args: argparse.Namespace) -> None:
    result = magics.last_result
    if result is None:
        print("codemode: no run yet")
        return
    # The run's timeline has what the result does not: who decided a paused call, the wait.
    record = next((r for r in reversed(magics.runs) if r.result is result), None)
    entries = record.entries if record is not None else None
    print(describe_run(result, everything=args.all, entries=entries))


def debug(magics: CommandContext, args: argparse.Namespace) -> None:
    post_mortem(magics.shell, magics.last_result)


def attach(magics: CommandContext, args: argparse.Namespace) -> None:
    from codemode_jupyter.backends import require_backend

    require_backend("daytona")  # no SDK: say which extra to install, before switching
    settings = magics.settings
    settings.backend = "daytona"
    settings.backend_options = {**settings.backend_options, "sandbox": args.sandbox_id}
    print(
        f"codemode: %%codemode cells now run in Daytona sandbox {args.sandbox_id} "
        "(attached: this kernel never deletes it)"
    )


def cleanup(magics: CommandContext, args: argparse.Namespace) -> None:
    from codemode_jupyter.backends import require_backend

    require_backend("daytona")  # no SDK: say which extra to install, not "no API key"
    from codemode_jupyter.backends.daytona.backend import cleanup_orphans

    settings = magics.settings
    configured = {**settings.daytona_options(), **settings.backend_options}
    account = {k: v for k, v in configured.items() if k in DAYTONA_ACCOUNT}
    found = cleanup_orphans(dry_run=args.dry_run, all_hosts=args.all_hosts, **account)
    if not found:
        print("codemode: no sandboxes made by codemode-jupyter")
    for orphan in found:
        print(f"{orphan.id}  {orphan.state:<10}  {orphan.reason}")


def show_help(magics: CommandContext, args: argparse.Namespace) -> None:
    print(help_text(examples=True))


COMMANDS: dict[str, Command] = {
    "tools": tools,
    "prompt": prompt,
    "status": status,
    "reset": reset,
    "last": last,
    "debug": debug,
    "attach": attach,
    "cleanup": cleanup,
    "help": show_help,
}


def describe_run(
    result: RunResult,
    *,
    everything: bool = False,
    entries: list[dict[str, Any]] | None = None,
) -> str:
    """`%codemode last`: the tool calls with args, result or error, and timing.

    A long run shows its first and last calls and says how many are left out, unless
    `everything`. With the run's timeline `entries`, a paused call says what was decided
    and how long it waited, apart from its own duration, and a stand-in value says the tool
    did not run.
    """
    approvals = {e["id"]: e for e in entries or () if e.get("kind") == "call" and e.get("approval")}
    lines = [
        f"last run: {result.status} in {format_duration(result.duration)}, "
        f"{plural(len(result.tool_calls), 'tool call')} in {plural(result.rounds, 'round')} "
        f"({result.backend}, isolation {result.isolation})"
    ]
    calls = result.tool_calls
    skipped = 0
    if not everything and len(calls) > LAST_HEAD + LAST_TAIL + 1:
        skipped = len(calls) - LAST_HEAD - LAST_TAIL
        calls = [*calls[:LAST_HEAD], *calls[-LAST_TAIL:]]
    for index, call in enumerate(calls):
        if skipped and index == LAST_HEAD:
            lines.append(f"  … {plural(skipped, 'more call')} (%codemode last --all shows them)")
        head = f"  #{call.id} round {call.round}  {call.name}({_args(call.args)})"
        paused = approvals.get(call.id)
        if paused is None:
            lines.append(f"{head}  [{format_duration(call.duration)}]")
        else:
            took = format_duration(paused.get("duration", call.duration))
            waited = format_duration(paused.get("waited", 0.0))
            lines.append(f"{head}  [{took}; waited {waited} for a decision]")
        if paused is not None and paused["approval"].get("stand_in"):
            lines.append(f"      = {clip(repr(call.result), 500)} (a stand-in value; not run)")
        elif call.error is not None:
            lines.append(f"      raised {call.error}")
            if call.error.traceback:
                lines.extend("      " + t for t in call.error.traceback.rstrip().split("\n"))
        else:
            lines.append(f"      -> {clip(repr(call.result), 500)}")
    if result.error is not None:
        lines.append(f"  program: {result.error}")
    return "\n".join(lines)


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={clip(repr(v), 200)}" for k, v in args.items())


def serve(magics: CommandContext, rest: str) -> None:
    from codemode_jupyter.jupyter.commands.serve import serve as start_or_stop

    start_or_stop(magics, rest)


def pip(magics: CommandContext, rest: str) -> None:
    from codemode_jupyter.jupyter.commands.pip import PipUsageError, pip_command

    try:
        pip_command(magics.current_session(), rest)
    except PipUsageError as exc:
        raise UsageError(str(exc)) from None


#: Commands that take the rest of the line as it is.
RAW_COMMANDS: dict[str, Callable[[CommandContext, str], None]] = {"serve": serve, "pip": pip}
assert set(COMMANDS) | set(RAW_COMMANDS) == set(COMMAND_HELP), "every command has its help"
