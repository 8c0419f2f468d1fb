#!/usr/bin/env python
"""Display figures on the local backend (bubblewrap jail): latency and PNG throughput.

    python bench/bench_display.py            # about 20 s on 2 vCPUs
    python bench/bench_display.py --quick

What is measured (the jail and the host share the machine's clock, `time.time()`):

- display latency: from just before `display(obj)` in the program to the host's Display event
  (`on_event`), for a small HTML display; each display carries its send time in its metadata.
  Median and p95 over N displays of one run, with a print between displays so each goes out
  on its own.
- PNG throughput: 100 displays of a real matplotlib PNG (drawn once, about 20-30 KB), from the
  first display() call to the 100th Display event: displays/s and MiB/s.
- figures: 100 `plt.plot(...); plt.show()` in one run, drawing included (the cost a plotting
  loop sees), as the run's wall time per figure.

Figures to read, not timed tests.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from codemode_jupyter import CodeMode
from codemode_jupyter.model import events as ev

LATENCY = """
import time
from codemode import HTML
for i in range({n}):
    display(HTML(f"<b>{{i}}</b>"), metadata={{"sent": time.time()}})
    print(i)
"""

THROUGHPUT = """
import io, time, base64
from matplotlib.figure import Figure  # drawn once, without pyplot: no figure stays open
fig = Figure()
fig.subplots().plot(range(100), [i * i for i in range(100)])
buf = io.BytesIO()
fig.savefig(buf, format="png")
png = buf.getvalue()
bundle = {{"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"}}
started = time.time()
for i in range({n}):
    display(bundle, raw=True, metadata={{"sent": time.time()}})
(started, len(png))
"""

FIGURES = """
import matplotlib.pyplot as plt
for i in range({n}):
    plt.plot([0, 1, 2], [0, i, 2 * i])
    plt.show()
"""


def latency(cm: CodeMode, n: int) -> list[float]:
    delays: list[float] = []

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Display):
            delays.append(time.time() - event.metadata["sent"])

    result = cm.run(LATENCY.format(n=n), on_event=on_event, timeout=120)
    assert result.ok and len(delays) == n, (result.error, len(delays))
    return delays


def throughput(cm: CodeMode, n: int) -> tuple[float, float, int]:
    last = [0.0]

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Display):
            last[0] = time.time()

    result = cm.run(THROUGHPUT.format(n=n), on_event=on_event, timeout=120)
    assert result.ok and len(result.displays) == n, result.error
    started, size = result.value
    seconds = last[0] - started
    return n / seconds, n * size * 4 / 3 / seconds / (1 << 20), size


def figures(cm: CodeMode, n: int) -> float:
    started = time.perf_counter()
    result = cm.run(FIGURES.format(n=n), timeout=300)
    elapsed = time.perf_counter() - started
    assert result.ok and len(result.displays) == n, result.error
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 100
    with CodeMode(outputs_dir=None, max_displays=1000) as cm:
        cm.run("import matplotlib.pyplot", timeout=120)  # warm: font cache, imports
        latency(cm, 10)
        delays = sorted(latency(cm, 50 if args.quick else 200))
        rate, mib, size = throughput(cm, n)
        per_figure = figures(cm, 20 if args.quick else n)
    print(f"# bench_display on {platform.node()}, python {platform.python_version()}")
    print(f"display latency, median   {statistics.median(delays) * 1e3:8.2f} ms")
    print(f"display latency, p95      {delays[int(len(delays) * 0.95) - 1] * 1e3:8.2f} ms")
    print(
        f"100 PNG displays          {rate:8.0f} displays/s  ({mib:.1f} MiB/s, "
        f"{size / 1024:.0f} KiB PNG)"
    )
    print(f"figures drawn and shown   {per_figure * 1e3:8.1f} ms per figure")


if __name__ == "__main__":
    main()
