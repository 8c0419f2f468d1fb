"""`codemode-jupyter batch TASKS.jsonl`: many programs on a Pool, results appended as JSON lines.

Each line of TASKS.jsonl is a JSON object: `{"code": "...", "inputs": {...}, "id": "..."}`
(`inputs` and `id` optional; with `--program FILE.py` every line runs that program and
`code` is not needed). A task is known by its `id`, or else by its line number ("line 7").

Results are appended to RESULTS.jsonl as they finish, one JSON object a line
(`TaskResult.to_dict()`), and flushed at once; batch_results.py says which files it accepts,
how it is locked and how it is kept to one line per task. A rerun skips the tasks it already
holds, so a run killed halfway (Ctrl-C, SIGTERM, even SIGKILL) is finished by running the same
command again. Results are kept exactly once: a task with a result never runs again (unless
`--retry-failed` asks for it). Tool side effects are at least once: the tasks that were running
at the kill had no result yet, so they run again from the start, and the tools they had
called are called again. Ctrl-C and SIGTERM stop the running programs and close every sandbox
before exiting.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import runpy
import signal
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from codemode_jupyter.backends import BACKENDS, DEFAULT_BACKEND, BackendConfigError
from codemode_jupyter.cli.batch_results import (
    FAILED,
    NOT_DONE,
    PROGRAM_FAILED,
    BatchError,
    ResultsFile,
)
from codemode_jupyter.pool.scheduler import Pool
from codemode_jupyter.pool.tasks import TaskResult
from codemode_jupyter.support.progress import ProgressBar
from codemode_jupyter.tools.tool import is_tool_marked

EXIT_INTERRUPTED = 130


def add_parser(commands: Any) -> None:
    """The `batch` subcommand's arguments."""
    p = commands.add_parser("batch", help="run many programs on a pool of sandboxes")
    p.add_argument("tasks", type=Path, help="JSON lines: {code, inputs?, id?} per task")
    p.add_argument("--tools", type=Path, help="a Python file whose functions are the tools")
    p.add_argument("--program", type=Path, help="run this program for every task's inputs")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
    p.add_argument("--concurrency", type=int, default=4, help="sandboxes at once")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="results (JSON lines): a new file, or the results of an earlier batch to finish; "
        "one batch command at a time",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per program")
    p.add_argument(
        "--max-attempts", type=int, default=3, help="tries for a task whose sandbox fails"
    )
    p.add_argument("--tool-workers", type=int, default=1, help="threads running sync tools")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also rerun the tasks whose result in --out is `crashed`: the sandbox died, or "
        "the program never started (no runtime, e.g. an outage); program outcomes (error, "
        "timeout, limit) are kept",
    )
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="also rerun the tasks whose program failed (error, timeout, limit), and the "
        "crashed ones: every task whose result is not ok",
    )


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


def rerun_statuses(args: argparse.Namespace) -> frozenset[str]:
    """The statuses of recorded results whose tasks run again (besides interrupted ones)."""
    if args.retry_errors:
        return frozenset(FAILED + PROGRAM_FAILED)
    return frozenset(FAILED) if args.retry_failed else frozenset()


def run_batch(args: argparse.Namespace, err: TextIO = sys.stderr) -> int:
    program = args.program.read_text() if args.program is not None else None
    tasks = read_tasks(args.tasks, program)
    inputs = (args.tasks, args.tools, args.program)
    # SIGTERM also covers the results file's last rewrite: it ends whole, or not at all.
    with _sigterm_as_interrupt(), ResultsFile(args.out, inputs, err) as results:
        tools = load_tools(args.tools)
        rerun = rerun_statuses(args)
        todo = [t for t in tasks if not results.done(t[0], rerun)]
        again = sum(t[0] in results.status for t in todo)
        err.write(
            f"codemode-jupyter batch: {len(tasks)} tasks, {len(tasks) - len(todo)} already in "
            f"{args.out}, {len(todo)} to run{f' ({again} again)' if again else ''} on "
            f"{args.concurrency} {args.backend} sandboxes\n"
        )
        err.flush()
        if not todo:
            return 0
        return _run_pool(args, tools, todo, results, err)


def _run_pool(
    args: argparse.Namespace,
    tools: list[Any],
    todo: list[tuple[str, str, dict | None]],
    results: ResultsFile,
    err: TextIO,
) -> int:
    bar = ProgressBar(len(todo), "codemode-jupyter batch", err)
    with Pool(
        tools,
        args.backend,
        size=args.concurrency,
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        tool_workers=args.tool_workers,
    ) as pool:
        try:
            for result in _run(pool, todo):
                if result.status in NOT_DONE:
                    continue
                results.append(result.to_dict())
                bar.add(result.ok, result.retried)
        except KeyboardInterrupt:
            bar.close()
            err.write(
                f"stopped: {bar.done} results written, {len(todo) - bar.done} tasks left; "
                "run the same command again to finish\n"
            )
            return EXIT_INTERRUPTED
    bar.close()
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
    except (BackendConfigError, OSError) as exc:  # a rejected API key, an unwritable file
        sys.stderr.write(f"codemode-jupyter batch: {exc}\n")
        return 1
    except KeyboardInterrupt:  # before the tasks started, or while the results were rewritten
        sys.stderr.write("codemode-jupyter batch: stopped\n")
        return EXIT_INTERRUPTED
