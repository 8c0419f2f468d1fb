"""One tool call on the host: look the tool up, validate, run it, and shape its result.

Shared by the session engine and the replay fallback, so both treat calls identically.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import inspect
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from codemode_jupyter.errors import ResultNotSerialisable
from codemode_jupyter.model.format import short_repr
from codemode_jupyter.model.result import RunError, ToolCall
from codemode_jupyter.runtime import codemode_protocol as P
from codemode_jupyter.support.loop_thread import LoopThread, run_coroutine
from codemode_jupyter.tools.tool import Tool, ToolArgumentError, ToolRegistry, UnknownToolError
from codemode_jupyter.tools.tracebacks import tool_traceback


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
            # An async tool reached here (replay), or a wrapper (plain values skip the look).
            if type(value) not in _PLAIN and inspect.isawaitable(value):
                value = run_coroutine(value)
        except KeyboardInterrupt:
            raise  # Ctrl-C while a tool runs stops the run, as in any cell
        except BaseException as exc:  # SystemExit & co. from a tool are the tool's failure
            return failure(exc, time.perf_counter() - started)
        return success(value, time.perf_counter() - started)

    async def run_async(self) -> CallOutcome:
        import asyncio  # loaded: this runs in its event loop (a sync-only session never does)

        started = time.perf_counter()
        try:
            value = await self.tool.fn(*self.args, **self.kwargs)
        except asyncio.CancelledError:
            raise  # the run ended: its calls are cancelled
        except BaseException as exc:  # even SystemExit: it must not stop the tools' loop
            return failure(exc, time.perf_counter() - started)
        return success(value, time.perf_counter() - started)


def prepare_call(registry: ToolRegistry, frame: dict, round_no: int) -> PreparedCall:
    """Check a `call` frame against the registry: the host runs only registered tools."""
    name = str(frame.get("name", ""))
    args = frame.get("args") if isinstance(frame.get("args"), list) else []
    kwargs = frame.get("kwargs") if isinstance(frame.get("kwargs"), dict) else {}
    tool = registry.find(name)
    call = ToolCall(int(frame.get("id", 0)), name, _named_args(tool, args, kwargs), round_no)
    try:
        if tool is None:
            registry.get(name)  # raises, naming the tools there are
        call_args, call_kwargs = tool.validate(args, kwargs)
    except (UnknownToolError, ToolArgumentError) as exc:
        return PreparedCall(call, None, [], {}, error=failure(exc, 0.0))
    return PreparedCall(call, tool, call_args, call_kwargs)


def _named_args(tool: Tool | None, args: list, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by parameter name, for display (as sent, before validation)."""
    if not args:
        return dict(kwargs)
    if tool is not None:
        names = tool.positional_names
        if names is not None and len(args) <= len(names):
            named = dict(zip(names, args, strict=False))
            if kwargs:
                named.update(kwargs)
            return named
    return {"*args": args, **kwargs}


_PLAIN = (str, int, bool, type(None))  # JSON as they are: no need to check
MAX_RESULT = 64 << 20  # characters of JSON one tool result may take
MAX_RESULT_DEPTH = 100  # how deep a converted result may nest
MAX_RESULT_ITEMS = 1_000_000  # how many values a converted result may hold
_dumps = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode


def success(value: Any, duration: float) -> CallOutcome:
    """The outcome of a tool that returned `value`: as JSON-able data, or a clear error."""
    try:
        value = to_json_value(value)
    except ResultNotSerialisable as exc:
        return failure(TypeError(str(exc)), duration)  # the program sees a plain TypeError
    return CallOutcome(value=value, duration=duration)


def to_json_value(value: Any) -> Any:
    """`value` as data the program can receive, within bounds; raises ResultNotSerialisable."""
    kind = type(value)
    if kind in _PLAIN:
        if kind is str and len(value) > MAX_RESULT:
            raise _too_large(len(value))
        if kind is int and value.bit_length() > 14_000:
            _check_int_digits(value)
        return value
    try:
        text = _dumps(value)
    except (TypeError, ValueError, RecursionError):
        try:
            _check_convertible(value)
            from codemode_jupyter.tools.values import (
                to_jsonable,  # pydantic_core: loaded by the first such result
            )

            value = to_jsonable(value)  # numpy, pandas & co. too (rich.py)
            text = _dumps(value)
        except ResultNotSerialisable:
            raise
        except Exception as exc:
            raise _not_json(value, exc) from None
    if len(text) > MAX_RESULT:
        raise _too_large(len(text))
    return value


def _check_int_digits(value: int) -> None:
    try:
        str(value)
    except ValueError:
        raise ResultNotSerialisable(
            "the result is an int too large for JSON (more than 4300 digits); return it as a str"
        ) from None


def _check_convertible(value: Any) -> None:
    """Refuse, before converting, what conversion could not finish: iterators (maybe endless),
    and structures nested too deep or too large."""
    level, depth, seen = [value], 0, 0
    while level:
        depth += 1
        if depth > MAX_RESULT_DEPTH:
            raise ResultNotSerialisable(
                f"the result nests deeper than {MAX_RESULT_DEPTH} levels; flatten it"
            )
        nested: list[Any] = []
        for item in level:
            seen += 1
            if seen > MAX_RESULT_ITEMS:
                raise ResultNotSerialisable(
                    f"the result holds more than {MAX_RESULT_ITEMS:,} values; return less"
                )
            nested.extend(_children(item))
        level = nested


def _children(item: Any) -> list[Any]:
    if isinstance(item, (str, bytes, int, float, bool, type(None))):
        return []
    if isinstance(item, dict):
        return [*item.keys(), *item.values()]
    if isinstance(item, (list, tuple, set, frozenset)):
        return list(item)
    if isinstance(item, Iterator):
        raise ResultNotSerialisable(
            f"the result is or holds an iterator ({type(item).__name__}), which may never end; "
            "return a list"
        )
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return [getattr(item, f.name, None) for f in dataclasses.fields(item)]
    return []


def _too_large(size: int) -> ResultNotSerialisable:
    return ResultNotSerialisable(
        f"the result is too large ({size:,} characters of JSON; at most {MAX_RESULT:,})"
    )


def _not_json(value: Any, exc: BaseException) -> ResultNotSerialisable:
    why = "nested too deep" if isinstance(exc, RecursionError) else "not JSON-serialisable"
    return ResultNotSerialisable(
        f"the result is {why} ({type(value).__name__}: {short_repr(value, 80)}); return dicts, "
        "lists, str, numbers, bools or None"
    )


def failure(exc: BaseException, duration: float) -> CallOutcome:
    return CallOutcome(
        error=RunError(type(exc).__name__, str(exc), tool_traceback(exc)),
        exception=exc,
        duration=duration,
    )


def finish_call(call: ToolCall, outcome: CallOutcome) -> None:
    call.result, call.error = outcome.value, outcome.error
    call.exception, call.duration = outcome.exception, outcome.duration


def encode_result(call: ToolCall, wire_id: int) -> bytes:
    """The `result` frame for a finished call, under the id the runtime gave the call."""
    if call.error is None:
        fast = P.encode_plain_result(wire_id, call.result)
        if fast is not None:
            return fast
        return P.encode({"t": P.RESULT, "id": wire_id, "ok": True, "value": call.result})
    error = {"type": call.error.type, "message": call.error.message}
    return P.encode({"t": P.RESULT, "id": wire_id, "ok": False, "error": error})


def submit_async(
    runner: LoopThread, prepared: PreparedCall, done: Callable[[CallOutcome], None]
) -> concurrent.futures.Future:
    """Start an async call on `runner`; `done` gets its outcome unless the call is cancelled
    first (its run ended: nobody waits for the outcome)."""
    future = runner.submit(prepared.run_async())

    def finished(f: concurrent.futures.Future) -> None:
        if f.cancelled():
            return
        exc = f.exception()
        done(f.result() if exc is None else failure(exc, 0.0))

    future.add_done_callback(finished)
    return future
