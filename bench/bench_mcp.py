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
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from codemode_jupyter import CodeMode
from codemode_jupyter.agents.server import CodeModeServer


def add(a: int, b: int) -> int:
    """Add."""
    return a + b


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
    server: CodeModeServer, codes: dict[str, str], reps: int, progress: bool
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {server.token}"}
    figures = {}

    async def on_progress(value, total, message):
        pass

    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps, calls = (5, 100) if args.quick else (15, 300)
    loop_code = f"for i in range({calls}):\n    add(i, 1)"
    with CodeMode([add], timeout=120) as cm:
        empty = direct(cm, "", reps)
        looped = direct(cm, loop_code, reps)
        with CodeModeServer(cm) as server:
            codes = {"empty": "", "loop": loop_code}
            mcp = asyncio.run(through_mcp(server, codes, reps, progress=True))
            quiet = asyncio.run(through_mcp(server, codes, reps, progress=False))
    rows = [
        ("direct empty run", empty),
        ("MCP run_code, empty program", mcp["empty"]),
        ("MCP overhead per run_code", mcp["empty"] - empty),
        (f"per tool call, direct ({calls} calls)", (looped - empty) / calls),
        ("per tool call through MCP (with progress)", (mcp["loop"] - mcp["empty"]) / calls),
        ("per tool call through MCP (no progress token)", (quiet["loop"] - quiet["empty"]) / calls),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value:8.3f} ms")


if __name__ == "__main__":
    main()
