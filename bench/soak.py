"""Soak: one session serving many mixed runs, then many sessions opened and closed.

Prints host RSS, open fds, threads and processes before and after each phase, and the runs
per second; exits non-zero when something grew past its bound (see BOUNDS).

    .venv/bin/python bench/soak.py [--runs 10000] [--sessions 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass

from codemode_jupyter import CodeMode
from codemode_jupyter.model import events as ev

#: How much each figure may grow over a phase (after a warm-up) before the soak fails.
BOUNDS = {"rss_mib": 16.0, "fds": 0, "threads": 0, "processes": 0}


def add(a: int, b: int = 1) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


FORGE = (
    "import os\n"
    "for fd in range(3, 40):\n"
    "    try:\n"
    "        if os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:'):\n"
    '            os.write(fd, b\'{"t":"out","s":1,"d":5}\\n\')\n'
    "    except OSError:\n"
    "        pass\n"
    "while True: pass\n"
)

#: name -> (program, run options, expected status); weights say how often each runs.
PROGRAMS: dict[str, tuple[str, dict, str]] = {
    "sync calls": ("total = 0\nfor i in range(10):\n    total = add(total, i)\ntotal", {}, "ok"),
    "async calls": (
        "import asyncio\nsum(await asyncio.gather(*[double_async(i) for i in range(10)]))",
        {},
        "ok",
    ),
    "print": ("for i in range(20): print('line', i)", {}, "ok"),
    "tool error": (
        "try:\n    fail('no')\nexcept ValueError as e:\n    print(e)\nfail('x')",
        {},
        "error",
    ),
    "program error": ("1 / 0", {}, "error"),
    "timeout": ("while True: pass", {"timeout": 0.2}, "timeout"),
    "cancel": ("print('go', flush=True)\nwhile True: pass", {"cancel": True}, "interrupted"),
    "crash": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", {}, "crashed"),
    "flood": ("import sys\nfor _ in range(200): sys.stdout.write('x' * 10000)", {}, "ok"),
    "malformed frame": (FORGE, {"timeout": 30}, "crashed"),
    "exit": ("import os\nos._exit(3)", {}, "crashed"),
}
WEIGHTS = {
    "sync calls": 40,
    "async calls": 20,
    "print": 15,
    "tool error": 8,
    "program error": 5,
    "timeout": 2,
    "cancel": 3,
    "crash": 2,
    "flood": 3,
    "malformed frame": 1,
    "exit": 1,
}


@dataclass
class Snapshot:
    rss_mib: float
    fds: int
    threads: int
    processes: int

    @classmethod
    def take(cls) -> Snapshot:
        gc.collect()
        return cls(
            _rss_mib(),
            len(os.listdir("/proc/self/fd")),
            threading.active_count(),
            len(_descendants(os.getpid())),
        )

    def growth(self, later: Snapshot) -> dict[str, float]:
        return {name: getattr(later, name) - getattr(self, name) for name in BOUNDS}


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def schedule(runs: int) -> list[str]:
    """A fixed interleaving of the programs, in their weights, `runs` long."""
    cycle = [name for name, weight in WEIGHTS.items() for _ in range(weight)]
    cycle = [cycle[(i * 37) % len(cycle)] for i in range(len(cycle))]  # spread them out
    return [cycle[i % len(cycle)] for i in range(runs)]


def run_one(session: CodeMode, name: str) -> str:
    code, opts, _expected = PROGRAMS[name]
    on_event = None
    if opts.get("cancel"):

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.Output):
                threading.Thread(target=session.cancel).start()

    return session.run(code, timeout=opts.get("timeout", 30), on_event=on_event).status


def soak_session(runs: int) -> tuple[Counter, float, Snapshot, Snapshot]:
    statuses: Counter = Counter()
    with CodeMode(tools=[add, fail, double], max_output=100_000) as session:
        for name in schedule(100):  # warm-up: imports, caches, the first runtime
            run_one(session, name)
        before = Snapshot.take()
        started = time.perf_counter()
        for name in schedule(runs):
            status = run_one(session, name)
            statuses[(name, status, status == PROGRAMS[name][2])] += 1
        elapsed = time.perf_counter() - started
        after = Snapshot.take()
    return statuses, runs / elapsed, before, after


def soak_sessions(count: int) -> tuple[float, Snapshot, Snapshot]:
    for _ in range(5):  # warm-up
        with CodeMode(tools=[add]) as session:
            session.run("add(1, 2)")
    before = Snapshot.take()
    started = time.perf_counter()
    for _ in range(count):
        with CodeMode(tools=[add, double]) as session:
            session.run("add(1, 2)\nawait double_async(2)")
    elapsed = time.perf_counter() - started
    return count / elapsed, before, Snapshot.take()


def report(title: str, before: Snapshot, after: Snapshot) -> bool:
    growth = before.growth(after)
    ok = all(growth[name] <= bound for name, bound in BOUNDS.items())
    print(f"\n{title}")
    print(f"  {'':12} {'before':>10} {'after':>10} {'growth':>10} {'bound':>8}")
    for name, bound in BOUNDS.items():
        b, a = getattr(before, name), getattr(after, name)
        print(f"  {name:12} {b:>10.1f} {a:>10.1f} {growth[name]:>+10.1f} {bound:>8}")
    print(f"  {'within bounds' if ok else 'GREW PAST A BOUND'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=200)
    args = parser.parse_args()
    statuses, rate, before, after = soak_session(args.runs)
    print(f"one session, {args.runs} mixed runs: {rate:.0f} runs/s")
    wrong = 0
    for (name, status, expected), n in sorted(statuses.items()):
        mark = "" if expected else "   <-- unexpected"
        wrong += 0 if expected else n
        print(f"  {name:16} {status:12} {n:6}{mark}")
    ok = report("host, one session (after a 100-run warm-up)", before, after)
    rate2, before2, after2 = soak_sessions(args.sessions)
    print(f"\n{args.sessions} sessions opened, run and closed: {rate2:.1f} sessions/s")
    ok = report("host, many sessions", before2, after2) and ok
    if wrong:
        print(f"\n{wrong} runs ended with an unexpected status")
    return 0 if ok and not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
