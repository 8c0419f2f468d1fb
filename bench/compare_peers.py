#!/usr/bin/env python3
"""codemode_jupyter side by side with its peers: the same programs, one process run.

    python3 bench/compare_peers.py            # about 2-3 minutes on 2 cores
    python3 bench/compare_peers.py --quick    # fewer rounds, under a minute

Run from anywhere with any python3. It first sets up a throwaway virtualenv outside git
(/tmp/codemode-peers-venv, or $CODEMODE_PEERS_VENV): this repository installed editable
(SKIP_JUPYTER_BUILDER=1, no npm build), plus the peers from the package registry:
pydantic-monty (a Rust interpreter of a Python subset in a worker subprocess, with host
callbacks) and smolagents (its LocalPythonExecutor, an in-process AST interpreter without
isolation: a reference for "no process boundary at all"). Then it runs itself again with that
virtualenv's python. The venv is not under /root: the local jail runs as an unused uid when we
are root, and it cannot execute a bwrap binary inside a 0700 home (isolation would silently be
"none"). A peer that fails to install or import shows its reason in the table.

What is measured (wall time with time.perf_counter around each call, medians):

- Systems alternate round by round (the order rotates), so load drifts on a shared machine hit
  all of them alike. Each system keeps one warm session for the run figures; every round also
  starts (and closes) a new session for the start figures.
- session start: constructor + first trivial run ("1") with default settings; closing is not
  timed. "No spare": the same with a spare runtime turned off where the system has one
  (CodeMode's spare option, probed: codemode_jupyter was gaining it while this was written);
  for the peers it is their plain start again. "With a spare ready": the runtime was started
  beforehand in the background (codemode_jupyter: the spare option, then a wait until status()
  says it is ready and 1 s more, n/a without the option; pydantic-monty: its pool spawns a
  worker as it is entered, then checkout + first run 1 s later). The constructor and the
  first run are timed, the idle wait between them is not.
- per sequential call at N: median(`for i in range(N): add(i, 1)`) minus median(empty run),
  divided by N; `add` is a trivial sync host function.
- CPU per call: CPU time of every thread of this process and of all its descendants
  (/proc/PID/task/*/schedstat) over the N=1000 program, / 1000: it moves much less with
  other load than wall time. The other systems' idle sessions live in the same process tree.
- 100 parallel 50 ms calls: `await asyncio.gather(*[nap_async(50) for _ in range(100)])`, an
  async host function sleeping 50 ms (floor 50 ms).
- first output latency: the program prints a time stamp and sleeps 20 ms, 5 times; the host's
  print callback subtracts the stamp from its own clock (same clock: time.monotonic, or
  time.time for pydantic-monty, whose time.monotonic() is the wall clock).
- memory: each system alone in a fresh python (after the timing rounds): it imports the
  system, starts a session, runs the empty, 1000-call, 50-call and print programs, then idles
  0.5 s. Another thread samples the RSS of that process and all its descendants (workers,
  bwrap, the jailed python; /proc/PID/task/*/children, /proc/PID/statm) every 5 ms: the peak
  of the sum, the sum at idle, and the host alone right after its imports. RSS counts a
  page shared by several processes (the python binary, libraries) in each of them; the idle
  PSS (/proc/PID/smaps_rollup) splits shared pages, so its sum is the tree's real footprint.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD_MARK = "CODEMODE_PEERS_CHILD"  # set in the re-executed run: no second bootstrap
VENV = Path(os.environ.get("CODEMODE_PEERS_VENV") or "/tmp/codemode-peers-venv")
PEERS = {"pydantic-monty": "pydantic-monty", "smolagents": "smolagents"}  # dist: requirement
INSTALL_REPORT = "compare-peers-install.json"  # in the venv: why a peer is missing

MS, US, MIB = 1e3, 1e6, float(1 << 20)


# --- the virtualenv bootstrap (runs on any python3, imports nothing from the venv) ---------


def bootstrap(argv: list[str], reinstall: bool) -> None:
    """Make sure the venv has the project and the peers, then exec this script in it."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"compare_peers: creating {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    present = _installed(python)
    failures: dict[str, str] = {}
    if reinstall or present.get("codemode_path") != str(REPO / "codemode_jupyter"):
        failures.update(_pip(python, "codemode-jupyter", ["-e", str(REPO)]))
    for dist, requirement in PEERS.items():
        if reinstall or not present.get(dist):
            failures.update(_pip(python, dist, [requirement]))
    (VENV / INSTALL_REPORT).write_text(json.dumps(failures))
    env = {**os.environ, CHILD_MARK: "1"}
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *argv], env)


def _installed(python: Path) -> dict[str, str | None]:
    """Which of the distributions the venv has, and where it imports codemode_jupyter from."""
    probe = (
        "import json, importlib.metadata as m, importlib.util as u, os\n"
        "def v(d):\n"
        "    try: return m.version(d)\n"
        "    except m.PackageNotFoundError: return None\n"
        f"out = {{d: v(d) for d in {list(PEERS)!r}}}\n"
        "s = u.find_spec('codemode_jupyter')\n"
        "out['codemode_path'] = os.path.dirname(s.origin) if s and s.origin else None\n"
        "print(json.dumps(out))\n"
    )
    # From "/": run from the repo root, `python -c` would find the checkout through the
    # current directory and take an uninstalled project for an installed one.
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd="/")
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _pip(python: Path, dist: str, args: list[str]) -> dict[str, str]:
    """pip install; on failure {dist: the reason} (the run goes on without it)."""
    print(f"compare_peers: installing {dist} into {VENV} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "SKIP_JUPYTER_BUILDER": "1"}  # no npm build of the lab extension
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *args], capture_output=True, text=True, env=env
    )
    if done.returncode == 0:
        return {}
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    return {dist: f"pip install failed: {(errors or done.stderr.splitlines() or ['?'])[-1]}"}


# --- the harness (runs inside the venv) -----------------------------------------------------

PLAN_FULL = {"rounds": 15, "empty": 30, "calls": {1: 20, 10: 10, 100: 3, 1000: 1, 50: 10}}
PLAN_QUICK = {"rounds": 4, "empty": 10, "calls": {1: 8, 10: 4, 100: 2, 1000: 1, 50: 4}}


class Samples:
    """Timings per (system, figure), and the reason a figure is missing for a system."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[float]] = {}
        self.missing: dict[tuple[str, str], str] = {}

    def measure(self, system: str, figure: str, action, repeat: int = 1) -> None:
        """Time `action()` `repeat` times; a NotSupported or an error is recorded once."""
        from _peers_programs import NotSupported

        if (system, figure) in self.missing:
            return
        for _ in range(repeat):
            try:
                started = time.perf_counter()
                value = action()
                elapsed = time.perf_counter() - started
            except NotSupported as exc:
                self.missing[system, figure] = f"n/a: {exc}"
                return
            except Exception as exc:  # a failure is a finding too: show it, go on
                self.missing[system, figure] = f"FAILED: {type(exc).__name__}: {exc}"
                return
            # An action may return its own figure(s): a part of its time, or latencies.
            self.add(system, figure, elapsed if value is None else value)

    def add(self, system: str, figure: str, value: float | list[float]) -> None:
        bucket = self.values.setdefault((system, figure), [])
        bucket.extend(value if isinstance(value, list) else [value])

    def median(self, system: str, figure: str) -> float | None:
        values = self.values.get((system, figure))
        return statistics.median(values) if values else None


def load_systems(failures: dict[str, str]) -> tuple[list, dict[str, str], dict[str, str]]:
    """The adapters whose system imports, their versions, and why the others are missing."""
    from _peers_programs import SYSTEMS

    usable, versions, missing = [], {}, {}
    for cls in SYSTEMS:
        try:
            versions[cls.name] = cls.version()
            usable.append(cls)
        except Exception as exc:
            reason = f"import failed: {type(exc).__name__}: {exc}"
            missing[cls.name] = failures.get(cls.dist) or reason
    return usable, versions, missing


def warm_up(system) -> None:
    """Untimed: first runs compile, fill caches, and make lazily created parts (pools)."""
    for action in (
        system.run_empty,
        lambda: system.run_calls(100),
        system.run_parallel,
        system.first_output_latency,
    ):
        for _ in range(3):
            try:
                action()
            except Exception:
                break  # the timed rounds record the reason


def one_round(cls, warm, samples: Samples, plan: dict, notes: dict[str, str]) -> None:
    """All figures of one system, once: a fresh session for the start figures, then the
    warm session for the rest."""
    from _peers_programs import tree_cpu

    name = cls.name
    for figure, how in (
        ("start", "start"),
        ("start cold", "start_cold"),
        ("start spare", "start_spare_ready"),
    ):
        fresh = cls()
        samples.measure(name, figure, getattr(fresh, how))
        if fresh.spare_note:
            notes[f"{name} spare"] = fresh.spare_note
        try:
            fresh.close()
        except Exception:
            pass  # a start that failed may have nothing to close
    samples.measure(name, "empty", warm.run_empty, plan["empty"])
    for n, repeat in plan["calls"].items():
        samples.measure(name, f"calls {n}", lambda n=n: warm.run_calls(n), repeat)
    samples.measure(name, "parallel", warm.run_parallel)

    def cpu_per_call(n: int = 1000) -> float:
        before = tree_cpu(os.getpid())
        warm.run_calls(n)
        return (tree_cpu(os.getpid()) - before) / n

    samples.measure(name, "cpu 1000", cpu_per_call)

    def latency() -> list[float]:
        stamps = warm.first_output_latency()
        samples.add(name, "output all", stamps)
        return [stamps[0]]

    samples.measure(name, "output first", latency)


def run_rounds(classes: list, samples: Samples, plan: dict, notes: dict[str, str]) -> None:
    """Warm sessions for every system, then the rounds, alternating the systems."""
    warm = {}
    for cls in classes:
        try:
            throwaway = cls()  # the process's first start pays one-time costs: not counted
            throwaway.start()
            throwaway.close()
            warm[cls.name] = cls()
            warm[cls.name].start()
            warm_up(warm[cls.name])
            notes[cls.name] = warm[cls.name].details()
        except Exception as exc:
            samples.missing[cls.name, "*"] = f"FAILED to start: {type(exc).__name__}: {exc}"
    live = [cls for cls in classes if cls.name in warm]
    for index in range(plan["rounds"]):
        print(f"  round {index + 1}/{plan['rounds']}, load {load()}", file=sys.stderr, flush=True)
        for cls in live[index % len(live) :] + live[: index % len(live)]:
            one_round(cls, warm[cls.name], samples, plan, notes)
    for cls in live:
        try:
            warm[cls.name].close()
        except Exception as exc:
            notes[f"{cls.name} close"] = f"FAILED: {type(exc).__name__}: {exc}"


# --- memory: each system alone in a fresh python --------------------------------------------


def memory_probe(name: str) -> None:
    """Child side: run the programs once in this fresh process, report host-only figures."""
    from _peers_programs import SYSTEMS, tree_pss, tree_rss

    cls = next(c for c in SYSTEMS if c.name == name)
    cls.version()  # the imports
    baseline = tree_rss(os.getpid())[0]
    system = cls()
    system.start()
    for action in (
        system.run_empty,
        lambda: system.run_calls(1000),
        lambda: system.run_calls(50),
        system.first_output_latency,
    ):
        for _ in range(3):
            try:
                action()
            except Exception:
                break  # unsupported here: the timing table says why
    time.sleep(0.5)
    idle, idle_pss = sum(tree_rss(os.getpid())), tree_pss(os.getpid())
    system.close()
    print(json.dumps({"baseline": baseline, "idle": idle, "idle pss": idle_pss}))


def measure_memory(name: str) -> dict[str, float] | str:
    """Parent side: run the probe child and sample its process tree every 5 ms."""
    from _peers_programs import tree_rss

    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--memory-probe", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0, 0]

    def sample() -> None:
        while child.poll() is None:
            host, workers = tree_rss(child.pid)
            if host + workers > sum(peak):
                peak[:] = [host, workers]
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = child.communicate(timeout=120)
    sampler.join()
    if child.returncode != 0:
        return f"FAILED: {(err.strip().splitlines() or ['?'])[-1]}"
    report = json.loads(out.strip().splitlines()[-1])
    return {
        "peak": sum(peak) / MIB,
        "peak workers": peak[1] / MIB,
        "idle": report["idle"] / MIB,
        "idle pss": report["idle pss"] / MIB,
        "baseline": report["baseline"] / MIB,
    }


# --- the table ----------------------------------------------------------------------------

# (row label, figure key or a derived one, unit)
ROWS = [
    ("session start to first result", "start", "ms"),
    ("  no spare runtime (turned off)", "start cold", "ms"),
    ("  with a spare runtime ready", "start spare", "ms"),
    ("warm empty run", "empty", "ms"),
    ("per sequential call, N=1", "per call 1", "us"),
    ("per sequential call, N=10", "per call 10", "us"),
    ("per sequential call, N=100", "per call 100", "us"),
    ("per sequential call, N=1000", "per call 1000", "us"),
    ("CPU per call, N=1000, host + workers", "cpu 1000", "us"),
    ("a 50-call program, total", "calls 50", "ms"),
    ("100 parallel 50 ms calls", "parallel", "ms"),
    ("first output latency, first print", "output first", "ms"),
    ("  all prints", "output all", "ms"),
    ("peak RSS, host + workers", "mem peak", "MiB"),
    ("  of which workers", "mem peak workers", "MiB"),
    ("  at idle after the runs", "mem idle", "MiB"),
    ("  at idle, PSS (shared pages split)", "mem idle pss", "MiB"),
    ("  host after imports, before start", "mem baseline", "MiB"),
]
SCALE = {"ms": MS, "us": US, "MiB": 1.0}


def figure(samples: Samples, memory: dict, system: str, key: str) -> float | str | None:
    """A row's value for a system (seconds, or MiB), or the reason it has none."""
    if (system, "*") in samples.missing:
        return samples.missing[system, "*"]
    if key.startswith("mem "):
        found = memory.get(system)
        return found if isinstance(found, str) else (found or {}).get(key[4:])
    if key.startswith("per call "):
        n = int(key.split()[-1])
        for part in (f"calls {n}", "empty"):
            if (system, part) in samples.missing:
                return samples.missing[system, part]
        calls, empty = samples.median(system, f"calls {n}"), samples.median(system, "empty")
        return None if calls is None or empty is None else (calls - empty) / n
    if (system, key) in samples.missing:
        return samples.missing[system, key]
    return samples.median(system, key)


def print_table(names: list[str], missing: dict[str, str], samples: Samples, memory: dict) -> None:
    """Rows of figures, a column per system, and ratios against codemode_jupyter."""
    base, footnotes, rows = names[0], [], []

    def cell(value: float | str | None, unit: str) -> str:
        if value is None:
            return "-"
        if isinstance(value, str):
            if value not in footnotes:
                footnotes.append(value)
            return f"n/a [{footnotes.index(value) + 1}]"
        scaled = value * SCALE[unit]
        return f"{scaled:.3f} {unit}" if scaled < 1 else f"{scaled:.1f} {unit}"

    header = ["figure (medians)"]
    for name in names:
        header += [name] if name == base else [name, "x cm"]
    for label, key, unit in ROWS:
        values = {n: missing.get(n) or figure(samples, memory, n, key) for n in names}
        row = [label]
        for name in names:
            row.append(cell(values[name], unit))
            if name != base:
                mine, theirs = values[name], values[base]
                ok = isinstance(mine, float) and isinstance(theirs, float) and theirs > 0
                row.append(f"{mine / theirs:.2f}x" if ok else "")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    print(rule)
    for row in [header, None, *rows]:
        if row is None:
            print(rule)
            continue
        cells = [c.rjust(w) for c, w in zip(row, widths, strict=True)]
        print("  ".join([row[0].ljust(widths[0]), *cells[1:]]))
    print(rule)
    print("x cm = the peer's figure / codemode_jupyter's (below 1: the peer is faster/smaller)")
    for index, text in enumerate(footnotes, 1):
        print(f"[{index}] {text}")


# --- main ---------------------------------------------------------------------------------


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def uptime() -> str:
    if shutil.which("uptime"):
        done = subprocess.run(["uptime"], capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
    return f"load average {load()}"


def bench(quick: bool) -> None:
    plan = PLAN_QUICK if quick else PLAN_FULL
    report = VENV / INSTALL_REPORT
    failures = json.loads(report.read_text()) if report.exists() else {}
    started, when, up_before = time.perf_counter(), datetime.datetime.now(), uptime()
    print(
        f"compare_peers: {'quick' if quick else 'full'} run, {plan['rounds']} rounds; {up_before}",
        file=sys.stderr,
        flush=True,
    )
    classes, versions, missing = load_systems(failures)
    names = ["codemode_jupyter", "pydantic-monty", "smolagents local"]
    samples, notes = Samples(), {}
    run_rounds(classes, samples, plan, notes)
    memory: dict[str, dict[str, float] | str] = {}
    for cls in classes:
        print(f"  memory: {cls.name}", file=sys.stderr, flush=True)
        memory[cls.name] = measure_memory(cls.name)

    print()
    print(
        f"compare_peers.py{' --quick' if quick else ''}: {when.isoformat(timespec='seconds')}, "
        f"{platform.node()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"{platform.machine()}, host Python {platform.python_version()}"
    )
    print(f"uptime before: {up_before}")
    print(f"uptime after:  {uptime()}")
    for name in names:
        print(f"{name}: {versions.get(name) or missing.get(name)}")
    print(
        f"rounds: {plan['rounds']}, each system per round: 3 starts (default, no spare, "
        f"spare ready), {plan['empty']} empty runs, calls N: repeats {plan['calls']}, 1 parallel, "
        f"1 print run of 5 lines; systems alternate, order rotating each round"
    )
    print()
    print_table(names, missing, samples, memory)
    for name, text in notes.items():
        print(f"- {name}: {text}")
    print(f"- total time {time.perf_counter() - started:.0f} s")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under a minute)")
    parser.add_argument(
        "--reinstall",
        action="store_true",
        help="pip install the project and the peers again (newest versions)",
    )
    parser.add_argument("--memory-probe", metavar="SYSTEM", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if os.environ.get(CHILD_MARK) != "1":
        bootstrap([a for a in argv if a != "--reinstall"], args.reinstall)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # _peers_programs
    if args.memory_probe:
        memory_probe(args.memory_probe)
    else:
        bench(args.quick)


if __name__ == "__main__":
    main(sys.argv[1:])
