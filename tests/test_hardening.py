"""The host survives whatever the sandbox, a tool or a listener does, and a stopped run leaves
nothing behind: hostile programs and careless tools against real local jails."""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from codemode_jupyter import CodeMode
from codemode_jupyter.backends import Transport
from codemode_jupyter.engine.connection import Inbox, RuntimeConnection
from codemode_jupyter.model import events as ev
from codemode_jupyter.runtime import codemode_protocol as P

# Writes one raw line on the runtime's control channel, as a hostile program can: the channel
# is a pipe of the runtime's own process, which the program shares.
FORGE = """
import os
def forge(line):
    for fd in range(3, 40):
        try:
            if os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:'):
                os.write(fd, line.encode() + b'\\n')
        except OSError:
            pass
"""


def add(a: int, b: int = 1) -> int:
    return a + b


@pytest.fixture
def cm():
    with CodeMode(tools=[add]) as session:
        yield session


MALFORMED = [
    pytest.param(
        '{"t":"call","id":7,"name":"add","args":' + "[" * 5000 + "]" * 5000 + ',"kwargs":{}}',
        id="nested-5000-deep",
    ),
    pytest.param(
        '{"t":"call","id":7,"name":"add","args":' + "[" * 150 + "]" * 150 + ',"kwargs":{}}',
        id="nested-150-deep",
    ),
    pytest.param('{"t":"out","s":1,"d":5}', id="out-text-not-a-string"),
    pytest.param('{"t":"out","s":9,"d":"x"}', id="out-unknown-stream"),
    pytest.param('{"t":"call","id":"7","name":"add","args":[1],"kwargs":{}}', id="call-id-str"),
    pytest.param('{"t":"call","id":NaN,"name":"add","args":[1],"kwargs":{}}', id="call-id-nan"),
    pytest.param('{"t":"call","id":null,"name":"add","args":[1],"kwargs":{}}', id="call-id-null"),
    pytest.param('{"t":"call","id":true,"name":"add","args":[1],"kwargs":{}}', id="call-id-bool"),
    pytest.param('{"t":"preview","port":-5}', id="preview-port-negative"),
    pytest.param('{"t":"preview","port":"http"}', id="preview-port-str"),
    pytest.param('{"t":"done","id":1,"ok":true}', id="done-id-int"),
    pytest.param('{"t":"done","id":"x","ok":false,"error":[1]}', id="done-error-list"),
    pytest.param('{"t":"mystery"}', id="unknown-kind"),
    pytest.param("not json at all", id="not-json"),
]


@pytest.mark.parametrize("line", MALFORMED)
def test_a_malformed_frame_is_a_runtime_fault_and_the_session_recovers(cm, line: str) -> None:
    code = FORGE + f"forge({line!r})\nimport time\nwhile True: time.sleep(0.05)\n"
    r = cm.run(code, timeout=60)
    assert r.status == "crashed", r
    assert "broke its channel" in r.error.message
    assert r.state_lost
    again = cm.run("add(1, 2)")
    assert again.ok and again.value == 3


def test_a_guessed_run_id_is_ignored_not_taken(cm) -> None:
    cm.run(
        FORGE
        + """
import threading, json
stop = threading.Event()
def spam():
    while not stop.is_set():
        for guess in ('1', '2', '3', '0', 'run'):
            forge('{"t":"done","id":%s,"ok":true,"value":"forged"}' % json.dumps(guess))
t = threading.Thread(target=spam, daemon=True)
t.start()
"""
    )
    r = cm.run("x = add(1, 1)\nstop.set(); t.join()\n'real'")
    assert r.ok and r.value == "real", r


# --- tool results and tools that misbehave -------------------------------------------------


def huge_int() -> int:
    return 10**5000


def deep_list() -> list:
    value: list = []
    for _ in range(5000):
        value = [value]
    return value


def endless() -> object:
    def numbers():
        n = 0
        while True:
            n += 1
            yield n

    return numbers()


def endless_inside() -> dict:
    import itertools

    return {"numbers": itertools.count()}


@pytest.mark.parametrize(
    ("tool", "words"),
    [
        (huge_int, "too large for JSON"),
        (deep_list, "nest"),
        (endless, "iterator"),
        (endless_inside, "iterator"),
    ],
)
def test_results_that_cannot_cross_are_a_clear_error_in_the_program(tool, words: str) -> None:
    with CodeMode(tools=[tool]) as session:
        r = session.run(f"try:\n    {tool.__name__}()\nexcept TypeError as e:\n    print(e)\n'ok'")
        assert r.ok and r.value == "ok", r
        assert words in r.stdout
        assert r.tool_calls[0].error is not None


def exits() -> None:
    raise SystemExit(3)


async def exits_async() -> None:
    raise SystemExit(4)


async def twice(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


def test_tools_raising_system_exit_are_errors_and_the_session_stays_healthy() -> None:
    with CodeMode(tools=[exits, exits_async, twice]) as session:
        r = session.run(
            "try:\n    exits()\nexcept ToolError as e:\n    print('sync', e)\n"
            "try:\n    await exits_async_async()\nexcept ToolError as e:\n"
            "    print('async', e)\n"
        )
        assert r.ok, r
        assert "sync exits" in r.stdout and "async exits_async" in r.stdout
        r = session.run(
            "import asyncio\nawait asyncio.gather(*[twice_async(i) for i in range(5)])", timeout=30
        )
        assert r.ok and r.value == [0, 2, 4, 6, 8]


# --- listeners ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failing", [ev.Output, ev.ToolCallStarted, ev.ToolCallFinished, ev.RunStarted, ev.RunFinished]
)
def test_a_failing_listener_is_reported_once_and_never_breaks_the_run(cm, failing) -> None:
    seen: list[str] = []

    def listener(event: ev.Event) -> None:
        seen.append(type(event).__name__)
        if isinstance(event, failing):
            raise ValueError("listener bug")

    r = cm.run("print('a')\nx = add(1, 2)\nprint('b')\nx", on_event=listener)
    assert r.ok and r.value == 3 and r.stdout == "a\nb\n"
    if failing is not ev.RunFinished:
        assert r.stderr.count("listener raised ValueError: listener bug") == 1
    assert seen.count("ToolCallFinished") == 1 and seen[-1] == "RunFinished"
    assert cm.run("add(2, 2)").value == 4


def test_a_slow_listener_during_a_timeout_does_not_break_the_session(cm) -> None:
    release = threading.Event()

    def slow(event: ev.Event) -> None:
        if isinstance(event, ev.Output):
            release.wait(30)  # the I/O thread is stuck here past the timeout

    r = cm.run("print('x', flush=True)\nwhile True: pass", timeout=1, on_event=slow)
    assert r.status == "timeout"
    release.set()
    for i in range(3):
        r = cm.run(f"add({i}, 1)", timeout=30)
        assert r.ok and r.value == i + 1, r


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["5", float("nan"), float("inf"), 0, -1, True, None])
def test_bad_timeouts_fail_before_anything_starts(bad) -> None:
    if bad is not None:
        with pytest.raises(ValueError, match="timeout"):
            CodeMode(timeout=bad)
    with CodeMode() as session:
        with pytest.raises(ValueError, match="timeout"):
            session.run("1", timeout=bad if bad is not None else "x")
        assert session.status()["runtime_alive"] is False


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_bad_counts_fail_with_a_clear_error(bad) -> None:
    with pytest.raises(ValueError, match="max_tool_calls"):
        CodeMode(max_tool_calls=bad)
    with pytest.raises(ValueError, match="max_output"):
        CodeMode(max_output=bad if bad != -1 else 0)


def test_preview_ports_are_checked(cm) -> None:
    r = cm.run(
        "import codemode\nfor p in (-5, 0, 70000, 'x'):\n    try:\n"
        "        codemode.preview(p)\n    except ValueError as e:\n        print(e)\n"
    )
    assert r.ok and r.stdout.count("takes a TCP port") == 4 and r.previews == []
    with pytest.raises(ValueError, match="port"):
        cm.preview(-5)


# --- a stopped run leaves nothing behind ----------------------------------------------------


def test_async_calls_of_a_timed_out_run_never_answer_the_next_run() -> None:
    gate: dict[str, asyncio.Event] = {}
    cancelled = threading.Event()

    async def fetch(tag: str, wait: bool = False) -> str:
        if wait:
            gate["open"] = gate.get("open") or asyncio.Event()
            try:
                await gate["open"].wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return tag

    async def release() -> None:
        gate["open"] = gate.get("open") or asyncio.Event()
        gate["open"].set()

    with CodeMode(tools=[fetch, release]) as session:
        r = session.run("await fetch_async('stale', True)", timeout=1)
        assert r.status == "timeout"
        assert cancelled.wait(10)
        r = session.run(
            "await release_async()\n[await fetch_async('fresh') for _ in range(3)]", timeout=30
        )
        assert r.ok and r.value == ["fresh"] * 3, r


def test_close_from_another_thread_during_a_sync_tool_writes_into_no_host_file() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        victim = Path(tmp) / "victim"
        opened: list = []
        session = CodeMode(tools=[])

        def slow_tool() -> str:
            closer = threading.Thread(target=session.close)
            closer.start()
            closer.join()
            for i in range(32):  # one of them takes the freed fd numbers of the runtime's pipes
                opened.append(open(f"{victim}{i}", "w+b"))  # noqa: SIM115
            return "x" * 1000

        session.set_tools([slow_tool])
        r = session.run("slow_tool()", timeout=30)
        assert r.status == "crashed"
        for f in opened:
            f.close()
        assert all(Path(f.name).read_bytes() == b"" for f in opened)


def test_cancel_during_the_first_run_of_a_new_session_leaves_the_next_run_healthy() -> None:
    with CodeMode(tools=[add]) as session:

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.Output):
                threading.Thread(target=session.cancel).start()

        r = session.run(
            "print('go', flush=True)\nimport time\nwhile True: time.sleep(0.01)",
            on_event=on_event,
            timeout=60,
        )
        assert r.status == "interrupted"
        r = session.run("add(1, 1)")
        assert r.ok and r.value == 2 and not r.state_lost, r


def test_cancel_before_the_runtime_is_up_stops_the_run() -> None:
    with CodeMode(tools=[add]) as session:

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.RunStarted):
                session.cancel()

        r = session.run("while True: pass", on_event=on_event, timeout=60)
        # the interrupt reaches the runtime before its run starts: the run stops as it starts,
        # and the runtime is kept (not killed for "not stopping")
        assert r.status == "interrupted" and not r.state_lost, r.error
        r = session.run("add(1, 1)")
        assert r.ok and r.value == 2 and not r.state_lost


def test_reset_during_a_run_is_refused_clearly(cm) -> None:
    errors: list[str] = []

    def resetter() -> str:
        worker = threading.Thread(target=lambda: _capture(cm.reset, errors))
        worker.start()
        worker.join()
        return "called"

    cm.set_tools([add, resetter])
    r = cm.run("keep = 5\nresetter()\nkeep")
    assert r.ok and r.value == 5
    assert errors and "running" in errors[0]
    cm.reset()  # between runs it works
    assert cm.run("'keep' in globals()").value is False


def _capture(fn, errors: list[str]) -> None:
    try:
        fn()
    except RuntimeError as exc:
        errors.append(str(exc))


def test_a_session_collected_without_close_stops_its_runtime() -> None:
    session = CodeMode(tools=[add])
    assert session.run("add(1, 1)").value == 2
    proc = session._conn.transport.proc
    del session
    gc.collect()
    assert proc.poll() is not None


def test_output_written_between_runs_is_capped_and_labelled() -> None:
    with CodeMode(max_output=10_000) as session:
        session.run(
            IDLE + "import sys, threading\n"
            "def late():\n"
            "    while not idle():\n"
            "        time.sleep(0.001)\n"
            "    for _ in range(300):\n"
            "        sys.stdout.write('x' * 1000 + '\\n')\n"
            "    sys.stdout.write('late end\\n')\n"
            "    sys.stdout.flush()\n"
            "threading.Thread(target=late).start()\n"
        )
        late = session._conn._late[P.STDOUT]
        deadline = time.monotonic() + 30
        while late.size < 300 * 1001 + len("late end\n") and time.monotonic() < deadline:
            threading.Event().wait(0.01)  # waits for a condition: all of it reached the host
        r = session.run("print('run2')")
        assert r.ok
        label = "[codemode] written between runs by threads an earlier run left running:\n"
        assert r.stdout.startswith(label), r.stdout[:200]
        assert "late end\n[codemode] end of the earlier runs' output\nrun2\n" in r.stdout
        assert "characters dropped" in r.stdout and len(r.stdout) < 10_000 + 500


# A program's thread can tell when its run has ended: the runtime's main thread is back
# waiting for the next request.
IDLE = """
import sys, threading, time
_main = threading.main_thread().ident
def idle():
    frame = sys._current_frames().get(_main)
    while frame is not None:
        if frame.f_code.co_name == 'next_request':
            return True
        frame = frame.f_back
    return False
"""


class PipeTransport(Transport):
    """A runtime played by the test: frames it writes are what the 'runtime' sends."""

    def __init__(self) -> None:
        self.to_host_r, self.to_host_w = os.pipe()
        self.to_runtime_r, self.to_runtime_w = os.pipe()

    def write(self, data: bytes) -> None:
        os.write(self.to_runtime_w, data)

    def read(self) -> bytes:
        return os.read(self.to_host_r, 65536)

    def kill(self) -> None:
        os.close(self.to_host_w)

    def exit_info(self) -> str:
        return "gone"

    def frame(self, frame: dict) -> None:
        os.write(self.to_host_w, P.encode(frame))

    def reply(self) -> dict:
        return P.decode(os.read(self.to_runtime_r, 65536))


def test_frames_between_runs_are_refused_or_dropped_and_output_is_capped() -> None:
    transport = PipeTransport()
    conn = RuntimeConnection(transport, max_late_output=1000)
    transport.frame({"t": P.DONE, "id": "stale", "ok": True})
    transport.frame({"t": P.PREVIEW, "port": 8000})
    for _ in range(300):
        transport.frame({"t": P.OUT, "s": 1, "d": "x" * 1000})
    transport.frame({"t": P.CALL, "id": 5, "name": "add", "args": [], "kwargs": {}})
    reply = transport.reply()  # the I/O thread answered the call itself, in order
    assert (
        reply["id"] == 5 and reply["ok"] is False and "no run is going" in reply["error"]["message"]
    )
    ((stream, text),) = conn.take_late_output()
    assert stream == 1 and text.size == 300_000 and len(text.text()) < 1100
    transport.kill()
    assert conn.inbox.get(timeout=10) == (Inbox.EOF, None)  # nothing else was queued


def test_nothing_is_left_after_many_sessions() -> None:
    with CodeMode() as warm:  # the process-wide threads spares start on exist from here on
        warm.run("1")
    gc.collect()
    before = set(os.listdir("/proc/self/fd")), threading.active_count()
    for _ in range(5):
        with CodeMode(tools=[add, twice]) as session:
            session.run("add(1, 2)\nawait twice_async(3)", timeout=30)
    gc.collect()
    after = set(os.listdir("/proc/self/fd")), threading.active_count()
    assert len(after[0] - before[0]) == 0, after[0] - before[0]
    assert after[1] <= before[1]


def test_an_unknown_backend_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        CodeMode(backend="nope")
