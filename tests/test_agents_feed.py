"""The agent feed outside a kernel's front end: real agent runs (a local jail, the
AgentRunner) shown as run views in Output widgets, bounded, and only safe MIME types."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from codemode_jupyter import CodeMode
from codemode_jupyter.agents.runner import AgentRunner
from codemode_jupyter.jupyter.views import agent_feed
from codemode_jupyter.jupyter.views.agent_feed import AgentFeed
from codemode_jupyter.jupyter.views.transcript import MIME_RUN


def double(x: int) -> int:
    """Twice x."""
    return 2 * x


@pytest.fixture(scope="module")
def cm():
    with CodeMode([double], timeout=30) as session:
        yield session


def run_all(feed: AgentFeed, cm: CodeMode, programs: list[str]) -> list:
    runner = AgentRunner(cm, observers=[feed.on_event])
    try:
        return [runner.submit(p).future.result(60) for p in programs]
    finally:
        runner.stop()


def test_each_run_is_a_run_view_with_its_code_displays_and_ending(cm):
    feed = AgentFeed(rate=50)
    program = (
        "print('x is', double(21))\n"
        "display({'text/plain': 'a table', 'text/html': '<script>alert(1)</script>'}, raw=True)\n"
        "'<done>'"
    )
    ok, failed = run_all(feed, cm, [program, "double('a')"])
    assert ok.ok and not failed.ok
    first, second = feed.runs()
    assert list(feed.widget.children[1:]) == [first.widget, second.widget]
    header, run, value = first.output.outputs
    # The agent's code, escaped (the feed's outputs are trusted by the front end).
    assert header["data"]["text/plain"].startswith("agent run 1 (session agent)\nprint('x is'")
    assert "&lt;script&gt;" in header["data"]["text/html"]
    payload = run["data"][MIME_RUN]
    assert payload["result"]["status"] == "ok" and payload["code"] == program
    calls = [e for e in payload["timeline"] if e["kind"] == "call"]
    assert [(c["name"], c["args"], c["state"]) for c in calls] == [("double", "x=21", "ok")]
    index = str(payload["timeline"].index(calls[0]))
    assert run["metadata"][MIME_RUN]["timeline"][index]["duration"] >= 0  # timings, apart
    # The display is in the run view, in time order, its HTML not shown (the feed's outputs
    # are trusted in the page: an agent's markup must not run there).
    displays = [e for e in payload["timeline"] if e["kind"] == "display"]
    assert [d["data"] for d in displays] == [{"text/plain": "a table"}]
    assert [e["kind"] for e in payload["timeline"]] == ["call", "output", "display"]
    assert value["data"] == {"text/plain": "'<done>'"}
    error = second.output.outputs[-1]
    assert error["output_type"] == "error" and error["ename"] == "ToolArgumentError"
    assert any("double" in line for line in error["traceback"])


def test_the_feed_keeps_the_newest_runs_and_closes_the_rest(cm, monkeypatch):
    monkeypatch.setattr(agent_feed, "MAX_RUNS", 2)
    feed = AgentFeed(rate=50)
    run_all(feed, cm, ["1", "2"])
    oldest = feed.runs()[0]
    run_all(feed, cm, ["3"])
    assert [r.number for r in feed.runs()] == [2, 1]  # each runner numbers its own jobs
    assert len(feed.widget.children) == 3 and oldest not in feed.runs()
    assert oldest.output.comm is None and oldest.widget.comm is None


def test_without_widgets_the_feed_prints_lines(cm, capsys):
    feed = AgentFeed(widgets=False)
    run_all(feed, cm, ["print('hi')\ndouble(2)"])
    printed = capsys.readouterr().out
    assert "[agent run 1] started in session agent" in printed
    assert "[agent run 1] call #1 double(x=2)" in printed
    assert "[agent run 1] finished: ok" in printed
    assert feed.widget is None


def shout(word: str) -> str:
    """Prints on the host, returns the word in capitals."""
    print(f"shouting {word}")
    return word.upper()


async def whisper(word: str) -> str:
    """Prints to stderr on the host (an async tool: it runs on the session's loop)."""
    import sys

    print(f"whispering {word}", file=sys.stderr)
    return word.lower()


def test_what_tools_print_during_an_agent_run_goes_to_its_view(cm, capsys):
    from codemode_jupyter.jupyter.views.tool_output import ToolOutput

    feed = AgentFeed(rate=50)
    routed = ToolOutput()
    routed.install()
    runner = AgentRunner(
        cm,
        tools=lambda: [double, shout, whisper],
        observers=[feed.on_event],
        run_context=feed.capturing,
    )
    try:
        result = runner.submit("shout('hi') + await whisper_async(word='HO')").future.result(60)
        print("printed by the test itself")
    finally:
        runner.stop()
        routed.uninstall()
    assert result.ok and result.value == "HIho", result.error
    (view,) = feed.runs()
    # In the run's timeline, under the call that printed, in time order (as in a cell).
    entries = view.entries()
    printed = [(e["call"], e["stream"], e["text"]) for e in entries if "call" in e]
    calls = {e["id"]: e["name"] for e in entries if e["kind"] == "call"}
    assert [(calls[c], s, t) for c, s, t in printed] == [
        ("shout", "stdout", "shouting hi\n"),
        ("whisper", "stderr", "whispering HO\n"),
    ]
    kinds = [e["kind"] if "call" not in e else "printed" for e in entries]
    assert kinds == ["call", "printed", "call", "printed"], entries
    assert not [o for o in view.output.outputs if o["output_type"] == "stream"]
    # Nothing of the run reached the process's own streams; other prints still do.
    captured = capsys.readouterr()
    assert captured.out == "printed by the test itself\n" and "whispering" not in captured.err


def test_the_run_view_keeps_an_agents_images_and_drops_its_markup(cm):
    feed = AgentFeed(rate=50)
    program = (
        "display({'text/plain': 'pic', 'image/png': 'iVBORw0KGgo=',"
        " 'text/html': '<img src=x onerror=alert(1)>'}, raw=True)"
    )
    (result,) = run_all(feed, cm, [program])
    assert result.ok, result.error
    (view,) = feed.runs()
    run = view.output.outputs[1]
    (display,) = [e for e in run["data"][MIME_RUN]["timeline"] if e["kind"] == "display"]
    assert display["data"] == {"text/plain": "pic"}  # the PNG travels in the metadata
    varying = run["metadata"][MIME_RUN]["timeline"]
    assert [e["data"] for e in varying.values() if "data" in e] == [{"image/png": "iVBORw0KGgo="}]


def ping() -> str:
    """Answers pong."""
    return "pong"


def send(to: str) -> str:
    """Sends (a person approves each one)."""
    return f"sent to {to}"


def test_a_card_names_the_runs_call_and_the_record_says_who_decided(cm):
    """The run's second call is the first that asks: its card says call #2 (the run's
    number), the live view shows it waiting for approval, and once approved the run's
    record carries the decision and the wait apart from the call's duration."""
    from codemode_jupyter.agents.approval import ApprovalGate
    from codemode_jupyter.agents.approval_card import WidgetApprover

    feed = AgentFeed(rate=50)
    approver = WidgetApprover(feed.place)
    gate = ApprovalGate(approver, ["send"], timeout=60)
    runner = AgentRunner(cm, tools=lambda: [ping, send], gate=gate, observers=[feed.on_event])
    try:
        job = runner.submit("ping()\nsend('ann')")
        request = approver.wait_for_request(60)
        card = approver.card(request.id)
        assert card.children[0].value.startswith("<b>call #2</b>")
        (view,) = feed.runs()
        live = view.output.outputs[1]["data"][MIME_RUN]
        states = [(e["id"], e["state"]) for e in live["timeline"] if e["kind"] == "call"]
        assert states == [(1, "ok"), (2, "waiting")]
        assert live["agent"] == {"run": 1, "session": "agent"}
        card.children[1].children[0].click()  # Approve
        result = job.future.result(60)
    finally:
        runner.stop()
    assert result.ok and result.value == "sent to ann", result.error
    assert "approved in the notebook" in card.children[0].value
    record = view.record(feed.id)
    assert record["metadata"]["codemode_feed"] == {"feed": feed.id, "run": 1}
    payload = record["data"][MIME_RUN]
    assert payload["agent"]["record"] is True and payload["code"] == "ping()\nsend('ann')"
    calls = [e for e in payload["timeline"] if e["kind"] == "call"]
    assert [c.get("approval") for c in calls] == [
        None,
        {"decision": "approve", "by": "notebook"},
    ]
    # The wait is kept apart from the call's own duration (both in the varying metadata).
    varying = record["metadata"][MIME_RUN]["timeline"]
    index = str(payload["timeline"].index(calls[1]))
    assert set(varying[index]) >= {"duration", "waited"}
    assert "agent run 1 (session agent)\nping()" in record["data"]["text/plain"]


def test_a_rejected_stand_in_typed_as_bad_json_is_asked_again():
    """`= {bad json` in a stepped cell is refused with the reason, never passed on."""
    from codemode_jupyter.agents.approval import ApprovalRequest
    from codemode_jupyter.jupyter.step_prompt import StepPrompt, parse_step_answer

    decision, problem = parse_step_answer("= {bad json")
    assert decision is None and "is not a JSON value" in problem
    answers = iter(["= {bad json", "maybe", '= {"temp": -3}'])
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    prompt = StepPrompt(ask)
    decision = prompt.decide(ApprovalRequest(7, "lookup", {"city": "Rome"}, "cell", True), None)
    assert decision.action == "return" and decision.value == {"temp": -3}
    assert len(asked) == 3 and asked[0].startswith("codemode: call lookup(city='Rome')?")


def test_return_instead_on_a_card_takes_only_json():
    """A card's "Return instead" with text that is not JSON is refused and the call still
    waits; a JSON value decides it, and the card says it is a stand-in."""
    from codemode_jupyter.agents.approval import ApprovalRequest
    from codemode_jupyter.agents.approval_card import _Card

    card = _Card(ApprovalRequest(1, "lookup", {"city": "Rome"}, "cell", allow_return=True))
    card.value.value = "{bad json"
    card.returns.click()
    assert card.decision is None and "not a JSON value" in card.title.value
    card.value.value = '{"temp": -3}'
    card.returns.click()
    assert card.decision.action == "return" and card.decision.value == {"temp": -3}
    assert "a stand-in value; the tool did not run" in card.title.value
