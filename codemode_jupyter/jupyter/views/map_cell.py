"""`%%codemode --map NAME`: run the cell's program once per item of a notebook iterable, on a
Pool, with one progress view and a results table.

The item is bound as `item` (or `--as VAR`) in each run; items travel as JSON. The view shows
done / failed / running / retried, throughput, elapsed and estimated time left, and the
slowest tasks; it is a display (HTML, with a constant text/plain) updated in place at most
`rate` times a second (text on stderr outside a kernel), so a saved notebook keeps its final
state as a plain output that draws without a kernel (a widget's model is gone after a
restart). When the cell ends, a summary with counts (nothing timed, so nbval can compare it)
and what each task printed is displayed. An interrupt cancels the tasks not yet finished and
keeps the finished ones.

The table (a pandas DataFrame when pandas is installed, else a list of dicts, in input order:
input, status, value, error ("" when none), attempts, duration) goes to `--out RESULTS`;
without `--out` it is the cell's value. `on_done` receives each task as it finishes (the magic
lists the tasks' runs in the Tools panel).
"""

from __future__ import annotations

import html
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.display import publish_display_data

from codemode_jupyter.jupyter.sessions import session_options
from codemode_jupyter.model.format import plural, short_repr
from codemode_jupyter.pool.scheduler import Pool
from codemode_jupyter.pool.tasks import TaskResult
from codemode_jupyter.support.progress import ProgressBar

SLOWEST_SHOWN = 3
#: Tasks whose prints the summary shows, and lines of each.
PRINTS_SHOWN = 20
PRINT_LINES = 10
#: The progress display's text/plain (constant: it is what nbval would compare).
PROGRESS_TEXT = "codemode map progress"
COLUMNS = ("input", "status", "value", "error", "attempts", "duration")
#: Where a stopped cell without `--out` leaves the finished results.
INTERRUPTED_OUT = "codemode_map_results"


def pool_options(settings: Any, backend: str | None = None, network: bool | None = None) -> dict:
    """The Pool keyword arguments the magic's settings give (as a cell's session would get)."""
    return session_options(settings, backend=backend, network=network)


def run_map_cell(
    shell: Any,
    pool_factory: Callable[[int], Pool],
    args: Any,
    code: str,
    on_done: Callable[[TaskResult], None] | None = None,
) -> Any:
    """Run `code` once per item of `shell.user_ns[args.map]` on `pool_factory(concurrency)`.

    `args` carries map, concurrency, as_var, out, timeout, fresh and quiet. Returns the table,
    or None when it went to `--out`.
    """
    items = _items(shell.user_ns, args.map)
    var = getattr(args, "as_var", None) or "item"
    if not var.isidentifier():
        raise UsageError(f"%%codemode --as: {var!r} is not a variable name")
    concurrency = getattr(args, "concurrency", None) or 4
    if concurrency < 1:
        raise UsageError("%%codemode --concurrency must be at least 1")
    inputs = [{var: item} for item in items]
    view = _make_view(shell, len(items), quiet=getattr(args, "quiet", False))
    results: dict[int, TaskResult] = {}
    interrupted = False
    with pool_factory(concurrency) as pool:
        view.start(pool)
        try:
            # The blank first line stands for the `%%codemode` line: tracebacks give the
            # line numbers the cell shows.
            for done in pool.as_completed(
                "\n" + code,
                inputs=inputs,
                timeout=args.timeout,
                fresh=bool(getattr(args, "fresh", False)),
            ):
                results[done.index] = done
                view.add(done)
                if on_done is not None:
                    on_done(done)
        except ValueError as exc:  # an item JSON cannot carry, a name that clashes...
            view.stop()
            raise UsageError(f"%%codemode --map: {exc}") from None
        except KeyboardInterrupt:
            interrupted = True
        finally:
            view.stop()
    table = results_table(items, results)
    out = args.out or (INTERRUPTED_OUT if interrupted else None)
    if out:
        shell.user_ns[out] = table
    view.finish(results, interrupted, out)
    if interrupted:
        raise KeyboardInterrupt
    return None if out else table


def _items(namespace: dict, name: str) -> list[Any]:
    if name not in namespace:
        raise UsageError(f"%%codemode --map: no variable {name!r} in the notebook")
    value = namespace[name]
    if isinstance(value, (str, bytes)):
        raise UsageError(f"%%codemode --map: {name!r} is a string; give a list of items")
    try:
        return list(value)
    except TypeError:
        raise UsageError(
            f"%%codemode --map: {name!r} is a {type(value).__name__}, not an iterable"
        ) from None


def results_table(items: list[Any], results: dict[int, TaskResult]) -> Any:
    """One row per item, in input order; a pandas DataFrame if pandas is installed."""
    rows = []
    for index, item in enumerate(items):
        done = results.get(index)
        rows.append(
            {
                "input": item,
                "status": done.status if done else "cancelled",
                "value": done.value if done else None,
                # "" not None: pandas would show NaN in the rows that have no error.
                "error": str(done.error) if done and done.error else "",
                "attempts": len(done.attempts) if done else 0,
                "duration": round(done.duration, 3) if done else None,
            }
        )
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows, columns=list(COLUMNS))


class Progress:
    """Counts of a map run, updated from the caller's thread and read by the renderer."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.ok = self.failed = self.retried = 0
        self.running = 0
        self.started = time.monotonic()
        self.slowest: list[tuple[float, int, str]] = []
        self.lock = threading.Lock()

    def add(self, done: TaskResult) -> None:
        with self.lock:
            if done.ok:
                self.ok += 1
            else:
                self.failed += 1
            self.retried += done.retried
            self.slowest.append((done.duration, done.index, done.status))
            self.slowest = sorted(self.slowest, reverse=True)[:SLOWEST_SHOWN]

    def render_html(self) -> str:
        with self.lock:
            done = self.ok + self.failed
            elapsed = time.monotonic() - self.started
            rate = done / elapsed if elapsed > 0 else 0.0
            left = (self.total - done) / rate if rate > 0 else None
            eta = f"{left:.0f} s left" if left is not None and done < self.total else ""
            head = (
                f"<b>codemode map</b>: {done}/{self.total} done, {self.ok} ok, "
                f"{self.failed} failed, {self.running} running, {self.retried} retried · "
                f"{rate:.1f} tasks/s · {elapsed:.1f} s elapsed {eta}"
            )
            slow = ", ".join(
                f"#{index} {duration:.2f} s ({html.escape(status)})"
                for duration, index, status in self.slowest
            )
        width = 100 * done // max(1, self.total)
        bar = (
            f'<div style="background:#ddd;height:6px;width:100%"><div style="background:#4a8;'
            f'height:6px;width:{width}%"></div></div>'
        )
        return f"<div>{head}</div>{bar}" + (f"<div>slowest: {slow}</div>" if slow else "")

    def summary(self, results: dict[int, TaskResult], interrupted: bool, out: str | None) -> str:
        """What stays in the notebook: counts only, the same on every run."""
        statuses: dict[str, int] = {}
        for done in results.values():
            statuses[done.status] = statuses.get(done.status, 0) + 1
        cancelled = self.total - len(results)
        if cancelled:
            statuses["cancelled"] = cancelled
        parts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        text = f"codemode map: {plural(self.total, 'task')}: {parts or 'none run'}"
        failures = [r for r in sorted(results.values(), key=lambda r: r.index) if not r.ok]
        for failure in failures[:SLOWEST_SHOWN]:
            text += f"\n  #{failure.index} {failure.status}: {short_repr(str(failure.error))}"
        if interrupted:
            text += f"\n  stopped: the finished tasks were kept in {out}"
        return text + printed_text(results)


class _View:
    """Shows a Progress; a thread refreshes it (and the running count) a few times a second."""

    def __init__(self, total: int, rate: float = 4.0, quiet: bool = False) -> None:
        self.progress = Progress(total)
        self.interval = 1.0 / rate
        self.quiet = quiet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: Pool | None = None

    def start(self, pool: Pool) -> None:
        self._pool = pool
        if self.quiet:
            return
        self.show()
        self._thread = threading.Thread(target=self._refresh, name="codemode-map-view", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            self.update()

    def update(self) -> None:
        if self._pool is not None:
            self.progress.running = self._pool.status()["running"]
        self.render()

    def add(self, done: TaskResult) -> None:
        self.progress.add(done)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def finish(self, results: dict[int, TaskResult], interrupted: bool, out: str | None) -> None:
        self.progress.running = 0
        if self.quiet:
            return
        self.render()
        self.end()
        publish_display_data({"text/plain": self.progress.summary(results, interrupted, out)})

    def end(self) -> None:
        pass

    def show(self) -> None:
        pass

    def render(self) -> None:
        pass


class _DisplayView(_View):
    """One display updated in place; its last state (the final progress) is what is saved."""

    def show(self) -> None:
        self.display_id = uuid.uuid4().hex
        self._shown = ""
        self._publish(update=False)

    def render(self) -> None:
        self._publish(update=True)

    def _publish(self, *, update: bool) -> None:
        value = self.progress.render_html()
        if update and value == self._shown:
            return
        self._shown = value
        publish_display_data(
            {"text/html": value, "text/plain": PROGRESS_TEXT},
            transient={"display_id": self.display_id},
            update=update,
        )


class _TextView(_View):
    """Outside a notebook (IPython in a terminal): the one progress bar, on stderr."""

    def show(self) -> None:
        self.bar = ProgressBar(self.progress.total, "codemode map", sys.stderr)

    def add(self, done: TaskResult) -> None:
        super().add(done)
        self.bar.add(done.ok, done.retried)

    def render(self) -> None:
        self.bar.set_running(self.progress.running)

    def end(self) -> None:
        self.bar.close()


def _make_view(shell: Any, total: int, quiet: bool) -> _View:
    if quiet:
        return _View(total, quiet=True)
    if getattr(shell, "kernel", None) is not None:
        return _DisplayView(total)
    return _TextView(total)


def printed_text(results: dict[int, TaskResult]) -> str:
    """What the tasks printed, by task in input order (the first lines of each)."""
    parts = []
    for done in sorted(results.values(), key=lambda r: r.index):
        result = done.result
        text = (result.stdout + result.stderr) if result is not None else ""
        if not text.strip():
            continue
        if len(parts) == PRINTS_SHOWN:
            parts.append("  [… later tasks printed too: the Tools panel lists their runs …]")
            break
        lines = text.rstrip("\n").split("\n")
        shown = [f"    {line}" for line in lines[:PRINT_LINES]]
        if len(lines) > PRINT_LINES:
            shown.append(f"    [… {len(lines) - PRINT_LINES} more lines …]")
        parts.append(f"  #{done.index} printed:\n" + "\n".join(shown))
    return "".join(f"\n{part}" for part in parts)
