"""Files in and out of the sandbox, over the runtime's own channel (so every backend has them).

In: host files and folders (`CodeMode(files=...)`, `run(files=...)`) go to the runtime as
`put` frames before the run and land under its work dir. Out: the files a run leaves under
`outputs/` (and those passed to `codemode.save()`) come back as `artifact` frames at its end
and are written to `<outputs_dir>/<session>/<run>/` on the host, within caps on count and size.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .result import Artifact
from .runtime import codemode_protocol as P

MAX_UPLOAD_BYTES = 100 << 20
MAX_ARTIFACTS = 50
MAX_ARTIFACT_BYTES = 100 << 20


@dataclass(frozen=True)
class Upload:
    """One host file and where it goes, relative to the sandbox's work dir."""

    source: Path
    dest: str
    size: int


def plan_uploads(specs: Iterable[Any], max_bytes: int = MAX_UPLOAD_BYTES) -> list[Upload]:
    """The files to send for `specs` ("path", "path:dest", or (path, dest)), folders walked.

    Raises FileNotFoundError for a missing path and ValueError for a bad destination or past
    `max_bytes` altogether: before anything is sent."""
    uploads: list[Upload] = []
    for spec in specs:
        source, dest = _split(spec)
        if source.is_dir():
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                rel = path.relative_to(source).as_posix()
                uploads.append(Upload(path, f"{dest}/{rel}", path.stat().st_size))
        elif source.is_file():
            uploads.append(Upload(source, dest, source.stat().st_size))
        else:
            raise FileNotFoundError(
                f"cannot upload {str(source)!r} into the sandbox: there is no such file or folder"
            )
    total = sum(u.size for u in uploads)
    if total > max_bytes:
        raise ValueError(
            f"the files to upload take {total:,} bytes, more than the "
            f"{max_bytes:,} allowed (max_upload_bytes)"
        )
    return uploads


def _split(spec: Any) -> tuple[Path, str]:
    if isinstance(spec, tuple):
        source, dest = Path(spec[0]), str(spec[1])
    else:
        text = os.fspath(spec)
        # "data.csv:in/data.csv"; a colon in the source itself needs the tuple form.
        source_text, _, dest = text.partition(":") if ":" in text else (text, "", "")
        source = Path(source_text)
    source = source.expanduser().resolve()
    return source, safe_relative(dest or source.name, "upload destination")


def safe_relative(name: str, what: str) -> str:
    """`name` as a clean relative POSIX path that stays inside its folder; ValueError if not."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [part for part in path.parts if part not in ("", ".")]
    if path.is_absolute() or not parts or ".." in parts or "\0" in name:
        raise ValueError(f"{what} {name!r} must be a relative path inside the work dir")
    return "/".join(parts)


def put_frames(uploads: Iterable[Upload]) -> Iterator[bytes]:
    """The `put` frames that carry `uploads`, a chunk at a time (never a whole file in memory)."""
    for upload in uploads:
        with open(upload.source, "rb") as f:
            chunk = f.read(P.CHUNK)
            while True:
                following = f.read(P.CHUNK) if chunk else b""
                yield P.encode(
                    {
                        "t": P.PUT,
                        "path": upload.dest,
                        "more": bool(following),
                        "d": base64.b64encode(chunk).decode("ascii"),
                    }
                )
                if not following:
                    break
                chunk = following


class ArtifactWriter:
    """Writes one run's artifact frames to its folder (made on the first file), within caps.

    Used from the engine's I/O thread; `finish` from the run's thread once the run is over."""

    def __init__(
        self, directory: Path, max_files: int = MAX_ARTIFACTS, max_bytes: int = MAX_ARTIFACT_BYTES
    ) -> None:
        self.directory = directory
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.artifacts: list[Artifact] = []
        self.left: list[str] = []
        self._total = 0
        self._name = ""
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._hash = _sha256()
        self._size = 0
        self._skipping = ""  # the name of a file being refused, chunk after chunk

    def feed(self, name: str, data: str, more: bool) -> Artifact | None:
        """Take one chunk; returns the artifact when its last chunk is written."""
        if self._skipping and self._skipping == name:
            self._skipping = "" if not more else name
            return None
        if self._file is None:
            self._begin(name)
            if self._file is None:
                self._skipping = name if more else ""
                return None
        try:
            chunk = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return self._drop("its data was not base64", more)
        self._size += len(chunk)
        if self._total + self._size > self.max_bytes:
            return self._drop(f"over the {self.max_bytes:,} bytes a run may bring back", more)
        self._file.write(chunk)
        self._hash.update(chunk)
        return None if more else self._end()

    def _begin(self, name: str) -> None:
        try:
            clean = safe_relative(name, "artifact name")
        except ValueError:
            self.left.append(f"{name!r:.80} (not a usable name)")
            return
        if len(self.artifacts) >= self.max_files:
            self.left.append(f"{clean} (over the {self.max_files} files a run may bring back)")
            return
        path = self.directory / clean
        stem, n = path, 2
        while path.exists():  # the same name from save() and outputs/: keep both
            path = stem.with_name(f"{stem.stem}-{n}{stem.suffix}")
            n += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        self._name, self._path, self._file = clean, path, open(path, "wb")  # noqa: SIM115
        self._hash, self._size = _sha256(), 0

    def _end(self) -> Artifact:
        assert self._file is not None and self._path is not None
        self._file.close()
        self._file = None
        self._total += self._size
        artifact = Artifact(self._name, self._size, self._hash.hexdigest(), str(self._path))
        self.artifacts.append(artifact)
        return artifact

    def _drop(self, why: str, more: bool) -> None:
        self.left.append(f"{self._name} ({why})")
        self._discard()
        self._skipping = self._name if more else ""
        return None

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            if self._path is not None:
                self._path.unlink(missing_ok=True)

    def finish(self) -> str:
        """Close a file cut short (its run ended mid-transfer); the note of what was left."""
        if self._file is not None:
            self.left.append(f"{self._name} (the run ended before it had all arrived)")
            self._discard()
        if not self.left:
            return ""
        return f"[codemode] files not brought back: {', '.join(self.left)}\n"


def _sha256() -> Any:
    """A new sha256 (hashlib is imported by the first run that brings a file back: with
    OpenSSL's library it costs a python 4 MiB)."""
    import hashlib

    return hashlib.sha256()
