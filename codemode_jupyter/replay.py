"""The replay fallback: for sandboxes that offer only a stateless one-shot `code_run`.

Each execution replays the results known so far; the first unknown call stops the program and
is reported; the host runs it and executes the whole program again. N sequential calls cost N+1
executions, output repeats and side effects in the program happen again: that is why single
execution is the default and this is only a fallback (and the benchmarks' baseline).
"""

from __future__ import annotations

import base64
import secrets
import time

from . import events as ev
from .backends import Backend
from .backends.base import runtime_sources
from .calls import AsyncRunner, finish_call, prepare_call
from .output import CappedText
from .result import RunError, RunResult, ToolCall
from .runtime import codemode_protocol as P
from .tools import ToolRegistry

_BOOTSTRAP = """\
import base64, os, runpy, shutil, sys, tempfile
home = tempfile.mkdtemp(prefix="codemode-replay-")
try:
    for name, data in {files!r}.items():
        with open(os.path.join(home, name), "wb") as f:
            f.write(base64.b64decode(data))
    os.environ["CODEMODE_REPLAY_B64"] = {request!r}
    sys.argv = [os.path.join(home, "codemode_runtime.py"), "--replay", *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    shutil.rmtree(home, ignore_errors=True)
"""


def bootstrap_program(request: dict) -> str:
    """A self-contained program that unpacks the runtime and runs one replay execution."""
    files = {name: base64.b64encode(data).decode() for name, data in runtime_sources().items()}
    encoded = base64.b64encode(P.encode(request)).decode()
    return _BOOTSTRAP.format(files=files, request=encoded)


def run_replay(backend: Backend, code: str, registry: ToolRegistry, limits: tuple[float, int],
               on_event: ev.EventCallback | None, max_output: int,
               async_runner: AsyncRunner) -> RunResult:
    """Run `code` with the need_tools/replay protocol, one execution per tool round."""
    del async_runner  # calls run one at a time here, async tools included
    timeout, max_calls = limits
    started = time.perf_counter()
    emit = on_event or (lambda event: None)
    status = backend.status()
    emit(ev.RunStarted(status.backend, status.isolation, True))
    known: list[dict] = []
    calls: list[ToolCall] = []
    executions = 0
    while True:
        remaining = started + timeout - time.perf_counter()
        if remaining <= 0:
            return _end(emit, status, started, calls, executions, "timeout",
                        RunError("Timeout", f"the program ran past its {timeout:g} s timeout"))
        marker = f"@@codemode-{secrets.token_hex(8)}@@"
        request = {"t": "replay", "code": code, "tools": registry.specs(), "results": known,
                   "marker": marker}
        shot = backend.run_oneshot(bootstrap_program(request), timeout=remaining)
        executions += 1
        output, found, tail = shot.output.rpartition("\n" + marker)
        if not found:
            return _end(emit, status, started, calls, executions, "crashed",
                        RunError("RuntimeCrashed", f"the execution ended without a result "
                                 f"(exit code {shot.exit_code})"
                                 + (f": {shot.error}" if shot.error else "")),
                        stdout=shot.output)
        outcome = P.decode(tail.strip().encode())
        if outcome["t"] != "need_tools":
            return _done(emit, status, started, calls, executions, outcome, output, max_output)
        for wanted in outcome["calls"]:
            if len(calls) >= max_calls:
                return _end(emit, status, started, calls, executions, "limit",
                            RunError("ToolCallLimit",
                                     f"the program made more than {max_calls} tool calls"))
            frame = {"id": len(calls) + 1, **wanted}
            known.append(_call(registry, frame, len(calls) + 1, calls, emit))


def _call(registry: ToolRegistry, frame: dict, round_no: int, calls: list[ToolCall],
          emit: ev.EventCallback) -> dict:
    prepared = prepare_call(registry, frame, round_no)
    call = prepared.call
    calls.append(call)
    emit(ev.ToolCallStarted(call.id, call.name, call.args, call.round))
    finish_call(call, prepared.run_sync())
    emit(ev.ToolCallFinished(call.id, call.name, call.round, call.result, call.error,
                             call.duration))
    if call.error is None:
        return {"ok": True, "value": call.result}
    return {"ok": False, "error": {"type": call.error.type, "message": call.error.message}}


def _done(emit: ev.EventCallback, status, started: float, calls: list[ToolCall],
          executions: int, outcome: dict, output: str, max_output: int) -> RunResult:
    stdout = CappedText(max_output)
    stdout.append(output)
    if output:
        emit(ev.Output("stdout", output))
    raw = outcome.get("error")
    error = RunError(raw["type"], raw["message"], raw.get("traceback", "")) if raw else None
    return _end(emit, status, started, calls, executions, "ok" if outcome.get("ok") else "error",
                error, stdout=stdout.text(), value=outcome.get("value"),
                value_repr=outcome.get("repr"), dropped=stdout.dropped)


def _end(emit: ev.EventCallback, status, started: float, calls: list[ToolCall], executions: int,
         state: str, error: RunError | None, stdout: str = "", value: object = None,
         value_repr: str | None = None, dropped: int = 0) -> RunResult:
    result = RunResult(ok=state == "ok", status=state, stdout=stdout, value=value,
                       value_repr=value_repr, error=error, tool_calls=calls, rounds=len(calls),
                       duration=time.perf_counter() - started, stdout_dropped=dropped,
                       backend=status.backend, isolation=status.isolation,
                       executions=executions)
    emit(ev.RunFinished(result))
    return result
