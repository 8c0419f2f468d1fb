"""`%%codemode` in a real kernel (jupyter_client): options, tools, views, errors, debugging.

One kernel serves the whole module; tests that change settings put them back. Everything
waits on kernel messages; nothing sleeps.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from conftest import loaded_kernel

from codemode_jupyter.jupyter.headless import KernelSession
from codemode_jupyter.jupyter.views.transcript import MIME_RUN


@pytest.fixture(scope="module")
def kernel():
    with loaded_kernel() as session:
        yield session


def run(kernel: KernelSession, code: str, **kwargs):
    return kernel.execute(code, **kwargs)


def ok(kernel: KernelSession, code: str, **kwargs):
    execution = kernel.execute(code, **kwargs)
    assert execution.ok, execution.error
    return execution


def usage_error(execution) -> bool:
    """IPython shows a UsageError as a short line on stderr, without a traceback."""
    content = execution.reply["content"]
    return content["status"] == "error" and content["ename"] == "UsageError"


def transcript(execution) -> str:
    texts = execution.displays("text/plain")
    assert len(texts) == 1, texts
    return texts[0]


# --- running cells ---------------------------------------------------------------------------


def test_cell_runs_in_the_sandbox_with_notebook_tools(kernel):
    ok(
        kernel,
        'def double(x: int) -> int:\n    """Twice x."""\n    print("double", x)\n'
        "    return 2 * x\n",
    )
    execution = ok(kernel, "%%codemode\nimport os\nprint(double(21))\nos.getpid() != 1, 'v'")
    # print() inside the tool runs on the kernel's main thread: it lands in the run's view,
    # under its call and before the program's own print of the result (time order).
    assert execution.stream() == ""
    data, _ = run_bundle(execution)
    assert [(e["kind"], e.get("call"), e.get("text")) for e in data["timeline"]] == [
        ("call", None, None),
        ("output", 1, "double 21\n"),
        ("output", None, "42\n"),
    ]
    assert transcript(execution).splitlines() == [
        "── codemode: ok, 1 tool call in 1 round",
        "  double(x=21) -> 42",
        "    double 21",
        "42",
    ]  # in time order (the print comes after the call); the value is Out[n], not repeated
    assert execution.result == "(True, 'v')"


def test_state_persists_and_fresh_starts_empty(kernel):
    ok(kernel, "%%codemode\nkept = 'here'")
    assert ok(kernel, "%%codemode\nkept").result == "'here'"
    failed = run(kernel, "%%codemode --fresh\nkept")
    assert failed.error["ename"] == "CodeModeError"
    assert failed.error["evalue"] == "NameError: name 'kept' is not defined"


def test_redefining_a_function_takes_effect_in_the_next_cell(kernel):
    ok(kernel, "def version() -> int:\n    return 1\n")
    assert ok(kernel, "%%codemode\nversion()").result == "1"
    ok(kernel, "def version() -> int:\n    return 2\n")
    assert ok(kernel, "%%codemode\nversion()").result == "2"


def test_tools_option_limits_the_tools_and_opts_in_imports(kernel):
    ok(
        kernel,
        "from os.path import basename\ndef one() -> int:\n    return 1\n"
        "def two() -> int:\n    return 2\n",
    )
    listed = ok(kernel, "%codemode tools").stream()
    assert "one() -> int" in listed and "basename" not in listed
    failed = run(kernel, "%%codemode --tools one\ntwo()")
    assert failed.error["evalue"] == "NameError: name 'two' is not defined"
    assert ok(kernel, "%%codemode --tools one,basename\nbasename('/a/b.txt')").result == "'b.txt'"
    bad = run(kernel, "%%codemode --tools nope\n1")
    assert usage_error(bad) and "unknown tool: nope (available: " in bad.stream("stderr")


def test_options_line_expands_variables_but_the_body_is_never_formatted(kernel):
    ok(kernel, "limit = 1\ndef ping() -> str:\n    return 'pong'\n")
    limited = run(kernel, "%%codemode --max-tool-calls {limit}\nping(); ping()")
    assert limited.error["evalue"].startswith("ToolCallLimit")
    braces = ok(kernel, "%%codemode\nlimit = {'a': 1}\nf'{limit}'")
    assert braces.result == "\"{'a': 1}\""


def test_out_stores_the_run_result(kernel):
    ok(kernel, "def ping() -> str:\n    return 'pong'\n")
    ok(kernel, "%%codemode --out kept_run\nprint(ping())\n7")
    summary = ok(
        kernel,
        "kept_run.status, kept_run.value, kept_run.stdout, [c.name for c in kept_run.tool_calls]",
    )
    assert summary.result == "('ok', 7, 'pong\\n', ['ping'])"


def test_quiet_shows_only_the_program_output_and_value(kernel):
    execution = ok(kernel, "%%codemode --quiet\nprint('hello')\n5")
    assert execution.stream() == "hello\n"
    assert execution.displays("text/plain") == [] and execution.result == "5"


def test_bad_options_fail_with_a_usage_error(kernel):
    assert usage_error(run(kernel, "%%codemode --timeout soon\n1"))


def test_async_tools_run_concurrently_and_tools_can_display(kernel):
    ok(
        kernel,
        "import asyncio\n"
        "async def fetch(i: int) -> int:\n    await asyncio.sleep(0.01)\n    return i * i\n"
        "def show(text: str) -> None:\n"
        "    from IPython.display import HTML, display\n"
        "    display(HTML(f'<b>{text}</b>'))\n",
    )
    execution = ok(
        kernel,
        "%%codemode\nimport asyncio\nshow(text='hello')\n"
        "await asyncio.gather(*(fetch_async(i=i) for i in range(4)))",
    )
    assert execution.result == "[0, 1, 4, 9]"
    html = execution.displays("text/html")
    assert html[:-1] == ["<b>hello</b>"]  # in this cell; last: the run's own fallback
    assert html[-1].startswith('<div class="codemode-fallback">')


def test_preview_option_puts_a_link_in_the_view(kernel):
    execution = ok(kernel, "%%codemode --preview 8123 8124\n1")
    # The links belong to the run: the transcript and the saved view keep them.
    assert transcript(execution).splitlines()[-2:] == [
        "  preview: port 8123",
        "  preview: port 8124",
    ]
    final = execution.of_type("display_data")[-1]["content"]
    entries = final["data"][MIME_RUN]["timeline"]
    assert [(e["kind"], e["port"]) for e in entries] == [("preview", 8123), ("preview", 8124)]
    urls = final["metadata"][MIME_RUN]["timeline"]  # URLs vary: kept out of the compared data
    assert [urls[str(i)]["url"] for i in range(2)] == [
        "http://127.0.0.1:8123/",
        "http://127.0.0.1:8124/",
    ]
    saved = final["metadata"][MIME_RUN]["result"]
    assert [p["url"] for p in saved["previews"]] == [
        "http://127.0.0.1:8123/",
        "http://127.0.0.1:8124/",
    ]
    # Without --network nothing in the jail can be reached: the view says so.
    [warning] = final["metadata"][MIME_RUN]["warnings"]
    assert warning.startswith("--preview 8123, 8124: the sandbox has no network")
    networked = ok(kernel, "%%codemode --preview 8125 --network\n1")
    final = networked.of_type("display_data")[-1]["content"]
    assert "warnings" not in final["metadata"][MIME_RUN]


# --- errors ----------------------------------------------------------------------------------


def test_failing_program_fails_the_cell_with_the_sandbox_traceback(kernel):
    failed = run(kernel, "%%codemode\nx = 1\n1 / 0")
    assert failed.reply["content"]["status"] == "error"
    assert failed.error["ename"] == "CodeModeError"
    assert failed.error["evalue"] == "ZeroDivisionError: division by zero"
    trace = "\n".join(failed.error["traceback"])
    # The cell's own line numbers: `1 / 0` is line 3 of the cell, counting `%%codemode`.
    assert 'File "<cell>", line 3' in trace
    assert "magics.py" not in trace and "engine.py" not in trace
    # The transcript is still there, before the error.
    assert "── codemode: error, no tool calls" in transcript(failed)


def test_timeout_from_config_and_option(kernel):
    ok(kernel, "%config CodeMode.timeout = 0.5")
    try:
        assert ok(kernel, "%config CodeMode.timeout").result == "0.5"
        slow = run(kernel, "%%codemode\nwhile True:\n    pass")
        assert slow.error["evalue"].startswith("Timeout:")
        assert "0.5 s" in slow.error["evalue"]
    finally:
        ok(kernel, "%config CodeMode.timeout = 60")
    slow = run(kernel, "%%codemode --timeout 0.3\nwhile True:\n    pass")
    assert "0.3 s" in slow.error["evalue"]
    # Where it was stopped and why; the KeyboardInterrupt used to stop it is not the story.
    trace = slow.error["traceback"]
    assert trace[-2] == "Timeout: the program ran past its 0.3 s timeout"
    assert "KeyboardInterrupt" not in "\n".join(trace)
    assert ok(kernel, "%%codemode\n'alive'").result == "'alive'"


def test_tool_exceptions_reach_the_program_and_debug_opens_a_post_mortem(kernel):
    ok(
        kernel,
        "def fragile(n: int) -> int:\n    secret = n * 7\n    raise ValueError(f'bad {n}')\n",
    )
    failed = run(kernel, "%%codemode\nfragile(6)")
    assert failed.error["evalue"] == "ValueError: fragile: bad 6"
    last = ok(kernel, "%codemode last").stream()
    assert "fragile(n=6)" in last and "raised ValueError: bad 6" in last
    assert re.search(r"fragile\(n=6\)  \[[0-9.]+ (µs|ms)\]", last)  # with its timing
    debug = ok(kernel, "%codemode debug", stdin=["p secret", "q"])
    assert [m for m in debug.messages if m["msg_type"] == "input_request"]
    assert "42" in debug.stream()


def test_breakpoint_in_a_tool_stops_the_program_until_continue(kernel):
    ok(kernel, "def probe(x: int) -> int:\n    y = x * 2\n    breakpoint()\n    return y + 1\n")
    execution = ok(
        kernel, "%%codemode\nprint('before')\nprint('got', probe(20))\n'done'", stdin=["p y", "c"]
    )
    prompts = [m for m in execution.messages if m["msg_type"] == "input_request"]
    assert len(prompts) == 2
    assert "40" in execution.stream()
    assert execution.result == "'done'"
    assert "\nbefore\n  probe(x=20) -> 41\ngot 41" in transcript(execution)  # in time order


def test_argument_validation_errors_are_raised_in_the_program(kernel):
    ok(kernel, "def square(n: int) -> int:\n    return n * n\n")
    execution = ok(
        kernel,
        "%%codemode\ntry:\n    square(n='many')\n"
        "except ToolArgumentError as e:\n    print('rejected')\nsquare(n='3')",
    )
    assert execution.result == "9"
    assert "rejected" in transcript(execution)


# --- the live view ---------------------------------------------------------------------------


def view_messages(execution) -> tuple[dict, list[dict], dict]:
    """The live display's first message, its updates, and the finished run's display."""
    displays = execution.of_type("display_data")
    live = displays[0]["content"]
    display_id = live["transient"]["display_id"]
    updates = [
        m["content"]
        for m in execution.of_type("update_display_data")
        if m["content"]["transient"]["display_id"] == display_id
    ]
    final = [d["content"] for d in displays if MIME_RUN in d["content"]["data"]]
    assert len(final) == 1, final
    return live, updates, final[0]


def test_live_view_is_one_display_updated_in_place(kernel):
    ok(kernel, "def ping() -> str:\n    return 'pong'\n")
    execution = ok(
        kernel,
        "%%codemode\nimport sys, time\nprint('before')\nping()\n"
        "print('after', file=sys.stderr)\ntime.sleep(0.5)\nprint('end')",
    )
    live, updates, final = view_messages(execution)
    # nbval records a display's first message and compares what the notebook saves: both are
    # empty for the live display, so only the finished run's output is compared.
    assert live["data"] == {} and updates[-1]["data"] == {}
    running = [u["data"][MIME_RUN] for u in updates if u["data"]]
    assert running, "no live update while the program slept"
    assert running[0]["result"]["status"] == "running"
    kinds = [(e["kind"], e.get("text") or e.get("name")) for e in running[-1]["timeline"]]
    assert kinds[:3] == [("output", "before\n"), ("call", "ping"), ("output", "after\n")]
    assert "ping() → 'pong'" in updates[-2]["data"]["text/plain"]
    # The finished run: the same timeline in the same order, complete.
    entries = final["data"][MIME_RUN]["timeline"]
    assert [(e["kind"], e.get("stream"), e.get("text") or e.get("result")) for e in entries] == [
        ("output", "stdout", "before\n"),
        ("call", None, "'pong'"),
        ("output", "stderr", "after\n"),
        ("output", "stdout", "end\n"),
    ]
    assert not execution.of_type("clear_output", "comm_open")


def test_live_view_coalesces_and_caps_chatty_output(kernel):
    ok(kernel, "%config CodeMode.view_output_chars = 200")
    try:
        execution = ok(
            kernel,
            "%%codemode\nimport time\nfor i in range(3000):\n"
            "    print('line', i)\n    if i % 1000 == 0: time.sleep(0.2)",
        )
    finally:
        ok(kernel, "%config CodeMode.view_output_chars = 20000")
    _, updates, final = view_messages(execution)
    assert 2 <= len(updates) < 50  # 3000 prints, a handful of coalesced updates
    live = [u["data"][MIME_RUN]["timeline"] for u in updates[:-1]]
    assert all(len("".join(e.get("text", "") for e in entries)) <= 200 for entries in live)
    assert live[-1][0]["kind"] == "gap" and live[-1][0]["chars"] > 1000
    # The finished run keeps everything.
    assert transcript(execution).count("\n") >= 3000
    assert final["data"][MIME_RUN]["timeline"][0]["text"].startswith("line 0\nline 1\n")


def test_run_json_output_keeps_timings_out_of_the_compared_data(kernel):
    ok(kernel, "def ping() -> str:\n    return 'pong'\n")
    execution = ok(kernel, "%%codemode\nping()")
    bundle = next(
        m["content"] for m in execution.of_type("display_data") if MIME_RUN in m["content"]["data"]
    )
    data, meta = bundle["data"][MIME_RUN], bundle["metadata"][MIME_RUN]
    assert data["version"] == 2 and data["code"] == "ping()\n"
    assert data["timeline"] == [
        {
            "kind": "call",
            "id": 1,
            "name": "ping",
            "round": 1,
            "args": "",
            "state": "ok",
            "result": "'pong'",
        }
    ]
    assert "duration" not in json.dumps(data)
    assert meta["result"]["duration"] > 0 and meta["result"]["backend"] == "local"
    assert meta["timeline"]["0"]["duration"] >= 0
    # The value is Out[n]: the transcript does not repeat it.
    assert execution.result == "'pong'" and "value:" not in transcript(execution)


# --- %codemode commands ----------------------------------------------------------------------


def test_status_prompt_reset(kernel):
    ok(kernel, 'def greet(name: str) -> str:\n    """Say hello."""\n    return "hi " + name\n')
    status = ok(kernel, "%codemode status").stream()
    assert "backend" in status and "isolation" in status and "runtime_alive" in status
    assert "last_run" in status and "state " in status
    prompt = ok(kernel, "%codemode prompt").stream()
    assert "def greet(name: str) -> str:" in prompt and "Say hello." in prompt
    ok(kernel, "%%codemode\nbefore_reset = 1")
    assert "variables kept between cells" in ok(kernel, "%codemode status").stream()
    assert "reset" in ok(kernel, "%codemode reset").stream()
    assert run(kernel, "%%codemode\nbefore_reset").error["evalue"].startswith("NameError")
    assert usage_error(run(kernel, "%codemode bogus"))
    assert usage_error(run(kernel, "%codemode last --everything"))


def test_help_from_the_question_mark_and_the_help_command(kernel):
    # `%%codemode?` pages the magic's docstring: every option with its default.
    for query in ("%%codemode?", "%codemode?"):
        page = run(kernel, query).reply["content"]["payload"][0]["data"]["text/plain"]
        page = " ".join(page.split())
        assert "--max-tool-calls N" in page and "CodeMode.max_tool_calls, 1000" in page
        assert "%codemode last [--all]" in page
    shown = ok(kernel, "%codemode help").stream()
    assert shown.startswith("usage: %%codemode") and "examples:" in shown
    wrong = run(kernel, "%%codemode --timeout soon\n1")
    assert usage_error(wrong) and wrong.reply["content"]["evalue"].startswith("usage: %%codemode")


# --- the tools comm --------------------------------------------------------------------------


class Panel:
    """What the JupyterLab Tools panel does: open a comm, send ops, read replies."""

    def __init__(self, kernel: KernelSession) -> None:
        self.kernel = kernel
        self.comm_id = uuid.uuid4().hex

    def send(self, msg_type: str, data: dict) -> dict:
        kc = self.kernel.kc
        content = {"comm_id": self.comm_id, "data": data}
        if msg_type == "comm_open":
            content["target_name"] = "codemode.tools"
        msg = kc.session.msg(msg_type, content)
        kc.shell_channel.send(msg)
        return self.reply_to(msg["header"]["msg_id"])

    def reply_to(self, msg_id: str) -> dict:
        while True:
            msg = self.kernel.kc.get_iopub_msg(timeout=30)
            if (
                msg["msg_type"] == "comm_msg"
                and msg["parent_header"].get("msg_id") == msg_id
                and msg["content"]["comm_id"] == self.comm_id
            ):
                return msg["content"]["data"]


def test_tools_comm_lists_calls_and_reports_runs(kernel):
    ok(kernel, 'def add(a: int, b: int = 1) -> int:\n    """Add."""\n    return a + b\n')
    panel = Panel(kernel)
    tools = panel.send("comm_open", {"op": "list"})
    assert tools["op"] == "tools"
    add = next(t for t in tools["tools"] if t["name"] == "add")
    assert add["signature"] == "(a: int, b: int = 1) -> int" and add["doc"] == "Add."
    assert add["schema"]["properties"]["a"]["type"] == "integer" and add["is_async"] is False
    reply = panel.send(
        "comm_msg", {"op": "call", "request_id": "r1", "name": "add", "args": {"a": 2}}
    )
    assert reply["op"] == "call_result" and reply["request_id"] == "r1"
    assert reply["ok"] is True and reply["result"] == 3 and reply["error"] is None
    bad = panel.send(
        "comm_msg", {"op": "call", "request_id": "r2", "name": "add", "args": {"a": "x"}}
    )
    assert bad["ok"] is False and bad["error"]["type"] == "ToolArgumentError"
    # Bad arguments are the caller's mistake: the message, no host stack.
    assert bad["error"]["traceback"].startswith("ToolArgumentError: argument 'a'")
    # A tool that raises: the traceback starts in the tool, not in the comm's machinery.
    ok(kernel, "def explode(n: int) -> int:\n    raise ValueError(f'bad n {n}')\n")
    boom = panel.send(
        "comm_msg", {"op": "call", "request_id": "r3", "name": "explode", "args": {"n": 4}}
    )
    trace = boom["error"]["traceback"]
    assert trace.startswith("Traceback (most recent call last):\n")
    assert "raise ValueError(f'bad n {n}')" in trace and trace.endswith("ValueError: bad n 4\n")
    assert "codemode_jupyter" not in trace
    assert 'File "Cell In[' in trace and "ipykernel_" not in trace  # named as IPython does
    # What a tool prints when the panel calls it comes back with its result, in order.
    ok(
        kernel,
        "import sys\n"
        "def chatty() -> int:\n    print('a')\n    print('b', file=sys.stderr)\n    return 1\n",
    )
    chat = panel.send("comm_msg", {"op": "call", "request_id": "r4", "name": "chatty", "args": {}})
    assert chat["ok"] and chat["output"] == [["stdout", "a\n"], ["stderr", "b\n"]], chat
    assert "a\n" not in ok(kernel, "1").stream()
    ok(kernel, "%%codemode\nadd(a=40, b=2)")
    runs = panel.send("comm_msg", {"op": "runs"})
    assert runs["runs"][-1]["code"] == "add(a=40, b=2)\n"
    assert runs["runs"][-1]["result"]["value"] == 42


def test_tools_comm_pushes_after_a_cell_changes_the_tools(kernel):
    panel = Panel(kernel)
    panel.send("comm_open", {"op": "list"})
    execution = ok(kernel, "def brand_new_tool() -> int:\n    return 1\n")
    pushed = [
        m["content"]["data"]
        for m in execution.of_type("comm_msg")
        if m["content"]["comm_id"] == panel.comm_id
    ]
    assert pushed and pushed[-1]["op"] == "tools"
    assert "brand_new_tool" in [t["name"] for t in pushed[-1]["tools"]]


# --- the view fixes of issue 20 ----------------------------------------------------------------


def run_bundle(execution) -> tuple[dict, dict]:
    """The finished run's run+json data and metadata."""
    bundle = next(
        m["content"] for m in execution.of_type("display_data") if MIME_RUN in m["content"]["data"]
    )
    return bundle["data"][MIME_RUN], bundle["metadata"][MIME_RUN]


def test_tool_tracebacks_in_the_run_start_in_the_tool_and_name_the_cell(kernel):
    ok(kernel, "def shaky(n: int) -> int:\n    raise ValueError(f'n too big: {n}')\n")
    failed = run(kernel, "%%codemode\ntry:\n    shaky(5)\nexcept ValueError:\n    pass\nshaky('x')")
    _, meta = run_bundle(failed)
    raised = meta["timeline"]["0"]["error"]["traceback"]
    assert raised.startswith('Traceback (most recent call last):\n  File "Cell In['), raised
    assert raised.endswith("ValueError: n too big: 5\n") and "codemode_jupyter" not in raised
    assert "ipykernel_" not in raised and "calls.py" not in raised
    # Bad arguments never reached the tool: the message alone, no frames of the library.
    refused = meta["timeline"]["1"]["error"]["traceback"]
    assert refused.startswith("ToolArgumentError: argument 'n'") and "File" not in refused


MAP_CELL = "%%codemode --map cities --as city --concurrency 2\nprint('hello', city)\nlen(city)"


def test_map_cell_saves_a_plain_view_with_prints_empty_errors_and_lists_its_runs(kernel):
    ok(kernel, "cities = ['Oslo', 'Lima']")
    panel = Panel(kernel)
    panel.send("comm_open", {"op": "list"})
    execution = ok(kernel, MAP_CELL)
    # A display updated in place (no widget: its model would be gone after a restart); its
    # last state, the one a saved notebook keeps, is plain HTML that draws without a kernel.
    first = execution.of_type("display_data")[0]["content"]["data"]
    assert set(first) == {"text/html", "text/plain"}, first
    updates = execution.of_type("update_display_data")
    assert updates and "2/2 done, 2 ok" in updates[-1]["content"]["data"]["text/html"]
    summary = execution.displays()[-1]
    assert summary.split("\n") == [
        "codemode map: 2 tasks: 2 ok",
        "  #0 printed:",
        "    hello Oslo",
        "  #1 printed:",
        "    hello Lima",
    ]
    rows = ok(
        kernel, "[dict(r) for r in (_.to_dict('records') if hasattr(_, 'to_dict') else _)]"
    ).result
    assert "'error': ''" in rows and "nan" not in rows.lower()
    runs = panel.send("comm_msg", {"op": "runs"})["runs"]
    mapped = [r for r in runs if r["source"] == "map"]
    assert sorted(r["result"]["value"] for r in mapped[-2:]) == [4, 4], mapped


def test_step_cell_keeps_its_finished_run_above_its_prompts(kernel):
    ok(kernel, "def lookup(city: str) -> int:\n    return len(city)\n")
    stepped = ok(kernel, "%%codemode --step\nlookup('Oslo')", stdin=["a"])
    kinds = [m["msg_type"] for m in stepped.messages]
    live = kinds.index("display_data")
    assert live < kinds.index("input_request"), kinds
    # The finished run fills the live display (where it was, above the prompt); no new
    # display lands below the prompt, and the saved output is not left empty.
    runs = [m for m in stepped.of_type("display_data") if m["content"]["data"]]
    assert not [m for m in runs if MIME_RUN in m["content"]["data"]], runs
    final = stepped.of_type("update_display_data")[-1]["content"]
    assert final["data"][MIME_RUN]["result"]["status"] == "ok"
    assert final["metadata"][MIME_RUN]["result"]["duration"] > 0
