"""The programs bench/compare_peers.py runs, and one adapter per system that runs them.

Every adapter has the same methods; the harness times each call with `time.perf_counter`
around it. A method raises `NotSupported` (with the reason) for a figure the system cannot
produce; the table then shows n/a and the reason. Imports of each system happen inside its
adapter, so a peer that is missing only loses its own column.

Used only inside the throwaway virtualenv compare_peers.py sets up.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent

# --- the programs: the same text on every system ------------------------------------------

TRIVIAL = "1"
EMPTY = ""
PARALLEL = "import asyncio\nawait asyncio.gather(*[nap_async(50) for _ in range(100)])"
LATENCY_LINES = 5

# Generous call budgets: the defaults (1000 calls per run in codemode_jupyter, 1000
# suspensions per checkout in pydantic-monty) would stop the N=1000 program or a long session.
MAX_TOOL_CALLS = 1_000_000


def calls_program(n: int) -> str:
    """N sequential calls of the trivial host tool."""
    return f"for i in range({n}): add(i, 1)"


def latency_program(clock: str) -> str:
    """Prints a time stamp, then sleeps, LATENCY_LINES times: each line is its own event and
    the run is still going when it arrives (streaming, not the output of a finished run)."""
    return (
        f"import time\nfor i in range({LATENCY_LINES}):\n"
        f"    print(time.{clock}())\n    time.sleep(0.02)\n"
    )


def add(a: int, b: int) -> int:
    """a + b: the cheapest tool there is, so what is measured is the round trip."""
    return a + b


async def nap(ms: int) -> int:
    """Sleep `ms` milliseconds on the host's event loop."""
    await asyncio.sleep(ms / 1000)
    return ms


class NotSupported(Exception):
    """The system cannot produce this figure; the message says why."""


class Stamps:
    """Host-side latencies of the stamped lines: host clock at the callback minus the stamp."""

    def __init__(self, clock: str) -> None:
        self.read = getattr(time, clock)
        self.latencies: list[float] = []

    def feed(self, text: str) -> None:
        now = self.read()
        self.latencies.extend(now - float(word) for word in text.split())

    def result(self) -> list[float]:
        if len(self.latencies) != LATENCY_LINES:
            raise RuntimeError(f"expected {LATENCY_LINES} stamps, got {len(self.latencies)}")
        if min(self.latencies) < 0:
            raise RuntimeError("negative latency: the program's clock is not the host's")
        return self.latencies


# --- the adapters ---------------------------------------------------------------------------


class System:
    """One system under test. The harness makes a fresh instance per session it starts."""

    name = ""
    dist = ""  # the distribution that brings it, for the install report
    #: How a spare-ready start was made, for the notes (set by start_spare_ready).
    spare_note = ""
    #: The `time` function the latency program stamps with; the host reads the same one.
    clock = "monotonic"

    @classmethod
    def version(cls) -> str:
        """Import the system (ImportError if it is missing) and say which version it is."""
        raise NotImplementedError

    def start(self) -> None:
        """Create a session and run the trivial program: the user's wait for a first result."""
        raise NotImplementedError

    def start_cold(self) -> None:
        """As `start`, with nothing started ahead (for a system that can start a spare)."""
        self.start()

    def start_spare_ready(self) -> float:
        """Seconds the user waits for a first result when a runtime was started beforehand in
        the background (the idle wait for it is not counted); leaves the session open."""
        raise NotSupported("no runtime to start ahead")

    def run_empty(self) -> None:
        self._run(EMPTY)

    def run_calls(self, n: int) -> None:
        self._run(calls_program(n))

    def run_parallel(self) -> None:
        raise NotSupported("no concurrent host calls")

    def first_output_latency(self) -> list[float]:
        """Seconds from each print in the program to the host's callback, in print order."""
        raise NotSupported("no streamed output")

    def close(self) -> None:
        raise NotImplementedError

    def _run(self, code: str) -> None:
        raise NotImplementedError

    def details(self) -> str:
        """Anything the reader needs to know about how this session ran (after start)."""
        return ""


def _git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "codemode_jupyter"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"
    return f"commit {head or 'unknown'}" + (" + uncommitted changes" if dirty else "")


class SpareOption(NamedTuple):
    on: dict[str, Any]  # constructor kwargs that ask for a spare
    off: dict[str, Any] | None  # ... that ask for none (None: no way to say so)
    method: str | None  # a method to call after construction to start one


def _spare_option(cls: type) -> SpareOption | None:
    """How to ask CodeMode for a spare runtime, if it has a way. The option was being added
    while this script was written, so it is probed: a constructor parameter with 'spare' in
    its name, or a start method."""
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if "spare" not in name.lower():
            continue
        if isinstance(param.default, int) and not isinstance(param.default, bool):
            return SpareOption({name: max(param.default, 1)}, {name: 0}, None)
        return SpareOption({name: True}, {name: False}, None)
    for name in dir(cls):
        lowered = name.lower()
        starts = lowered.startswith(("start", "prestart", "warm"))
        if "spare" in lowered and starts and callable(getattr(cls, name)):
            return SpareOption({}, None, name)
    return None


def _spare_ready(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value > 0
    return str(value).lower().startswith("ready")


# A user's first cell comes seconds after the session exists; a spare has had that long.
SPARE_SETTLE = 1.0


def _wait_for_spare(cm: Any, timeout: float = 10.0) -> str:
    """Wait (not timed) until status() says a spare is ready, then SPARE_SETTLE more: a
    'ready' spare may be a started process whose python is still booting (seen while the
    option was being written). Without a status entry, wait a fixed 1.5 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = {k: v for k, v in cm.status().items() if "spare" in str(k).lower()}
        if not entries:
            time.sleep(1.5)
            return "waited a fixed 1.5 s (no spare entry in status())"
        if any(_spare_ready(v) for v in entries.values()):
            waited = time.monotonic() - (deadline - timeout)
            time.sleep(SPARE_SETTLE)
            return (
                f"CodeMode({_spare_option(type(cm)).on}); status() said {entries} after "
                f"{waited * 1e3:.0f} ms, then {SPARE_SETTLE} s more before the first run"
            )
        time.sleep(0.005)
    raise RuntimeError(f"spare not ready after {timeout:.0f} s: {entries}")


class CodeModeSystem(System):
    name = "codemode_jupyter"
    dist = "codemode-jupyter"

    @classmethod
    def version(cls) -> str:
        import codemode_jupyter  # noqa: F401 - fails here if it is not installed

        return f"{metadata.version('codemode-jupyter')} ({_git_state()})"

    def _make(self, **extra: Any) -> Any:
        from codemode_jupyter import CodeMode

        return CodeMode(tools=[add, nap], pin_cpu=False, max_tool_calls=MAX_TOOL_CALLS, **extra)

    def start(self) -> None:
        self.cm = self._make()
        self._run(TRIVIAL)

    def start_cold(self) -> None:
        from codemode_jupyter import CodeMode

        how = _spare_option(CodeMode)
        if how is not None and how.off is None:
            raise NotSupported("no way to turn the spare runtime off")
        self.cm = self._make(**(how.off if how else {}))
        self._run(TRIVIAL)

    def start_spare_ready(self) -> float:
        from codemode_jupyter import CodeMode

        how = _spare_option(CodeMode)
        if how is None:
            raise NotSupported("CodeMode has no spare-runtime option or attribute (probed)")
        started = time.perf_counter()
        self.cm = self._make(**how.on)
        if how.method:
            getattr(self.cm, how.method)()
        made = time.perf_counter()
        self.spare_note = _wait_for_spare(self.cm)
        asked = time.perf_counter()
        self._run(TRIVIAL)
        return (made - started) + (time.perf_counter() - asked)

    def _run(self, code: str, on_event: Callable[[Any], None] | None = None) -> None:
        result = self.cm.run(code, on_event=on_event)
        if not result.ok:
            raise RuntimeError(f"run {result.status}: {result.error}")

    def run_parallel(self) -> None:
        self._run(PARALLEL)

    def first_output_latency(self) -> list[float]:
        from codemode_jupyter.model import events as ev

        stamps = Stamps(self.clock)

        def on_event(event: Any) -> None:
            if isinstance(event, ev.Output) and event.stream == "stdout":
                stamps.feed(event.text)

        self._run(latency_program(self.clock), on_event=on_event)
        return stamps.result()

    def close(self) -> None:
        self.cm.close()

    def details(self) -> str:
        status = self.cm.status()
        note = f"isolation {status.get('isolation')}, runtime {status.get('python')}"
        if status.get("isolation") == "none":
            note += f" (NOT isolated: {status.get('problem')})"
        return note


class MontySystem(System):
    name = "pydantic-monty"
    dist = "pydantic-monty"
    # Its time.monotonic() returns the wall clock (epoch seconds, checked with 1.4.0), so the
    # stamps use time.time() on both sides: one CLOCK_REALTIME for every process on this kernel.
    clock = "time"
    LIMITS = {"max_suspensions": 10**9}
    # The pool spawns its worker as the `with` block is entered (min_processes=1); this wait
    # (not timed) lets it finish before the first checkout, as long as codemode's settle time.
    SPARE_WAIT = SPARE_SETTLE

    @classmethod
    def version(cls) -> str:
        import pydantic_monty

        runtime = metadata.version("pydantic-monty-runtime")
        return f"{pydantic_monty.__version__} (runtime {runtime})"

    def start(self) -> None:
        self._open_pool()
        self._checkout()

    def _open_pool(self) -> None:
        import pydantic_monty

        self.pool = pydantic_monty.Monty(min_processes=1, max_processes=1)
        self.pool.__enter__()
        self._async: tuple[Any, Any, Any] | None = None

    def _checkout(self) -> None:
        self.session = self.pool.checkout(limits=self.LIMITS)
        self.session.__enter__()
        self.session.feed_run(TRIVIAL)

    def start_spare_ready(self) -> float:
        started = time.perf_counter()
        self._open_pool()
        made = time.perf_counter()
        time.sleep(self.SPARE_WAIT)
        self.spare_note = f"pool entered, then a fixed {self.SPARE_WAIT} s wait, then checkout"
        asked = time.perf_counter()
        self._checkout()
        return (made - started) + (time.perf_counter() - asked)

    def _run(self, code: str, print_callback: Callable[[str, str], None] | None = None) -> None:
        self.session.feed_run(code, external_lookup={"add": add}, print_callback=print_callback)

    def run_parallel(self) -> None:
        # Async host functions need the AsyncMonty pool: a second worker, made on first use
        # (the harness's untimed warm-up) and driven on a loop of its own.
        if self._async is None:
            self._async = self._open_async()
        loop, _, session = self._async

        async def feed() -> None:  # feed_run() too wants a running loop when it is called
            await session.feed_run(PARALLEL, external_lookup={"nap_async": nap})

        loop.run_until_complete(feed())

    def _open_async(self) -> tuple[Any, Any, Any]:
        import pydantic_monty

        async def enter() -> tuple[Any, Any]:  # checkout() wants a running loop
            pool = pydantic_monty.AsyncMonty(min_processes=1, max_processes=1)
            await pool.__aenter__()
            session = pool.checkout(limits=self.LIMITS)
            await session.__aenter__()
            return pool, session

        loop = asyncio.new_event_loop()
        return (loop, *loop.run_until_complete(enter()))

    def first_output_latency(self) -> list[float]:
        stamps = Stamps(self.clock)
        self._run(latency_program(self.clock), lambda stream, text: stamps.feed(text))
        return stamps.result()

    def close(self) -> None:
        self.session.__exit__(None, None, None)
        self.pool.__exit__(None, None, None)
        if self._async is not None:
            loop, pool, session = self._async

            async def leave() -> None:  # __aexit__ also wants a running loop
                await session.__aexit__(None, None, None)
                await pool.__aexit__(None, None, None)

            loop.run_until_complete(leave())
            loop.close()

    def details(self) -> str:
        return (
            "a Rust interpreter of a Python subset in a worker subprocess, no OS jail; "
            "sync pool for sequential calls, an AsyncMonty pool for the parallel ones"
        )


class SmolagentsSystem(System):
    name = "smolagents local"
    dist = "smolagents"

    @classmethod
    def version(cls) -> str:
        import smolagents

        return smolagents.__version__

    def start(self) -> None:
        from smolagents.local_python_executor import LocalPythonExecutor

        self.executor = LocalPythonExecutor(additional_authorized_imports=[])
        self.executor.send_tools({"add": add})
        self._run(TRIVIAL)

    def start_spare_ready(self) -> float:
        raise NotSupported("in-process interpreter: no runtime to start ahead")

    def _run(self, code: str) -> None:
        self.executor(code)

    def run_parallel(self) -> None:
        raise NotSupported("its AST interpreter has no await, and asyncio is not importable")

    def first_output_latency(self) -> list[float]:
        raise NotSupported("prints are collected and returned with the result, not streamed")

    def close(self) -> None:
        self.executor = None

    def details(self) -> str:
        return (
            "LocalPythonExecutor: an AST interpreter in the host process, no isolation; "
            "each run on a fresh thread (its default timeout)"
        )


SYSTEMS: list[type[System]] = [CodeModeSystem, MontySystem, SmolagentsSystem]


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of `pid`, RSS of all its descendants) in bytes, from /proc. Shared pages (the
    Python binary, libraries) count in each process that maps them."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss(p: int) -> int:
        try:
            with open(f"/proc/{p}/statm") as f:
                return int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            return 0  # it ended meanwhile

    own, rest, todo = rss(pid), 0, _children(pid)
    while todo:
        child = todo.pop()
        rest += rss(child)
        todo.extend(_children(child))
    return own, rest


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by every thread of `pid` and of all its descendants
    (/proc/*/task/*/schedstat): much less sensitive to other load than wall time."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(_children(current))
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def tree_pss(pid: int) -> int:
    """Proportional set size (bytes) of `pid` and all its descendants: pages shared between
    processes are split between them, so the sum does not count a library twice."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(_children(current))
        try:
            with open(f"/proc/{current}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total
