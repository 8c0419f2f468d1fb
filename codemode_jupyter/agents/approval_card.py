"""An approval card (ipywidgets): the call, its arguments, Approve / Reject (with a reason)
and, when stepping, "Return instead" with a JSON value.

Clicks reach the kernel only while its main thread is idle, which is the case for agent runs
(they run on a thread of their own). A person's own running cell keeps the main thread busy,
so `%%codemode --step` uses the stdin prompt (`StdinApprover`) instead.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Callable
from typing import Any

from .approval import ApprovalRequest, Decision


class _Card:
    def __init__(self, request: ApprovalRequest) -> None:
        import ipywidgets as w

        self.request = request
        self.event = threading.Event()
        self.decision: Decision | None = None
        self._lock = threading.Lock()  # a click and the timeout may decide at once
        self.title = w.HTML(self._title("waits for approval"))
        self.reason = w.Text(placeholder="reason (optional)", layout=w.Layout(width="40%"))
        self.approve = w.Button(description="Approve", button_style="success")
        self.reject = w.Button(description="Reject", button_style="danger")
        self.approve.on_click(lambda _: self.decide(Decision.approve()))
        self.reject.on_click(lambda _: self.decide(Decision.reject(self.reason.value)))
        row = [self.approve, self.reject, self.reason]
        if request.allow_return:
            self.value = w.Text(placeholder="value to return (JSON)", layout=w.Layout(width="30%"))
            self.returns = w.Button(description="Return instead")
            self.returns.on_click(
                lambda _: self.decide(Decision.returning(_parse(self.value.value)))
            )
            row += [self.returns, self.value]
        # A coloured edge while the call waits (grey once decided), as the run card's.
        self.widget = w.VBox([self.title, w.HBox(row)], layout=w.Layout(**_frame(WAITING)))
        # Classes for styles and for tests that find the card in the page.
        self.widget.add_class("codemode-ApprovalCard")
        self.widget.add_class("codemode-ApprovalCard-waiting")

    def _title(self, state: str) -> str:
        call = html.escape(self.request.describe())
        return f"<b>call #{self.request.id}</b> <code>{call}</code> {html.escape(state)}"

    def decide(self, decision: Decision) -> None:
        with self._lock:
            if self.decision is not None:
                return
            self.decision = decision
        self.event.set()
        done = {
            "approve": "approved",
            "return": f"answered with {decision.value!r}",
            "reject": f"rejected{': ' + decision.reason if decision.reason else ''}",
        }
        self.title.value = self._title(done[decision.action])
        for child in self.widget.children[1].children:
            child.disabled = True
        self.widget.layout.border_left = _frame(DECIDED)["border_left"]
        self.widget.remove_class("codemode-ApprovalCard-waiting")
        self.widget.add_class(f"codemode-ApprovalCard-{decision.action}")


WAITING = "var(--jp-warn-color1, #f57c00)"
DECIDED = "var(--jp-border-color1, #bdbdbd)"


def _frame(colour: str) -> dict[str, str]:
    return {"border_left": f"3px solid {colour}", "padding": "2px 0 4px 8px", "margin": "4px 0"}


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # not JSON: the text itself


class WidgetApprover:
    """Shows a card per paused call through `place(widget)` and waits for a click."""

    def __init__(self, place: Callable[[Any], None]) -> None:
        self.place = place
        self._cards: dict[int, _Card] = {}
        self._lock = threading.Condition()

    def decide(self, request: ApprovalRequest, timeout: float | None) -> Decision:
        card = _Card(request)
        with self._lock:
            self._cards[request.id] = card
            self._lock.notify_all()
        try:
            self.place(card.widget)
            if not card.event.wait(timeout):
                card.decide(Decision.reject(f"no decision within {timeout:g} s"))
        finally:
            with self._lock:
                self._cards.pop(request.id, None)
        assert card.decision is not None
        return card.decision

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
        with self._lock:
            card = self._cards.get(request_id)
        if card is not None:
            card.decide(Decision.reject(reason))
