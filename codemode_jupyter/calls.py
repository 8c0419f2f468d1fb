"""One tool call on the host: look the tool up, validate, run it, and shape its result.

Shared by the session engine and the replay fallback, so both treat calls identically.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_jsonable_python

from .result import RunError, ToolCall
from .runtime import codemode_protocol as P
from .tools import Tool, ToolArgumentError, ToolRegistry, UnknownToolError, run_coroutine


@dataclass
class CallOutcome:
    value: Any = None
    error: RunError | None = None
    exception: BaseException | None = None
    duration: float = 0.0


@dataclass
class PreparedCall:
    """A call whose tool and arguments have been checked (or whose check failed)."""

    call: ToolCall
    tool: Tool | None
    args: list[Any]
    kwargs: dict[str, Any]
    error: CallOutcome | None = None

    def run_sync(self) -> CallOutcome:
        """Run a sync tool on this thread (or return the validation failure)."""
        if self.error is not None:
            return self.error
        started = time.perf_counter()
        try:
            value = self.tool.fn(*self.args, **self.kwargs)
            if inspect.isawaitable(value):  # an async tool reached here (replay), or a wrapper
                value = run_coroutine(value)
        except Exception as exc:
            return failure(exc, time.perf_counter() - started)
        return success(value, time.perf_counter() - started)

    async def run_async(self) -> CallOutcome:
        started = time.perf_counter()
        try:
            value = await self.tool.fn(*self.args, **self.kwargs)
        except Exception as exc:
            return failure(exc, time.perf_counter() - started)
        return success(value, time.perf_counter() - started)


def prepare_call(registry: ToolRegistry, frame: dict, round_no: int) -> PreparedCall:
    """Check a `call` frame against the registry: the host runs only registered tools."""
    name = str(frame.get("name", ""))
    args = frame.get("args") if isinstance(frame.get("args"), list) else []
    kwargs = frame.get("kwargs") if isinstance(frame.get("kwargs"), dict) else {}
    call = ToolCall(id=int(frame.get("id", 0)), name=name, args=_named_args(registry, name,
                    args, kwargs), round=round_no)
    try:
        tool = registry.get(name)
        call_args, call_kwargs = tool.validate(args, kwargs)
    except (UnknownToolError, ToolArgumentError) as exc:
        return PreparedCall(call, None, [], {}, error=failure(exc, 0.0))
    return PreparedCall(call, tool, call_args, call_kwargs)


def _named_args(registry: ToolRegistry, name: str, args: list, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by parameter name, for display (as sent, before validation)."""
    if not args:
        return dict(kwargs)
    if name in registry:
        names = registry.get(name).positional_names
        if names is not None and len(args) <= len(names):
            return {**dict(zip(names, args, strict=False)), **kwargs}
    return {"*args": args, **kwargs}


_PLAIN = (str, int, bool, type(None))  # JSON as they are: no need to check


def success(value: Any, duration: float) -> CallOutcome:
    if type(value) in _PLAIN:
        return CallOutcome(value=value, duration=duration)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        try:
            value = to_jsonable_python(value)
            json.dumps(value, allow_nan=False)
        except Exception:
            problem = TypeError(f"the result is not JSON-serialisable ({type(value).__name__}: "
                                f"{_short_repr(value)}); return dicts, lists, str, numbers, "
                                "bools or None")
            return failure(problem, duration)
    return CallOutcome(value=value, duration=duration)


def failure(exc: BaseException, duration: float) -> CallOutcome:
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return CallOutcome(error=RunError(type(exc).__name__, str(exc), trace), exception=exc,
                       duration=duration)


def finish_call(call: ToolCall, outcome: CallOutcome) -> None:
    call.result, call.error = outcome.value, outcome.error
    call.exception, call.duration = outcome.exception, outcome.duration


def encode_result(call: ToolCall, wire_id: int) -> bytes:
    """The `result` frame for a finished call, under the id the runtime gave the call."""
    if call.error is None:
        return P.encode({"t": P.RESULT, "id": wire_id, "ok": True, "value": call.result})
    error = {"type": call.error.type, "message": call.error.message}
    return P.encode({"t": P.RESULT, "id": wire_id, "ok": False, "error": error})


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class AsyncRunner:
    """A private event loop on its own thread, where async tools run and overlap."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="codemode-async-tools",
                                 daemon=True).start()
                self._loop = loop
            return self._loop

    def submit(self, prepared: PreparedCall, done: Callable[[CallOutcome], None]) -> None:
        future = asyncio.run_coroutine_threadsafe(prepared.run_async(), self._ensure_loop())
        future.add_done_callback(lambda f: done(f.result() if not f.cancelled() and
                                                f.exception() is None else
                                                failure(f.exception() or
                                                        RuntimeError("cancelled"), 0.0)))

    def close(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None
