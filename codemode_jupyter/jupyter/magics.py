"""`%%codemode` and `%codemode ...`: run a cell's program in the session's sandbox.

The cell body is handed to the engine untouched (IPython expands `{var}` in the options line
only). Sync tools run on this thread, the kernel's main thread, because that is the thread
that calls `run`: print, display and breakpoint() inside a tool work as in any cell.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets.config import Configurable

from ..backends import require_backend
from ..result import Preview, RunResult
from .config import CodeMode as Settings
from .discovery import Discovery, ToolCache, UnknownToolError, discover
from .errors import CodeModeError, CodeModeInterrupted
from .text import clip, format_duration, plural
from .transcript import merged_payload, run_bundle
from .view import QuietView, RichView, TextView, View

COMMANDS = ("tools", "prompt", "status", "reset", "last", "debug", "attach", "cleanup")
#: backend_options that say which Daytona account to use (what `cleanup` needs of them).
DAYTONA_ACCOUNT = ("api_key", "api_url", "target")
#: Runs kept for the Tools panel (`{"op": "runs"}`), newest last.
MAX_RUNS = 20


class ValueRepr:
    """Out[n] for a value whose JSON form would misrepresent it: shows the program's repr.

    `.value` holds what crossed the boundary (JSON data, or None if the value could not).
    """

    def __init__(self, text: str, value: Any = None) -> None:
        self.text = text
        self.value = value

    def __repr__(self) -> str:
        return self.text


@magics_class
class CodeModeMagics(Magics, Configurable):
    """The magics; settings live in the `CodeMode` configurable (`self.settings`)."""

    def __init__(self, shell: Any, settings: Settings | None = None) -> None:
        super().__init__(shell=shell)
        self.settings = settings or Settings(parent=shell)
        self.sessions: dict[tuple[Any, ...], Any] = {}
        self.tool_cache = ToolCache()
        self.last_result: RunResult | None = None
        self.runs: deque[RunRecord] = deque(maxlen=MAX_RUNS)
        #: Called with (code, result) after every run (the tools comm pushes `runs`).
        self.run_listeners: list[Callable[[str, RunResult], None]] = []
        self._last_session_key: tuple[Any, ...] | None = None

    # --- the cell magic ----------------------------------------------------------------

    @magic_arguments()
    @argument("--backend", metavar="NAME", help="Run in this backend ('local', 'daytona').")
    @argument("--timeout", type=float, metavar="S", help="Seconds the program may run.")
    @argument("--max-tool-calls", type=int, metavar="N", help="Tool calls the program may make.")
    @argument("--tools", metavar="A,B", help="Only these tools (comma-separated names).")
    @argument("--fresh", action="store_true", help="Run in a fresh namespace.")
    @argument("--out", metavar="NAME", help="Store the RunResult in this notebook variable.")
    @argument(
        "--preview", type=int, nargs="+", action="extend", metavar="PORT", default=[],
        help="Show a preview link for these ports.",
    )
    @argument("--network", action="store_true", help="Give the sandbox network access.")
    @argument("--quiet", action="store_true", help="No live view and no transcript.")
    def _run_options(self, line: str) -> None:
        """%%codemode [options]: run the cell in the sandbox; notebook functions are tools."""

    @line_cell_magic
    def codemode(self, line: str, cell: str | None = None) -> Any:
        """Run a Code Mode program, or manage the session.

        Cell: `%%codemode [--backend NAME] [--timeout S] [--max-tool-calls N] [--tools a,b]
        [--fresh] [--out NAME] [--preview PORT ...] [--network] [--quiet]`.
        Line: `%codemode tools|prompt|status|reset|last|debug`, and for Daytona
        `%codemode attach SANDBOX_ID` and `%codemode cleanup [--dry-run] [--all-hosts]`.
        """
        if cell is None:
            return self._command(line)
        return self.run_cell(line, cell)

    def run_cell(self, line: str, code: str) -> Any:
        """Run `code` with the options in `line`; the program's value is the cell's result."""
        args = self._parse(line)
        found = self._discover(args.tools)
        view = self._make_view(args.quiet, code)
        view.start()
        session = None
        announced: list[Preview] = []
        try:
            session = self._session(backend=args.backend, network=args.network or None)
            with _isolation_warnings(view), _breakpoints_stop_in_tools(session):
                announced = [session.preview(port, view.on_event) for port in args.preview]
                if args.preview and session.status().get("network") == "off":
                    view.warn(preview_warning(args.preview))
                result = session.run(
                    # The blank first line stands for the `%%codemode` line, so tracebacks
                    # give the line numbers the cell shows in the editor.
                    "\n" + code,
                    timeout=args.timeout,
                    max_tool_calls=args.max_tool_calls,
                    on_event=view.on_event,
                    tools=found.tool_list(),
                    fresh=args.fresh,
                )
        except KeyboardInterrupt:
            result = session.last_result if session is not None else None
            self._finish(code, result, args, view, announced)
            raise CodeModeInterrupted(result) from None
        except BaseException:
            view.finish(None)
            raise
        self._finish(code, result, args, view, announced)
        if not result.ok:
            raise CodeModeError(result)
        return cell_value(result)

    def _parse(self, line: str) -> Any:
        try:
            return parse_argstring(self._run_options, line)
        except UsageError:
            raise
        except SystemExit as exc:  # argparse exits on bad input; a cell must not
            raise UsageError(f"%%codemode: bad options: {line!r}") from exc

    def _discover(self, tools_option: str | None) -> Discovery:
        only = None
        if tools_option is not None:
            only = [name.strip() for name in tools_option.split(",") if name.strip()]
        try:
            return discover(
                self.shell.user_ns,
                hidden=self.shell.user_ns_hidden,
                only=only,
                cache=self.tool_cache,
            )
        except UnknownToolError as exc:
            raise UsageError(f"%%codemode --tools: {exc}") from None

    def _make_view(self, quiet: bool, code: str) -> View:
        if quiet:
            return QuietView(self.settings.max_output)
        mode = self.settings.display
        if mode == "auto":
            mode = "rich" if _in_kernel(self.shell) else "text"
        if mode in ("rich", "widget"):
            return RichView(
                code,
                output_cap=self.settings.max_output,
                live_output_chars=self.settings.view_output_chars,
                rate=self.settings.view_updates_per_second,
            )
        return TextView(in_cell=_in_kernel(self.shell))

    def _finish(
        self,
        code: str,
        result: RunResult | None,
        args: Any,
        view: View,
        announced: list[Preview],
    ) -> None:
        """End the view and keep the run (None: interrupted before a result existed)."""
        if result is not None:
            _record_previews(result, announced)
        view.finish(result)
        if result is None:
            return
        entries = view.entries()
        self.last_result = result
        # IPython counts a cell before running it: this cell is In[execution_count - 1].
        record = RunRecord(code, result, entries, self.shell.execution_count - 1)
        self.runs.append(record)
        if args.out:
            self.shell.user_ns[args.out] = result
        if args.quiet:
            _write_streams(result)
        elif _in_kernel(self.shell) or isinstance(view, RichView):
            # In a terminal the text view has already shown everything; in a kernel cell it
            # has streamed the program's output, which the transcript then does not repeat.
            # The value is left out when Out[n] shows it.
            streamed = isinstance(view, TextView)
            shown_as_out = result.ok and cell_value(result) is not None
            data, metadata = run_bundle(
                code,
                result,
                entries,
                streams=not streamed,
                value=not shown_as_out,
                warnings=view.warnings,
            )
            view.publish(data, metadata)
        for listener in list(self.run_listeners):
            try:
                listener(code, result)
            except Exception as exc:  # a broken listener must not fail the cell
                print(f"codemode: run listener failed: {exc}", file=sys.stderr)

    # --- sessions ----------------------------------------------------------------------

    def _session(self, backend: str | None = None, network: bool | None = None) -> Any:
        overrides: dict[str, Any] = {}
        if backend:
            overrides["backend"] = backend
        if network:
            overrides["network"] = True
        key = self.settings.session_key(**overrides)
        session = self.sessions.get(key)
        if session is None:
            session = self._open_session(overrides)
            self.sessions[key] = session
        else:
            self._apply_budgets(session)
        self._last_session_key = key
        return session

    def _open_session(self, overrides: dict[str, Any]) -> Any:
        from ..engine import CodeMode as Engine

        s = self.settings
        options = {
            "backend": s.backend,
            "protocol": s.protocol,
            "timeout": s.timeout,
            "max_tool_calls": s.max_tool_calls,
            "max_output": s.max_output,
            "network": s.network,
            "memory_mb": s.memory_mb,
        }
        if overrides.get("backend", s.backend) == "daytona":
            options.update(s.daytona_options())
        options.update({**s.backend_options, **overrides})
        return Engine(**options)

    def _apply_budgets(self, session: Any) -> None:
        # Budgets may change between cells (%config) without starting a new sandbox.
        for name in ("timeout", "max_tool_calls", "max_output"):
            if hasattr(session, name):
                setattr(session, name, getattr(self.settings, name))

    def current_session(self) -> Any:
        """The session the next plain `%%codemode` cell would use (created if needed)."""
        return self._session()

    def close(self) -> None:
        """Close every session (kernel shutdown, %unload_ext). Idempotent."""
        sessions, self.sessions = list(self.sessions.values()), {}
        for session in sessions:
            try:
                session.close()
            except Exception as exc:
                print(f"codemode: closing a session failed: {exc}", file=sys.stderr)

    def tools(self) -> Discovery:
        """The tools a plain `%%codemode` cell would get now."""
        return self._discover(None)

    # --- %codemode <command> -----------------------------------------------------------

    def _command(self, line: str) -> Any:
        words = line.split()
        name = words[0] if words else "status"
        if name not in COMMANDS:
            raise UsageError(
                f"%codemode: unknown command {name!r}; one of: {', '.join(COMMANDS)} "
                "(or %%codemode as a cell magic to run a program)"
            )
        return getattr(self, f"_cmd_{name}")(words[1:])

    def _cmd_tools(self, args: list[str]) -> None:
        found = self.tools()
        count = len(found.tools)
        print(f"{plural(count, 'tool')}:" if count else "no tools defined")
        for tool in found.tools.values():
            prefix = "async " if tool.is_async else ""
            print(f"  {prefix}{tool.name}{tool.signature}")
            if tool.description:
                print(f"      {tool.description.splitlines()[0]}")
        for name, why in found.skipped.items():
            print(f"  (not a tool: {name}: {why})")

    def _cmd_prompt(self, args: list[str]) -> None:
        session = self.current_session()
        session.set_tools(self.tools().tool_list())
        print(session.system_prompt())

    def _cmd_status(self, args: list[str]) -> None:
        session = self.current_session()
        status = dict(session.status())
        status.setdefault("display", self.settings.display)
        status["tools"] = ", ".join(self.tools().tools) or "none"
        last = self.last_result
        status["last_run"] = (
            f"{last.status} ({format_duration(last.duration)})" if last else "none yet"
        )
        if last is not None and last.state_lost:
            status["state"] = "lost in the last run (the runtime was replaced)"
        elif status.get("runtime_alive"):
            status["state"] = "variables kept between cells (clear: %codemode reset, --fresh)"
        else:
            status["state"] = "empty (the next run starts a fresh runtime)"
        width = max(len(str(key)) for key in status)
        for key, value in status.items():
            print(f"{str(key).ljust(width)}  {value}")

    def _cmd_reset(self, args: list[str]) -> None:
        self.current_session().reset()
        print("codemode: the session's namespace is reset")

    def _cmd_last(self, args: list[str]) -> None:
        result = self.last_result
        if result is None:
            print("codemode: no run yet")
            return
        print(describe_run(result))

    def _cmd_debug(self, args: list[str]) -> None:
        result = self.last_result
        calls = [c for c in (result.tool_calls if result else []) if c.exception is not None]
        if not calls:
            print("codemode: the last run has no tool that raised")
            return
        call = calls[-1]
        exc = call.exception
        assert exc is not None
        print(f"codemode: post-mortem of {call.name} (call #{call.id}): {exc!r}")
        debugger = self.shell.debugger_cls()
        debugger.reset()
        debugger.interaction(None, exc.__traceback__)

    def _cmd_attach(self, args: list[str]) -> None:
        if len(args) != 1:
            raise UsageError("usage: %codemode attach SANDBOX_ID")
        require_backend("daytona")  # no SDK: say which extra to install, before switching
        self.settings.backend = "daytona"
        self.settings.backend_options = {**self.settings.backend_options, "sandbox": args[0]}
        print(
            f"codemode: %%codemode cells now run in Daytona sandbox {args[0]} "
            "(attached: this kernel never deletes it)"
        )

    def _cmd_cleanup(self, args: list[str]) -> None:
        unknown = set(args) - {"--dry-run", "--all-hosts"}
        if unknown:
            raise UsageError("usage: %codemode cleanup [--dry-run] [--all-hosts]")
        require_backend("daytona")  # no SDK: say which extra to install, not "no API key"
        from ..backends.daytona import cleanup_orphans

        configured = {**self.settings.daytona_options(), **self.settings.backend_options}
        account = {k: v for k, v in configured.items() if k in DAYTONA_ACCOUNT}
        found = cleanup_orphans(
            dry_run="--dry-run" in args, all_hosts="--all-hosts" in args, **account
        )
        if not found:
            print("codemode: no sandboxes made by codemode-jupyter")
        for orphan in found:
            print(f"{orphan.id}  {orphan.state:<10}  {orphan.reason}")


class RunRecord:
    """A finished run as the Tools panel lists it."""

    def __init__(
        self, code: str, result: RunResult, entries: list[dict[str, Any]], execution_count: int
    ) -> None:
        self.code = code
        self.result = result
        self.entries = entries
        self.execution_count = execution_count
        self.finished_at = time.time()

    def payload(self) -> dict[str, Any]:
        return merged_payload(self.code, self.result, self.entries)


def _record_previews(result: RunResult, announced: list[Preview]) -> None:
    """`--preview PORT` links belong to the run: the transcript and the saved card show them."""
    ports = {preview.port for preview in result.previews}
    result.previews[:0] = [p for p in announced if p.port not in ports]


def preview_warning(ports: list[int]) -> str:
    """What `--preview` without `--network` says: the jail's own network cannot be reached."""
    listed = ", ".join(str(port) for port in ports)
    return (
        f"--preview {listed}: the sandbox has no network, so a server it starts cannot be "
        "reached from the browser; run the cell with --network (the server must listen on "
        "127.0.0.1 or 0.0.0.0)"
    )


def cell_value(result: RunResult) -> Any:
    """What Out[n] shows: the program's value, displayed as the program would repr it."""
    value, text = result.value, result.value_repr
    if text is None or text == "None":
        return value
    if value is not None and repr(value) == text:
        return value
    # JSON turns tuples into lists; give a tuple back when that restores the program's value.
    if isinstance(value, list) and repr(tuple(value)) == text:
        return tuple(value)
    return ValueRepr(text, value)


def describe_run(result: RunResult) -> str:
    """`%codemode last`: every tool call with args, result or error, and timing."""
    lines = [
        f"last run: {result.status} in {format_duration(result.duration)}, "
        f"{plural(len(result.tool_calls), 'tool call')} in {plural(result.rounds, 'round')} "
        f"({result.backend}, isolation {result.isolation})"
    ]
    for call in result.tool_calls:
        head = f"  #{call.id} round {call.round}  {call.name}({_args(call.args)})"
        lines.append(f"{head}  [{format_duration(call.duration)}]")
        if call.error is not None:
            lines.append(f"      raised {call.error}")
            if call.error.traceback:
                lines.extend("      " + t for t in call.error.traceback.rstrip().split("\n"))
        else:
            lines.append(f"      -> {clip(repr(call.result), 500)}")
    if result.error is not None:
        lines.append(f"  program: {result.error}")
    return "\n".join(lines)


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={clip(repr(v), 200)}" for k, v in args.items())


def _in_kernel(shell: Any) -> bool:
    return getattr(shell, "kernel", None) is not None


def _write_streams(result: RunResult) -> None:
    if result.stdout:
        sys.stdout.write(result.stdout)
    if result.stderr:
        sys.stderr.write(result.stderr)


@contextmanager
def _breakpoints_stop_in_tools(session: Any) -> Iterator[None]:
    """Make `breakpoint()` inside a tool open IPython's debugger for the length of a run.

    ipykernel imports debugpy, whose breakpoint hook does nothing unless a visual debugger is
    attached (ipykernel issue #897); a tool's breakpoint() would be skipped silently. When a
    debugger client is attached, its hook is kept. Time spent in that call does not count
    against the run's timeout.
    """
    original = sys.breakpointhook

    def hook(*args: Any, **kwargs: Any) -> Any:
        session.note_debugger_in_tool()
        if os.environ.get("PYTHONBREAKPOINT") == "0" or _debugpy_attached():
            return original(*args, **kwargs)
        from IPython.core.debugger import set_trace

        return set_trace(sys._getframe(1))

    sys.breakpointhook = hook
    try:
        yield
    finally:
        sys.breakpointhook = original


def _debugpy_attached() -> bool:
    debugpy = sys.modules.get("debugpy")
    try:
        return bool(debugpy and debugpy.is_client_connected())
    except Exception:
        return False


@contextmanager
def _isolation_warnings(view: View) -> Iterator[None]:
    """Show the backend's isolation warning in the view, where it cannot upset nbval.

    Every other warning is re-issued as it would have been.
    """
    try:
        from ..backends.local import IsolationWarning
    except ImportError:  # pragma: no cover - the local backend is always there
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IsolationWarning)
        yield
    for item in caught:
        if issubclass(item.category, IsolationWarning):
            view.warn(str(item.message))
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
