"""The Jupyter front's pure parts, without a kernel: transcript, discovery, view state, CLI."""

from __future__ import annotations

import io
import json

import pytest
from IPython.core.error import UsageError

from codemode_jupyter import tool
from codemode_jupyter.cli.main import render_output
from codemode_jupyter.jupyter.commands.dispatch import COMMANDS
from codemode_jupyter.jupyter.commands.last import describe_run
from codemode_jupyter.jupyter.config import CodeMode as Settings
from codemode_jupyter.jupyter.discovery import ToolCache, UnknownToolError, discover
from codemode_jupyter.jupyter.errors import CodeModeError
from codemode_jupyter.jupyter.magics import cell_parser, cell_value, help_text
from codemode_jupyter.jupyter.views.live import TextView, live_text
from codemode_jupyter.jupyter.views.transcript import (
    MIME_RUN,
    OWN_OUTPUT_FIELDS,
    merge_varying,
    run_bundle,
    split_timeline,
    transcript_text,
)
from codemode_jupyter.model.events import Output, ToolCallFinished, ToolCallStarted
from codemode_jupyter.model.format import clip, format_duration
from codemode_jupyter.model.result import Preview, RunError, RunResult, ToolCall
from codemode_jupyter.model.timeline import Timeline, timeline_from_result


def make_result(duration: float = 0.5, call_duration: float = 0.01, **overrides) -> RunResult:
    calls = [
        ToolCall(
            1, "get_weather", {"city": "Paris"}, 1, result={"temp_c": 18}, duration=call_duration
        ),
        ToolCall(
            2,
            "get_weather",
            {"city": "Nowhere"},
            2,
            error=RunError("KeyError", "'Nowhere'", f"host trace {duration}"),
            duration=call_duration,
        ),
    ]
    fields = dict(
        ok=True,
        status="ok",
        stdout="Paris 18\n",
        value=18,
        value_repr="18",
        tool_calls=calls,
        rounds=2,
        previews=[Preview(8000, f"https://8000-{duration}.example/?token=x")],
        duration=duration,
        backend="local",
        isolation="bubblewrap",
    )
    fields.update(overrides)
    return RunResult(**fields)


# --- transcript ------------------------------------------------------------------------------


def test_transcript_lists_output_calls_value_without_timings():
    # A result without events: its timeline has previews, then calls, then output.
    text = transcript_text(make_result())
    assert text.splitlines() == [
        "── codemode: ok, 2 tool calls in 2 rounds",
        "  preview: port 8000",
        "  get_weather(city='Paris') -> {'temp_c': 18}",
        "  get_weather(city='Nowhere') -> raised KeyError: 'Nowhere'",
        "Paris 18",
        "  value: 18",
    ]


def bundle(code: str, result: RunResult, **kwargs):
    return run_bundle(code, result, timeline_from_result(result), **kwargs)


def test_bundle_data_is_identical_across_runs_and_machines():
    first = bundle("x", make_result(duration=0.5, call_duration=0.01))
    second = bundle(
        "x", make_result(duration=9.0, call_duration=3.0, isolation="none", backend="daytona")
    )
    assert json.dumps(first[0], sort_keys=True) == json.dumps(second[0], sort_keys=True)
    assert first[1] != second[1]  # what varies lives in the metadata


def test_bundle_metadata_merges_back_into_the_full_result():
    result = make_result(
        status="error",
        ok=False,
        error=RunError("ValueError", "bad", "Traceback...\nValueError: bad"),
    )
    data, metadata = bundle("code", result)
    payload = data[MIME_RUN]
    assert payload["version"] == 2 and payload["code"] == "code"
    assert "duration" not in payload["result"] and "traceback" not in payload["result"]["error"]
    merged = merge_varying(payload["result"], metadata[MIME_RUN]["result"])
    expected = json.loads(json.dumps(result.to_dict()))
    for key in ("stdout", "stderr", "tool_calls"):  # the timeline carries these
        del expected[key]
    for key in OWN_OUTPUT_FIELDS:  # outputs of their own (display_data, Out[n]) show these
        del expected[key]
    assert merged == expected
    # The timeline's varying parts (durations, tracebacks) are keyed by the entry's index.
    entries = timeline_from_result(result)
    stable, varying = split_timeline(entries)
    assert stable == payload["timeline"]
    assert [e["kind"] for e in entries][:3] == ["preview", "call", "call"]  # previews lead
    assert varying["0"] == {"url": "https://8000-0.5.example/?token=x"}
    assert varying["2"]["error"]["traceback"] == "host trace 0.5"
    assert [{**e, **varying.get(str(i), {})} for i, e in enumerate(stable)] == entries


def test_transcript_reports_errors_dropped_output_and_lost_state():
    result = make_result(
        ok=False,
        status="crashed",
        stdout="",
        stdout_dropped=10,
        stderr="oops\n",
        tool_calls=[],
        value=None,
        value_repr=None,
        previews=[],
        state_lost=True,
        error=RunError("RuntimeCrashed", "killed by signal 9"),
    )
    assert transcript_text(result).splitlines() == [
        "── codemode: crashed, no tool calls",
        "── stderr:",
        "oops",
        "[10 more characters of stdout dropped]",
        "  RuntimeCrashed: killed by signal 9",
        "  (the runtime was replaced: variables from earlier cells are gone)",
    ]


def test_long_arguments_and_values_are_shortened():
    call = ToolCall(1, "f", {"text": "x" * 500}, 1, result=list(range(50)))
    result = make_result(tool_calls=[call], value=None, value_repr="y" * 1000, previews=[])
    lines = transcript_text(result).splitlines()
    assert all(len(line) < 260 for line in lines)


# --- errors and values -----------------------------------------------------------------------


def test_failed_cell_renders_the_sandbox_traceback_only():
    trace = (
        'Traceback (most recent call last):\n  File "<cell>", line 2, in <module>\n'
        "ZeroDivisionError: division by zero\n"
    )
    failure = RunError("ZeroDivisionError", "division by zero", trace)
    error = CodeModeError(make_result(ok=False, status="error", error=failure))
    assert str(error) == "ZeroDivisionError: division by zero"
    assert error._render_traceback_() == trace.rstrip("\n").split("\n")


def test_timeout_error_says_how_to_raise_the_limit():
    error = CodeModeError(
        make_result(
            ok=False, status="timeout", error=RunError("Timeout", "ran past its 1 s timeout")
        )
    )
    assert error._render_traceback_()[-1].startswith("(raise the limit with --timeout")


def test_a_stopped_program_says_why_not_keyboardinterrupt():
    trace = (
        'Traceback (most recent call last):\n  File "<cell>", line 3, in <module>\n'
        "    while True: pass\nKeyboardInterrupt\n"
    )
    error = CodeModeError(
        make_result(
            ok=False,
            status="timeout",
            error=RunError("Timeout", "the program ran past its 1 s timeout", trace),
        )
    )
    assert error._render_traceback_()[-3:] == [
        "    while True: pass",
        "Timeout: the program ran past its 1 s timeout",
        "(raise the limit with --timeout S or %config CodeMode.timeout)",
    ]


def test_a_syntax_error_is_summarised_once():
    trace = '  File "<cell>", line 2\n    def f(:\n          ^\nSyntaxError: invalid syntax\n'
    error = CodeModeError(
        make_result(
            ok=False,
            status="error",
            error=RunError("SyntaxError", "invalid syntax (line 2)", trace),
        )
    )
    assert error._render_traceback_()[-2:] == [
        "          ^",
        "SyntaxError: invalid syntax (line 2)",
    ]


def test_cell_value_shows_what_the_program_would():
    assert cell_value(make_result(value=[1, 2], value_repr="[1, 2]")) == [1, 2]
    assert cell_value(make_result(value=[1, 2], value_repr="(1, 2)")) == (1, 2)
    odd = cell_value(make_result(value="2024-01-01", value_repr="datetime.date(2024, 1, 1)"))
    assert repr(odd) == "datetime.date(2024, 1, 1)" and odd.value == "2024-01-01"
    opaque = cell_value(make_result(value=None, value_repr="<object at 0x1>"))
    assert repr(opaque) == "<object at 0x1>"
    assert cell_value(make_result(value=None, value_repr="None")) is None


def test_last_run_description_has_timings_and_errors():
    text = describe_run(make_result())
    assert "#2 round 2  get_weather(city='Nowhere')" in text
    assert "raised KeyError: 'Nowhere'" in text and "ms]" in text


def test_last_run_of_a_long_run_shows_head_and_tail():
    calls = [ToolCall(i, "f", {"i": i}, i, result=i) for i in range(1, 31)]
    result = make_result(tool_calls=calls)
    text = describe_run(result)
    assert "#10 round 10" in text and "#21 round 21" in text and "#15 " not in text
    assert "  … 10 more calls (%codemode last --all shows them)" in text
    assert "#15 round 15" in describe_run(result, everything=True)


# --- options and help ------------------------------------------------------------------------


def test_help_explains_every_option_with_its_default_in_plain_text():
    text = help_text()
    for option in cell_parser()._actions:
        [flag] = option.option_strings
        line = text[text.index(f"  {flag}") :].split("\n  --")[0]
        assert "(default:" in " ".join(line.split()), line
    assert "(default: CodeMode.timeout, 60.0)" in " ".join(text.split())
    for command in ("tools", "last [--all]", "attach SANDBOX_ID", "help"):
        assert f"%codemode {command}" in text
    assert "`" not in text  # plain text, not Markdown
    assert "examples:" not in text and "examples:" in help_text(examples=True)


def test_help_command_table_and_examples_fit_a_narrow_output():
    """Notebook 7's output wraps long lines mid-word: the table and examples never need it."""
    from codemode_jupyter.jupyter.commands.usage import EXAMPLES, HELP_COLUMNS, commands_text

    table = commands_text(COMMANDS.values())
    assert max(len(line) for line in (table + "\n" + EXAMPLES).split("\n")) <= HELP_COLUMNS
    assert "[--approval-timeout S]" in table and "[--allow-remote]" in table  # kept whole
    examples = help_text(examples=True)
    assert "%%codemode --map cities --concurrency 4 --as city" in examples
    assert "%%codemode --step" in examples


def test_a_wrong_option_prints_the_usage_line_with_the_error():
    with pytest.raises(UsageError) as caught:
        cell_parser().parse_line("--timeout soon")
    message = str(caught.value)
    assert message.startswith("usage: %%codemode [--backend NAME] [--timeout S]")
    assert message.endswith("%%codemode: error: argument --timeout: invalid float value: 'soon'")
    with pytest.raises(UsageError, match="unrecognized arguments: --everything"):
        COMMANDS["last"].parser.parse_line("--everything")
    assert COMMANDS["last"].parser.parse_line("--all").all is True


# --- discovery -------------------------------------------------------------------------------


def _notebook_function(name: str, body=lambda *a, **k: None):
    def fn(x: int) -> int:
        return x

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = "__main__"
    return fn


def test_notebook_functions_are_tools_imports_and_private_ones_are_not():
    from os.path import join

    marked = tool(name="published")(_notebook_function("_hidden_but_marked"))
    namespace = {
        "get": _notebook_function("get"),
        "_private": _notebook_function("_private"),
        "join": join,
        "marked": marked,
        "lam": (lambda x: x),
        "In": [],
    }
    namespace["lam"].__module__ = "__main__"
    found = discover(namespace)
    assert list(found.tools) == ["get", "published"]


def test_tools_option_selects_and_opts_in_imported_functions():
    from os.path import join

    namespace = {"a": _notebook_function("a"), "b": _notebook_function("b"), "join": join}
    assert list(discover(namespace, only=["b", "join"]).tools) == ["b", "join"]
    with pytest.raises(UnknownToolError, match="unknown tool: nope"):
        discover(namespace, only=["nope"])


def test_redefinition_replaces_the_tool_and_the_cache_keeps_unchanged_ones():
    cache = ToolCache()
    first, other = _notebook_function("f"), _notebook_function("g")
    tool_f = discover({"f": first, "g": other}, cache=cache).tools["f"]
    again = discover({"f": first, "g": other}, cache=cache)
    assert again.tools["f"] is tool_f
    redefined = _notebook_function("f")
    assert discover({"f": redefined, "g": other}, cache=cache).tools["f"].fn is redefined


def test_hidden_names_are_skipped():
    namespace = {"f": _notebook_function("f")}
    assert discover(namespace, hidden={"f"}).tools == {}


# --- config ----------------------------------------------------------------------------------


def test_session_key_changes_only_with_sandbox_settings():
    settings = Settings()
    key = settings.session_key()
    settings.timeout = 5
    assert settings.session_key() == key
    assert settings.session_key(network=True) != key
    settings.backend_options = {"sandbox": {"id": "x"}}
    assert settings.session_key() != key


# --- live view state -------------------------------------------------------------------------


def test_timeline_keeps_the_order_and_merges_chunks_of_a_stream():
    timeline = Timeline()
    timeline.apply(Output("stdout", "a"))
    timeline.apply(Output("stdout", "b\n"))
    timeline.apply(ToolCallStarted(1, "get", {"city": "Paris", "n": [1, 2]}, 1))
    timeline.apply(Output("stderr", "warn\n"))
    timeline.apply(ToolCallFinished(1, "get", 1, {"temp": 18.0}, None, 0.002))
    assert timeline.snapshot() == [
        {"kind": "output", "stream": "stdout", "text": "ab\n"},
        {
            "kind": "call",
            "id": 1,
            "name": "get",
            "round": 1,
            "args": "city='Paris', n=[1, 2]",
            "state": "ok",
            "duration": 0.002,
            "result": "{'temp': 18.0}",
        },
        {"kind": "output", "stream": "stderr", "text": "warn\n"},
    ]


def test_timeline_keeps_head_and_tail_of_the_output_within_the_cap():
    timeline = Timeline(output_cap=20)
    for i in range(10):
        timeline.add_output("stdout", f"line {i}\n")  # 7 characters each
    entries = timeline.snapshot()
    assert entries[0] == {"kind": "output", "stream": "stdout", "text": "line 0\nline 1\n"}
    assert entries[1]["kind"] == "gap" and entries[-1]["text"].endswith("9\n")
    assert sum(len(e.get("text", "")) for e in entries) <= 20
    assert entries[1]["chars"] + sum(len(e.get("text", "")) for e in entries) == 70
    # A live view asks for less: the newest output, and a gap for the rest.
    live = timeline.snapshot(output_budget=5)
    assert live[0]["kind"] == "gap" and live[-1]["text"] == "ne 9\n"[-5:]


def test_calls_in_flight_are_cancelled_when_the_run_ends():
    timeline = Timeline()
    timeline.apply(ToolCallStarted(1, "slow", {}, 1))
    timeline.finish(None)
    assert timeline.status == "interrupted"
    assert timeline.snapshot()[0]["state"] == "cancelled"


def test_one_duration_format_and_clipping_at_a_boundary():
    assert [format_duration(s) for s in (0.00085, 0.0123, 0.154, 1.234, 12.5, 125)] == [
        "850 µs",
        "12.3 ms",
        "154 ms",
        "1.23 s",
        "12.5 s",
        "2 min 5 s",
    ]
    assert clip("alpha beta gamma delta", 14) == "alpha beta…"
    assert clip("short", 14) == "short"


def test_text_view_streams_output_and_reports_calls():
    out, err = io.StringIO(), io.StringIO()
    view = TextView(out, err)
    view.on_event(Output("stdout", "hi\n"))
    view.on_event(Output("stderr", "warn\n"))
    view.on_event(ToolCallStarted(1, "get", {"city": "Paris"}, 1))
    view.on_event(ToolCallFinished(1, "get", 1, {"temp": 18}, None, 0.001))
    view.on_event(ToolCallStarted(2, "slow", {}, 2))
    view.finish(make_result())
    assert out.getvalue() == "hi\n"
    assert "warn\n" in err.getvalue()
    assert "  get(city='Paris') → {'temp': 18}  1.00 ms\n" in err.getvalue()
    assert "  slow() … cancelled\n" in err.getvalue()
    assert "[codemode] ok in" in err.getvalue()


def test_text_view_in_a_kernel_cell_writes_nothing_that_varies():
    out, err = io.StringIO(), io.StringIO()
    view = TextView(out, err, in_cell=True)
    view.on_event(Output("stdout", "hi\n"))
    view.on_event(ToolCallStarted(1, "get", {}, 1))
    view.on_event(ToolCallFinished(1, "get", 1, 1, None, 0.001))
    view.finish(make_result())
    assert out.getvalue() == "hi\n"
    assert err.getvalue() == "  get() → 1\n"  # no timing, no status line


def test_transcript_without_streams_keeps_calls_value_and_status():
    result = make_result(stderr="warn\n")
    text = transcript_text(result, streams=False)
    assert "Paris 18" not in text and "warn" not in text
    assert text.splitlines()[0] == "── codemode: ok, 2 tool calls in 2 rounds"
    data, _ = bundle("code", result, streams=False)
    texts = [e["text"] for e in data[MIME_RUN]["timeline"] if e["kind"] == "output"]
    assert texts == ["Paris 18\n", "warn\n"]


# --- CLI rendering ---------------------------------------------------------------------------


def test_cli_renders_transcripts_results_and_errors_as_text():
    widget = {
        "output_type": "display_data",
        "data": {
            "text/plain": "codemode live view",
            "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
        },
    }
    assert render_output(widget) == ""
    assert (
        render_output(
            {"output_type": "execute_result", "execution_count": 3, "data": {"text/plain": "42"}}
        )
        == "Out[3]: 42"
    )
    assert render_output({"output_type": "error", "traceback": ["\x1b[31mBoom\x1b[0m"]}) == "Boom"
    stderr = {"output_type": "stream", "name": "stderr", "text": "a\n"}
    assert render_output(stderr) == "stderr| a\n"


def test_daytona_settings_do_not_split_local_sessions() -> None:
    from codemode_jupyter.jupyter.config import CodeMode as Settings

    settings = Settings()
    before = settings.session_key()
    settings.daytona_labels = {"team": "x"}
    assert settings.session_key() == before
    assert settings.session_key(backend="daytona") != Settings().session_key(backend="daytona")


def test_live_text_fallback_lists_the_timeline_with_timings():
    payload = {
        "result": {"status": "running", "duration": 1.5},
        "timeline": [
            {"kind": "output", "stream": "stdout", "text": "before\n"},
            {
                "kind": "call",
                "id": 1,
                "name": "get",
                "args": "city='Paris'",
                "state": "ok",
                "result": "{'temp': 18}",
                "duration": 0.002,
            },
            {"kind": "call", "id": 2, "name": "slow", "args": "", "state": "running"},
        ],
    }
    assert live_text(payload).splitlines() == [
        "── codemode: running · 1.50 s · 2 tool calls",
        "before",
        "  get(city='Paris') → {'temp': 18}  2.00 ms",
        "  slow() … running",
    ]
