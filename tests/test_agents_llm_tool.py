"""The Code Mode tool for LLM APIs, approval on a cell's own calls, and pydantic-ai."""

from __future__ import annotations

import json

import pytest
from conftest import tool_returns

from codemode_jupyter import CodeMode
from codemode_jupyter.agents.approval import (
    ApprovalGate,
    Decision,
    QueueApprover,
    StdinApprover,
    parse_answer,
)
from codemode_jupyter.agents.llm_tool import handle_tool_call, tool_definition

calls: list[str] = []


def lookup(city: str) -> dict:
    """The weather in a city."""
    calls.append(city)
    return {"city": city, "temp": 21}


async def slow_lookup(city: str) -> dict:
    """The weather, asynchronously."""
    calls.append(city)
    return {"city": city, "temp": 5}


@pytest.fixture(scope="module")
def cm():
    with CodeMode([lookup, slow_lookup], timeout=30) as session:
        yield session


def test_definitions_for_each_api(cm):
    prompt = cm.system_prompt()
    openai = tool_definition(cm, "openai")
    assert openai["type"] == "function"
    assert openai["function"]["name"] == "run_code"
    assert openai["function"]["description"] == prompt
    assert openai["function"]["parameters"]["required"] == ["code"]
    anthropic = tool_definition(cm, "anthropic")
    assert set(anthropic) == {"name", "description", "input_schema"}
    assert "def lookup(city: str) -> dict:" in anthropic["description"]
    assert tool_definition(cm, "mcp")["inputSchema"]["properties"]["code"]["type"] == "string"
    responses = tool_definition(cm, "openai-responses")
    assert responses["strict"] is True  # strict mode: every property required, none unknown
    assert responses["parameters"]["required"] == ["code", "reset"]
    assert responses["parameters"]["additionalProperties"] is False
    with pytest.raises(ValueError, match="unknown format"):
        tool_definition(cm, "gemini")


def test_handle_tool_call_runs_the_program_and_reports_bad_arguments(cm):
    text = handle_tool_call(cm, json.dumps({"code": "w = lookup('Oslo')\nprint(w['temp'])\nw"}))
    assert "status: ok" in text and "stdout:\n21" in text
    assert '#1 lookup(city="Oslo") -> {"city": "Oslo", "temp": 21}' in text
    assert "value: {'city': 'Oslo', 'temp': 21}" in text
    failed = handle_tool_call(cm, {"code": "lookup(3)"})
    assert "status: error" in failed and "ToolArgumentError" in failed
    assert "bad arguments" in handle_tool_call(cm, "{not json")
    assert "'code' must be a string" in handle_tool_call(cm, {"code": 3})
    assert "unknown argument" in handle_tool_call(cm, {"code": "1", "cmd": "x"})
    assert "NameError" in handle_tool_call(cm, {"code": "w", "reset": True})


def _answer_next(approver: QueueApprover, decision: Decision) -> None:
    import threading

    def answer() -> None:
        request = approver.wait_for_request(30)
        approver.answer(request.id, decision)

    threading.Thread(target=answer, daemon=True).start()


def test_step_answers_a_call_with_a_value_instead_of_running_the_tool(cm):
    approver = QueueApprover()
    gate = ApprovalGate(approver, "all", allow_return=True, source="cell")
    calls.clear()
    _answer_next(approver, Decision.returning({"city": "Mock", "temp": -40}))
    result = cm.run("lookup('Oslo')['temp']", tools=gate.guard(cm.tools, cm))
    assert result.ok and result.value == -40
    assert calls == []  # the tool never ran
    _answer_next(approver, Decision.approve())
    result = cm.run(
        "import asyncio\n(await slow_lookup_async('Rome'))['temp']", tools=gate.guard(cm.tools, cm)
    )
    assert result.ok and result.value == 5 and calls == ["Rome"]
    _answer_next(approver, Decision.reject("no async either"))
    result = cm.run("await slow_lookup_async('Rome')", tools=gate.guard(cm.tools, cm))
    assert not result.ok and "no async either" in str(result.error)


def test_guarded_tools_keep_their_stub(cm):
    gate = ApprovalGate(QueueApprover(), ["lookup"])
    guarded = gate.guard(cm.tools, cm)
    assert [t.stub() for t in guarded] == [t.stub() for t in cm.tools]
    assert guarded[0].fn is not lookup and guarded[1].fn is slow_lookup


def test_the_stdin_fallback_asks_until_it_understands(cm):
    answers = iter(["maybe", '= {"temp": 1}'])
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    gate = ApprovalGate(StdinApprover(ask), "all", allow_return=True, source="cell")
    result = cm.run("lookup('Oslo')", tools=gate.guard(cm.tools, cm))
    assert result.value == {"temp": 1}
    assert "call #1 lookup(city='Oslo')?" in prompts[0] and len(prompts) == 2
    assert parse_answer("r too risky", False) == Decision.reject("too risky")
    assert parse_answer("= 3", False) is None  # no "return instead" unless offered
    assert parse_answer("=plain text", True) == Decision.returning("plain text")


def test_pydantic_ai_agent_completes_a_two_step_task(cm):
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from codemode_jupyter.agents.pydantic_ai import codemode_tool

    seen: list[str] = []

    def model(messages: list, info: AgentInfo) -> ModelResponse:
        returns = tool_returns(messages)
        seen.append(info.function_tools[0].description)
        if not returns:  # step 1: look the city up, keep the result in a variable
            return ModelResponse(
                parts=[
                    ToolCallPart("run_code", {"code": "oslo = lookup('Oslo')\nprint(oslo['temp'])"})
                ]
            )
        if len(returns) == 1:  # step 2: use the variable the first program left
            return ModelResponse(
                parts=[
                    ToolCallPart(
                        "run_code", {"code": "rome = lookup('Rome')\nrome['temp'] - oslo['temp']"}
                    )
                ]
            )
        return ModelResponse(parts=[TextPart(f"done: {returns[-1]}")])

    agent = Agent(FunctionModel(model), tools=[codemode_tool(cm)])
    output = agent.run_sync("How much warmer is Rome than Oslo?").output
    assert output.startswith("done: status: ok") and "value: 0" in output
    assert "def lookup(city: str) -> dict:" in seen[0]


def test_a_rejected_call_is_tool_rejected_and_permission_error_in_the_program(cm):
    approver = QueueApprover()
    gate = ApprovalGate(approver, "all")
    _answer_next(approver, Decision.reject("not today"))
    code = (
        "try:\n    lookup('Oslo')\nexcept ToolRejected as e:\n"
        "    print(isinstance(e, PermissionError), isinstance(e, ToolError), e)\n"
    )
    result = cm.run(code, tools=gate.guard(cm.tools, cm))
    assert result.ok and result.stdout.startswith("True True lookup:"), result
    assert "not today" in result.stdout


def test_tool_marked_for_approval_is_guarded(cm):
    from codemode_jupyter import tool

    @tool(approve=True)
    def risky() -> str:
        return "done"

    from codemode_jupyter.tools.tool import Tool

    gate = ApprovalGate(QueueApprover(), [])
    assert gate.needs_approval(Tool.from_callable(risky))
    assert not gate.needs_approval(Tool.from_callable(lookup))


def test_waiting_for_an_async_approval_does_not_use_the_timeout(cm):
    gate = ApprovalGate(QueueApprover(), "all", timeout=2.0)  # nobody answers: rejected at 2 s
    code = (
        "try:\n    await slow_lookup_async('Oslo')\nexcept ToolRejected as e:\n"
        "    print('rejected')\n"
    )
    result = cm.run(code, tools=gate.guard(cm.tools, cm), timeout=1.0)
    assert result.ok and result.stdout == "rejected\n", result


def test_the_session_offers_the_tool_as_methods_too(cm):
    assert cm.tool_definition("anthropic") == tool_definition(cm, "anthropic")
    assert cm.tool_definition() == tool_definition(cm, "openai")
    text = cm.handle_tool_call({"code": "lookup('Rome')['temp'] + 1"})
    assert "status: ok" in text and "value: 22" in text


def test_calls_at_once_take_turns_and_all_return_a_result(cm):
    import threading

    texts: list[str] = []
    start = threading.Barrier(3)

    def call(i: int) -> None:
        start.wait(30)
        texts.append(handle_tool_call(cm, {"code": f"import time\ntime.sleep(0.2)\n{i}"}))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(texts) == 3 and all(t.startswith("status: ok") for t in texts), texts
    assert sorted(t.split("value: ")[1].strip() for t in texts) == ["0", "1", "2"]
    assert handle_tool_call(cm, {"code": "40 + 2"}).startswith("status: ok")  # not broken


def test_a_marked_tool_asks_on_every_path_and_is_rejected_with_no_one_to_ask(cm):
    from codemode_jupyter import tool

    ran: list[str] = []

    @tool(approve=True)
    def wire_money(amount: int) -> str:
        """Send money (a person approves each call)."""
        ran.append("wire")
        return "wired"

    code = "try:\n    wire_money(5)\nexcept ToolRejected as e:\n    print('rejected:', e)"
    text = handle_tool_call(cm, {"code": code}, tools=[wire_money])
    assert ran == [] and "rejected:" in text and "no one can be asked" in text
    approver = QueueApprover()
    _answer_next(approver, Decision.approve())
    text = handle_tool_call(cm, {"code": "wire_money(5)"}, tools=[wire_money], approver=approver)
    assert ran == ["wire"] and "value: 'wired'" in text


def test_pydantic_ai_parallel_calls_failures_and_marked_tools(cm):
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from codemode_jupyter import tool
    from codemode_jupyter.agents.pydantic_ai import codemode_tool

    ran: list[str] = []

    @tool(approve=True)
    def delete_all() -> None:
        """Delete everything (a person approves each call)."""
        ran.append("deleted")

    def model(messages: list, info: AgentInfo) -> ModelResponse:
        returns = tool_returns(messages)
        step = sum(1 for m in messages if getattr(m, "kind", "") == "response")
        if step == 0:  # two programs at once, as models send parallel tool calls
            return ModelResponse(
                parts=[
                    ToolCallPart("run_code", {"code": "import time\ntime.sleep(0.2)\n1"}),
                    ToolCallPart("run_code", {"code": "2"}),
                ]
            )
        if step < 4:  # three failing programs: the agent keeps going
            return ModelResponse(parts=[ToolCallPart("run_code", {"code": "1 / 0"})])
        if step == 4:
            return ModelResponse(parts=[ToolCallPart("run_code", {"code": "delete_all()"})])
        return ModelResponse(parts=[TextPart("\n---\n".join(returns))])

    agent = Agent(FunctionModel(model), tools=[codemode_tool(cm, tools=lambda: [delete_all])])
    output = agent.run_sync("go").output.split("\n---\n")
    assert [o.split("\n")[0] for o in output] == ["status: ok"] * 2 + ["status: error"] * 4
    assert sum("ZeroDivisionError" in o for o in output) == 3
    assert "ToolRejected" in output[-1] and ran == []
