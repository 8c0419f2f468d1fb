"""Results sized for a model: the budget, the full record as an MCP resource, the SSE cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

pytest.importorskip("mcp")
import httpx2
from conftest import tool_returns
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from codemode_jupyter import CodeMode
from codemode_jupyter.agents.llm_tool import handle_tool_call
from codemode_jupyter.agents.results import DEFAULT_BUDGET, shape
from codemode_jupyter.agents.server import CodeModeServer


def rows(n: int) -> list[dict]:
    """n rows of data."""
    return [{"id": i, "name": f"row {i}", "amount": i % 97} for i in range(n)]


def echo(text: str) -> str:
    """The text back."""
    return text


@pytest.fixture(scope="module")
def cm():
    with CodeMode([rows, echo], timeout=60, max_output=3_000_000) as session:
        yield session


@asynccontextmanager
async def connect(server: CodeModeServer) -> AsyncIterator:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        yield client


def whole(result) -> int:
    """Characters of a result as the model gets it: its text and its structured content."""
    text = sum(len(c.text) for c in result.content if c.type == "text")
    return text + len(json.dumps(result.structured_content))


SUM_OF_ROWS = "data = rows(20000)\nsum(r['amount'] for r in data)"
# Over 1 MiB of output and of tool results, with progress requested (an SSE stream).
BIG = (
    "for i in range(12):\n    print(str(i) * 100_000)\n"
    "big = [echo('x' * 100_000) for _ in range(12)]\n"
    "print('the end')\nlen(big)"
)


def test_a_big_run_comes_back_within_the_budget_and_its_record_has_everything(cm):
    with CodeModeServer(cm, shared=True) as server:

        async def main():
            async with connect(server) as client:
                lines: list[str] = []

                async def on_progress(value, total, message):
                    lines.append(message)

                small = await client.call_tool("run_code", {"code": SUM_OF_ROWS})
                big = await client.call_tool(
                    "run_code", {"code": BIG}, progress_callback=on_progress
                )
                uri = big.structured_content["run"]
                first = json.loads((await client.read_resource(uri)).contents[0].text)
                pages = [first["text"]]
                for page in range(2, first["pages"] + 1):
                    text = (await client.read_resource(f"{uri}?page={page}")).contents[0].text
                    pages.append(json.loads(text)["text"])
                record = "".join(pages)
                listed = await client.list_resources()
                index = json.loads((await client.read_resource("codemode://runs")).contents[0].text)
                missing = None
                try:
                    await client.read_resource("codemode://runs/999")
                except Exception as exc:
                    missing = str(exc)
                return small, big, record, lines, missing, listed, index

        small, big, record, lines, missing, listed, index = asyncio.run(main())
    assert [str(r.uri) for r in listed.resources] == ["codemode://runs"]
    assert [(r["id"], r["session"], r["status"]) for r in index] == [
        (1, "agent", "ok"),
        (2, "agent", "ok"),
    ]
    # 20,000 rows fetched, one number returned: the rows never reach the model.
    assert small.structured_content["value"] == sum(i % 97 for i in range(20000))
    assert whole(small) <= 2_000
    assert small.structured_content["counts"]["tool_calls"] == 1
    # The big run: the result is whole (no lost SSE event) and within the budget.
    assert big.structured_content["status"] == "ok"
    assert big.structured_content["value"] == 12
    assert whole(big) <= DEFAULT_BUDGET
    text = big.content[0].text
    assert text.startswith("status: ok") and "0000000000" in text and "the end" in text
    assert "characters left out" in text and big.structured_content["counts"]["chars_dropped"] > 0
    assert "stdout" not in big.structured_content and "tool_calls" not in big.structured_content
    # Nothing is lost: the resource has all the output and every call with its result.
    full = json.loads(record)
    assert full["code"] == BIG
    assert len(full["result"]["stdout"]) > 1_200_000
    assert len(full["result"]["tool_calls"]) == 12
    assert full["result"]["tool_calls"][0]["result"] == "x" * 100_000
    assert max(len(line) for line in lines) <= 2_000  # progress lines are cut too
    assert "no run 999 is kept" in missing


def test_the_budget_is_set_per_server_and_per_call(cm):
    code = "print('a' * 50_000)\nprint('tail marker')"
    text = handle_tool_call(cm, {"code": code})
    assert len(text) <= DEFAULT_BUDGET
    assert text.count("a") > 10_000 and "tail marker" in text
    short = handle_tool_call(cm, {"code": code}, budget=2_000)
    assert len(short) <= 2_000 and "tail marker" in short and "characters left out" in short
    with pytest.raises(ValueError, match="at least"):
        handle_tool_call(cm, {"code": "1"}, budget=10)
    with CodeModeServer(cm, shared=True, budget=3_000) as server:

        async def main():
            async with connect(server) as client:
                return await client.call_tool("run_code", {"code": code})

        assert whole(asyncio.run(main())) <= 3_000


def test_an_error_keeps_the_programs_own_line_numbers_within_the_budget(cm):
    code = "print('x' * 80_000)\n\n\ndef f():\n    raise KeyError('missing')\n\nf()"
    shaped = shape(cm.run(code), 2_000)
    assert len(shaped.text) + len(json.dumps(shaped.data)) <= 2_000
    assert "line 7, in <module>" in shaped.text and "line 5, in f" in shaped.text
    assert "KeyError: 'missing'" in shaped.text
    assert shaped.data["error"] == {"type": "KeyError", "message": "'missing'"}


@pytest.mark.parametrize("budget", [1_000, 1_500, 5_000])
def test_every_part_of_a_result_fits_a_small_budget(cm, budget):
    code = (
        "for i in range(50):\n    echo('z' * 300)\n"
        "print('o' * 9000)\nimport sys\nprint('e' * 9000, file=sys.stderr)\n"
        "raise ValueError('v' * 3000)"
    )
    shaped = shape(cm.run(code), budget, "codemode://runs/1")
    assert len(shaped.text) + len(json.dumps(shaped.data)) <= budget
    assert shaped.text.startswith("status: error") and shaped.data["counts"]["tool_calls"] == 50
    assert "line 6, in <module>" in shaped.text  # the error's end survives any cut


def test_pydantic_ai_gets_the_same_budget(cm):
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from codemode_jupyter.agents.pydantic_ai import codemode_tool

    def model(messages: list, info: AgentInfo) -> ModelResponse:
        returns = tool_returns(messages)
        if not returns:
            return ModelResponse(parts=[ToolCallPart("run_code", {"code": SUM_OF_ROWS})])
        return ModelResponse(parts=[TextPart(returns[-1])])

    agent = Agent(FunctionModel(model), tools=[codemode_tool(cm)])
    output = agent.run_sync("sum the amounts").output
    assert output.startswith("status: ok") and len(output) <= 2_000
