"""What the run card shows of a run's artifacts: where each file is for a link, and a peek.

The card opens a file through the Jupyter server, which serves paths relative to the
notebook; the kernel's working directory is the notebook's folder when a front end started
it, so a path relative to that directory (when the file is under it) is what the card needs.
A CSV gets its first lines, so the card can show a small table without fetching the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Lines of a CSV (or TSV) the card previews, and characters at most.
PREVIEW_LINES = 6
PREVIEW_CHARS = 2000
_TABLE_SUFFIXES = (".csv", ".tsv")


def describe_artifacts(
    artifacts: list[dict[str, Any]], cwd: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Each artifact dict with `rel` (its path relative to `cwd`, the kernel's working
    directory, when it is under it) and, for a CSV, `head` (its first lines)."""
    base = Path(os.path.abspath(cwd if cwd is not None else os.getcwd()))
    described = []
    for artifact in artifacts:
        item = dict(artifact)
        path = Path(str(item.get("path", "")))
        rel = relative_path(path, base)
        if rel is not None:
            item["rel"] = rel
        if path.suffix.lower() in _TABLE_SUFFIXES:
            head = first_lines(path)
            if head is not None:
                item["head"] = head
        described.append(item)
    return described


def relative_path(path: Path, base: Path) -> str | None:
    """`path` relative to `base` with forward slashes, or None when it is not under it."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(base)
    except ValueError:
        return None
    return rel.as_posix()


def first_lines(path: Path) -> list[str] | None:
    """The first `PREVIEW_LINES` lines of a text file (None if it cannot be read as text)."""
    try:
        with path.open("r", encoding="utf-8", newline="") as file:
            text = file.read(PREVIEW_CHARS)
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.splitlines()
    if len(text) == PREVIEW_CHARS and lines:
        lines.pop()  # the last line may be cut
    return lines[:PREVIEW_LINES]
