"""The Code Mode MCP server with the official `mcp` client over Streamable HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

pytest.importorskip("mcp")
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from codemode_jupyter import CodeMode
from codemode_jupyter.agents.approval import QueueApprover
from codemode_jupyter.agents.server import CodeModeServer


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def boom(x: int) -> int:
    """Always fails."""
    raise ValueError(f"bad x: {x}")


sent: list[str] = []
marks: list[str] = []


def mark(label: str) -> None:
    """Record that the program got here."""
    marks.append(label)


def send_email(to: str, body: str) -> str:
    """Send an email (needs approval)."""
    sent.append(to)
    return f"sent to {to}"


@pytest.fixture(scope="module")
def cm():
    with CodeMode([add, boom, send_email, mark], timeout=30) as session:
        yield session


@asynccontextmanager
async def connect(server: CodeModeServer, token: str | None = None, **options) -> AsyncIterator:
    headers = {"Authorization": f"Bearer {token or server.token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(server.url, http_client=http), **options) as client,
    ):
        yield client


def test_lists_the_tool_and_runs_programs_that_call_tools(cm):
    with CodeModeServer(cm) as server:

        async def main():
            async with connect(server) as client:
                listed = (await client.list_tools()).tools
                progress: list[tuple[float, str]] = []

                async def on_progress(value, total, message):
                    progress.append((value, message))

                ok = await client.call_tool(
                    "run_code",
                    {
                        "code": (
                            "print('start')\nx = add(1, 2)\ntry:\n    boom(x)\n"
                            "except ValueError as e:\n    print('caught', e)\nx * 10"
                        )
                    },
                    progress_callback=on_progress,
                )
                failed = await client.call_tool("run_code", {"code": "y = add(1, 1)\n1 / 0"})
                kept = await client.call_tool("run_code", {"code": "x + y"})
                reset = await client.call_tool("run_code", {"code": "x", "reset": True})
                return listed, progress, ok, failed, kept, reset

        listed, progress, ok, failed, kept, reset = asyncio.run(main())
    assert [t.name for t in listed] == ["run_code"]
    assert listed[0].description == cm.system_prompt()
    assert set(listed[0].input_schema["properties"]) == {"code", "reset"}

    assert not ok.is_error
    text = ok.content[0].text
    assert "status: ok" in text and "value: 30" in text
    assert "#1 add(a=1, b=2) -> 3" in text
    assert "#2 boom(x=3) raised ValueError: bad x: 3" in text
    assert ok.structured_content["value"] == 30
    assert ok.structured_content["counts"]["tool_calls"] == 2
    # One notification carries the lines of the events since the last (at most ten a second).
    messages = "\n".join(m for _, m in progress)
    assert messages == "\n".join(
        [
            "stdout: start\n",
            "call #1 add(a=1, b=2)",
            "call #1 add -> 3",
            "call #2 boom(x=3)",
            "call #2 boom raised ValueError: bad x: 3",
            "stdout: caught boom: bad x: 3\n",
        ]
    )
    assert [v for v, _ in progress] == sorted(v for v, _ in progress)

    assert not failed.is_error  # a failed program is a plain result by default (errors=)
    assert failed.content[0].text.startswith("status: error")
    assert "ZeroDivisionError: division by zero" in failed.content[0].text
    assert "line 2, in <module>" in failed.content[0].text
    assert failed.structured_content["error"]["type"] == "ZeroDivisionError"
    assert kept.structured_content["value"] == 5  # variables persist between programs
    assert "NameError" in reset.content[0].text


def test_requests_without_the_token_get_401(cm):
    with CodeModeServer(cm) as server:

        async def main():
            async with httpx2.AsyncClient() as http:
                bare = await http.post(
                    server.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
                )
                wrong = await http.post(
                    server.url, json={}, headers={"Authorization": "Bearer " + "x" * 43}
                )
            try:
                async with connect(server, token="not-the-token-at-all"):
                    refused = None
            except BaseException as exc:  # the SDK wraps the failure in exception groups
                refused = exc
            return bare, wrong, refused

        bare, wrong, refused = asyncio.run(main())
    assert bare.status_code == wrong.status_code == 401
    assert "MCPError" in repr(refused)  # the official client cannot connect either
    assert "Bearer" in bare.headers["www-authenticate"]


def test_a_remote_host_needs_an_explicit_flag(cm):
    with pytest.raises(ValueError, match="allow_remote"):
        CodeModeServer(cm, host="0.0.0.0")
    with pytest.raises(ValueError, match="16 characters"):
        CodeModeServer(cm, token="short")


def test_the_tool_list_changes_with_the_tools(cm):
    tools = [add]
    with CodeModeServer(cm, tools=lambda: list(tools)) as server:

        async def main():
            # A client that speaks the stateless 2026-07-28 protocol without asking (the
            # server's discover offers the handshake era) is served all the same.
            async with connect(server, mode="2026-07-28") as client:
                before = (await client.list_tools()).tools[0].description
                async with client.listen(tools_list_changed=True) as subscription:
                    assert not server.refresh_tools()  # nothing changed: nothing sent
                    tools.append(boom)
                    await asyncio.to_thread(server.refresh_tools)
                    event = await asyncio.wait_for(anext(aiter(subscription)), 10)
                after = (await client.list_tools()).tools[0].description
                result = await client.call_tool("run_code", {"code": "boom(1)"})
            return before, event, after, result

        before, event, after, result = asyncio.run(main())
    assert type(event).__name__ == "ToolsListChanged"
    assert "def boom" not in before and "def boom" in after
    assert "ValueError: boom: bad x: 1" in result.content[0].text


def test_handshake_era_clients_are_told_too(cm):
    tools = [add]
    with CodeModeServer(cm, tools=lambda: list(tools)) as server:
        changed = asyncio.Event()

        async def on_message(message):
            if (
                type(message).__name__ == "ToolListChangedNotification"
                or getattr(message, "method", "") == "notifications/tools/list_changed"
            ):
                changed.set()

        async def main():
            async with connect(server, mode="legacy", message_handler=on_message) as client:
                await client.list_tools()
                tools.append(boom)
                await asyncio.to_thread(server.refresh_tools)
                await asyncio.wait_for(changed.wait(), 10)
                return (await client.list_tools()).tools[0].description

        assert "def boom" in asyncio.run(main())


def test_approval_and_rejection_of_an_agent_run(cm):
    approver = QueueApprover()
    sent.clear()
    with CodeModeServer(cm, approve=["send_email"], approver=approver) as server:
        decided: list[str] = []

        def person() -> None:  # answers the two calls the program makes, as a card would
            first = approver.wait_for_request(30)
            decided.append(first.describe())
            approver.approve(first.id)
            second = approver.wait_for_request(30)
            decided.append(second.describe())
            approver.reject(second.id, "not this one")

        helper = threading.Thread(target=person)
        helper.start()

        async def main():
            async with connect(server) as client:
                description = (await client.list_tools()).tools[0].description
                result = await client.call_tool(
                    "run_code",
                    {
                        "code": (
                            "print(send_email('a@x.org', 'hi'))\n"
                            "try:\n    send_email('b@x.org', 'hi')\n"
                            "except ToolError as e:\n    print('refused:', e.remote_type, e)\n"
                            "add(1, 1)"
                        )
                    },
                )
            return description, result

        description, result = asyncio.run(main())
        helper.join(30)
    assert "Calls to send_email wait for a person's approval" in description
    assert decided == ["send_email(to='a@x.org', body='hi')", "send_email(to='b@x.org', body='hi')"]
    assert sent == ["a@x.org"]  # the rejected call never ran
    text = result.content[0].text
    assert "sent to a@x.org" in text
    assert "refused: ToolRejected" in text and "not this one" in text
    assert "#3 add(a=1, b=1) -> 2" in text  # add needs no approval


def test_an_unanswered_approval_is_a_rejection_and_does_not_use_the_timeout(cm):
    approver = QueueApprover()
    server = CodeModeServer(cm, approve="all", approver=approver, approval_timeout=0.5)
    # The program's own timeout is shorter than the wait: waiting must not count against it.
    job = server.runner.submit("try:\n    add(1, 2)\nexcept ToolError as e:\n    print(e)")
    try:
        result = job.future.result(30)
    finally:
        server.stop()
    assert result.ok
    assert "no decision within 0.5 s" in result.stdout


def test_runs_are_queued_one_at_a_time(cm):
    marks.clear()
    with CodeModeServer(cm) as server:

        async def main():
            async with connect(server) as client:
                return await asyncio.gather(
                    *(
                        client.call_tool(
                            "run_code",
                            {
                                "code": f"import time\nmark('start {i}')\ntime.sleep(0.05)\n"
                                f"mark('end {i}')"
                            },
                        )
                        for i in range(3)
                    )
                )

        results = asyncio.run(main())
    assert all(r.structured_content["ok"] for r in results)
    # No two programs overlapped: each one's end comes right after its start.
    assert [m.split()[0] for m in marks] == ["start", "end"] * 3
    assert all(a.split()[1] == b.split()[1] for a, b in zip(marks[::2], marks[1::2], strict=True))


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_stop_leaves_no_thread_and_no_port(cm):
    before = set(threading.enumerate())
    server = CodeModeServer(cm).start()
    port = server.port
    assert _port_open(port)

    async def main():
        async with connect(server) as client:
            return await client.call_tool("run_code", {"code": "add(2, 2)"})

    assert asyncio.run(main()).structured_content["value"] == 4
    server.stop()
    assert not server.running
    assert not _port_open(port)
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == []


def test_images_the_program_displays_come_back_as_image_content(cm):
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
        "rkJggg=="
    )
    with CodeModeServer(cm) as server:

        async def main():
            async with connect(server) as client:
                code = (
                    "import base64\nfrom codemode import Image, HTML\n"
                    f"display(Image(data=base64.b64decode({png!r})))\n"
                    "display(HTML('<b>not an image</b>'))\nprint('shown')"
                )
                return await client.call_tool("run_code", {"code": code})

        result = asyncio.run(main())
    assert not result.is_error
    text, *images = result.content
    assert "shown" in text.text
    assert [(i.type, i.mime_type) for i in images] == [("image", "image/png")]
    assert images[0].data == png


async def _failing_agent_run(server: CodeModeServer) -> str:
    """A pydantic-ai agent whose run_code goes to the server through the official client and
    treats an isError result as pydantic-ai's own MCP toolset does (ModelRetry, counted
    against the tool's retries: 1 by default). (Its MCPToolset needs fastmcp, not installed.)"""
    from pydantic_ai import Agent, ModelRetry
    from pydantic_ai.exceptions import UnexpectedModelBehavior
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    def model(messages: list, info: AgentInfo) -> ModelResponse:
        step = sum(1 for m in messages if getattr(m, "kind", "") == "response")
        if step < 3:  # three programs in a row fail: a normal Code Mode outcome
            return ModelResponse(parts=[ToolCallPart("run_code", {"code": f"boom({step})"})])
        return ModelResponse(parts=[TextPart("gave up politely")])

    async with connect(server) as client:

        async def run_code(code: str) -> str:
            result = await client.call_tool("run_code", {"code": code})
            if result.is_error:
                raise ModelRetry(result.content[0].text)
            return result.content[0].text

        agent = Agent(FunctionModel(model), tools=[run_code])
        try:
            return (await agent.run("go")).output
        except UnexpectedModelBehavior as exc:
            return f"stopped: {exc}"


def test_a_pydantic_ai_agent_on_an_mcp_client_survives_failing_programs(cm):
    pytest.importorskip("pydantic_ai")
    with CodeModeServer(cm) as server:  # default errors="result": plain results
        assert asyncio.run(_failing_agent_run(server)) == "gave up politely"
    with CodeModeServer(cm, errors="tool_error") as server:  # error results count as retries
        assert "exceeded max retries" in asyncio.run(_failing_agent_run(server))
