"""The kernel side of the `codemode.tools` comm, for the JupyterLab Tools panel.

Protocol (docs/ARCHITECTURE.md): the panel opens a comm to target `codemode.tools` and sends
`{"op": "list"}`, `{"op": "call", ...}` or `{"op": "runs"}`; the kernel replies, and pushes
`tools` after any cell that changed the tool set and `runs` after each `%%codemode` run.
Comm messages are handled on the kernel's main thread, so a tool called from the panel runs
where tools always run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from codemode_jupyter.jupyter.discovery import Discovery
from codemode_jupyter.jupyter.views.tool_output import ToolOutput, capture
from codemode_jupyter.model.format import clip
from codemode_jupyter.model.result import RunResult
from codemode_jupyter.tools.tracebacks import tool_traceback

TARGET = "codemode.tools"
#: Characters of what a tool called from the panel printed that its reply carries.
PRINTED_CHARS = 100_000


def _jsonable(value: Any) -> Any:
    """`value` if it survives JSON, else its repr (a panel shows it; it must not break the comm)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def tool_specs(found: Discovery) -> list[dict[str, Any]]:
    specs = []
    for tool in found.tools.values():
        try:
            schema = tool.parameters_schema()
        except Exception as exc:  # some annotations have no JSON schema; the panel copes
            schema = {"error": f"{type(exc).__name__}: {exc}"}
        specs.append(
            {
                "name": tool.name,
                "signature": tool.signature,
                "doc": tool.description,
                "is_async": tool.is_async,
                "schema": schema,
            }
        )
    return specs


class ToolsComm:
    """Every open `codemode.tools` comm, and what to send them."""

    def __init__(
        self,
        discover: Callable[[], Discovery],
        runs: Callable[[], list[Any]],
    ) -> None:
        self._discover = discover
        self._runs = runs
        self._comms: dict[str, Any] = {}
        self._last_fingerprint: str | None = None

    # --- registration ------------------------------------------------------------------

    def register(self) -> bool:
        manager = _comm_manager()
        if manager is None:
            return False
        manager.register_target(TARGET, self._on_open)
        return True

    def unregister(self) -> None:
        manager = _comm_manager()
        if manager is not None:
            try:
                manager.unregister_target(TARGET, self._on_open)
            except Exception:
                pass
        for comm in list(self._comms.values()):
            try:
                comm.close()
            except Exception:
                pass
        self._comms.clear()

    def _on_open(self, comm: Any, open_msg: dict[str, Any]) -> None:
        self._comms[comm.comm_id] = comm
        comm.on_msg(lambda msg: self._on_msg(comm, msg))
        comm.on_close(lambda msg: self._comms.pop(comm.comm_id, None))
        if _data(open_msg).get("op"):
            self._on_msg(comm, open_msg)

    # --- requests ----------------------------------------------------------------------

    def _on_msg(self, comm: Any, msg: dict[str, Any]) -> None:
        data = _data(msg)
        op = data.get("op")
        if op == "list":
            comm.send(self.tools_message())
        elif op == "runs":
            comm.send(self.runs_message())
        elif op == "call":
            comm.send(self.call(data))
        else:
            comm.send({"op": "error", "message": f"unknown op {op!r}"})

    def tools_message(self) -> dict[str, Any]:
        return {"op": "tools", "tools": tool_specs(self._discover())}

    def runs_message(self) -> dict[str, Any]:
        runs = [
            {
                "execution_count": run.execution_count,
                "finished_at": run.finished_at,
                "source": getattr(run, "source", "cell"),
                **_jsonable(run.payload()),
            }
            for run in self._runs()
        ]
        return {"op": "runs", "runs": runs}

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one tool for the panel; never raises."""
        reply: dict[str, Any] = {
            "op": "call_result",
            "request_id": request.get("request_id"),
            "ok": False,
            "result": None,
            "error": None,
            "duration": 0.0,
            "output": [],  # what the tool printed: [[stream, text], ...] in time order
        }
        started = time.perf_counter()
        try:
            tool = self._discover().tools.get(str(request.get("name")))
            if tool is None:
                raise LookupError(f"no tool named {request.get('name')!r}")
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise TypeError("args must be an object")
            with _printed(reply["output"]):
                reply["result"] = _jsonable(tool.invoke(args))
            reply["ok"] = True
        except Exception as exc:
            reply["error"] = {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": tool_traceback(exc),
            }
        reply["duration"] = time.perf_counter() - started
        return reply

    # --- pushes ------------------------------------------------------------------------

    def push_tools_if_changed(self) -> None:
        """After a cell: tell the panels if the tool set changed (cheap when nobody listens)."""
        if not self._comms:
            return
        message = self.tools_message()
        fingerprint = json.dumps(message, sort_keys=True, default=repr)
        if fingerprint != self._last_fingerprint:
            self._last_fingerprint = fingerprint
            self._broadcast(message)

    def push_runs(self, code: str = "", result: RunResult | None = None) -> None:
        if self._comms:
            self._broadcast(self.runs_message())

    def _broadcast(self, message: dict[str, Any]) -> None:
        for comm_id, comm in list(self._comms.items()):
            try:
                comm.send(message)
            except Exception:
                self._comms.pop(comm_id, None)


@contextmanager
def _printed(output: list[list[str]]) -> Iterator[None]:
    """What a tool called from the panel prints goes to its reply (the panel shows it)."""

    def sink(stream: str, text: str) -> None:
        if output and output[-1][0] == stream:
            output[-1][1] = clip(output[-1][1] + text, PRINTED_CHARS)
        else:
            output.append([stream, clip(text, PRINTED_CHARS)])

    routed = ToolOutput()
    routed.install()
    try:
        with capture(sink):
            yield
    finally:
        routed.uninstall()


def _data(msg: dict[str, Any]) -> dict[str, Any]:
    """A comm message's JSON payload ({} if it has none)."""
    return (msg.get("content") or {}).get("data") or {}


def _comm_manager() -> Any:
    try:
        from comm import get_comm_manager

        return get_comm_manager()
    except Exception:
        return None
