"""`codemode-jupyter batch TASKS.jsonl`: many programs on a Pool, results appended as JSON lines.

Each line of TASKS.jsonl is a JSON object: `{"code": "...", "inputs": {...}, "id": "..."}`
(`inputs` and `id` optional; with `--program FILE.py` every line runs that program and
`code` is not needed). A task is known by its `id`, or else by its line number ("line 7").

Results are appended to RESULTS.jsonl as they finish, one JSON object a line
(`TaskResult.to_dict()`), and flushed at once. A rerun reads RESULTS.jsonl first and skips the
tasks it already holds, so a run killed halfway (Ctrl-C, SIGTERM, even SIGKILL) is finished by
running the same command again: nothing runs twice and nothing is lost (a line cut short by a
crash is dropped, and its task runs again). Ctrl-C and SIGTERM stop the running programs and
close every sandbox before exiting.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import runpy
import signal
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .backends import BackendConfigError
from .pool import Pool
from .pool_tasks import TaskResult
from .tools import is_tool_marked

#: Statuses that mean "stopped by us", not a result: such a task runs again on a rerun.
NOT_DONE = ("interrupted", "cancelled")
EXIT_INTERRUPTED = 130


class BatchError(ValueError):
    """Bad input (tasks file, tools file): the message says which line and why."""


def add_parser(commands: Any) -> None:
    """The `batch` subcommand's arguments."""
    p = commands.add_parser("batch", help="run many programs on a pool of sandboxes")
    p.add_argument("tasks", type=Path, help="JSON lines: {code, inputs?, id?} per task")
    p.add_argument("--tools", type=Path, help="a Python file whose functions are the tools")
    p.add_argument("--program", type=Path, help="run this program for every task's inputs")
    p.add_argument("--backend", default="local", choices=("local", "daytona"))
    p.add_argument("--concurrency", type=int, default=4, help="sandboxes at once")
    p.add_argument("--out", type=Path, required=True, help="results, appended (JSON lines)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per program")
    p.add_argument(
        "--max-attempts", type=int, default=3, help="tries for a task whose sandbox fails"
    )
    p.add_argument("--tool-workers", type=int, default=1, help="threads running sync tools")


def load_tools(path: Path | None) -> list[Any]:
    """The tools a file defines: its @tool functions if it marks any, else its public
    functions (not imported ones)."""
    if path is None:
        return []
    if not path.is_file():
        raise BatchError(f"no such tools file: {path}")
    namespace = runpy.run_path(str(path), run_name="codemode_batch_tools")
    functions = [
        obj
        for name, obj in namespace.items()
        if isinstance(obj, types.FunctionType)
        and not name.startswith("_")
        and obj.__module__ == "codemode_batch_tools"
    ]
    marked = [obj for obj in namespace.values() if is_tool_marked(obj)]
    return marked or functions


def read_tasks(path: Path, program: str | None) -> list[tuple[str, str, dict | None]]:
    """(id, code, inputs) per line, every line checked before anything runs."""
    if not path.is_file():
        raise BatchError(f"no such tasks file: {path}")
    tasks, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BatchError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(item, dict):
            raise BatchError(f"{path}:{number}: a task is a JSON object, not {type(item).__name__}")
        task_id = str(item["id"]) if "id" in item else f"line {number}"
        if task_id in seen:
            raise BatchError(f"{path}:{number}: task id {task_id!r} appears twice")
        seen.add(task_id)
        code = program if program is not None else item.get("code")
        if not isinstance(code, str):
            raise BatchError(f'{path}:{number}: no "code" string (or give --program)')
        inputs = item.get("inputs")
        if inputs is not None and not isinstance(inputs, dict):
            raise BatchError(f'{path}:{number}: "inputs" must be an object')
        tasks.append((task_id, code, inputs))
    return tasks


def done_ids(path: Path) -> set[str]:
    """Ids of the tasks RESULTS.jsonl already holds; a last line cut short is removed."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # a crash mid-write: drop the partial line
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    ids = set()
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("status") not in NOT_DONE:
            ids.add(str(record.get("id")))
    return ids


class ProgressBar:
    """One line on stderr: redrawn in place on a terminal, a line every tenth otherwise."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.done = self.failed = self.retried = 0
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self._last_tenth = -1

    def add(self, result: TaskResult) -> None:
        self.done += 1
        self.failed += not result.ok
        self.retried += result.retried
        tenth = 10 * self.done // max(1, self.total)
        if self.tty or tenth != self._last_tenth or self.done == self.total:
            self._last_tenth = tenth
            self.draw()

    def draw(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        filled = 30 * self.done // max(1, self.total)
        line = (
            f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} done, "
            f"{self.failed} failed, {self.retried} retried, {rate:.1f} tasks/s, ~{left:.0f} s left"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")


def run_batch(args: argparse.Namespace, err: TextIO = sys.stderr) -> int:
    program = args.program.read_text() if args.program is not None else None
    tasks = read_tasks(args.tasks, program)
    tools = load_tools(args.tools)
    done = done_ids(args.out)
    todo = [t for t in tasks if t[0] not in done]
    err.write(
        f"codemode-jupyter batch: {len(tasks)} tasks, {len(tasks) - len(todo)} already in "
        f"{args.out}, {len(todo)} to run on {args.concurrency} {args.backend} sandboxes\n"
    )
    if not todo:
        return 0
    bar = ProgressBar(len(todo), err)
    with (
        _sigterm_as_interrupt(),
        args.out.open("a", encoding="utf-8") as out,
        Pool(
            tools,
            args.backend,
            size=args.concurrency,
            timeout=args.timeout,
            max_attempts=args.max_attempts,
            tool_workers=args.tool_workers,
        ) as pool,
    ):
        try:
            for result in _run(pool, todo):
                if result.status in NOT_DONE:
                    continue
                out.write(json.dumps(result.to_dict(), default=repr) + "\n")
                out.flush()
                bar.add(result)
        except KeyboardInterrupt:
            bar.end()
            err.write(
                f"stopped: {bar.done} results written, {len(todo) - bar.done} tasks left; "
                "run the same command again to finish\n"
            )
            return EXIT_INTERRUPTED
    bar.end()
    summary = pool.summary()
    err.write(f"done: {json.dumps(summary['status'])}, {summary['retried']} retried\n")
    return 0


def _run(pool: Pool, todo: list[tuple[str, str, dict | None]]) -> Iterator[TaskResult]:
    futures = {pool.submit(code, inputs, id=task_id): task_id for task_id, code, inputs in todo}
    try:
        for future in concurrent.futures.as_completed(futures):
            if not future.cancelled():
                yield future.result()
    finally:
        pool.cancel()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the batch like Ctrl-C: sandboxes closed, results so far kept."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(args: argparse.Namespace) -> int:
    try:
        return run_batch(args)
    except (BatchError, ValueError) as exc:
        sys.stderr.write(f"codemode-jupyter batch: {exc}\n")
        return 2
    except BackendConfigError as exc:  # e.g. a rejected API key: nothing can run
        sys.stderr.write(f"codemode-jupyter batch: {exc}\n")
        return 1
