"""The rich side of a session and of each run: displays kept within caps, files uploaded before
a run, and the artifacts it brings back. The engine holds one RichOptions per session and one
RichRun per run; this keeps what the engine itself must know about them to a few calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codemode_jupyter.engine import options
from codemode_jupyter.engine.displays import (
    MAX_DISPLAY_BYTES,
    MAX_DISPLAYS,
    MAX_ONE_DISPLAY,
    DisplayBook,
)
from codemode_jupyter.engine.files import (
    MAX_ARTIFACT_BYTES,
    MAX_ARTIFACTS,
    MAX_UPLOAD_BYTES,
    ArtifactWriter,
    UploadPlan,
    plan_uploads,
    put_frames,
)
from codemode_jupyter.model import events as ev


@dataclass
class RichOptions:
    """A session's settings for displays and files (checked when made)."""

    max_display_bytes: int = MAX_DISPLAY_BYTES
    max_displays: int = MAX_DISPLAYS
    files: list[Any] = field(default_factory=list)
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    outputs_dir: Path | None = Path("codemode-outputs")
    max_artifacts: int = MAX_ARTIFACTS
    max_artifact_bytes: int = MAX_ARTIFACT_BYTES
    #: Names this session's folder under outputs_dir.
    session: str = field(default_factory=lambda: os.urandom(4).hex())

    def __post_init__(self) -> None:
        options.count("max_display_bytes", self.max_display_bytes, 1)
        options.count("max_displays", self.max_displays)
        options.count("max_upload_bytes", self.max_upload_bytes)
        options.count("max_artifacts", self.max_artifacts)
        options.count("max_artifact_bytes", self.max_artifact_bytes)
        self.files = list(self.files or ())
        plan_uploads(self.files, self.max_upload_bytes)  # a missing path fails here, at once
        if self.outputs_dir is not None:
            # Fixed now: a later chdir of the host must not scatter a session's files.
            self.outputs_dir = Path(os.path.abspath(os.fspath(self.outputs_dir)))

    def uploads(self, session_files: bool, run_files: Iterable[Any] | None) -> UploadPlan:
        """What to send before a run: the session's files when its runtime is new (a new
        runtime has an empty work dir), and the run's own."""
        specs = [*(self.files if session_files else ()), *(run_files or ())]
        return plan_uploads(specs, self.max_upload_bytes)


class RichRun:
    """One run's displays and artifacts, fed from the engine's I/O thread."""

    def __init__(self, opts: RichOptions, number: int, emit: Callable[[ev.Event], None]) -> None:
        self.opts = opts
        self.emit = emit
        self.number = number
        self.book = DisplayBook(opts.max_display_bytes, opts.max_displays, MAX_ONE_DISPLAY)
        #: Made by the run's first artifact: most runs bring none back, and every run pays
        #: for what is made here.
        self.writer: ArtifactWriter | None = None
        self.not_uploaded: list[str] = []  # links and special files met in uploaded folders

    def upload_frames(
        self, session_files: bool, run_files: Iterable[Any] | None
    ) -> Iterator[bytes]:
        """The put frames of the run's uploads; what is not sent is said in its stderr."""
        plan = self.opts.uploads(session_files, run_files)
        self.not_uploaded = list(plan.skipped)
        yield from put_frames(plan, self.not_uploaded)

    def limits(self) -> dict[str, int]:
        """The caps the runtime applies itself (the host checks them again)."""
        artifacts = self.opts.max_artifacts if self.opts.outputs_dir is not None else 0
        return {
            "display": min(MAX_ONE_DISPLAY, self.opts.max_display_bytes),
            "artifacts": artifacts,
            "artifact_bytes": self.opts.max_artifact_bytes,
        }

    def display(self, frame: dict) -> None:
        item = self.book.add(frame["data"], frame.get("metadata") or {})
        if item is not None:
            self.emit(ev.Display(item["data"], item["metadata"]))

    def value_bundle(self, bundle: dict[str, Any] | None) -> dict[str, Any] | None:
        """The value's MIME bundle as kept: it counts against the display caps as a display."""
        return None if bundle is None else self.book.keep_value(bundle)

    def artifact(self, frame: dict) -> None:
        opts = self.opts
        if opts.outputs_dir is None:
            return
        if self.writer is None:
            folder = opts.outputs_dir / opts.session / f"run-{self.number}"
            self.writer = ArtifactWriter(folder, opts.max_artifacts, opts.max_artifact_bytes)
        self.writer.feed(frame["name"], frame["d"], frame["more"])

    def finish(self) -> tuple[dict[str, Any], list[str]]:
        """The RunResult's fields for displays and artifacts, and the notes for its stderr."""
        notes = [self.book.note()]
        if self.not_uploaded:
            notes.append(f"[codemode] not uploaded: {', '.join(self.not_uploaded)}\n")
        artifacts, left = [], []
        if self.writer is not None:
            notes.append(self.writer.finish())
            artifacts, left = self.writer.artifacts, self.writer.left
        fields = {
            "displays": self.book.items,
            "displays_dropped": self.book.dropped,
            "artifacts": artifacts,
            "artifacts_left": list(left),
        }
        return fields, [note for note in notes if note]
