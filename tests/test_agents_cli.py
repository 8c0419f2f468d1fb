"""`codemode-jupyter serve FILE.py` over stdio, driven by the official mcp client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mcp")
from mcp import Client, StdioServerParameters

from codemode_jupyter.cli.main import main

TOOLS = textwrap.dedent('''
    """Shop tools."""
    import json

    def price(item: str) -> float:
        """The price of an item."""
        print("price looked up")  # a tool's print must not corrupt the stdio channel
        return {"apple": 0.5, "pear": 0.75}[item]

    async def stock(item: str) -> int:
        """How many are in stock."""
        print("unflushed", end="")  # left in a buffer: must not reach stdout at exit either
        return 3

    def _helper() -> None:
        pass
''')


def test_a_module_served_over_stdio(tmp_path):
    (tmp_path / "shop.py").write_text(TOOLS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "codemode_jupyter.cli", "serve", str(tmp_path / "shop.py")],
        env=env,
    )

    async def agent():
        async with Client(params) as client:
            listed = (await client.list_tools()).tools
            result = await client.call_tool(
                "run_code",
                {
                    "code": (
                        "total = price('apple') * await stock_async('apple')\nprint(total)\ntotal"
                    )
                },
            )
            missing = await client.call_tool("run_code", {"code": "price('kiwi')"})
            return listed, result, missing

    listed, result, missing = asyncio.run(agent())
    assert [t.name for t in listed] == ["run_code"]
    description = listed[0].description
    assert "def price(item: str) -> float:" in description
    assert "async def stock(item: str) -> int:" in description and "_helper" not in description
    assert result.structured_content["value"] == 1.5
    assert "stdout:\n1.5" in result.content[0].text
    assert "status: error" in missing.content[0].text and "KeyError" in missing.content[0].text


def test_bad_targets_say_what_is_wrong(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty.py").write_text("X = 1\n")
    assert main(["serve", str(tmp_path / "empty.py")]) == 2
    assert "defines no public functions" in capsys.readouterr().err


def _serve(tmp_path, *options: str) -> subprocess.Popen:
    (tmp_path / "shop.py").write_text(TOOLS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [
        sys.executable,
        "-m",
        "codemode_jupyter.cli",
        "serve",
        str(tmp_path / "shop.py"),
    ]
    return subprocess.Popen(
        [*command, *options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


def _send(proc: subprocess.Popen, message: dict) -> None:
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    proc.stdin.flush()


HELLO = {
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


def test_stdout_carries_only_the_protocol_and_a_client_may_leave_mid_run(tmp_path):
    proc = _serve(tmp_path)
    try:
        _send(proc, HELLO)
        json.loads(proc.stdout.readline())
        _send(proc, {"method": "notifications/initialized"})
        code = "price('apple') * await stock_async('apple')"
        call = {"name": "run_code", "arguments": {"code": code}}
        _send(proc, {"id": 1, "method": "tools/call", "params": call})
        answer = json.loads(proc.stdout.readline())
        assert answer["result"]["structuredContent"]["value"] == 1.5
        slow = "price('pear')\nimport time\ntime.sleep(30)"
        call = {"name": "run_code", "arguments": {"code": slow}}
        _send(proc, {"id": 2, "method": "tools/call", "params": call})
        while "price looked up" not in proc.stderr.readline():
            pass  # the first call's print; the second's shows the slow program runs
        while "price looked up" not in proc.stderr.readline():
            pass
        proc.stdin.close()  # the client leaves while the program sleeps
        rest_out = proc.stdout.read()
        rest_err = proc.stderr.read()
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    for line in rest_out.splitlines():  # only JSON-RPC, never a tool's print
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert "price looked up" not in rest_out and "unflushed" not in rest_out
    assert "Event loop is closed" not in rest_err and "Traceback" not in rest_err


def test_approvals_over_stdio_go_to_the_client_and_tools_limit_the_agent(tmp_path):
    import mcp_types as types

    (tmp_path / "shop.py").write_text(TOOLS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = ["-m", "codemode_jupyter.cli", "serve", str(tmp_path / "shop.py")]
    params = StdioServerParameters(
        command=sys.executable,
        args=[*command, "--approve", "price", "--tools", "price"],
        env=env,
    )
    asked: list[str] = []

    async def answer(context, request):
        asked.append(request.message)
        return types.ElicitResult(action="accept", content={"approve": True})

    async def agent():
        # A handshake-era client (as Claude Desktop, Cursor): a 2026-07-28 stdio connection
        # has no channel for the server's questions, so marked calls would be rejected.
        async with Client(params, elicitation_callback=answer, mode="legacy") as client:
            description = (await client.list_tools()).tools[0].description
            result = await client.call_tool("run_code", {"code": "price('pear')"})
            hidden = await client.call_tool("run_code", {"code": "stock('pear')"})
            return description, result, hidden

    description, result, hidden = asyncio.run(agent())
    assert "def price(" in description and "stock" not in description
    assert result.structured_content["value"] == 0.75
    assert "price(item='pear')" in asked[0]
    assert "NameError" in hidden.content[0].text
