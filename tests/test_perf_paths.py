"""The channel's fast paths: the thread that waits for a frame reads it itself, on both sides.

On the host a run's own thread reads the runtime's frames while it waits (the I/O thread only
between runs and while a sync tool runs long); in the runtime the thread waiting for a tool's
result (or the main thread between runs) reads the control channel itself. These tests check
that nothing that used to flow through the I/O thread and the reader thread was lost.
"""

from __future__ import annotations

import _thread
import os
import re
import signal
import sys
import threading
import time
import types

import pytest

from codemode_jupyter import CodeMode
from codemode_jupyter.engine.connection import check_frame
from codemode_jupyter.model import events as ev


def _runtime_module(name: str) -> types.ModuleType:
    """A module of the sandbox runtime as the runtime itself imports it: by its own name, from
    its directory (importing codemode_runtime on the host puts them all in sys.modules)."""
    from codemode_jupyter.runtime import codemode_runtime  # noqa: F401

    return sys.modules[name]


def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


def test_output_of_other_threads_streams_while_a_sync_tool_runs() -> None:
    seen = threading.Event()

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Output) and "from-the-thread" in event.text:
            seen.set()

    def wait_for_output() -> bool:
        """Returns once the thread's print has reached the host, while this tool still runs."""
        return seen.wait(30)

    # The thread prints once the main thread waits for the tool's result (its call frame has
    # gone out), so the print can only reach the host while the tool runs.
    code = (
        "import sys, threading, time\n"
        "main = threading.main_thread().ident\n"
        "def waiting():\n"
        "    frame = sys._current_frames().get(main)\n"
        "    while frame is not None:\n"
        "        if frame.f_code.co_name in ('wait_leading', 'acquire'):\n"
        "            return True\n"
        "        frame = frame.f_back\n"
        "    return False\n"
        "def later():\n"
        "    while not waiting():\n"
        "        time.sleep(0.001)\n"
        "    print('from-the-thread')\n"
        "threading.Thread(target=later).start()\n"
        "wait_for_output()"
    )
    with CodeMode(tools=[wait_for_output]) as session:
        result = session.run(code, on_event=on_event, timeout=60)
    assert result.ok, result.error
    assert result.value is True  # it streamed while the run's thread was inside the tool
    assert "from-the-thread" in result.stdout


def test_sync_calls_from_many_program_threads_all_get_their_results() -> None:
    code = (
        "import threading\n"
        "totals = [0] * 8\n"
        "def work(k):\n"
        "    for i in range(40):\n"
        "        totals[k] += add(i, k)\n"
        "threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]\n"
        "for t in threads: t.start()\n"
        "main = sum(add(i) for i in range(40))\n"
        "for t in threads: t.join()\n"
        "totals, main"
    )
    with CodeMode(tools=[add]) as session:
        result = session.run(code, timeout=60)
    assert result.ok, result.error
    totals, main = result.value
    assert totals == [sum(range(40)) + 40 * k for k in range(8)]
    assert main == sum(range(40)) + 40
    assert len(result.tool_calls) == 9 * 40


@pytest.mark.parametrize("how", ["interrupt_main", "sigint"])
def test_ctrl_c_while_the_run_thread_reads_output_loses_no_frame(how: str) -> None:
    started = threading.Event()

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Output) and not started.is_set():
            started.set()
            if how == "interrupt_main":
                threading.Thread(target=_thread.interrupt_main).start()
            else:  # a real signal to the process: any thread may take it
                threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT)).start()

    with CodeMode(tools=[add]) as session:
        session.run("kept = 'state'")
        with pytest.raises(KeyboardInterrupt):
            session.run("while True:\n    print('x' * 200)\n    add(1)", on_event=on_event)
        result = session.last_result
        assert result.status == "interrupted", result.error
        assert not result.state_lost  # the runtime answered in order: nothing was lost
        assert session.run("kept").value == "state"


def test_cancel_lands_while_the_program_waits_for_a_result() -> None:
    holder: list[CodeMode] = []

    def stop_me() -> str:
        threading.Thread(target=holder[0].cancel).start()
        return "ok"

    with CodeMode(tools=[stop_me, add]) as session:
        holder.append(session)
        session.run("kept = 1")
        result = session.run("stop_me()\nwhile True:\n    add(1)", timeout=60)
        assert result.status == "interrupted" and "cancelled" in result.error.message
        assert not result.state_lost
        assert session.run("kept + 1").value == 2


def test_interrupting_a_program_that_writes_large_frames_keeps_its_runtime() -> None:
    """A KeyboardInterrupt lands while the program's output frames (far over a pipe's atomic
    write) are written into a full pipe: no frame is left half written, so the runtime and its
    state stay."""
    holder: list[CodeMode] = []
    printed = threading.Event()

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Output) and not printed.is_set():
            printed.set()
            threading.Thread(target=holder[0].cancel).start()

    with CodeMode(max_output=1 << 20) as session:
        holder.append(session)
        session.run("kept = 1")
        for _ in range(5):
            printed.clear()
            result = session.run(
                "import sys\nline = 'x' * 200000\nwhile True:\n    sys.stdout.write(line)",
                on_event=on_event,
                timeout=60,
            )
            assert result.status == "interrupted", result.error
            assert not result.state_lost
            assert session.run("kept + 1").value == 2


def test_a_runtime_that_dies_while_idle_is_seen_at_once() -> None:
    with CodeMode(tools=[add], spare=False) as session:
        assert session.run("add(1)").value == 2
        os.kill(session._conn.transport.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while session.status()["runtime_alive"] and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for a condition (the I/O thread reads EOF), bounded
        assert not session.status()["runtime_alive"]
        result = session.run("add(2)")
        assert result.ok and result.value == 3 and result.state_lost


def test_back_to_back_runs_and_calls_stay_in_order() -> None:
    with CodeMode(tools=[add]) as session:
        for i in range(200):
            assert session.run(f"add({i})" if i % 2 else "").value == (i + 1 if i % 2 else None)
        result = session.run("[add(i) for i in range(300)]")
        assert result.value == [i + 1 for i in range(300)]


def _plain(a: int, b: str = "x", *, c: float = 1.5, d: bool = False) -> None:
    """Plain parameters: calls with exactly these types skip binding and pydantic."""


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ([1], {}),
        ([1, "y"], {"c": 2.5, "d": True}),
        ([], {"a": 3, "d": True}),
        ([True], {}),  # a bool for an int: pydantic decides
        ([1], {"c": 2}),  # an int for a float: pydantic converts it
        (["1"], {}),  # a str for an int: pydantic's lax mode
        ([1, "y", 3.0], {}),  # too many positional arguments
        ([1], {"a": 2}),  # given twice
        ([], {}),  # missing
        ([1], {"e": 1}),  # unknown
        ([None], {}),
    ],
)
def test_the_plain_argument_path_agrees_with_pydantic(args: list, kwargs: dict) -> None:
    from codemode_jupyter.tools.tool import Tool, ToolArgumentError

    fast, slow = Tool(_plain), Tool(_plain)
    slow._exact = None  # the full path: bind, then the pydantic model

    def outcome(tool: Tool) -> object:
        try:
            call_args, call_kwargs = tool.validate(list(args), dict(kwargs))
        except ToolArgumentError as exc:
            return ("error", str(exc))
        return tool._signature.bind(*call_args, **call_kwargs).arguments

    got, expected = outcome(fast), outcome(slow)
    if isinstance(expected, dict):  # the fast path leaves defaults to the function
        defaults = {k: p.default for k, p in fast._signature.parameters.items()}
        got = {**defaults, **got} if isinstance(got, dict) else got
        expected = {**defaults, **expected}
        assert got == expected and all(type(got[k]) is type(expected[k]) for k in expected), (
            got,
            expected,
        )
    else:
        assert got == expected


def test_the_spare_taken_by_the_first_run_comes_back_once_the_session_is_quiet() -> None:
    with CodeMode(tools=[add]) as session:
        assert session.run("add(1)").value == 2
        assert session.status()["spare_runtime"] == "starting"  # waiting for quiet
        deadline = time.monotonic() + 30
        while session.status()["spare_runtime"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.02)  # waiting for a condition (the quiet timer, then the start), bounded
        assert session.status()["spare_runtime"] == "ready"
        fresh = session.run("add(2)", fresh=True)  # takes it: no jail to start
        assert fresh.ok and fresh.value == 3


def test_closing_while_the_refill_waits_for_quiet_leaves_no_thread() -> None:
    with CodeMode(tools=[add]) as session:
        session.run("add(1)")
        assert any(t.name == "codemode-spare-timer" for t in threading.enumerate())
    assert not any(t.name == "codemode-spare-timer" for t in threading.enumerate())


# --- output in bursts, and the plain `out` frame encoder -----------------------------------


OUT_TEXTS = [
    "",
    "plain",
    "two\nlines\n",
    "a\ttab",
    'a "quote"',
    "a back\\slash",
    "a del \x7f",
    "\r\n",
    "\x00\x1f\x7f",
    "\x1b[31mred\x1b[0m\n",
    "é 中 😀\n",
    "\ud800 lone surrogate\n",
    "x" * 70000 + "\n",
    ("y" * 1023 + "\n") * 8,
    "\n" * 3000,
    "z" * 3000 + "\t",
]


@pytest.mark.parametrize("text", OUT_TEXTS)
def test_an_out_frame_reads_back_as_its_json_form_on_either_path(text: str) -> None:
    """encode_out's frame, read by the host's plain path or by the JSON decoder, gives the text
    the JSON frame of the same text gives (lone surrogates as U+FFFD, as the host decodes)."""
    from codemode_jupyter.runtime import codemode_protocol as P

    R = _runtime_module("codemode_channel")

    for stream in (P.STDOUT, P.STDERR):
        want = P.decode(P.encode({"t": P.OUT, "s": stream, "d": text}))["d"]
        line = R.encode_out(stream, text).rstrip(b"\n")
        assert b"\n" not in line  # one frame, one line
        frame = P.decode(line)
        check_frame(frame)
        assert (frame["s"], P.out_text(frame)) == (stream, want)
        plain = P.decode_out(line)
        assert plain is None or plain == (stream, want)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("lines\nof text\n", True),
        ("é 中 😀\n" * 1000, True),
        ("a\ttab", False),
        ('a "quote"', False),
        ("a back\\slash" * 1000, False),
        ("a del \x7f", False),
    ],
)
def test_plain_text_goes_plain_and_anything_else_as_json(text: str, plain: bool) -> None:
    from codemode_jupyter.runtime import codemode_protocol as P

    R = _runtime_module("codemode_channel")

    line = R.encode_out(P.STDOUT, text).rstrip(b"\n")
    assert (P.decode_out(line) is not None) is plain
    assert line.startswith(P.OUT_PLAIN[P.STDOUT]) is plain


@pytest.mark.parametrize(
    "line",
    [
        b'{"t":"out","s":1,"n":"a","x":"b"}',  # another field: the JSON decoder reads it
        b'{"t":"out","s":1,"n":"a\\u0041"}',  # an escape
        b'{"t":"out","s":3,"n":"a"}',  # no such stream
        b'{"t":"out","s":1,"n":"}',  # cut short
        b'{"t":"out","s":1,"d":"a"}',
        b' {"t":"out","s":1,"n":"a"}',
    ],
)
def test_the_plain_reader_leaves_every_other_line_to_the_json_decoder(line: bytes) -> None:
    from codemode_jupyter.runtime import codemode_protocol as P

    assert P.decode_out(line) is None


def test_a_plain_frame_of_a_bad_runtime_is_only_text() -> None:
    """Raw control bytes (which JSON refuses) in a plain frame are taken as text: the runtime
    could have sent the same text escaped, so nothing is gained by refusing it."""
    from codemode_jupyter.runtime import codemode_protocol as P

    assert P.decode_out(b'{"t":"out","s":2,"n":"a\x01\x7fb\xff"}') == (2, "a\x01\nb\ufffd")


_TEXTS = ["", "plain", 'a "quote" \\ \n\t\r', "\x00\x1f\x7f", "é 中 😀", "\ud800 lone", "x" * 70000]


@pytest.mark.parametrize("text", _TEXTS)
def test_the_fast_run_frame_is_the_json_encoders_frame(text: str) -> None:
    from codemode_jupyter.runtime import codemode_protocol as P

    _run_frame = P.encode_run

    frame = {"t": P.RUN, "id": "0f3a9c", "code": text}
    assert _run_frame("0f3a9c", text) == P.encode(frame)
    if "\ud800" not in text:  # the runtime reads a lone surrogate as U+FFFD
        assert P.decode(_run_frame("0f3a9c", text).rstrip(b"\n")) == frame


@pytest.mark.parametrize("value", [*_TEXTS, 0, -7, 10**40, True, False, None, 1.5, [1], {"a": 1}])
def test_the_fast_result_frame_is_the_json_encoders_frame(value: object) -> None:
    from codemode_jupyter.engine.calls import encode_result
    from codemode_jupyter.model.result import ToolCall
    from codemode_jupyter.runtime import codemode_protocol as P

    call = ToolCall(id=1, name="add", args={}, round=1, result=value)
    expected = P.encode({"t": P.RESULT, "id": 12, "ok": True, "value": value})
    assert encode_result(call, 12) == expected


@pytest.mark.parametrize(
    "line",
    [b'{"t":"x"} trailing', b' {"t":"x"} ', b"[1]", b'{"t":NaN}', b'{"t"', b"", b'{"a":1}'],
)
def test_decoding_a_frame_takes_whitespace_around_it_and_refuses_anything_else(
    line: bytes,
) -> None:
    from codemode_jupyter.runtime import codemode_protocol as P

    if line.strip() == b'{"t":"x"}':
        assert P.decode(line) == {"t": "x"}
    else:
        with pytest.raises(ValueError):
            P.decode(line)


def test_a_burst_of_prints_arrives_whole_in_order_and_before_the_next_tool_call() -> None:
    order: list[str] = []

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Output):
            order.append(event.text)
        elif isinstance(event, ev.ToolCallStarted):
            order.append("<call>")

    code = (
        "for i in range(3000): print(i)\n"
        "add(1)\n"
        "for i in range(3000, 3010): print(i, end=' ')\n"
        "import sys; sys.stderr.write('err\\n')\n"
    )
    with CodeMode([add], spare=False) as cm:
        result = cm.run(code, on_event=on_event)
    assert result.ok, result.error
    assert result.stdout == "".join(f"{i}\n" for i in range(3000)) + "".join(
        f"{i} " for i in range(3000, 3010)
    )
    assert result.stderr == "err\n"
    before_call = "".join(order[: order.index("<call>")])
    assert before_call == "".join(f"{i}\n" for i in range(3000))


@pytest.mark.parametrize("read", [1, 7, 4096, 65536, 100_003, 1 << 20])
def test_the_line_splitter_gives_the_same_lines_for_reads_of_any_size(read: int) -> None:
    """Reads of 64 KiB and more are split with find() (output), smaller ones with split()."""
    from codemode_jupyter.runtime import codemode_protocol as P

    lines = [b"x" * n for n in (0, 1, 70_000, 5, 0, 200_000, 65_535, 3, 1_000_000, 9)]
    stream = b"\n".join(lines) + b"\nunfinished"
    splitter = P.LineSplitter(P.MAX_FRAME)
    got = []
    for start in range(0, len(stream), read):
        got += splitter.feed(stream[start : start + read])
    assert got == lines
    assert splitter.feed(b"\n") == [b"unfinished"]


def test_prints_of_threads_and_a_signal_handler_all_arrive_once_in_order() -> None:
    """Writes queue without the stream's lock while a burst waits: what several threads print
    and what a signal handler prints between (and inside) the main thread's writes and
    flushes all arrives, each write once and whole, each thread's in its order."""
    code = (
        "import itertools, signal, threading\n"
        "ticks = itertools.count(1)\n"
        "def tick(signum, frame):\n"
        "    print(f'<tick:{next(ticks)}>', end='')\n"
        "signal.signal(signal.SIGALRM, tick)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)\n"
        "def worker(name):\n"
        "    for i in range(3000): print(f'<{name}:{i}>')\n"
        "threads = [threading.Thread(target=worker, args=(f't{k}',)) for k in range(3)]\n"
        "for t in threads: t.start()\n"
        "for i in range(20000): print(f'<main:{i}>', end='' if i % 7 else '\\n')\n"
        "for t in threads: t.join()\n"
        "signal.setitimer(signal.ITIMER_REAL, 0)\n"
        "next(ticks) - 1\n"
    )
    with CodeMode([add], spare=False, max_output=10_000_000) as cm:
        result = cm.run(code, timeout=60)
    assert result.ok, result.error
    written: dict[str, list[int]] = {}
    for name, number in re.findall(r"<(\w+):(\d+)>", result.stdout):
        written.setdefault(name, []).append(int(number))
    # A handler may run inside another one: ticks are each there once, not always in order.
    assert sorted(written.pop("tick", [])) == list(range(1, result.value + 1))
    assert written == {"main": list(range(20000))} | {f"t{k}": list(range(3000)) for k in range(3)}
    newlines = 3 * 3000 + len(range(0, 20000, 7))
    assert re.sub(r"<\w+:\d+>", "", result.stdout) == "\n" * newlines


def test_the_last_line_of_a_burst_streams_while_the_program_goes_on() -> None:
    """The flush a burst waits for sends its last line too, with no later write or tool call
    (the run is cancelled once that line arrived; stuck, it would time out instead)."""
    arrived = threading.Event()
    seen: list[str] = []

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Output):
            seen.append(event.text)
            if event.text.endswith("4999\n"):
                arrived.set()

    code = "import time\nfor i in range(5000): print(i)\nwhile True: time.sleep(0.01)\n"
    with CodeMode([add], spare=False) as cm:

        def cancel_once_arrived() -> None:
            if arrived.wait(60):
                cm.cancel()

        canceller = threading.Thread(target=cancel_once_arrived)
        canceller.start()
        result = cm.run(code, on_event=on_event, timeout=60)
        canceller.join()
    assert result.status == "interrupted", result.status
    assert "".join(seen) == result.stdout == "".join(f"{i}\n" for i in range(5000))


_SESSION_SCRIPT = (
    "import sys\n"
    "from codemode_jupyter import CodeMode\n"
    "def add(a: int, b: int = 1) -> int:\n"
    "    return a + b\n"
)


def _run_in_a_fresh_python(body: str) -> None:
    """Run `body` after _SESSION_SCRIPT in a new python (what it imports is the point)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _SESSION_SCRIPT + body],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_session_whose_calls_pass_plain_values_never_loads_pydantic() -> None:
    """pydantic is most of the host's memory after import; it loads when a call needs it."""
    _run_in_a_fresh_python(
        "with CodeMode([add], spare=False) as cm:\n"
        "    assert cm.run('add(1, b=2)').value == 3\n"
        "    assert not [m for m in sys.modules if m.startswith('pydantic')], 'loaded early'\n"
        "    converted = cm.run('add(\"4\")')\n"
        "    refused = cm.run('add([1])')\n"
        "assert converted.value == 5, converted\n"
        "assert refused.error.type == 'ToolArgumentError', refused\n"
        "assert 'pydantic' in sys.modules\n"
    )


def test_a_session_of_sync_tools_loads_neither_asyncio_nor_the_pool_nor_openssl() -> None:
    """Those three are most of what an import of the package cost a python (asyncio with ssl
    11 MiB, hashlib's OpenSSL 4 MiB); they load when a session or a program needs them."""
    _run_in_a_fresh_python(
        "heavy = ('asyncio', 'ssl', 'hashlib', 'codemode_jupyter.pool.scheduler')\n"
        "with CodeMode([add], spare=False) as cm:\n"
        "    assert cm.run('print(add(1, b=2))').stdout == '3\\n'\n"
        "    assert not [m for m in heavy if m in sys.modules], 'loaded early'\n"
        "    async def later(x: int) -> int:\n"
        "        return x\n"
        "    assert cm.run('await later_async(4)', tools=[later]).value == 4\n"
        "assert 'asyncio' in sys.modules\n"
        "from codemode_jupyter import Pool, TaskResult\n"
        "assert Pool.__module__ == 'codemode_jupyter.pool.scheduler'\n"
    )


class _SpinProbe:
    """A shared_reads transport with nothing to read; its first look posts to the inbox, the
    way an async call's result lands while the run's thread spins (and the look takes the
    post's wake-up). A wait after that which sleeps, with the post unanswered, is the bug."""

    shared_reads = True
    batch_results = False

    def __init__(self) -> None:
        self.connection = None
        self.looks = 0
        self.slept_with_news = threading.Event()
        self.woken = threading.Event()

    def ready(self, timeout: float | None) -> bool:
        if timeout == 0:
            self.looks += 1
            if self.looks == 1 and self.connection is not None:
                from codemode_jupyter.engine.connection import Inbox

                self.connection.inbox.put((Inbox.CALL_DONE, "posted"))
            return False
        if self.connection is not None and not self.connection.inbox.empty():
            self.slept_with_news.set()
        self.woken.wait(timeout)
        self.woken.clear()
        return False

    def wake(self) -> None:
        self.woken.set()

    def read_nowait(self) -> bytes | None:
        return None

    def read(self) -> bytes:
        return b""

    def write(self, data: bytes) -> None:
        pass

    def separate(self) -> bool:
        return False

    def close_reader(self) -> None:
        pass

    def kill(self) -> None:
        self.woken.set()

    def exit_info(self) -> str:
        return ""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="spins need two CPUs")
def test_news_posted_while_the_runs_thread_spins_is_taken_without_sleeping() -> None:
    from codemode_jupyter.engine.connection import Inbox, RuntimeConnection

    probe = _SpinProbe()
    connection = RuntimeConnection(probe)
    try:
        connection.lead()
        probe.connection = connection
        assert connection.other_spin.limit > 0  # the wait below spins first
        assert connection.next_message(5.0) == (Inbox.CALL_DONE, "posted")
        assert probe.looks >= 1 and not probe.slept_with_news.is_set()
    finally:
        connection.follow()
        connection.close()


def mul(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def test_run_frames_carry_tools_and_limits_only_when_they_changed() -> None:
    """A run frame without tools or limits keeps the last run's: a program that rebinds a
    tool's name still finds the tool in the next run, a run's own tools replace the session's
    for that run only, and a reset namespace gets its stubs back."""
    with CodeMode(tools=[add], max_displays=3) as session:
        assert session.run("add(1, 2)").value == 3
        conn = session._conn
        sent: list[bytes] = []
        write = conn.transport.write
        conn.transport.write = lambda data: (sent.append(data), write(data))[1]
        session.run("add = 5")
        assert session.run("add(2, 3)").value == 5  # bound again, though the frame had no tools
        assert all(b'"tools"' not in data and b'"limits"' not in data for data in sent)
        per_run = session.run("mul(2, 3)", tools=[mul])
        assert per_run.value == 6, per_run.error
        assert session.run("'mul' in dir()").value is False
        assert session.run("add(3, 4)").value == 7
        session.reset()
        assert session.run("add(4, 5)").value == 9
        assert sum(b'"tools"' in data for data in sent) == 2  # the per-run tools, then back
        assert conn is session._conn  # one runtime throughout


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_runtime_sharing_the_host_threads_cpu_is_moved_off_it_and_keeps_its_cpus() -> None:
    """Spinning ends on one CPU only take turns; separate() moves the runtime's main thread
    to another CPU it may use, then gives it back every CPU it had."""
    from codemode_jupyter.backends.local.placement import current_cpu

    mine = os.sched_getaffinity(0)
    with CodeMode(tools=[add], spare=False) as session:
        assert session.run("add(1, 2)").value == 3
        transport = session._conn.transport
        placement = transport._placement
        runtime = placement._runtime_pid()
        assert runtime is not None and runtime != os.getpid()
        allowed = os.sched_getaffinity(runtime)
        cpu = min(allowed & mine)
        os.sched_setaffinity(runtime, {cpu})  # it runs its busy program on `cpu`
        busy = threading.Thread(
            target=session.run,
            args=("import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass",),
        )
        busy.start()
        os.sched_setaffinity(0, {cpu})  # and this thread shares that CPU
        try:
            with open(f"/proc/{runtime}/stat", "rb") as stat:
                deadline = time.monotonic() + 10
                while b") R " not in stat.read() and time.monotonic() < deadline:
                    stat.seek(0)
            os.sched_setaffinity(runtime, allowed)  # free to go, but nothing moves it
            assert current_cpu() == cpu and placement.runtime_cpu() == cpu
            assert transport.separate() is True
            assert placement.runtime_cpu() != cpu
            assert os.sched_getaffinity(runtime) == allowed
        finally:
            os.sched_setaffinity(0, mine)
            session.cancel()
            busy.join()
        assert session.last_result.status == "interrupted"
        assert session.run("sum(add(i, 1) for i in range(50))").value == 1275
