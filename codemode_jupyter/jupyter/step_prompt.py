"""`%%codemode --step`: each tool call waits for an answer at the cell's stdin prompt.

A running cell keeps the kernel's main thread busy, so widget clicks cannot arrive; a stdin
request can. The answers: `a` (run the tool), `r REASON` (do not run it: the program gets
ToolRejected), `= VALUE` (do not run it: the program gets VALUE, a JSON value). A value that
is not JSON is refused with the reason and asked again: it is never passed on as text.

The prompt names the call by the run's own number and records each decision in the run's
timeline (approval_marks): a stand-in value is shown as one (`= value, tool not run`), not as
the tool's result, and the time spent answering is `waited`, not part of the call's
duration. The cell's live view shows the call as waiting for approval meanwhile.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from codemode_jupyter.agents.approval import ApprovalRequest, Decision
from codemode_jupyter.jupyter.approval_marks import ApprovalMarks
from codemode_jupyter.jupyter.views.live import RichView, live_text
from codemode_jupyter.jupyter.views.tool_output import to_the_person
from codemode_jupyter.jupyter.views.transcript import MIME_RUN
from codemode_jupyter.model.events import Event, ToolCallFinished, ToolCallStarted

CHOICES = "[a]pprove / [r]eject REASON / = VALUE (JSON)"


def parse_step_answer(answer: str) -> tuple[Decision | None, str]:
    """(the decision, '') or (None, why the answer is not one)."""
    answer = answer.strip()
    if answer.startswith("="):
        text = answer[1:].strip()
        try:
            return Decision.returning(json.loads(text)), ""
        except ValueError as exc:
            return None, (
                f"{text!r} is not a JSON value ({exc}); nothing was returned and the tool "
                'did not run. Type = and a JSON value (a string needs quotes: = "text"), '
                "a to run the tool, or r REASON to reject the call"
            )
    word, _, rest = answer.partition(" ")
    if word.lower() in ("a", "y", "yes", "approve"):
        return Decision.approve(), ""
    if word.lower() in ("r", "n", "no", "reject"):
        return Decision.reject(rest.strip()), ""
    return None, f"not understood: {answer!r}; answer {CHOICES}"


class StepPrompt:
    """The approver of a stepped cell; also an event observer (it follows the calls in
    flight, to name a request by its call's number). `ask` is input() in a kernel."""

    def __init__(self, ask: Callable[[str], str] = input) -> None:
        self.ask = ask
        self.marks = ApprovalMarks()
        self._running: dict[int, str] = {}  # call id -> tool name, in start order
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, ToolCallStarted):
                self._running[event.id] = event.name
            elif isinstance(event, ToolCallFinished):
                self._running.pop(event.id, None)

    def decide(self, request: ApprovalRequest, timeout: float | None) -> Decision:
        with self._lock:
            running = [i for i, name in self._running.items() if name == request.tool]
        call_id = self.marks.link(running)
        label = f"call #{call_id}" if call_id is not None else "call"
        while True:
            answer = self.ask(f"codemode: {label} {request.describe()}? {CHOICES}: ")
            decision, problem = parse_step_answer(answer)
            if decision is not None:
                if call_id is not None:
                    self.marks.decided(
                        call_id, decision.action, "cell", decision.reason, decision.value
                    )
                return decision
            with to_the_person():
                print(f"codemode: {problem}")


class SteppedView(RichView):
    """A cell's run view that shows its calls' approvals (live and finished).

    The finished run stays where the live view was, above the prompts it asked (nbval
    cannot run a cell that reads stdin, so the live display's first message is compared
    with nothing)."""

    final_in_place = True

    def __init__(self, code: str, marks: ApprovalMarks, **options: Any) -> None:
        super().__init__(code, **options)
        self.marks = marks

    def entries(self) -> list[dict[str, Any]]:
        return self.marks.apply(super().entries())

    def _live_bundle(self) -> dict[str, Any]:
        data = super()._live_bundle()
        payload = data[MIME_RUN]
        payload["timeline"] = self.marks.apply(payload["timeline"])
        data["text/plain"] = live_text(payload)
        return data
