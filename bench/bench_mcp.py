#!/usr/bin/env python
"""What MCP adds to a Code Mode run: the `run_code` round trip and each tool call.

    python bench/bench_mcp.py            # about 20 s on 2 vCPUs
    python bench/bench_mcp.py --quick

Needs the agents extra. One CodeMode session (local backend), served by CodeModeServer on
loopback; the official `mcp` client (Streamable HTTP, one connection kept open) calls
`run_code`. Figures are medians of wall time (`time.perf_counter`) in this process:

- direct empty run: `cm.run("")` on a live runtime (the engine alone).
- MCP empty run: `call_tool("run_code", {"code": ""})`, client to result.
- MCP overhead: the difference (HTTP, JSON-RPC, the agent thread, result text).
- per tool call, direct and through MCP: `for i in range(N): add(i, 1)` minus the empty
  run, divided by N. Through MCP each call also sends two progress notifications.
- per tool call through MCP without a progress token (no notifications).
- MCP round trip of a plain tool: an MCP server (the same SDK, HTTP, loopback) whose `add`
  tool is called directly, beside `run_code` for the ratio; both with a handshake-era session
  (what the Code Mode server offers, for a session per client) and statelessly (2026-07-28).
- result size: a program that fetches 20,000 rows through a tool and returns their sum; the
  characters of the whole result (text + structured content) the model gets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import threading
import time

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from codemode_jupyter import CodeMode
from codemode_jupyter.agents.server import CodeModeServer


def add(a: int, b: int) -> int:
    """Add."""
    return a + b


def rows(n: int) -> list[dict]:
    """n rows."""
    return [{"id": i, "name": f"row {i}", "amount": i % 97} for i in range(n)]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def direct(cm: CodeMode, code: str, reps: int) -> float:
    cm.run(code)  # warm
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        result = cm.run(code)
        samples.append(time.perf_counter() - started)
        assert result.ok, result.error
    return median_ms(samples)


async def through_mcp(
    server: CodeModeServer, codes: dict[str, str], reps: int, progress: bool, mode: str = "auto"
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {server.token}"}
    figures = {}

    async def on_progress(value, total, message):
        pass

    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(server.url, http_client=http), mode=mode) as client,
    ):
        for label, code in codes.items():
            samples = []
            for i in range(reps + 1):
                started = time.perf_counter()
                result = await client.call_tool(
                    "run_code", {"code": code}, progress_callback=on_progress if progress else None
                )
                if i:  # the first is a warm-up
                    samples.append(time.perf_counter() - started)
                assert not result.is_error, result.content[0].text
            figures[label] = median_ms(samples)
    return figures


async def result_size(server: CodeModeServer) -> int:
    headers = {"Authorization": f"Bearer {server.token}"}
    code = "data = rows(20000)\nsum(r['amount'] for r in data)"
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        result = await client.call_tool("run_code", {"code": code})
    text = sum(len(c.text) for c in result.content if c.type == "text")
    return text + len(json.dumps(result.structured_content))


def plain_tool_round_trip(reps: int, mode: str) -> float:
    """Median ms of calling `add` as an MCP tool of its own (no Code Mode), over HTTP."""
    import uvicorn
    from mcp.server import MCPServer

    server = MCPServer("plain", log_level="WARNING")
    server.add_tool(add)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    http = uvicorn.Server(uvicorn.Config(server.streamable_http_app(), log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(http.serve(sockets=[sock])))
    thread.start()
    while not http.started:
        time.sleep(0.01)

    async def calls() -> float:
        async with Client(f"http://127.0.0.1:{port}/mcp", mode=mode) as client:
            samples = []
            for i in range(reps + 1):
                started = time.perf_counter()
                await client.call_tool("add", {"a": i, "b": 1})
                if i:
                    samples.append(time.perf_counter() - started)
        return median_ms(samples)

    try:
        return asyncio.run(calls())
    finally:
        http.should_exit = True
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps, calls = (5, 100) if args.quick else (15, 300)
    loop_code = f"for i in range({calls}):\n    add(i, 1)"
    with CodeMode([add, rows], timeout=120) as cm:
        empty = direct(cm, "", reps)
        looped = direct(cm, loop_code, reps)
        with CodeModeServer(cm, shared=True) as server:
            codes = {"empty": "", "loop": loop_code}
            mcp = asyncio.run(through_mcp(server, codes, reps, progress=True))
            quiet = asyncio.run(through_mcp(server, codes, reps, progress=False))
            size = asyncio.run(result_size(server))
            stateless = asyncio.run(
                through_mcp(server, {"empty": ""}, reps * 4, progress=False, mode="2026-07-28")
            )
    plain = plain_tool_round_trip(reps * 4, "legacy")
    plain_stateless = plain_tool_round_trip(reps * 4, "auto")
    table = [
        ("direct empty run", empty),
        ("MCP run_code, empty program", mcp["empty"]),
        ("MCP overhead per run_code", mcp["empty"] - empty),
        (f"per tool call, direct ({calls} calls)", (looped - empty) / calls),
        ("per tool call through MCP (with progress)", (mcp["loop"] - mcp["empty"]) / calls),
        ("per tool call through MCP (no progress token)", (quiet["loop"] - quiet["empty"]) / calls),
        ("MCP run_code, empty, no progress token", quiet["empty"]),
        ("MCP round trip of a plain tool (add), handshake session", plain),
        ("MCP run_code, empty, stateless 2026-07-28 client", stateless["empty"]),
        ("MCP round trip of a plain tool (add), stateless", plain_stateless),
    ]
    width = max(len(label) for label, _ in table)
    for label, value in table:
        print(f"{label.ljust(width)}  {value:8.3f} ms")
    print(f"{'20,000-row program returning one number: result'.ljust(width)}  {size:8d} chars")


if __name__ == "__main__":
    main()
