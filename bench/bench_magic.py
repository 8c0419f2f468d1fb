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

from codemode_jupyter.jupyter.headless import KernelSession

#: Run inside the kernel: the magic's own cost, without messaging to the client.
IN_KERNEL = """
import time
from codemode_jupyter.jupyter.extension import get_magics
_m = get_magics(get_ipython())
def _per_call(f, n=100):
    for _ in range(5):
        f()
    started = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - started) / n * 1e3
print(f"in the kernel: engine run {_per_call(lambda: _m.current_session().run('1')):.2f} ms, "
      f"--quiet cell {_per_call(lambda: _m.run_cell('--quiet', '1')):.2f} ms, "
      f"cell with live view and transcript {_per_call(lambda: _m.run_cell('', '1')):.2f} ms")
"""


def execute(kernel: KernelSession, code: str) -> float:
    """Run one cell; return seconds until the kernel went idle. Fails loudly on an error."""
    started = time.perf_counter()
    execution = kernel.execute(code, timeout=120)
    elapsed = time.perf_counter() - started
    if not execution.ok:
        raise RuntimeError(f"cell failed: {code!r}: {execution.error}")
    return elapsed


def sample(kernel: KernelSession, code: str, runs: int) -> list[float]:
    for _ in range(3):  # warm: runtime started, imports done, caches filled
        execute(kernel, code)
    return [execute(kernel, code) for _ in range(runs)]


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"median {statistics.median(values) * 1e3:7.2f} ms   p90 {p90 * 1e3:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    kernel = KernelSession()
    try:
        execute(kernel, "%load_ext codemode_jupyter")
        execute(kernel, "def noop(i: int) -> int:\n    return i\n")
        body = "total = 0\nfor i in range(10):\n    total += i\ntotal"
        plain = sample(kernel, body, args.runs)
        magic = sample(kernel, "%%codemode --tools noop\n" + body, args.runs)
        quiet = sample(kernel, "%%codemode --quiet --tools noop\n" + body, args.runs)
        loop = f"%%codemode\nfor i in range({args.calls}):\n    i\n"
        no_calls = sample(kernel, loop, max(5, args.runs // 5))
        calls = f"%%codemode\nfor i in range({args.calls}):\n    noop(i=i)\n"
        with_calls = sample(kernel, calls, max(5, args.runs // 5))
        in_kernel = kernel.execute(IN_KERNEL).stream().strip()
    finally:
        kernel.shutdown()

    overhead = statistics.median(magic) - statistics.median(plain)
    per_call = (statistics.median(with_calls) - statistics.median(no_calls)) / args.calls
    print(f"plain cell                      {ms(plain)}")
    print(f"%%codemode cell, no tool calls  {ms(magic)}")
    print(f"%%codemode --quiet, same        {ms(quiet)}")
    print(f"warm cell overhead (median)     {overhead * 1e3:7.2f} ms   (target <= 10 ms)")
    print(f"%%codemode, {args.calls} loop steps     {ms(no_calls)}")
    print(f"%%codemode, {args.calls} tool calls     {ms(with_calls)}")
    print(f"per tool call through the magic {per_call * 1e6:7.1f} us")
    print(in_kernel)


if __name__ == "__main__":
    main()
