"""The results file of `codemode-jupyter batch`: checked, locked, appended to, compacted.

A results file holds one JSON object a line, a task's `TaskResult.to_dict()`, which always
starts `{"index": `. The command writes only to a file that is new, empty, or already such a
file (never the tasks file, also not through a symlink or a hard link), and only while it holds
the lock beside it (`RESULTS.jsonl.lock`): a second command on the same file is refused.

Results are appended as they finish. A line that is not a result record (cut short by a kill,
or damaged) is skipped with a warning, moved to `RESULTS.jsonl.dropped` (nothing the file held
is thrown away), and its task runs again. When the file holds such lines, or a task's result
was replaced (`--retry-failed`), it is rewritten with one line per task id, its latest, through
a temporary file renamed over it: at the start of the command and when it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from codemode_jupyter.errors import BatchError
from codemode_jupyter.pool.scheduler import STATUSES

#: How every record the command writes begins (json.dumps of TaskResult.to_dict()).
RECORD_PREFIX = b'{"index": '
#: The start of the error of a run whose program never started (no runtime: an outage).
NEVER_STARTED = "the runtime could not be started"
#: Statuses that mean "stopped by us", not a result: such a task runs again on a rerun.
NOT_DONE = ("interrupted", "cancelled")
#: Failures of the sandbox, not of the program: a crash, or a runtime that never started.
FAILED = ("crashed",)
#: The program's own failures: it raised, ran out of time, or went over a budget.
PROGRAM_FAILED = ("error", "timeout", "limit")
_KNOWN = (*STATUSES, "cancelled")
_WARN_LINES = 5  # bad lines named one by one; past that, a count
_FIRST_LINE_MAX = 1 << 20  # bytes read to tell another file (a log, a dump) from results


class ResultsFile:
    """RESULTS.jsonl while a batch command holds it: what it holds, and new records."""

    def __init__(self, out: Path, inputs: Iterable[Path | None], warn: TextIO) -> None:
        self.name = out
        self.path = _real_path(out)
        self.warn = warn
        self.status: dict[str, str] = {}  # task id -> its latest record's (effective) status
        self._lock = _Lock(self.path.with_name(self.path.name + ".lock"), out)
        self._inputs = [p for p in inputs if p is not None]
        self._out: Any = None
        self._replaced = False  # a task's record was replaced: compact when done

    def __enter__(self) -> ResultsFile:
        self._lock.acquire()
        try:
            self._check()
            self._load()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._out is not None:
                self._out.close()
            if self._replaced:
                latest, bad, _ = self._scan()
                self._compact(latest, bad)
        finally:
            self._lock.release()

    def done(self, task_id: str, rerun: Iterable[str]) -> bool:
        """Whether the task has a result to keep (not stopped by us, not a status to rerun)."""
        status = self.status.get(task_id)
        return status is not None and status not in NOT_DONE and status not in rerun

    def append(self, record: dict[str, Any]) -> None:
        """Add a task's result at once (flushed), replacing any earlier one of its id."""
        if self._out is None:
            self._out = self.path.open("ab")
        task_id = str(record["id"])
        self._replaced |= task_id in self.status
        self.status[task_id] = effective_status(record)
        self._out.write((json.dumps(record, default=repr) + "\n").encode())
        self._out.flush()

    # --- reading and rewriting ---

    def _check(self) -> None:
        """Refuse a file the command did not write (or one it reads from)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not self.path.parent.is_dir():
                raise BatchError(f"--out {self.name}: no such directory") from None
            return
        if not stat.S_ISREG(st.st_mode):
            raise BatchError(f"--out {self.name} is not a regular file")
        for path in self._inputs:
            with contextlib.suppress(OSError):
                other = os.stat(path)
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    raise BatchError(
                        f"--out {self.name} is {path} (the same file): give another results file"
                    )
        if st.st_nlink > 1:  # another name would escape the lock and keep the old lines
            raise BatchError(
                f"--out {self.name} has {st.st_nlink - 1} other hard link(s): give a results "
                "file with one name"
            )
        with self.path.open("rb") as f:
            first = f.readline(_FIRST_LINE_MAX)
        # A first record cut short or damaged still starts as every record does.
        if first and not first.startswith(RECORD_PREFIX) and _record(first) is None:
            raise BatchError(
                f"--out {self.name} is not a results file of codemode-jupyter batch (its first "
                "line is not a result record); give a new file, or the results of an earlier "
                "batch"
            )

    def _load(self) -> None:
        latest, bad, lines = self._scan()
        self.status = {task_id: status for task_id, (_, status) in latest.items()}
        if bad:
            self._report(bad)
        if bad or len(latest) < lines - len(bad):
            self._compact(latest, bad)

    def _scan(self) -> tuple[dict[str, tuple[int, str]], list[int], int]:
        """Per task id, the number of its latest record's line and its status; the numbers
        of the lines that are not records; how many lines there are."""
        latest: dict[str, tuple[int, str]] = {}
        bad: list[int] = []
        number = 0
        if not self.path.exists():
            return latest, bad, number
        with self.path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                record = _record(line) if line.endswith(b"\n") else None
                if record is None:
                    bad.append(number)
                else:
                    latest[record["id"]] = (number, effective_status(record))
        return latest, bad, number

    def _report(self, bad: list[int]) -> None:
        named = ", ".join(str(n) for n in bad[:_WARN_LINES])
        more = f" and {len(bad) - _WARN_LINES} more" if len(bad) > _WARN_LINES else ""
        lines, are, their = (
            ("lines", "are", "their tasks run") if bad[1:] else ("line", "is", "its task runs")
        )
        self.warn.write(
            f"codemode-jupyter batch: warning: {self.name}: {lines} {named}{more} {are} not a "
            f"result record (cut short by a kill, or damaged): moved to "
            f"{self._dropped().name}; {their} again\n"
        )

    def _dropped(self) -> Path:
        return self.path.with_name(self.path.name + ".dropped")

    def _compact(self, latest: dict[str, tuple[int, str]], bad: list[int]) -> None:
        """Rewrite the file with each task's latest record (the bad lines kept aside), through
        a temporary file renamed over it: a kill leaves the old file or the new, whole."""
        keep = {number for number, _ in latest.values()}
        dropped = set(bad)
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as new, self.path.open("rb") as old:
                with _opened_lazily(self._dropped()) as aside:
                    for number, line in enumerate(old, start=1):
                        if number in keep:
                            new.write(line)
                        elif number in dropped:
                            aside().write(line if line.endswith(b"\n") else line + b"\n")
                new.flush()
                os.fsync(new.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path.parent)


def effective_status(record: dict[str, Any]) -> str:
    """The record's status, except that a program that never started (no runtime, e.g. an
    outage) counts as `crashed` even when the wait for it ended as a timeout."""
    result = record.get("result")
    error = result.get("error") if isinstance(result, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str) and message.startswith(NEVER_STARTED):
        return "crashed"
    return str(record["status"])


def _record(line: bytes) -> dict[str, Any] | None:
    """The result record a line holds, or None if it holds none."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None
    if record.get("status") not in _KNOWN:
        return None
    return record


def _real_path(out: Path) -> Path:
    """Where the results go: a symlink's target (kept a symlink when the file is rewritten)."""
    real = Path(os.path.realpath(out))
    if out.is_symlink() and not real.exists():
        raise BatchError(f"--out {out} is a symlink to a file that does not exist ({real})")
    return real


@contextlib.contextmanager
def _opened_lazily(path: Path) -> Iterator[Any]:
    """A callable giving `path` opened for appending, opened on first use only."""
    opened: list[Any] = []

    def get() -> Any:
        if not opened:
            opened.append(path.open("ab"))
        return opened[0]

    try:
        yield get
    finally:
        for f in opened:
            f.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Lock:
    """An exclusive flock on a file beside the results, removed by its holder when done."""

    def __init__(self, path: Path, out: Path) -> None:
        self.path, self.out = path, out
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise BatchError(f"--out {self.out}: cannot create {self.path}: {exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                raise BatchError(
                    f"{self.out} is being written by another batch command"
                    f"{f' (pid {holder})' if holder else ''}: running both would run every "
                    "task twice; wait for it to end, or give another --out"
                ) from None
            if self._still_there(fd):
                break
            os.close(fd)  # its last holder removed it as we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def _still_there(self, fd: int) -> bool:
        try:
            here = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self.fd is None:
            return
        # Removed while still held, so a command that opened it meanwhile sees it gone.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None
