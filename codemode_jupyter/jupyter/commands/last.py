"""`%codemode last [--all]`: the last run's tool calls with args, results and timings."""

from __future__ import annotations

import argparse
from typing import Any

from codemode_jupyter.jupyter.commands.base import Command, CommandContext
from codemode_jupyter.jupyter.commands.usage import argument, magic_arguments
from codemode_jupyter.model.format import clip, format_duration, plural
from codemode_jupyter.model.result import RunResult

#: `%codemode last` shows this many calls from the start and from the end of a long run.
LAST_HEAD = LAST_TAIL = 10


@magic_arguments("%codemode last")
@argument("--all", action="store_true", help="every call, not head and tail")
def run(context: CommandContext, args: argparse.Namespace) -> None:
    """The last run's tool calls with timings."""
    result = context.last_result
    if result is None:
        print("codemode: no run yet")
        return
    # The run's timeline has what the result does not: who decided a paused call, the wait.
    record = next((r for r in reversed(context.runs) if r.result is result), None)
    entries = record.entries if record is not None else None
    print(describe_run(result, everything=args.all, entries=entries))


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


COMMAND = Command(
    "last", "the last run's tool calls with timings (--all: every call)", run, "[--all]"
)
