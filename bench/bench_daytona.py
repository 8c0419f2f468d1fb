#!/usr/bin/env python
"""Daytona backend figures over the loopback server: requests per cell and per tool round,
and the latency of N sequential tool calls, single execution against replay.

    python bench/bench_daytona.py            # about a minute on 2 vCPUs
    python bench/bench_daytona.py --reps 3   # fewer repetitions per latency figure

Everything goes through the real `daytona` SDK to codemode_jupyter.testing.daytona_server on
127.0.0.1 (sandboxes in the local jail), so the request counts are the real SDK's; the
latencies are those of a loopback network (no internet round trip: on Daytona's cloud each
request adds its RTT, which is why the request counts are the figures that matter).

What is measured:

- warm cell: `cm.run("1")` on a live runtime: HTTP requests and websockets opened, by route
  (the server's counters).
- tool round: the same with 1, 2 and 3 sequential tool calls; the increase per round.
- first cell: `CodeMode(...)` + `run("1")` on a fresh backend: every request it costs.
- latency: wall time of `cm.run` for N = 1, 10, 50 sequential calls of a trivial tool,
  median of `--reps`, single execution (session protocol, warm runtime) and replay
  (`protocol="replay"`: N + 1 `code_run` executions).
- first output: from `cm.run` being called to the program's first print reaching `on_event`
  as an Output event, on a warm runtime, median and worst of `--reps` x 4.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

from codemode_jupyter import CodeMode
from codemode_jupyter.backends.daytona.retries import RetryPolicy
from codemode_jupyter.model.events import Event, Output
from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

KEY = "bench"
MS = 1e3


def add(x: int) -> int:
    """x + 1: the cheapest tool, so what is measured is the round trip."""
    return x + 1


def session(server: DaytonaLoopbackServer, protocol: str = "session") -> CodeMode:
    return CodeMode(
        tools=[add],
        backend="daytona",
        protocol=protocol,
        api_url=server.api_url,
        api_key=KEY,
        retry=RetryPolicy(request_timeout=30),
        timeout=300,
    )


def chain(n: int) -> str:
    return f"x = 0\nfor _ in range({n}):\n    x = add(x)\nx"


def split(counts: dict[str, int]) -> tuple[int, int]:
    """(HTTP requests, websockets) in a count by route; socket.io attempts are left out."""
    http = sum(v for k, v in counts.items() if not k.endswith(".ws"))
    ws = sum(v for k, v in counts.items() if k.endswith(".ws") and k != "events.ws")
    return http, ws


def counted(server: DaytonaLoopbackServer, action: Callable) -> dict[str, int]:
    server.reset_counts()
    action()
    return server.counts


def request_figures(server: DaytonaLoopbackServer) -> None:
    fresh = session(server)
    first = counted(server, lambda: fresh.run("1"))
    fresh.close()
    with session(server) as cm:
        cm.run("1")
        warm = counted(server, lambda: cm.run("1"))
        rounds = {n: counted(server, lambda n=n: cm.run(chain(n))) for n in (1, 2, 3)}
    http, ws = split(warm)
    print("HTTP requests (loopback server route counts)")
    print(
        f"  warm cell, no tool calls : {http} request(s) + {ws} new websocket(s)   "
        f"[target <= 3 + 1]  {_routes(warm)}"
    )
    for n, counts in rounds.items():
        print(f"  warm cell, {n} tool round(s): {split(counts)[0]} request(s)   {_routes(counts)}")
    per_round = (split(rounds[3])[0] - split(rounds[1])[0]) / 2
    print(f"  each tool round adds     : {per_round:g} request(s)   [target 1]")
    http, ws = split(first)
    print(
        f"  first cell (new sandbox) : {http} request(s) + {ws} websocket(s)   "
        f"(+{first.get('events.ws', 0)} socket.io attempts)  {_routes(first)}"
    )


def _routes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != "events.ws")


def latency_figures(server: DaytonaLoopbackServer, reps: int) -> None:
    print(f"\nLatency of N sequential tool calls (median of {reps}, wall time of cm.run)")
    print(
        f"  {'N':>3}  {'single execution':>18}  {'replay':>12}  {'replay/single':>13}  "
        f"{'code_run calls':>14}"
    )
    with session(server) as single, session(server, "replay") as replay:
        single.run("1")
        replay.run("1")
        for n in (1, 10, 50):
            one = _median(lambda n=n: single.run(chain(n)), reps)
            server.reset_counts()
            many = _median(lambda n=n: replay.run(chain(n)), reps)
            executions = server.counts.get("process.code_run", 0) // reps
            print(
                f"  {n:>3}  {one * MS:>15.1f} ms  {many * MS:>9.1f} ms  {many / one:>12.1f}x  "
                f"{executions:>14}"
            )
            per_call = one / n
        print(f"  per call, single execution at N=50: {per_call * MS:.2f} ms")


def first_output_figures(server: DaytonaLoopbackServer, reps: int) -> None:
    """Time from a run's start to its first output event, on a warm runtime."""
    times = []
    with session(server) as cm:
        cm.run("1")
        for _ in range(reps * 4):
            seen: list[float] = []

            def on_event(event: Event, seen: list[float] = seen) -> None:
                if isinstance(event, Output) and not seen:
                    seen.append(time.perf_counter())

            start = time.perf_counter()
            result = cm.run("print('hi')", on_event=on_event)
            assert result.ok and seen, result.error
            times.append(seen[0] - start)
    print(
        f"\nFirst output (run start -> first Output event, warm runtime, {len(times)} runs): "
        f"median {statistics.median(times) * MS:.2f} ms, worst {max(times) * MS:.2f} ms"
    )


def _median(action: Callable, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
        assert result.ok, result.error
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    with DaytonaLoopbackServer(api_key=KEY) as server:
        print(
            f"Daytona backend over the loopback server, python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs"
        )
        request_figures(server)
        latency_figures(server, args.reps)
        first_output_figures(server, args.reps)


if __name__ == "__main__":
    main()
