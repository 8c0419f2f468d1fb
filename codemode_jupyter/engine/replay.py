"""The replay fallback: for sandboxes that offer only a stateless one-shot `code_run`.

Each execution replays the results known so far; the first unknown call stops the program and
is reported; the host runs it and executes the whole program again. N sequential calls cost N+1
executions, output repeats and side effects in the program happen again: that is why single
execution is the default and this is only a fallback (and the benchmarks' baseline).
"""

from __future__ import annotations

import base64
import functools
import os
import time
import zlib

from codemode_jupyter.backends import Backend
from codemode_jupyter.backends.base import runtime_sources
from codemode_jupyter.engine.calls import finish_call, prepare_call
from codemode_jupyter.engine.run_state import Outcome, RunState
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.result import RunError
from codemode_jupyter.runtime import codemode_protocol as P
from codemode_jupyter.tools.tool import ToolRegistry

_BOOTSTRAP = """\
import base64, os, runpy, shutil, sys, tempfile, zlib
home = tempfile.mkdtemp(prefix="codemode-replay-")
try:
    for name, data in {files!r}.items():
        with open(os.path.join(home, name), "wb") as f:
            f.write(zlib.decompress(base64.b64decode(data)))
    os.environ["CODEMODE_REPLAY_B64"] = {request!r}
    sys.argv = [os.path.join(home, "codemode_runtime.py"), "--replay", *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    shutil.rmtree(home, ignore_errors=True)
"""


def bootstrap_program(request: dict) -> str:
    """A self-contained program that unpacks the runtime and runs one replay execution (the
    runtime's files compressed: a quarter of the size, for each execution's request)."""
    files = _packed_runtime()
    encoded = base64.b64encode(P.encode(request)).decode()
    return _BOOTSTRAP.format(files=files, request=encoded)


@functools.lru_cache(maxsize=1)  # the same files for every execution of a process
def _packed_runtime() -> dict[str, str]:
    return {
        name: base64.b64encode(zlib.compress(data, 9)).decode()
        for name, data in runtime_sources().items()
    }


def run_replay(
    backend: Backend,
    code: str,
    registry: ToolRegistry,
    limits: tuple[float, int],
    run: RunState,
    inputs: dict | None = None,
) -> Outcome:
    """Run `code` with the need_tools/replay protocol, one execution per tool round, recording
    in `run`; return how it ended. `inputs` are bound as variables before `code` runs."""
    timeout, max_calls = limits
    run.executions = 0
    known: list[dict] = []
    while True:
        remaining = run.started + timeout - time.perf_counter()
        if remaining <= 0:
            return Outcome(
                "timeout", RunError("Timeout", f"the program ran past its {timeout:g} s timeout")
            )
        marker = f"@@codemode-{os.urandom(8).hex()}@@"
        request = {
            "t": "replay",
            "code": code,
            "tools": registry.specs(),
            "results": known,
            "marker": marker,
        }
        if inputs:
            request["inputs"] = inputs
        shot = backend.run_oneshot(bootstrap_program(request), timeout=remaining)
        run.executions += 1
        output, found, tail = shot.output.rpartition("\n" + marker)
        if not found:
            run.stdout.append(shot.output)
            return Outcome(
                "crashed",
                RunError(
                    "RuntimeCrashed",
                    f"the execution ended without a result (exit code "
                    f"{shot.exit_code})" + (f": {shot.error}" if shot.error else ""),
                ),
            )
        outcome = P.decode(tail.strip().encode())
        if outcome["t"] != "need_tools":
            if output:
                run.output(P.STDOUT, output)
            return Outcome.from_done(outcome)
        for wanted in outcome["calls"]:
            if len(run.calls) >= max_calls:
                return Outcome(
                    "limit",
                    RunError("ToolCallLimit", f"the program made more than {max_calls} tool calls"),
                )
            known.append(_call(registry, {"id": len(run.calls) + 1, **wanted}, run))


def _call(registry: ToolRegistry, frame: dict, run: RunState) -> dict:
    """Run one call the program wants (each is a round of its own); the reply to replay."""
    run.rounds += 1
    prepared = prepare_call(registry, frame, run.rounds)
    call = prepared.call
    run.calls.append(call)
    run.emit(ev.ToolCallStarted(call.id, call.name, call.args, call.round))
    finish_call(call, prepared.run_sync())
    run.emit(
        ev.ToolCallFinished(call.id, call.name, call.round, call.result, call.error, call.duration)
    )
    if call.error is None:
        return {"ok": True, "value": call.result}
    return {"ok": False, "error": {"type": call.error.type, "message": call.error.message}}
