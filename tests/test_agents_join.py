"""`%codemode serve` with the server's sessions, tool limits and client approvals, in a real
kernel, driven by the official mcp client over loopback."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("mcp")
pytest.importorskip("ipywidgets")
import httpx2
import mcp_types as types
from conftest import loaded_kernel
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

TOKEN = "join-test-token-0123456789"
SERVE = (
    "from codemode_jupyter.jupyter.extension import get_magics\n"
    "from codemode_jupyter.jupyter.commands import serve as serve_cmd\n"
    "_magics = get_magics(get_ipython())\n"
    "_server = serve_cmd.serve(_magics, {line!r})\n"
)
FEED = (
    "import json\n"
    "from codemode_jupyter.jupyter.views.transcript import MIME_RUN\n"
    "def _records():\n"
    "    found = []\n"
    "    for run in _server.feed.runs():\n"
    "        payload = run.record(_server.feed.id)['data'][MIME_RUN]\n"
    "        found.append({'agent': payload['agent'], 'header': run.output.outputs[0]['data']"
    "['text/plain'], 'cards': [c.children[0].value for c in run.cards.children],\n"
    "            'approvals': [e.get('approval') for e in payload['timeline']"
    " if e['kind'] == 'call']})\n"
    "    return found\n"
)


def _url(started: Any) -> str:
    assert started.ok, started.error
    (about,) = started.displays()
    return re.search(r"at (http://127\.0\.0\.1:\d+/mcp)", about).group(1)


@asynccontextmanager
async def _client(url: str, **options: Any):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), **options) as client,
    ):
        yield client


def _json(execution: Any) -> Any:
    assert execution.ok, execution.error
    return json.loads(execution.stream().strip().splitlines()[-1])


def test_each_client_gets_its_own_notebook_session_listed_by_status():
    with loaded_kernel() as kernel:
        url = _url(kernel.execute(SERVE.format(line=f"--token {TOKEN}")))
        assert kernel.execute(FEED).ok

        async def agents():
            async with _client(url) as one, _client(url) as two:
                await one.call_tool("run_code", {"code": "mine = 'one'"})
                await two.call_tool("run_code", {"code": "mine = 'two'"})
                seen = await two.call_tool("run_code", {"code": "mine"})
                # While both are connected: what the notebook says about them.
                status = await asyncio.to_thread(kernel.execute, "%codemode status")
                cell = "%%codemode --session agent-1\nmine"
                opened = await asyncio.to_thread(kernel.execute, cell)
                return seen, status, opened

        seen, status, opened = asyncio.run(agents())
        assert seen.structured_content["value"] == "two"
        listed = status.stream()
        both = r"agent_sessions +agent-1 \(last run ok\), agent-2 \(last run ok\)"
        assert re.search(both, listed), listed
        assert opened.ok and opened.result == "'one'"  # a cell opens the first agent's session
        records = _json(kernel.execute("print(json.dumps(_records()))"))
        assert [r["agent"]["session"] for r in records] == ["agent-1", "agent-2", "agent-2"]
        assert records[0]["header"].startswith("agent run 1 (session agent-1)\n")
        assert kernel.execute(SERVE.format(line="--stop")).ok


def test_shared_gives_every_client_one_session():
    with loaded_kernel() as kernel:
        url = _url(kernel.execute(SERVE.format(line=f"--token {TOKEN} --shared")))

        async def agents():
            async with _client(url) as one, _client(url) as two:
                await one.call_tool("run_code", {"code": "mine = 'one'"})
                return await two.call_tool("run_code", {"code": "mine"})

        assert asyncio.run(agents()).structured_content["value"] == "one"
        status = kernel.execute("%codemode status").stream()
        assert re.search(r"agent_sessions +agent \(last run ok\);", status), status
        assert kernel.execute(SERVE.format(line="--stop")).ok


def test_an_approval_answered_in_the_agents_client_is_recorded_as_the_clients():
    with loaded_kernel() as kernel:
        assert kernel.execute(
            "sent = []\ndef send(to: str) -> str:\n    sent.append(to)\n    return 'sent'"
        ).ok
        url = _url(kernel.execute(SERVE.format(line=f"--token {TOKEN} --approve send")))
        assert kernel.execute(FEED).ok
        asked: list[str] = []

        async def answer(context, params):
            asked.append(params.message)
            return types.ElicitResult(action="accept", content={"approve": True})

        async def agent():
            async with _client(url, elicitation_callback=answer) as client:
                return await client.call_tool("run_code", {"code": "send('ann')"})

        result = asyncio.run(agent())
        assert result.structured_content["value"] == "sent" and len(asked) == 1
        assert _json(kernel.execute("print(json.dumps(sent))")) == ["ann"]
        (record,) = _json(kernel.execute("print(json.dumps(_records()))"))
        assert record["approvals"] == [{"decision": "approve", "by": "client"}]
        (card,) = record["cards"]
        assert card.endswith("approved in the agent&#x27;s client"), card
        assert "rejected" not in card
        assert kernel.execute(SERVE.format(line="--stop")).ok


def test_tools_limits_what_the_agent_may_call():
    with loaded_kernel() as kernel:
        assert kernel.execute(
            "def add(a: int, b: int) -> int:\n    return a + b\n"
            "def mul(a: int, b: int) -> int:\n    return a * b\n"
            "def wipe() -> str:\n    return 'wiped'"
        ).ok
        line = f"--token {TOKEN} --tools add,mul --budget 2000"
        started = kernel.execute(SERVE.format(line=line))
        url = _url(started)
        assert "tools agents may call (--tools): add, mul\n" in started.displays()[0]

        async def agent(programs):
            async with _client(url) as client:
                description = (await client.list_tools()).tools[0].description
                results = [await client.call_tool("run_code", {"code": p}) for p in programs]
                return description, results

        programs = ["add(1, 2)", "wipe()", "print('y' * 30_000)"]
        description, (added, wiped, long) = asyncio.run(agent(programs))
        assert len(long.content[0].text) <= 2_000  # --budget sizes every result
        assert "def add(" in description and "wipe" not in description
        assert added.structured_content["value"] == 3
        assert wiped.structured_content["status"] == "error"
        assert "NameError" in wiped.content[0].text
        # A named function the notebook no longer has is simply not offered; a function
        # defined later is not offered either (the server keeps agents to the names).
        changed = kernel.execute("del mul\ndef later() -> int:\n    return 1")
        assert changed.ok and not changed.stream("stderr"), changed.stream("stderr")
        description, (added,) = asyncio.run(agent(["add(2, 2)"]))
        assert "def add(" in description and "def mul(" not in description
        assert "later" not in description
        assert added.structured_content["value"] == 4
        assert kernel.execute(SERVE.format(line="--stop")).ok


def test_a_card_answered_in_the_notebook_withdraws_the_clients_question():
    from codemode_jupyter import CodeMode, tool
    from codemode_jupyter.agents.approval_card import WidgetApprover
    from codemode_jupyter.agents.server import CodeModeServer

    @tool(approve=True)
    def send(to: str) -> str:
        return f"sent to {to}"

    placed: list = []
    approver = WidgetApprover(placed.append)
    events: list[str] = []
    asked = threading.Event()
    withdrawn = asyncio.Event()

    async def never_answers(context, params):
        events.append("asked")
        asked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("withdrawn")  # the server cancelled its question
            withdrawn.set()
            raise

    def click_approve() -> None:
        approver.wait_for_request(60)
        assert asked.wait(60)  # the client holds the question too
        placed[0].approve.click()  # a person clicks Approve on the card

    with (
        CodeMode([send], timeout=60) as cm,
        CodeModeServer(cm, approver=approver, token=TOKEN) as server,
    ):

        async def agent():
            async with _client(server.url, elicitation_callback=never_answers) as client:
                clicked = asyncio.create_task(asyncio.to_thread(click_approve))
                result = await client.call_tool("run_code", {"code": "send('ann')"})
                await clicked
                await asyncio.wait_for(withdrawn.wait(), 30)  # the cancel may trail the result
                return result

        result = asyncio.run(agent())
    assert result.structured_content["value"] == "sent to ann"
    assert events == ["asked", "withdrawn"]
    assert placed[0].title.value.endswith("approved in the notebook")
