"""One progress bar for many tasks: `codemode-jupyter batch` and `--map` outside a notebook.

tqdm.auto draws it as the front end can: an ipywidgets bar in a notebook, a text bar redrawn in
place on a terminal. The counts a bar alone cannot show (failed, retried, running) follow it.
tqdm is imported when a bar is made, not with the package.
"""

from __future__ import annotations

from typing import Any, TextIO


class ProgressBar:
    """`total` tasks, counted as they end; `close()` leaves the final line."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None) -> None:
        # A stream given is written to as text; with none, tqdm.auto picks a notebook widget
        # when an IPython kernel runs, a text bar on a terminal otherwise.
        if stream is None:
            from tqdm.auto import tqdm
        else:
            from tqdm.std import tqdm

        self.total = total
        self.done = self.failed = self.retried = self.running = 0
        tty = stream is None or stream.isatty()
        self._bar: Any = tqdm(
            total=total,
            desc=desc,
            unit="task",
            file=stream,
            dynamic_ncols=tty,
            # In a log (not a terminal) a line every tenth of the tasks, not one per task.
            miniters=1 if tty else max(1, total // 10),
            mininterval=0.1 if tty else 0.0,
        )

    def counts(self) -> str:
        running = f", {self.running} running" if self.running else ""
        return f"{self.failed} failed, {self.retried} retried{running}"

    def add(self, ok: bool, retried: int = 0) -> None:
        """One task ended (`ok` or not, after `retried` retries)."""
        self.done += 1
        self.failed += not ok
        self.retried += retried
        self._bar.set_postfix_str(self.counts(), refresh=False)
        self._bar.update(1)

    def set_running(self, running: int) -> None:
        if running != self.running:
            self.running = running
            self._bar.set_postfix_str(self.counts())

    def close(self) -> None:
        """End the bar (idempotent): its last state stays on screen."""
        self._bar.close()
