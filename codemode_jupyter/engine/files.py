"""Files in and out of the sandbox, over the runtime's own channel (so every backend has them).

In: host files and folders (`CodeMode(files=...)`, `run(files=...)`) go to the runtime as
`put` frames before the run and land under its work dir. Out: the files a run leaves under
`outputs/` (and those passed to `codemode.save()`) come back as `artifact` frames at its end
and are written to `<outputs_dir>/<session>/<run>/` on the host, within caps on count and size.

Links are never followed into the sandbox: a folder is walked without following them (a link
in it is skipped and named in the run's stderr, wherever it points), a link named as the
upload itself is refused, and each file is opened component by component with O_NOFOLLOW, so
a link swapped in after the walk is refused too (a program with a writable mount could plant
one for a later upload).
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from codemode_jupyter.model.result import Artifact
from codemode_jupyter.runtime import codemode_protocol as P

MAX_UPLOAD_BYTES = 100 << 20
MAX_ARTIFACTS = 50
MAX_ARTIFACT_BYTES = 100 << 20
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Upload:
    """One host file and where it goes, relative to the sandbox's work dir.

    `base` is the folder the user's path leads to (its links are the user's own); `parts`
    lead from it to the file, each opened without following a link."""

    base: Path
    parts: tuple[str, ...]
    dest: str
    size: int

    @property
    def source(self) -> Path:
        return self.base.joinpath(*self.parts)


@dataclass
class UploadPlan:
    """The files to send, and what a folder held that is not sent (links, FIFOs, ...)."""

    files: list[Upload] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Upload]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def plan_uploads(specs: Iterable[Any], max_bytes: int = MAX_UPLOAD_BYTES) -> UploadPlan:
    """The files to send for `specs` ("path", "path:dest", or (path, dest)), folders walked.

    Raises FileNotFoundError for a missing path and ValueError for a link named as the upload,
    a bad destination or past `max_bytes` altogether: before anything is sent."""
    plan = UploadPlan()
    for spec in specs:
        source, dest = _split(spec)
        try:
            info = source.lstat()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"cannot upload {str(source)!r} into the sandbox: there is no such file or folder"
            ) from None
        if stat.S_ISLNK(info.st_mode):
            raise ValueError(
                f"cannot upload {str(source)!r}: it is a symbolic link (to "
                f"{os.readlink(source)!r}), and links are not followed; name the file itself"
            )
        if stat.S_ISDIR(info.st_mode):
            _walk(source.parent, (source.name,), dest, plan)
        elif stat.S_ISREG(info.st_mode):
            plan.files.append(Upload(source.parent, (source.name,), dest, info.st_size))
        else:
            raise ValueError(f"cannot upload {str(source)!r}: it is not a regular file or folder")
    total = sum(u.size for u in plan.files)
    if total > max_bytes:
        raise ValueError(
            f"the files to upload take {total:,} bytes, more than the "
            f"{max_bytes:,} allowed (max_upload_bytes)"
        )
    return plan


def _walk(base: Path, parts: tuple[str, ...], dest: str, plan: UploadPlan) -> None:
    """Add the regular files under base/parts to `plan`, in path order, following no link.
    (A folder swapped for a link during the walk may be listed; open_upload refuses it.)"""
    files: list[Upload] = []
    stack = [(parts, dest)]
    while stack:  # a loop, not recursion: a folder may nest thousands deep
        parts, dest = stack.pop()
        try:
            with os.scandir(base.joinpath(*parts)) as entries:
                found = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            plan.skipped.append(f"{dest} (a folder the host could not read: {exc.strerror})")
            continue
        folders = []
        for entry in found:
            inner, target = (*parts, entry.name), f"{dest}/{entry.name}"
            if entry.is_symlink():
                plan.skipped.append(f"{target} (a symbolic link: links are not followed)")
            elif entry.is_dir(follow_symlinks=False):
                folders.append((inner, target))
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                files.append(Upload(base, inner, target, size))
            else:
                plan.skipped.append(f"{target} (not a regular file)")
        stack.extend(reversed(folders))
    plan.files += sorted(files, key=lambda upload: upload.parts)


def _split(spec: Any) -> tuple[Path, str]:
    if isinstance(spec, tuple):
        source, dest = Path(spec[0]), str(spec[1])
    else:
        text = os.fspath(spec)
        # "data.csv:in/data.csv"; a colon in the source itself needs the tuple form.
        source_text, _, dest = text.partition(":") if ":" in text else (text, "", "")
        source = Path(source_text)
    # Absolute, but the last part not resolved: a link named as the upload must be seen as one.
    source = Path(os.path.abspath(source.expanduser()))
    return source, safe_relative(dest or source.name, "upload destination")


def safe_relative(name: str, what: str) -> str:
    """`name` as a clean relative POSIX path that stays inside its folder; ValueError if not."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [part for part in path.parts if part not in ("", ".")]
    if path.is_absolute() or not parts or ".." in parts or "\0" in name:
        raise ValueError(f"{what} {name!r} must be a relative path inside the work dir")
    return "/".join(parts)


def open_upload(upload: Upload) -> BinaryIO:
    """The upload's file, opened from its base one part at a time without following a link;
    OSError if one was swapped in (ELOOP/ENOTDIR) or it is no longer a regular file."""
    fd = os.open(upload.base, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in upload.parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        # O_NONBLOCK: a FIFO swapped in must not hang the host.
        flags = os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW
        inner = os.open(upload.parts[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(inner).st_mode):
        os.close(inner)
        raise OSError(errno.EINVAL, "not a regular file")
    return os.fdopen(inner, "rb")


def put_frames(uploads: Iterable[Upload], skipped: list[str] | None = None) -> Iterator[bytes]:
    """The `put` frames that carry `uploads`, a chunk at a time (never a whole file in memory),
    each at most the size planned (the caps were checked on it). A file that can no longer be
    opened safely is left out and named in `skipped`."""
    for upload in uploads:
        try:
            f = open_upload(upload)
        except OSError as exc:
            why = "a symbolic link" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else exc.strerror
            if skipped is not None:
                skipped.append(f"{upload.dest} ({why}: not sent)")
            continue
        with f:
            left = upload.size
            chunk = f.read(min(P.CHUNK, left))
            left -= len(chunk)
            while True:
                following = f.read(min(P.CHUNK, left)) if chunk and left else b""
                left -= len(following)
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

    A file the host cannot write (a name too long for its file system, a folder in the way,
    an `outputs_dir` that is not a folder, a full disk) is left, and named with the reason:
    it never ends the run. Used from the engine's I/O thread; `finish` from the run's thread
    once the run is over."""

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
        try:
            self._file.write(chunk)
        except OSError as exc:
            return self._drop(_write_error(exc), more)
        self._hash.update(chunk)
        return None if more else self._end()

    def _begin(self, name: str) -> None:
        try:
            clean = safe_relative(name, "artifact name")
            os.fsencode(clean)  # a lone surrogate names no host file
        except ValueError:  # UnicodeEncodeError too
            self.left.append(f"{name!r:.80} (not a usable name)")
            return
        if len(self.artifacts) >= self.max_files:
            self.left.append(f"{clean} (over the {self.max_files} files a run may bring back)")
            return
        try:
            path = self._free_path(self.directory / clean)
            path.parent.mkdir(parents=True, exist_ok=True)
            # "x": a file of the same name made meanwhile is not overwritten.
            self._file = open(path, "xb")  # noqa: SIM115
        except OSError as exc:
            self.left.append(f"{clean} ({_write_error(exc)})")
            return
        self._name, self._path = clean, path
        self._hash, self._size = _sha256(), 0

    @staticmethod
    def _free_path(path: Path) -> Path:
        """`path`, or `name-2.ext`, `name-3.ext`...: the same name from save() and outputs/
        keeps both."""
        stem, n = path, 2
        while os.path.lexists(path):
            path = stem.with_name(f"{stem.stem}-{n}{stem.suffix}")
            n += 1
        return path

    def _end(self) -> Artifact | None:
        assert self._file is not None and self._path is not None
        try:
            self._file.close()  # flushes: a full disk may say so only now
        except OSError as exc:
            return self._drop(_write_error(exc), False)
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
            file, self._file = self._file, None
            try:
                file.close()
            except OSError:
                pass  # its data is being thrown away
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


_WRITE_ERRORS = {
    errno.ENAMETOOLONG: "its name is too long for the host's file system",
    errno.EEXIST: "a file on the host is in the way of its folder",
    errno.ENOTDIR: "a file on the host is in the way of its folder",
}


def _write_error(exc: OSError) -> str:
    """Why the host could not write a file, for `artifacts_left`."""
    why = _WRITE_ERRORS.get(exc.errno or 0) or exc.strerror or type(exc).__name__
    return f"the host could not write it: {why}"


def _sha256() -> Any:
    """A new sha256 (hashlib is imported by the first run that brings a file back: with
    OpenSSL's library it costs a python 4 MiB)."""
    import hashlib

    return hashlib.sha256()
