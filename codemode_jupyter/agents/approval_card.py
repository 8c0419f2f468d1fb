"""An approval card (ipywidgets): the call, its arguments, Approve / Reject (with a reason)
and, when stepping, "Return instead" with a JSON value.

Clicks reach the kernel only while its main thread is idle, which is the case for agent runs
(they run on a thread of their own). A person's own running cell keeps the main thread busy,
so `%%codemode --step` uses the stdin prompt (`jupyter/step_prompt.py`) instead.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Callable
from typing import Any

from codemode_jupyter.agents.approval import ApprovalRequest, Decision

__all__ = ["WidgetApprover", "describe"]


class _Card:
    """One paused call's card. `number` is the run's number of the call (the feed links it;
    None: not known, the card then names no number); `by` says who decided."""

    def __init__(self, request: ApprovalRequest) -> None:
        import ipywidgets as w

        self.request = request
        self.number: int | None = None
        self.event = threading.Event()
        self.decision: Decision | None = None
        self.by = ""
        #: Called with the card once decided (the feed records the decision in its run).
        self.on_decided: list[Callable[[_Card], None]] = []
        self._lock = threading.Lock()  # a click and the timeout may decide at once
        self.title = w.HTML(self._title("waits for approval"))
        self.reason = w.Text(placeholder="reason (optional)", layout=w.Layout(width="40%"))
        self.approve = w.Button(description="Approve", button_style="success")
        self.reject = w.Button(description="Reject", button_style="danger")
        self.approve.on_click(lambda _: self.decide(Decision.approve(), "notebook"))
        self.reject.on_click(lambda _: self.decide(Decision.reject(self.reason.value), "notebook"))
        row = [self.approve, self.reject, self.reason]
        if request.allow_return:
            self.value = w.Text(placeholder="value to return (JSON)", layout=w.Layout(width="30%"))
            self.returns = w.Button(description="Return instead")
            self.returns.on_click(lambda _: self._return_value())
            row += [self.returns, self.value]
        # A coloured edge while the call waits (grey once decided), as the run card's.
        self.widget = w.VBox([self.title, w.HBox(row)], layout=w.Layout(**_frame(WAITING)))
        # Classes for styles and for tests that find the card in the page.
        self.widget.add_class("codemode-ApprovalCard")
        self.widget.add_class("codemode-ApprovalCard-waiting")

    def _title(self, state: str) -> str:
        call = html.escape(self.request.describe())
        number = f"call #{self.number}" if self.number is not None else "call"
        return f"<b>{number}</b> <code>{call}</code> {html.escape(state)}"

    def refresh(self) -> None:
        """Redraw the title (after the feed linked the card to its call's number)."""
        decision = self.decision
        if decision is None:
            self.title.value = self._title("waits for approval")
        else:
            self.title.value = self._title(_said(decision, self.by))

    def _return_value(self) -> None:
        """ "Return instead": only a JSON value; anything else is refused and asked again."""
        try:
            value = json.loads(self.value.value)
        except ValueError as exc:
            self.title.value = self._title(f"waits for approval ({_not_json(exc)})")
            return
        self.decide(Decision.returning(value), "notebook")

    def decide(self, decision: Decision, by: str = "notebook") -> None:
        with self._lock:
            if self.decision is not None:
                return
            self.decision, self.by = decision, by
        self.event.set()
        self.title.value = self._title(_said(decision, by))
        for child in self.widget.children[1].children:
            child.disabled = True
        self.widget.layout.border_left = _frame(DECIDED)["border_left"]
        self.widget.remove_class("codemode-ApprovalCard-waiting")
        self.widget.add_class(f"codemode-ApprovalCard-{decision.action}")
        for listener in list(self.on_decided):
            try:
                listener(self)
            except Exception:
                pass  # a broken view must not leave the call undecided


def _said(decision: Decision, by: str) -> str:
    return describe(decision.action, by, decision.reason, decision.value)


#: Who decided, as a card says it.
WHO = {
    "notebook": "in the notebook",
    "cell": "at the cell's prompt",
    "timeout": "by the timeout",
    "client": "in the agent's client",
    "run ended": "as the run ended",
}


def describe(action: str, by: str, reason: str = "", value: Any = None) -> str:
    """A decision as a card says it: `approved in the notebook`, `rejected by the timeout:
    ...`, `answered with 5 (a stand-in value; the tool did not run)`."""
    who = WHO.get(by, f"by {by}" if by else "")
    if action == "approve":
        return f"approved {who}".strip()
    if action == "return":
        return f"answered with {value!r} {who} (a stand-in value; the tool did not run)"
    text = f"rejected {who}".strip()
    return f"{text}: {reason}" if reason else text


def _not_json(exc: ValueError) -> str:
    return f"not a JSON value: {exc}; a string needs quotes"


WAITING = "var(--jp-warn-color1, #f57c00)"
DECIDED = "var(--jp-border-color1, #bdbdbd)"


def _frame(colour: str) -> dict[str, str]:
    return {"border_left": f"3px solid {colour}", "padding": "2px 0 4px 8px", "margin": "4px 0"}


class WidgetApprover:
    """Shows a card per paused call through `place(card)` (the card's `.widget` is what to
    show; the feed links it to its call) and waits for a click."""

    def __init__(self, place: Callable[[Any], None]) -> None:
        self.place = place
        self._cards: dict[int, _Card] = {}
        #: Calls being asked whose card is not shown yet, with a decision made elsewhere
        #: meanwhile (the agent's client may answer before the card is placed).
        self._early: dict[int, tuple[Decision, str] | None] = {}
        self._lock = threading.Condition()

    def decide(self, request: ApprovalRequest, timeout: float | None) -> Decision:
        with self._lock:
            self._early[request.id] = None
        try:
            card = self._show(request)
            if not card.event.wait(timeout):
                card.decide(Decision.reject(f"no decision within {timeout:g} s"), "timeout")
        finally:
            with self._lock:
                self._cards.pop(request.id, None)
                self._early.pop(request.id, None)
        assert card.decision is not None
        return card.decision

    def _show(self, request: ApprovalRequest) -> _Card:
        card = _Card(request)
        self.place(card)  # shown and linked to its call before anyone can look it up
        with self._lock:
            self._cards[request.id] = card
            early = self._early.pop(request.id, None)
            self._lock.notify_all()
        if early is not None:
            card.decide(*early)  # decided elsewhere while it was being placed
        return card

    def wait_for_request(self, timeout: float) -> ApprovalRequest:
        """The oldest call whose card waits for a click, waiting up to `timeout` seconds."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._undecided(), timeout):
                raise TimeoutError(f"no call asked for approval within {timeout:g} s")
            return self._undecided()[0].request

    def _undecided(self) -> list[_Card]:
        return [card for card in self._cards.values() if card.decision is None]

    def card(self, request_id: int) -> Any:
        """The widget of a waiting call (tests click its buttons)."""
        with self._lock:
            return self._cards[request_id].widget

    def withdraw(self, request_id: int, reason: str) -> None:
        self.settle(request_id, Decision.reject(reason), "run ended")

    def settle(self, request_id: int, decision: Decision, by: str = "client") -> bool:
        """Decide a waiting call from elsewhere (the agent's client answered first, through
        MCP elicitation): its card says so and who did. False if it was not waiting."""
        with self._lock:
            card = self._cards.get(request_id)
            if card is None and request_id in self._early:
                if self._early[request_id] is None:
                    self._early[request_id] = (decision, by)  # the card takes it when shown
                    return True
                return False
        if card is None or card.decision is not None:
            return False
        card.decide(decision, by)
        return card.decision is decision
