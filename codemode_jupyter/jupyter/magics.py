"""`%%codemode` and `%codemode ...`: the magic, which runs a cell's program in the sandbox.

The cell body is handed to the engine untouched (IPython expands `{var}` in the options line
only). Sync tools run on this thread, the kernel's main thread, because that is the thread
that calls `run`: print, display and breakpoint() inside a tool work as in any cell. Its
helpers: the parsers and help (commands/usage.py), the sessions (sessions.py), the commands
(commands/, one module each, given this magic as their context), the debugger hooks
(debugging.py) and the views (views/).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets.config import Configurable

from codemode_jupyter.backends import BACKENDS
from codemode_jupyter.jupyter.commands import usage
from codemode_jupyter.jupyter.commands.dispatch import COMMANDS, run_command
from codemode_jupyter.jupyter.commands.usage import (
    CommandParser,
    argument,
    default_of,
    magic_arguments,
)
from codemode_jupyter.jupyter.config import CodeMode as Settings
from codemode_jupyter.jupyter.debugging import breakpoints_stop_in_tools
from codemode_jupyter.jupyter.discovery import Discovery, ToolCache, UnknownToolError, discover
from codemode_jupyter.jupyter.errors import CodeModeError, CodeModeInterrupted
from codemode_jupyter.jupyter.sessions import SessionPool
from codemode_jupyter.jupyter.views.display_out import CellDisplays
from codemode_jupyter.jupyter.views.live import QuietView, RichView, TextView, View
from codemode_jupyter.jupyter.views.transcript import merged_payload, run_bundle
from codemode_jupyter.model.result import Preview, RunResult
from codemode_jupyter.model.timeline import timeline_from_result

#: Runs kept for the Tools panel (`{"op": "runs"}`), newest last.
MAX_RUNS = 20

__all__ = ["CodeModeMagics", "ValueRepr", "cell_parser", "cell_value", "help_text"]


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
        self.pool = SessionPool(self.settings)
        self.parser = cell_parser()
        self.tool_cache = ToolCache()
        self.last_result: RunResult | None = None
        self.runs: deque[RunRecord] = deque(maxlen=MAX_RUNS)
        #: Called with (code, result) after every run (the tools comm pushes `runs`).
        self.run_listeners: list[Callable[[str, RunResult], None]] = []

    @magic_arguments("%%codemode")
    @argument(
        "--backend",
        metavar="NAME",
        help=f"where to run: {' or '.join(BACKENDS)} "
        f"(default: CodeMode.backend, {default_of('backend')})",
    )
    @argument(
        "--timeout",
        type=float,
        metavar="S",
        help=f"seconds the program may run (default: CodeMode.timeout, {default_of('timeout')})",
    )
    @argument(
        "--max-tool-calls",
        type=int,
        metavar="N",
        help="tool calls the program may make "
        f"(default: CodeMode.max_tool_calls, {default_of('max_tool_calls')})",
    )
    @argument(
        "--tools",
        metavar="A,B",
        help="only these tools, comma-separated; names of imported functions opt them in "
        "(default: every function defined in the notebook)",
    )
    @argument(
        "--fresh",
        action="store_true",
        help="run in an empty namespace (default: variables of earlier cells are kept)",
    )
    @argument(
        "--out",
        metavar="NAME",
        help="store the RunResult in this notebook variable (default: not stored)",
    )
    @argument(
        "--preview",
        type=int,
        nargs="+",
        action="extend",
        metavar="PORT",
        default=[],
        help="show a link to a server the program runs on PORT; needs --network with the "
        "local backend (default: none)",
    )
    @argument(
        "--network",
        action="store_true",
        help="give the sandbox network access (default: CodeMode.network, off)",
    )
    @argument(
        "--quiet",
        action="store_true",
        help="no view and no transcript, only the output and the value (default: off)",
    )
    @argument(
        "--session",
        metavar="NAME",
        help="run in the named session, with its own variables and sandbox; the agents served "
        "by %%codemode serve use 'agent' or their own (%%codemode status lists them) "
        "(default: the notebook's session)",
    )
    @argument(
        "--step",
        action="store_true",
        help="ask at a prompt before each tool call: a (approve), r REASON (reject), or = JSON "
        "(return that value instead; the tool does not run) (default: off)",
    )
    @argument(
        "--upload",
        metavar="PATH[:DEST]",
        action="append",
        default=[],
        help="copy a host file or folder into the sandbox's work dir first; repeatable "
        "(default: none)",
    )
    @argument(
        "--map",
        metavar="NAME",
        help="run the cell once per item of the iterable NAME, on a pool of sandboxes "
        "(default: once)",
    )
    @argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="with --map: sandboxes at once (default: 4)",
    )
    @argument(
        "--as",
        dest="as_var",
        default="item",
        metavar="VAR",
        help="with --map: the variable each item is bound to (default: item)",
    )
    @line_cell_magic
    def codemode(self, line: str, cell: str | None = None) -> Any:
        """Run the cell's program in the sandbox; notebook functions are its tools."""
        if cell is None:
            run_command(self, line)
            return None
        return self.run_cell(line, cell)

    # `%%codemode?` and `%codemode?` show this: every option with its default, every command.
    codemode.__doc__ = usage.help_text(codemode.parser, COMMANDS)

    def run_cell(self, line: str, code: str) -> Any:
        """Run `code` with the options in `line`; the program's value is the cell's result."""
        args = self.parser.parse_line(line)
        found = self._discover(args.tools)
        if args.map:
            return self._run_map(args, code, found)
        prompt = None
        if args.step:
            from codemode_jupyter.jupyter.step_prompt import StepPrompt

            prompt = StepPrompt()
        view = self._make_view(args.quiet, code, prompt)
        view.start()
        session = earlier = None
        announced: list[Preview] = []
        # The rich view shows displays in its card: their own outputs are marked as such.
        displays = CellDisplays(self.shell, marked=isinstance(view, RichView))
        try:
            if args.session:
                session = self.pool.named(args.session)
            else:
                session = self.pool.get(backend=args.backend, network=args.network or None)
            earlier = session.last_result
            tools = found.tool_list()
            if prompt is not None:
                tools = _stepped(tools, session, prompt)

            def on_event(event: Any) -> None:
                if prompt is not None:
                    prompt.on_event(event)  # before the view: a call is known as it asks
                view.on_event(event)
                displays.on_event(event)

            with (
                _isolation_warnings(view),
                breakpoints_stop_in_tools(session),
                _tool_prints_in(view),
            ):
                announced = [session.preview(port, view.on_event) for port in args.preview]
                if args.preview and session.status().get("network") == "off":
                    view.warn(preview_warning(args.preview))
                result = session.run(
                    # The blank first line stands for the `%%codemode` line, so tracebacks
                    # give the line numbers the cell shows in the editor.
                    "\n" + code,
                    timeout=args.timeout,
                    max_tool_calls=args.max_tool_calls,
                    on_event=on_event,
                    tools=tools,
                    fresh=args.fresh,
                    files=args.upload,
                )
        except KeyboardInterrupt:
            result = _run_of_this_cell(session, earlier)
            self._finish(code, result, args, view, announced)
            raise CodeModeInterrupted(result) from None
        except BaseException:
            view.finish(None)
            raise
        self._finish(code, result, args, view, announced)
        if not result.ok:
            raise CodeModeError(result)
        return cell_value(result)

    def _run_map(self, args: Any, code: str, found: Discovery) -> Any:
        """`--map NAME`: the cell once per item, on a pool of sandboxes, with one progress view."""
        from codemode_jupyter.jupyter.views.map_cell import pool_options, run_map_cell
        from codemode_jupyter.pool.scheduler import Pool

        options = pool_options(self.settings, backend=args.backend, network=args.network)
        tools = found.tool_list()
        count = self.shell.execution_count - 1
        finished: list[RunResult] = []

        def on_done(done: Any) -> None:  # each task's run is listed in the Tools panel
            if done.result is not None:
                entries = timeline_from_result(done.result)
                self.runs.append(RunRecord(code, done.result, entries, count, source="map"))
                finished.append(done.result)

        try:
            pool = lambda size: Pool(tools=tools, size=size, **options)  # noqa: E731
            return run_map_cell(self.shell, pool, args, code, on_done)
        finally:
            if finished:
                self._tell_listeners(code, finished[-1])

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

    def _make_view(self, quiet: bool, code: str, prompt: Any = None) -> View:
        """The cell's view; a stepped cell's rich view shows its calls' approvals."""
        if quiet:
            return QuietView(self.settings.max_output)
        mode = self.settings.display
        if mode == "auto":
            mode = "rich" if _in_kernel(self.shell) else "text"
        if mode in ("rich", "widget"):
            options = {
                "output_cap": self.settings.max_output,
                "live_output_chars": self.settings.view_output_chars,
                "rate": self.settings.view_updates_per_second,
            }
            if prompt is not None:
                from codemode_jupyter.jupyter.step_prompt import SteppedView

                return SteppedView(code, prompt.marks, **options)
            return RichView(code, **options)
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
        self.runs.append(RunRecord(code, result, entries, self.shell.execution_count - 1))
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
        self._tell_listeners(code, result)

    def record_agent_run(
        self,
        code: str,
        result: RunResult,
        execution_count: int | None,
        entries: list[dict[str, Any]] | None = None,
    ) -> None:
        """An agent's run (`%codemode serve`): listed with the cells' runs, marked as an
        agent's; `execution_count` is the serving cell's, `entries` its timeline (rebuilt
        from the result, calls before output, when not given)."""
        if entries is None:
            entries = timeline_from_result(result)
        self.runs.append(RunRecord(code, result, entries, execution_count, source="agent"))
        self._tell_listeners(code, result)

    def _tell_listeners(self, code: str, result: RunResult) -> None:
        for listener in list(self.run_listeners):
            try:
                listener(code, result)
            except Exception as exc:  # a broken listener must not fail the cell
                print(f"codemode: run listener failed: {exc}", file=sys.stderr)

    # --- sessions and tools ------------------------------------------------------------

    def current_session(self) -> Any:
        """The session the next plain `%%codemode` cell would use (created if needed)."""
        return self.pool.get()

    def close(self) -> None:
        """Close every session (kernel shutdown, %unload_ext). Idempotent."""
        self.pool.close()

    def tools(self) -> Discovery:
        """The tools a plain `%%codemode` cell would get now."""
        return self._discover(None)

    def help_text(self, *, examples: bool = False) -> str:
        """`%codemode help`: the magic's options, the commands, serve's options."""
        return help_text(examples=examples)


def cell_parser() -> CommandParser:
    """The parser of `%%codemode [options]` (declared on the magic)."""
    return CodeModeMagics.codemode.parser  # type: ignore[attr-defined]


def help_text(*, examples: bool = False) -> str:
    """What `%%codemode?` shows; `examples` adds the examples of `%codemode help`."""
    return usage.help_text(cell_parser(), COMMANDS, examples=examples)


class RunRecord:
    """A finished run as the Tools panel lists it."""

    def __init__(
        self,
        code: str,
        result: RunResult,
        entries: list[dict[str, Any]],
        execution_count: int | None,
        source: str = "cell",
    ) -> None:
        self.source = source  # "cell", or "agent" for a run from %codemode serve
        self.code = code
        self.result = result
        self.entries = entries
        self.execution_count = execution_count
        self.finished_at = time.time()

    def payload(self) -> dict[str, Any]:
        return merged_payload(self.code, self.result, self.entries)


@contextmanager
def _tool_prints_in(view: View) -> Iterator[None]:
    """What sync tools print on the kernel's thread goes to the rich view, under their call
    and in time order (not above the card as a stream of the cell)."""
    if not isinstance(view, RichView):
        yield
        return
    from codemode_jupyter.jupyter.views.tool_output import ToolOutput, capture

    routed = ToolOutput()
    routed.install()
    try:
        with capture(view.tool_output):
            yield
    finally:
        routed.uninstall()


def _run_of_this_cell(session: Any, earlier: RunResult | None) -> RunResult | None:
    """The interrupted cell's run, if it got as far as one (not the run of an earlier cell)."""
    result = session.last_result if session is not None else None
    return None if result is earlier else result


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


class RichValue(ValueRepr):
    """Out[n] for a value with a rich representation made in the sandbox (a DataFrame's
    table): the front end renders its MIME bundle; `.value` is what crossed as JSON."""

    def __init__(self, text: str, value: Any, bundle: dict[str, Any]) -> None:
        super().__init__(text, value)
        self.bundle = bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.bundle


def _stepped(tools: list[Any], session: Any, prompt: Any) -> list[Any]:
    """`--step`: every call waits for a decision, asked at the cell's stdin prompt (a running
    cell takes no widget clicks, step_prompt.py); the answer may be a value returned instead."""
    from codemode_jupyter.agents.approval import ApprovalGate

    gate = ApprovalGate(prompt, "all", timeout=None, allow_return=True, source="cell")
    return gate.guard(tools, session)


def cell_value(result: RunResult) -> Any:
    """What Out[n] shows: the program's value, displayed as the program would repr it."""
    value, text = result.value, result.value_repr
    bundle = getattr(result, "value_bundle", None)
    if bundle and text is not None:
        return RichValue(text, value, {"text/plain": text, **bundle})
    if text is None or text == "None":
        return value
    if value is not None and repr(value) == text:
        return value
    # JSON turns tuples into lists; give a tuple back when that restores the program's value.
    if isinstance(value, list) and repr(tuple(value)) == text:
        return tuple(value)
    return ValueRepr(text, value)


def _in_kernel(shell: Any) -> bool:
    return getattr(shell, "kernel", None) is not None


def _write_streams(result: RunResult) -> None:
    if result.stdout:
        sys.stdout.write(result.stdout)
    if result.stderr:
        sys.stderr.write(result.stderr)


@contextmanager
def _isolation_warnings(view: View) -> Iterator[None]:
    """Show the backend's isolation warning in the view, where it cannot upset nbval.

    Every other warning is re-issued as it would have been.
    """
    try:
        from codemode_jupyter.backends import IsolationWarning
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
