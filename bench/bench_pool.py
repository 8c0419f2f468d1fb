"""Tasks per second of a Pool: 200 short tasks with 5 tool calls each.

    python bench/bench_pool.py [--tasks 200] [--sizes 1,2,4] [--daytona-sizes 4,16]

Local jails, cold (a new pool: sandbox starts included) and warm (the pool's sandboxes already
up), then Daytona over the loopback server (real SDK, sandboxes backed by local jails): tasks
per second, HTTP requests per task (the server's counts) and host CPU per task (this
process's user+system time; the jails' own CPU is not counted).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from codemode_jupyter import Pool

PROGRAM = "total = 0\nfor i in range(5):\n    total = add(total, x)\ntotal"


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(pool: Pool, tasks: int) -> tuple[float, float]:
    """Tasks per second and host CPU ms per task for one map of `tasks` tasks."""
    cpu0, t0 = cpu(), time.perf_counter()
    results = pool.map(PROGRAM, inputs=[{"x": i} for i in range(tasks)])
    elapsed, used = time.perf_counter() - t0, cpu() - cpu0
    assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok][:3]
    return tasks / elapsed, 1000 * used / tasks


def local(sizes: list[int], tasks: int) -> None:
    print(f"local jails, {tasks} tasks x 5 tool calls")
    print("| size | cold tasks/s | warm tasks/s | host CPU ms/task (warm) |")
    print("|---|---|---|---|")
    for size in sizes:
        with Pool(tools=[add], size=size) as pool:
            cold, _ = measure(pool, tasks)
            warm, cpu_ms = measure(pool, tasks)
        print(f"| {size} | {cold:.0f} | {warm:.0f} | {cpu_ms:.2f} |")


def daytona(sizes: list[int], tasks: int) -> None:
    from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    print(f"\nDaytona over the loopback server, {tasks} tasks x 5 tool calls")
    print("| size | cold tasks/s | warm tasks/s | requests/task (warm) | host CPU ms/task (warm) |")
    print("|---|---|---|---|---|")
    with DaytonaLoopbackServer(api_key="bench") as server:
        for size in sizes:
            with Pool(
                tools=[add],
                backend="daytona",
                size=size,
                api_url=server.api_url,
                api_key="bench",
                create_interval=0.0,
            ) as pool:
                cold, _ = measure(pool, tasks)
                server.reset_counts()
                warm, cpu_ms = measure(pool, tasks)
                requests = sum(server.counts.values()) / tasks
            print(f"| {size} | {cold:.0f} | {warm:.0f} | {requests:.1f} | {cpu_ms:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--sizes", default="1,2,4")
    parser.add_argument("--daytona-sizes", default="4,16")
    args = parser.parse_args()
    local([int(s) for s in args.sizes.split(",")], args.tasks)
    if args.daytona_sizes:
        daytona([int(s) for s in args.daytona_sizes.split(",")], args.tasks)


if __name__ == "__main__":
    main()
