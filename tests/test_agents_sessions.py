"""The MCP server with several clients: a session each, cancellation by a closed connection,
a busy session, approvals through the client (elicitation), schemas, Host/Origin checks."""

from __future__ import annotations

import asyncio
import html
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

pytest.importorskip("mcp")
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from codemode_jupyter import CodeMode, tool
from codemode_jupyter.agents.approval import QueueApprover
from codemode_jupyter.agents.llm_tool import tool_definition
from codemode_jupyter.agents.server import CodeModeServer

marks: list[str] = []
sent: list[str] = []


def mark(label: str) -> None:
    """Record that the program got here."""
    marks.append(label)


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool(approve=True)
def send_email(to: str) -> str:
    """Send an email (marked: a person approves each call)."""
    sent.append(to)
    return f"sent to {to}"


@pytest.fixture(scope="module")
def cm():
    with CodeMode([mark, add, send_email], timeout=60) as session:
        yield session


@asynccontextmanager
async def connect(server: CodeModeServer, timeout: float = 60, **options) -> AsyncIterator:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        Client(streamable_http_client(server.url, http_client=http), **options) as client,
    ):
        yield client


async def run(server: CodeModeServer, code: str, **options) -> types.CallToolResult:
    async with connect(server, **options) as client:
        return await client.call_tool("run_code", {"code": code})


def test_each_client_gets_its_own_session_unless_shared(cm):
    with CodeModeServer(cm) as server:

        async def main():
            async with connect(server) as one, connect(server) as two:
                await one.call_tool("run_code", {"code": "secret_of_client_1 = 42"})
                seen = await two.call_tool("run_code", {"code": "secret_of_client_1"})
                kept = await one.call_tool("run_code", {"code": "secret_of_client_1"})
                return seen, kept, sorted(server.agent_sessions())

        seen, kept, names = asyncio.run(main())
        after = server.agent_sessions()
    assert "NameError" in seen.content[0].text
    assert kept.structured_content["value"] == 42
    assert names == ["agent-1", "agent-2"]
    assert after == {}  # a client that ends its MCP session ends its Code Mode session

    with CodeModeServer(cm, shared=True) as server:

        async def shared():
            await run(server, "secret_of_client_1 = 42")
            return await run(server, "secret_of_client_1")

        assert asyncio.run(shared()).structured_content["value"] == 42
        assert server.agent_sessions() == {"agent": cm}


def test_a_client_that_goes_away_stops_its_program(cm):
    marks.clear()
    with CodeModeServer(cm, shared=True) as server:

        async def main():
            await run(server, "add(0, 0)")  # the runtime is up: the next program starts at once
            with pytest.raises(Exception):  # noqa: B017 - the client's own timeout error
                await run(
                    server,
                    "import time\nmark('start')\ntime.sleep(30)\nmark('end')",
                    timeout=2,
                )
            # The next program does not wait 28 s behind the abandoned one.
            return await asyncio.wait_for(run(server, "add(1, 2)"), 20)

        after = asyncio.run(main())
        first = server.records.get(2)
    assert after.structured_content["value"] == 3
    assert marks == ["start"]
    assert first["result"]["status"] == "interrupted"


def test_a_busy_session_says_so_without_a_host_traceback(cm):
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    with CodeMode([hold]) as person, CodeModeServer(person, shared=True) as server:
        cell = threading.Thread(target=person.run, args=("hold()",))
        cell.start()  # a person's cell runs in the agent's session
        started.wait(30)
        try:
            result = asyncio.run(run(server, "1 + 1"))
        finally:
            release.set()
            cell.join(30)
    text = result.content[0].text
    assert "SessionBusy" in text and "is busy" in text and "nothing ran" in text
    assert "Traceback" not in text and ".py" not in text


def test_a_marked_tool_is_rejected_when_no_one_can_be_asked(cm):
    sent.clear()
    with CodeModeServer(cm) as server:  # no --approve list, no approver, no elicitation
        description = None

        async def main():
            async with connect(server) as client:
                nonlocal description
                description = (await client.list_tools()).tools[0].description
                return await client.call_tool(
                    "run_code",
                    {
                        "code": "try:\n    send_email('a@x.org')\n"
                        "except ToolRejected as e:\n    print('rejected:', e)"
                    },
                )

        result = asyncio.run(main())
    assert sent == []  # never run unasked
    assert (
        "rejected: " in result.content[0].text and "no one can be asked" in result.content[0].text
    )
    assert "Calls to send_email wait for a person's approval" in description


def _elicitation(answers: list[dict], asked: list[str]):
    async def answer(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content=answers.pop(0))

    return answer


def test_approvals_go_to_a_client_that_supports_elicitation(cm):
    sent.clear()
    asked: list[str] = []
    answers = [{"approve": True}, {"approve": False, "reason": "not her"}]
    code = (
        "print(send_email('a@x.org'))\ntry:\n    send_email('b@x.org')\n"
        "except ToolRejected as e:\n    print('refused:', e)"
    )
    with CodeModeServer(cm) as server:
        result = asyncio.run(run(server, code, elicitation_callback=_elicitation(answers, asked)))
    assert sent == ["a@x.org"]
    text = result.content[0].text
    assert "sent to a@x.org" in text and "refused:" in text and "not her" in text
    assert "send_email(to='a@x.org')" in asked[0] and "line 1: print(send_email" in asked[0]


def test_the_first_answer_wins_between_the_notebook_and_the_client(cm):
    sent.clear()
    approver = QueueApprover()
    asked: list[str] = []
    client_asked, client_answered = threading.Event(), threading.Event()

    async def slow_client(context, params):
        asked.append(params.message)
        client_asked.set()
        await asyncio.to_thread(client_answered.wait, 30)  # the person answers first
        return types.ElicitResult(action="accept", content={"approve": False, "reason": "late"})

    def person() -> None:
        request = approver.wait_for_request(30)
        client_asked.wait(30)  # both were asked
        approver.approve(request.id)
        client_answered.set()

    helper = threading.Thread(target=person)
    helper.start()
    with CodeModeServer(cm, approve=["send_email"], approver=approver) as server:
        result = asyncio.run(run(server, "send_email('c@x.org')", elicitation_callback=slow_client))
    helper.join(30)
    assert sent == ["c@x.org"] and len(asked) == 1
    assert result.structured_content["value"] == "sent to c@x.org"


def test_run_code_arguments_follow_the_schema(cm):
    with CodeModeServer(cm) as server:

        async def main():
            async with connect(server) as client:
                listed = (await client.list_tools()).tools[0]
                unknown = await client.call_tool("run_code", {"code": "1", "verbose": True})
                loose = await client.call_tool("run_code", {"code": "1", "reset": "yes"})
                return listed, unknown, loose

        listed, unknown, loose = asyncio.run(main())
    assert listed.input_schema == tool_definition(cm, "mcp")["inputSchema"]
    assert listed.input_schema["additionalProperties"] is False
    assert listed.input_schema["properties"]["code"]["description"]
    assert unknown.is_error and "verbose" in unknown.content[0].text
    assert loose.is_error and "reset" in loose.content[0].text


def test_allowed_tools_limit_what_an_agent_may_call(cm):
    with CodeModeServer(cm, allowed_tools=["add"]) as server:

        async def main():
            async with connect(server) as client:
                description = (await client.list_tools()).tools[0].description
                result = await client.call_tool("run_code", {"code": "mark('x')"})
                return description, result

        description, result = asyncio.run(main())
    assert "def add(" in description and "def mark(" not in description
    assert "NameError" in result.content[0].text


def test_accepted_connections_have_tcp_nodelay(cm):
    with CodeModeServer(cm) as server:
        assert asyncio.run(run(server, "add(1, 1)")).structured_content["value"] == 2
        listening = server._uvicorn.servers[0].sockets[0]
        assert listening.proto == socket.IPPROTO_TCP

        async def accepted() -> list[int]:
            async with connect(server) as client:
                await client.list_tools()
                future = asyncio.run_coroutine_threadsafe(_nodelay(server), server._loop)
                return await asyncio.wrap_future(future)

        flags = asyncio.run(accepted())
    assert flags and all(flags)


async def _nodelay(server: CodeModeServer) -> list[int]:
    """TCP_NODELAY of each connection the server holds (read on the server's loop)."""
    flags = []
    for protocol in server._uvicorn.server_state.connections:
        sock = protocol.transport.get_extra_info("socket")
        flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return flags


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_host_and_origin_are_checked_on_every_loopback_address(cm, host):
    with CodeModeServer(cm, host=host) as server:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        base = {
            "Authorization": f"Bearer {server.token}",
            "Accept": "application/json, text/event-stream",
        }
        with httpx2.Client(timeout=10) as http:
            evil_host = http.post(server.url, json=body, headers={**base, "Host": "evil.example"})
            evil_origin = http.post(
                server.url, json=body, headers={**base, "Origin": "https://evil.example"}
            )
            good = http.post(
                server.url, json=body, headers={**base, "Origin": f"http://{host}:{server.port}"}
            )
    assert evil_host.status_code == 421
    assert evil_origin.status_code == 403
    assert good.status_code == 200


def test_a_card_is_settled_as_the_clients_when_the_client_answers(cm):
    pytest.importorskip("ipywidgets")
    from codemode_jupyter.agents.approval_card import WidgetApprover

    sent.clear()
    placed: list = []
    approver = WidgetApprover(placed.append)  # the notebook's card: nobody clicks it
    asked: list[str] = []
    with CodeModeServer(cm, approver=approver) as server:
        result = asyncio.run(
            run(
                server,
                "send_email('d@x.org')",
                elicitation_callback=_elicitation([{"approve": True}], asked),
            )
        )
    assert sent == ["d@x.org"] and result.structured_content["value"] == "sent to d@x.org"
    assert len(placed) == 1  # the card was shown, and says who decided
    title = html.unescape(placed[0].widget.children[0].value)
    assert title.endswith("approved in the agent's client") and "rejected" not in title


def test_a_client_sizes_one_result_through_meta(cm):
    code = "print('y' * 30_000)"
    with CodeModeServer(cm) as server:

        async def main():
            async with connect(server) as client:
                default = await client.call_tool("run_code", {"code": code})
                small = await client.call_tool(
                    "run_code", {"code": code}, meta={"codemode/budget": 2_000}
                )
                return default, small

        default, small = asyncio.run(main())
    assert len(default.content[0].text) > 20_000 // 2
    assert len(small.content[0].text) <= 2_000
    with pytest.raises(ValueError, match="at most"):
        CodeModeServer(cm, budget=10**7)
