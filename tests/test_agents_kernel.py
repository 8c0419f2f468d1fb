"""`%codemode serve` in a real kernel, driven by the official mcp client from this process."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

pytest.importorskip("mcp")
import httpx2
from conftest import loaded_kernel
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

TOKEN = "kernel-test-token-0123456789"
SERVE = (
    "from codemode_jupyter.jupyter.extension import get_magics\n"
    "from codemode_jupyter.jupyter import serve_cmd\n"
    "_magics = get_magics(get_ipython())\n"
    "_server = serve_cmd.serve(_magics, {line!r})\n"
)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_an_agent_runs_notebook_functions_in_the_kernel():
    with loaded_kernel() as kernel:
        assert kernel.execute("def add(a: int, b: int) -> int:\n    return a + b").ok
        started = kernel.execute(SERVE.format(line=f"--token {TOKEN}"))
        assert started.ok, started.error
        printed = started.stream()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/mcp)", printed).group(1)
        assert f"Bearer {TOKEN}" in printed and '"mcpServers"' in printed
        assert started.of_type("display_data")  # the feed
        port = int(url.rsplit(":", 1)[1].split("/")[0])

        async def agent():
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=60) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                first = await client.call_tool("run_code", {"code": "total = add(2, 3)\ntotal"})
                before = (await client.list_tools()).tools[0].description
                async with client.listen(tools_list_changed=True) as subscription:
                    defined = await asyncio.to_thread(
                        kernel.execute, "def mul(a: int, b: int) -> int:\n    return a * b"
                    )
                    await asyncio.wait_for(anext(aiter(subscription)), 30)
                after = (await client.list_tools()).tools[0].description
                second = await client.call_tool("run_code", {"code": "mul(total, 10)"})
                return first, before, defined, after, second

        first, before, defined, after, second = asyncio.run(agent())
        assert first.structured_content["value"] == 5
        assert "def add(a: int, b: int) -> int:" in before and "def mul" not in before
        assert defined.ok and "def mul(a: int, b: int) -> int:" in after
        assert second.structured_content["value"] == 50  # the agent session kept `total`

        # The agent's variables live in the `agent` session, not in the person's cells.
        checked = kernel.execute(
            "print(sorted(k[1] for k in _magics.pool.sessions if k[0] == 'named'), "
            "'total' in dir())\n"
            "print(_magics.pool.named('agent').last_result.value)"
        )
        assert checked.stream() == "['agent'] False\n50\n"

        # The agent's runs are in the Tools panel's recent runs, marked as an agent's.
        listed = kernel.execute(
            "from codemode_jupyter.jupyter.extension import _loaded\n"
            "ext = next(iter(_loaded.values()))\n"
            "runs = ext.comm.runs_message()['runs']\n"
            "print([(r['source'], r['code']) for r in runs])"
        )
        assert "('agent', 'mul(total, 10)')" in listed.stream(), listed.messages

        stopped = kernel.execute(SERVE.format(line="--stop"))
        assert "MCP server stopped" in stopped.stream()
        assert not _port_open(port)
        threads = kernel.execute(
            "import threading\nprint(sorted(t.name for t in threading.enumerate() "
            "if t.name.startswith('codemode-mcp') or t.name.startswith('codemode-agent')))"
        )
        assert threads.stream() == "[]\n"


def test_serve_refuses_bad_options_clearly():
    with loaded_kernel() as kernel:
        remote = kernel.execute(SERVE.format(line="--host 0.0.0.0"))
        bad = kernel.execute(SERVE.format(line="--port notaport"))
        none = kernel.execute(SERVE.format(line="--stop"))
    # IPython shows a UsageError as one line on stderr, without a traceback.
    assert not remote.ok and "UsageError" in remote.stream("stderr")
    assert "allow_remote=True (--allow-remote)" in remote.stream("stderr")
    assert not bad.ok and "invalid int value: 'notaport'" in bad.stream("stderr")
    assert none.ok and "no MCP server is running" in none.stream()
