"""Human approval of tool calls: a program pauses at a guarded call until someone decides.

A guarded tool is the original function behind a `functools.wraps` wrapper, so its name,
signature, validation and stub are unchanged; the wrapper asks an `Approver` and blocks until
the answer (or the timeout, which rejects). Nothing is replayed: the program waits in place,
so what it did before the call is not repeated.

- approve: the tool runs and the program gets its result;
- reject: the tool does not run and the program gets `ToolRejected` (with the reason);
- return: the tool does not run and the program gets the given value (stepping a cell).

A tool marked `@tool(approve=True)` is guarded on every path that runs agent programs; where
no one can be asked (`NoApprover`), its calls are rejected, never run unasked. An agent's
client that declares MCP elicitation is asked too (`ClientAsk`): the first answer wins.

In the program a rejection is a `ToolError` whose `remote_type` is "ToolRejected" (the runtime
maps error types it does not know to plain ToolError), so `except ToolError` catches it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import itertools
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from codemode_jupyter.errors import ToolRejected
from codemode_jupyter.model.format import clip
from codemode_jupyter.tools.tool import Tool

DEFAULT_TIMEOUT = 300.0  # seconds a call waits for a decision before it counts as rejected
_MARK = "__codemode_tool__"  # where @tool keeps its options (tools.py)


@dataclass
class ApprovalRequest:
    """One paused call, as an approver shows it."""

    id: int
    tool: str
    args: dict[str, Any]
    #: "agent" for a program sent by an agent, "cell" for a person's own cell (--step).
    source: str = "agent"
    #: Whether "return instead" (answer with a value, the tool does not run) is offered.
    allow_return: bool = False

    def describe(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.args.items())
        return f"{self.tool}({args})"


@dataclass
class Decision:
    action: Literal["approve", "reject", "return"]
    reason: str = ""
    value: Any = None
    #: Who decided: "" (the approver given), "client" (the agent's client, by elicitation),
    #: "timeout", or "nobody" (no one could be asked).
    by: str = ""

    @classmethod
    def approve(cls) -> Decision:
        return cls("approve")

    @classmethod
    def reject(cls, reason: str = "") -> Decision:
        return cls("reject", reason=reason)

    @classmethod
    def returning(cls, value: Any) -> Decision:
        return cls("return", value=value)


class Approver(Protocol):
    """Decides paused calls. `decide` blocks until a decision or `timeout` seconds (None: no
    limit); on timeout it returns a rejection saying so."""

    def decide(self, request: ApprovalRequest, timeout: float | None) -> Decision: ...


#: Asks the agent's client about a call (MCP elicitation); the future gives its decision,
#: or fails when the client cannot be asked. (request, timeout) -> Future[Decision]
ClientAsk = Callable[[ApprovalRequest, "float | None"], "concurrent.futures.Future[Decision]"]


class NoApprover:
    """No one to ask (a plain server, `handle_tool_call`): every guarded call is rejected at
    once, saying how to allow it."""

    def decide(self, request: ApprovalRequest, timeout: float | None) -> Decision:
        return Decision(
            "reject",
            reason=f"{request.tool} needs a person's approval and no one can be asked here "
            "(serve with --approve and answer in the notebook or terminal, or use a client "
            "that supports MCP elicitation)",
            by="nobody",
        )


def decide(
    approver: Approver,
    request: ApprovalRequest,
    timeout: float | None,
    client: ClientAsk | None = None,
) -> Decision:
    """Ask `approver` and, if given, the agent's `client` at once; the first answer wins.

    An approver that can be told who decided (`settle(request_id, decision, by)`, as the
    notebook's cards) gets the client's answer as the client's; one that can be answered from
    elsewhere (`answer(request_id, decision)`, as QueueApprover) gets it delivered; one that
    can only be withdrawn (`withdraw(request_id, reason)`) is withdrawn with a reason naming
    the client's answer; one that can be none of these (a terminal's input(), NoApprover) is
    not asked when a client can be: the client decides alone. The approver answering first
    cancels the client's question."""
    if client is None:
        return approver.decide(request, timeout)
    try:
        future = client(request, timeout)
    except Exception:
        return approver.decide(request, timeout)  # the client cannot be asked
    settle = getattr(approver, "settle", None)
    answer = getattr(approver, "answer", None)
    withdraw = getattr(approver, "withdraw", None)
    if settle is not None:
        answer = functools.partial(_settle_as_client, settle)
    if answer is None and withdraw is None:
        try:
            return future.result()
        except Exception as exc:  # the client failed to answer: nobody else can
            return Decision("reject", reason=f"the agent's client did not answer ({exc})")

    def deliver(done: concurrent.futures.Future[Decision]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # the client could not answer: the approver still decides
        decision = done.result()
        try:
            if answer is not None:
                answer(request.id, decision)
            else:  # it can only be told the call was decided elsewhere
                withdraw(request.id, f"{_IN_CLIENT}{_said(decision)}")
        except (KeyError, ValueError):
            pass  # decided already (the first answer won)

    future.add_done_callback(deliver)
    try:
        decision = approver.decide(request, timeout)
    finally:
        future.cancel()  # the approver answered first: stop asking the client
    if answer is None and decision.reason.startswith(_IN_CLIENT):
        return future.result()  # the withdrawal was the client's answer arriving first
    return decision


_IN_CLIENT = "answered in the agent's client: "


def _settle_as_client(settle: Callable[..., Any], request_id: int, decision: Decision) -> None:
    settle(request_id, decision, by="client")


def _said(decision: Decision) -> str:
    if decision.action == "approve":
        return "approved"
    return f"rejected ({decision.reason})" if decision.reason else "rejected"


class _Waiting:
    def __init__(self, request: ApprovalRequest) -> None:
        self.request = request
        self.event = threading.Event()
        self.decision: Decision | None = None


class QueueApprover:
    """Approval answered from code: another thread (a test, a supervising client, a UI)
    takes `pending()` requests and calls `approve`, `reject` or `return_value`.

    `listeners` are called with each new request (on the thread of the paused call), so a
    view can show it at once.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, _Waiting] = {}
        self._lock = threading.Condition()
        self.listeners: list[Callable[[ApprovalRequest], None]] = []

    def decide(self, request: ApprovalRequest, timeout: float | None) -> Decision:
        waiting = _Waiting(request)
        with self._lock:
            self._waiting[request.id] = waiting
            self._lock.notify_all()
        for listener in list(self.listeners):
            try:
                listener(request)
            except Exception:
                pass  # a broken view must not leave the call undecided forever
        answered = waiting.event.wait(timeout)
        with self._lock:
            self._waiting.pop(request.id, None)
        if not answered or waiting.decision is None:
            return Decision("reject", reason=f"no decision within {timeout:g} s", by="timeout")
        return waiting.decision

    def pending(self) -> list[ApprovalRequest]:
        with self._lock:
            return [w.request for w in self._waiting.values() if w.decision is None]

    def wait_for_request(self, timeout: float) -> ApprovalRequest:
        """The oldest undecided request, waiting up to `timeout` seconds for one."""
        with self._lock:
            if not self._lock.wait_for(self._undecided, timeout):
                raise TimeoutError(f"no call asked for approval within {timeout:g} s")
            return next(w.request for w in self._waiting.values() if w.decision is None)

    def _undecided(self) -> bool:
        return any(w.decision is None for w in self._waiting.values())

    def answer(self, request_id: int, decision: Decision) -> None:
        """Decide request `request_id`; KeyError if it is not waiting (any more)."""
        with self._lock:
            waiting = self._waiting.get(request_id)
            if waiting is None or waiting.decision is not None:
                raise KeyError(f"no call #{request_id} is waiting for approval")
            if decision.action == "return" and not waiting.request.allow_return:
                raise ValueError("this call cannot be answered with a value; approve or reject")
            waiting.decision = decision
            waiting.event.set()

    def approve(self, request_id: int) -> None:
        self.answer(request_id, Decision.approve())

    def reject(self, request_id: int, reason: str = "") -> None:
        self.answer(request_id, Decision.reject(reason))

    def return_value(self, request_id: int, value: Any) -> None:
        self.answer(request_id, Decision.returning(value))

    def withdraw(self, request_id: int, reason: str) -> None:
        """The call's run ended: whoever waits gets a rejection (no error if already decided)."""
        try:
            self.answer(request_id, Decision.reject(reason))
        except (KeyError, ValueError):
            pass


class StdinApprover:
    """Asks with input(): the fallback that works in a running cell (the kernel's main thread
    is busy, so widget clicks would not arrive, but a stdin request does). The timeout cannot
    interrupt input(), so it is not applied."""

    def __init__(self, ask: Callable[[str], str] = input) -> None:
        self.ask = ask

    def decide(self, request: ApprovalRequest, timeout: float | None) -> Decision:
        options = "[a]pprove / [r]eject REASON" + (
            " / = VALUE (JSON)" if request.allow_return else ""
        )
        while True:
            answer = self.ask(
                f"codemode: call #{request.id} {request.describe()}? {options}: "
            ).strip()
            decision = parse_answer(answer, request.allow_return)
            if decision is not None:
                return decision
            print(f"codemode: not understood: {answer!r}")


def parse_answer(answer: str, allow_return: bool) -> Decision | None:
    """`a`/`y`/`approve`, `r`/`n`/`reject [reason]`, `= JSON` (when allowed); None if unclear."""
    word, _, rest = answer.partition(" ")
    if answer.startswith("=") and allow_return:
        text = answer[1:].strip()
        try:
            return Decision.returning(json.loads(text))
        except ValueError:
            return Decision.returning(text)  # not JSON: the text itself, as typed
    if word.lower() in ("a", "y", "yes", "approve"):
        return Decision.approve()
    if word.lower() in ("r", "n", "no", "reject"):
        return Decision.reject(rest.strip())
    return None


@dataclass
class ApprovalGate:
    """Which tools need approval, who decides, and the guarded tools of a session.

    `approve` is a set of tool names or "all"; tools marked `@tool(approve=True)` need approval
    too. `allow_return` offers "return instead" (stepping a cell).
    """

    approver: Approver
    approve: Iterable[str] | Literal["all"] | None = None
    timeout: float | None = DEFAULT_TIMEOUT
    allow_return: bool = False
    source: str = "agent"
    _names: frozenset[str] | None = field(init=False, default=None)
    _guarded: dict[tuple[int, int], tuple[Tool, Tool]] = field(init=False, default_factory=dict)
    _ids: Any = field(init=False, default_factory=lambda: itertools.count(1))
    _pending: set[int] = field(init=False, default_factory=set)
    clients: dict[int, ClientAsk] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.approve != "all":
            self._names = frozenset(self.approve or ())

    def needs_approval(self, tool: Tool) -> bool:
        if self._names is None:
            return True
        mark = getattr(tool.fn, _MARK, None)
        return tool.name in self._names or bool(isinstance(mark, dict) and mark.get("approve"))

    def guard(self, tools: Iterable[Any], session: Any) -> list[Tool]:
        """The tools, those needing approval behind a wrapper that asks first. `session` is
        the CodeMode the calls run in (its timeout must not run while a person decides)."""
        result = []
        for item in tools:
            original = Tool.from_callable(item)
            if not self.needs_approval(original):
                result.append(original)
                continue
            key = (id(original), id(session))
            hit = self._guarded.get(key)
            if hit is None or hit[0] is not original:
                hit = (original, self._wrap(original, session))
                self._guarded[key] = hit  # holding `original` pins its id
            result.append(hit[1])
        return result

    def withdraw_all(self, reason: str) -> None:
        """Reject every call still waiting (its run was cancelled or the server stops)."""
        withdraw = getattr(self.approver, "withdraw", None)
        if withdraw is not None:
            for request_id in list(self._pending):
                withdraw(request_id, reason)

    def ask(self, tool: Tool, args: tuple, kwargs: dict, session: Any = None) -> Decision:
        request = ApprovalRequest(
            next(self._ids),
            tool.name,
            _named(tool.fn, args, kwargs),
            self.source,
            self.allow_return,
        )
        self._pending.add(request.id)
        try:
            client = self.clients.get(id(session))
            decision = decide(self.approver, request, self.timeout, client)
        finally:
            self._pending.discard(request.id)
        if decision.action == "return" and not self.allow_return:
            return Decision.reject("'return instead' is not offered for this call")
        return decision

    def _wrap(self, tool: Tool, session: Any) -> Tool:
        fn = tool.fn
        if tool.is_async:

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                # Time spent waiting for a person does not count against the run's timeout.
                with session.paused():
                    decision = await _in_thread(lambda: self.ask(tool, args, kwargs, session))
                if decision.action == "approve":
                    return await fn(*args, **kwargs)
                return _refuse(tool.name, decision)

            return Tool(guarded_async, name=tool.name, description=tool.description)

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            # The whole call (waiting included) then does not count against the timeout.
            session.note_debugger_in_tool()
            decision = self.ask(tool, args, kwargs, session)
            if decision.action == "approve":
                return fn(*args, **kwargs)
            return _refuse(tool.name, decision)

        return Tool(guarded, name=tool.name, description=tool.description)


def _refuse(name: str, decision: Decision) -> Any:
    if decision.action == "return":
        return decision.value
    reason = decision.reason or "no reason given"
    raise ToolRejected(f"the call was rejected ({reason}); {name} did not run")


async def _in_thread(ask: Callable[[], Decision]) -> Decision:
    """Wait for a decision without blocking the async tools' loop (other calls go on)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Decision] = loop.create_future()

    def wait() -> None:
        try:
            decision = ask()
        except BaseException as exc:  # deliver it: the awaiting call must not hang
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, decision, None)

    threading.Thread(target=wait, name="codemode-approval", daemon=True).start()
    return await future


def _settle(future: asyncio.Future, value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


def _named(fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by parameter name, as the approver shows them."""
    try:
        return dict(inspect.signature(fn).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return {"*args": list(args), **kwargs}


def _short(value: Any, limit: int = 200) -> str:
    return clip(repr(value), limit)
