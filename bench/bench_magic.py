"""Latency of `%%codemode` cells in a real kernel, against the same code run plainly there.

    python bench/bench_magic.py [--runs 50] [--calls 200]

Prints, for warm cells (the sandbox runtime already started):
- plain cell vs `%%codemode` cell with no tools (the magic's overhead per cell; target <= 10 ms)
- a program making N sequential tool calls through the magic (overhead per tool call)
Times are measured by the client, from execute_request to the kernel's idle status, so they
include everything a user waits for: message handling, the live view's widget messages, the
transcript. Medians and p90 over `--runs` cells.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from codemode_jupyter.jupyter.headless import kernel_manager


def execute(kc: Any, code: str) -> float:
    """Run one cell; return seconds until the kernel went idle. Fails loudly on an error."""
    started = time.perf_counter()
    reply = kc.execute_interactive(code, output_hook=lambda msg: None, timeout=120)
    elapsed = time.perf_counter() - started
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {code!r}: {reply['content']}")
    return elapsed


def sample(kc: Any, code: str, runs: int) -> list[float]:
    for _ in range(3):  # warm: runtime started, imports done, caches filled
        execute(kc, code)
    return [execute(kc, code) for _ in range(runs)]


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"median {statistics.median(values) * 1e3:7.2f} ms   p90 {p90 * 1e3:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    km = kernel_manager()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        execute(kc, "%load_ext codemode_jupyter")
        execute(kc, "def noop(i: int) -> int:\n    return i\n")
        body = "total = 0\nfor i in range(10):\n    total += i\ntotal"
        plain = sample(kc, body, args.runs)
        magic = sample(kc, "%%codemode --tools noop\n" + body, args.runs)
        quiet = sample(kc, "%%codemode --quiet --tools noop\n" + body, args.runs)
        calls_body = f"for i in range({args.calls}):\n    noop(i=i)\n"
        no_calls = sample(kc, f"%%codemode\nfor i in range({args.calls}):\n    i\n", args.runs // 5)
        with_calls = sample(kc, "%%codemode\n" + calls_body, args.runs // 5)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)

    overhead = statistics.median(magic) - statistics.median(plain)
    per_call = (statistics.median(with_calls) - statistics.median(no_calls)) / args.calls
    print(f"plain cell                      {ms(plain)}")
    print(f"%%codemode cell, no tool calls  {ms(magic)}")
    print(f"%%codemode --quiet, same        {ms(quiet)}")
    print(f"warm cell overhead (median)     {overhead * 1e3:7.2f} ms   (target <= 10 ms)")
    print(f"%%codemode, {args.calls} loop steps     {ms(no_calls)}")
    print(f"%%codemode, {args.calls} tool calls     {ms(with_calls)}")
    print(f"per tool call through the magic {per_call * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
