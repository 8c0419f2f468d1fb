"""The contract between the engine and a backend: start a runtime, move its bytes, clean up.

A backend knows nothing of frames or tools. It starts the sandbox runtime
(`python3 -I -u <runtime dir>/codemode_runtime.py`) somewhere, and hands the engine a
Transport: bytes written go to the runtime's stdin, bytes read come from its stdout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from codemode_jupyter.backends.packages import InstallResult, PackageSession

from codemode_jupyter.errors import (  # noqa: F401 (imported from here by the backends)
    BackendConfigError,
    BackendOptionError,
    MessageOnly,
)
from codemode_jupyter.runtime import RUNTIME_FILES

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"


def runtime_sources() -> dict[str, bytes]:
    """The files the sandbox needs, by name: stdlib-only Python, uploaded or mounted as-is."""
    return {name: (RUNTIME_DIR / name).read_bytes() for name in RUNTIME_FILES}


class IsolationWarning(UserWarning):
    """The backend runs programs without isolation: they can see and touch the host."""


Options = TypeVar("Options", bound="BackendOptions")


@dataclass(frozen=True)
class Setting:
    """A backend option users may set in Jupyter, as `%config CodeMode.<backend>_<option>`."""

    help: str
    #: The setting's value when unset; its type is the setting's. An empty value ("" or {})
    #: leaves the option to the backend's own default.
    default: str | int | float | bool | dict = ""
    #: The least value a number setting takes (None: any).
    minimum: int | float | None = None


_session_label: str | None = None


def set_session_label(label: str | None) -> None:
    """Name this process's sessions to the backends (a front end's: the Jupyter kernel's id),
    for backends that label what they create outside (see `session_label`)."""
    global _session_label
    _session_label = label


def session_label() -> str | None:
    """What the front end named this process's sessions (`set_session_label`), if it did."""
    return _session_label


@dataclass(frozen=True)
class BackendOptions:
    """The options of one backend, checked when they are made: before anything starts.

    Each backend has a frozen dataclass of its own (LocalOptions, DaytonaOptions), its fields
    documented where they are declared.
    """

    #: The backend's name, as `create_backend` takes it.
    backend: ClassVar[str] = ""
    #: Which of CodeMode's own keyword arguments (network=, mounts=, memory_mb=, sandbox=) this
    #: backend takes; it has no use for the others, which are left out.
    shared: ClassVar[frozenset[str]] = frozenset()
    #: The options users may set as Jupyter settings, by option name (jupyter/config.py makes
    #: one `<backend>_<option>` setting of each).
    settings: ClassVar[Mapping[str, Setting]] = {}

    @classmethod
    def build(
        cls: type[Options], options: Mapping[str, Any], shared: Mapping[str, Any] | None = None
    ) -> Options:
        """The options from keyword arguments; BackendOptionError names any it does not have.

        `shared` holds CodeMode's own keyword arguments, of which those in `cls.shared` count.
        """
        names = [f.name for f in fields(cls)]
        unknown = [name for name in options if name not in names]
        if unknown:
            raise BackendOptionError(cls._unknown(unknown, names))
        taken = {key: value for key, value in (shared or {}).items() if key in cls.shared}
        return cls(**{**taken, **options})

    @classmethod
    def _unknown(cls, unknown: list[str], names: list[str]) -> str:
        import difflib  # only for this message

        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        which = ", ".join(repr(name) for name in unknown)
        return (
            f"the {cls.backend} backend has no option {which}{hint}; its options are: "
            + ", ".join(sorted(names))
        )

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments (values as they are, not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of(cls: type[Options], options: Options | None, kwargs: Mapping[str, Any]) -> Options:
        """A backend constructor's options: the object it was given, or its keyword arguments."""
        if options is None:
            return cls.build(kwargs)
        if kwargs:
            raise TypeError("give a backend either an options object or keyword arguments")
        if not isinstance(options, cls):
            raise TypeError(
                f"the {cls.backend} backend takes {cls.__name__}, not {type(options).__name__}"
            )
        return options


class Transport(ABC):
    """A byte stream to one live runtime process."""

    #: Hold tool results until every call of the round has finished, then send them in one
    #: write (remote backends, where each write is a request). Local pipes send at once.
    batch_results: bool = False

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes to the runtime's stdin. Thread-safe; one call is one batch."""

    #: The transport also reads without blocking (`ready`, `read_nowait`, `wake`,
    #: `close_reader`): then the thread that waits for a frame reads it itself, with no hand-off
    #: from the I/O thread (connection.py). Otherwise only the I/O thread reads, with `read`.
    shared_reads: bool = False

    @abstractmethod
    def read(self) -> bytes:
        """Block until the runtime's stdout has bytes; b"" once it has gone for good.

        Called only from the engine's I/O thread.
        """

    def separate(self) -> bool:
        """Move the runtime off the calling thread's CPU if they share one (the waits spin:
        on one CPU the two ends only take turns); True if it moved. Transports whose runtime
        is elsewhere have nothing to move."""
        return False

    def ready(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: no limit, 0: just look) for bytes to read (or
        EOF), or for `wake()`; True if `read_nowait` has something. Never consumes; any thread
        may wait (shared_reads transports only)."""
        raise NotImplementedError

    def read_nowait(self) -> bytes | None:
        """The bytes there are now, b"" once the runtime has gone, None if none yet. Called by
        one thread at a time (the connection's reader of the moment)."""
        raise NotImplementedError

    def wake(self) -> None:
        """End every `ready` wait going on now (or the next one, if none is)."""
        raise NotImplementedError

    def close_reader(self) -> None:  # noqa: B027 - only shared_reads transports hold anything
        """After the last read: release what reading holds (fds). Called once."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the runtime now (and everything it started). read() then returns b"" soon."""

    def alive(self) -> bool:
        """Whether the runtime still runs, as far as the host can tell without reading."""
        return True

    @abstractmethod
    def exit_info(self) -> str:
        """After EOF: how the runtime ended (exit code or signal) and the tail of its stderr."""


@dataclass
class OneShot:
    """What a one-shot execution (replay mode) printed, stdout and stderr merged."""

    output: str
    exit_code: int
    error: str = ""  # what stopped it, when the backend knows (e.g. the memory limit)


@dataclass
class BackendStatus:
    backend: str
    isolation: str
    details: dict[str, str] = field(default_factory=dict)


class Backend(ABC):
    """Where runtimes live. One Backend per CodeMode session.

    A backend made by name (`create_backend`) takes one positional argument, its options
    object (`options_type`), or the same options as keyword arguments.
    """

    name: str = ""
    #: The backend's name as people read it ("Daytona"), for messages.
    label: ClassVar[str] = ""
    options_type: ClassVar[type[BackendOptions]] = BackendOptions

    # --- capabilities: what the engine, the pool and the front ends ask of a backend, so that
    # none of them needs to know it by name.

    #: A runtime started ahead of need pays off (a local process starts in milliseconds and
    #: holds nothing remote); a session of a backend named without `spare=` keeps one if so.
    spare_helps: ClassVar[bool] = False
    #: Seconds a Pool waits between creations of its sandboxes unless told otherwise (a
    #: service's rate limit).
    create_interval: ClassVar[float] = 0.0
    #: It runs in a sandbox the user already has, named by `sandbox=` (`%codemode attach`).
    attaches: ClassVar[bool] = False
    #: It leaves sandboxes outside this process that `cleanup_orphans` finds and deletes.
    cleans_orphans: ClassVar[bool] = False

    @classmethod
    def labelled_options(cls, options: dict[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
        """The options with `labels` added to those the sandboxes it creates carry (a Pool's
        mark); a backend that labels nothing takes them as they are."""
        return options

    @classmethod
    def cleanup_orphans(
        cls, options: Mapping[str, Any], *, dry_run: bool = False, all_hosts: bool = False
    ) -> list[Any]:
        """Delete the sandboxes it made that no live session uses (`cleans_orphans` backends);
        `options`: the configured options, of which it takes those that say where to look.
        Each found one has `id`, `state` and `reason`."""
        return []

    def install_packages(self, session: PackageSession, specs: list[str]) -> InstallResult:
        """pip-install `specs` for the session's sandbox (`%codemode pip install`)."""
        from codemode_jupyter.backends.packages import InstallResult

        return InstallResult(False, f"the {self.name} backend cannot install packages", "")

    @abstractmethod
    def start_runtime(self, timeout: float | None = None) -> Transport:
        """Start a fresh runtime process and return its transport, within `timeout` seconds
        (the run's remaining time) when given; raise if that cannot be done."""

    @abstractmethod
    def run_oneshot(self, code: str, timeout: float) -> OneShot:
        """Run a self-contained Python program once (the replay fallback) and return its output."""

    @abstractmethod
    def preview_url(self, port: int) -> str:
        """A URL that reaches `port` inside the sandbox from the user's browser."""

    @abstractmethod
    def status(self) -> BackendStatus:
        """Backend name, isolation level and whatever else a user would want to see."""

    def sandbox_ok(self) -> bool:
        """After a runtime ended unexpectedly: whether the sandbox around it is fine, so a
        new runtime in it would do (False when the sandbox may be gone or broken)."""
        return True

    def close(self) -> None:  # noqa: B027 - most backends have nothing to release
        """Release the sandbox. Idempotent."""
