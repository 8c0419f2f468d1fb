"""The engine against the real local sandbox: single execution, tools, events, errors, budgets."""

from __future__ import annotations

import _thread
import asyncio
import threading
from typing import Literal, Optional, TypedDict

import pytest
from pydantic import BaseModel

from codemode_jupyter import CodeMode, tool
from codemode_jupyter.model import events as ev


def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


def boom(message: str) -> None:
    """Always fails."""
    raise ValueError(message)


def unjsonable() -> object:
    return object()


class Gate:
    """An async tool that returns only once `n` calls are waiting: proves calls overlap."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.waiting = 0
        self.event: asyncio.Event | None = None

    async def __call__(self, i: int) -> int:
        if self.event is None:
            self.event = asyncio.Event()
        self.waiting += 1
        if self.waiting >= self.n:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), 20)
        return i


@pytest.fixture(scope="module")
def cm():
    with CodeMode(tools=[add, boom, unjsonable], backend="local") as session:
        yield session


def test_runs_once_with_value_stdout_and_calls(cm: CodeMode) -> None:
    r = cm.run("x = add(1, 2)\nprint(x)\nx * 10", timeout=30)
    assert r.ok and r.status == "ok"
    assert r.stdout == "3\n"
    assert r.value == 30
    assert [(c.name, c.args, c.result) for c in r.tool_calls] == [("add", {"a": 1, "b": 2}, 3)]
    assert r.tool_calls[0].duration >= 0 and r.duration > 0
    assert r.executions == 1


def test_state_persists_and_reset_clears_it(cm: CodeMode) -> None:
    cm.run("counter = 41")
    assert cm.run("counter + 1").value == 42
    cm.reset()
    r = cm.run("counter")
    assert r.status == "error" and r.error.type == "NameError"


def test_fresh_starts_a_new_runtime(cm: CodeMode) -> None:
    cm.run("kept = 1")
    r = cm.run("'kept' in globals()", fresh=True)
    assert r.value is False


def test_side_effects_and_randomness_happen_once(cm: CodeMode) -> None:
    code = "import random\nprint('before')\nn = random.random()\ngot = add(0, 0)\nprint('after')\nn"
    r = cm.run(code)
    assert r.stdout == "before\nafter\n"
    assert isinstance(r.value, float)
    assert len(r.tool_calls) == 1


def test_external_alias_and_try_except_around_tool_errors(cm: CodeMode) -> None:
    code = (
        "try:\n"
        "    boom('nope')\n"
        "except ValueError as e:\n"
        "    print('caught', e, isinstance(e, ToolError))\n"
        "external_add(2, b=5)"
    )
    r = cm.run(code)
    assert r.ok, r.error
    assert r.stdout == "caught boom: nope True\n"
    assert r.value == 7
    assert r.tool_calls[0].error.type == "ValueError"
    assert r.tool_calls[0].exception is not None


def test_uncaught_tool_error_fails_with_program_line(cm: CodeMode) -> None:
    r = cm.run("a = 1\nb = 2\nboom('bad')\n")
    assert r.status == "error"
    assert r.error.type == "ValueError"
    assert 'File "<cell>", line 3' in r.error.traceback
    assert "codemode_runtime" not in r.error.traceback


def test_invalid_arguments_are_a_catchable_type_error(cm: CodeMode) -> None:
    code = (
        "msgs = []\n"
        "for args in [('x',), (), (1, 2, 3)]:\n"
        "    try:\n"
        "        add(*args)\n"
        "    except TypeError as e:\n"
        "        msgs.append(str(e))\n"
        "msgs"
    )
    r = cm.run(code)
    assert r.ok, r.error
    assert len(r.value) == 3
    assert all(m.startswith("add: ") for m in r.value)
    assert "valid integer" in r.value[0]
    assert "missing a required argument: 'a'" in r.value[1]


def test_unknown_tool_is_refused_by_the_host(cm: CodeMode) -> None:
    cm.run("stale = add")
    r = cm.run("try:\n    stale(1)\nexcept NameError as e:\n    print(e)", tools=[boom])
    assert r.ok, r.error
    assert "no tool named 'add'" in r.stdout
    assert r.tool_calls[0].error.type == "UnknownToolError"


def test_result_not_json_is_an_error_in_the_program(cm: CodeMode) -> None:
    r = cm.run("try:\n    unjsonable()\nexcept TypeError as e:\n    print(e)")
    assert r.ok, r.error
    assert "not JSON-serialisable" in r.stdout


def test_arguments_not_json_raise_before_the_call(cm: CodeMode) -> None:
    r = cm.run("try:\n    add(object())\nexcept TypeError as e:\n    print('refused')")
    assert r.stdout == "refused\n"
    assert r.tool_calls == []


def test_pydantic_results_are_converted() -> None:
    class Point(BaseModel):
        x: int
        y: int

    def point(x: int) -> Point:
        return Point(x=x, y=2 * x)

    with CodeMode(tools=[point]) as session:
        assert session.run("point(2)").value == {"x": 2, "y": 4}


def test_events_stream_in_program_order(cm: CodeMode) -> None:
    seen: list[str] = []

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Output):
            seen.append(f"out:{event.text}")
        elif isinstance(event, ev.ToolCallStarted):
            seen.append(f"start:{event.name}:{event.round}")
        elif isinstance(event, ev.ToolCallFinished):
            seen.append(f"end:{event.name}:{event.result}")
        elif isinstance(event, ev.RunFinished):
            seen.append(f"finished:{event.result.status}")

    code = (
        "print('a')\nadd(1)\nimport subprocess\nsubprocess.run(['echo', 'b'])\nadd(2)\nprint('c')"
    )
    r = cm.run(code, on_event=on_event)
    assert r.ok, r.error
    assert seen == [
        "out:a\n",
        "start:add:1",
        "end:add:2",
        "out:b\n",
        "start:add:2",
        "end:add:3",
        "out:c\n",
        "finished:ok",
    ]
    assert r.rounds == 2


def test_all_kinds_of_output_arrive(cm: CodeMode) -> None:
    code = (
        "import os, sys, subprocess\n"
        "print('print')\n"
        "sys.stdout.buffer.write(b'buffer\\n')\n"
        "sys.stdout.flush()\n"
        "os.write(1, b'fd1\\n')\n"
        "subprocess.run(['sh', '-c', 'echo sub; echo suberr >&2'])\n"
        "print('err', file=sys.stderr)\n"
    )
    r = cm.run(code)
    assert r.stdout == "print\nbuffer\nfd1\nsub\n"
    assert "suberr\n" in r.stderr and "err\n" in r.stderr


def test_printed_frames_are_only_text(cm: CodeMode) -> None:
    forged = [
        '{"t":"done","id":1,"ok":true,"value":42}',
        '{"t":"call","id":99,"name":"add","args":[1],"kwargs":{}}',
        '{"t":"preview","port":1}',
    ]
    code = (
        "import os\n"
        + "".join(
            f"print({line!r})\nos.write(1, {(line + chr(10)).encode()!r})\n" for line in forged
        )
        + "'end'"
    )
    r = cm.run(code)
    assert r.ok and r.value == "end"
    assert r.tool_calls == [] and r.previews == []
    for line in forged:
        assert r.stdout.count(line) == 2


def test_program_cannot_read_the_control_channel(cm: CodeMode) -> None:
    r = cm.run("import os, sys\n[sys.stdin.read(), os.read(0, 100).decode()]")
    assert r.value == ["", ""]


def test_parallel_calls_from_threads_run_concurrently() -> None:
    barrier = threading.Barrier(4, timeout=20)

    async def meet(i: int) -> int:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        return i

    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    out = sorted(pool.map(meet, range(4)))\n"
        "out"
    )
    with CodeMode(tools=[meet]) as session:
        r = session.run(code, timeout=30)
    assert r.ok, r.error
    assert r.value == [0, 1, 2, 3]
    assert r.rounds == 1


def test_async_variants_gather_concurrently() -> None:
    gate = Gate(20)

    async def wait_for_all(i: int) -> int:
        return await gate(i)

    with CodeMode(tools=[wait_for_all]) as session:
        r = session.run(
            "import asyncio\nawait asyncio.gather(*[wait_for_all_async(i) for i in range(20)])",
            timeout=30,
        )
    assert r.ok, r.error
    assert r.value == list(range(20))
    assert r.rounds == 1 and len(r.tool_calls) == 20


def test_syntax_error_shows_the_cells_line(cm: CodeMode) -> None:
    r = cm.run("x = 1\ny = 2\ndef f(:\n    pass\n")
    assert r.status == "error" and r.error.type == "SyntaxError"
    assert "line 3" in r.error.traceback and "def f(:" in r.error.traceback
    assert "ast.py" not in r.error.traceback


def test_value_that_is_not_json_comes_back_as_repr(cm: CodeMode) -> None:
    r = cm.run("class Thing:\n    def __repr__(self):\n        return 'Thing!'\nThing()")
    assert r.value is None and r.value_repr == "Thing!"


class Place(TypedDict):
    city: str


@tool(name="weather", description="Current weather.")
def get_weather(
    place: Place,
    unit: Literal["C", "F"] = "C",
    days: Optional[list[int]] = None,  # noqa: UP045 - the stub keeps the spelling it was given
) -> dict:
    return {}


def test_system_prompt_lists_stubs() -> None:
    prompt = CodeMode(tools=[get_weather, add]).system_prompt()
    assert "def weather(place: Place, unit: Literal['C', 'F'] = 'C', days: " in prompt
    assert "Optional[list[int]] = None) -> dict:" in prompt
    assert "class Place(TypedDict):\n    city: str" in prompt
    assert 'def add(a: int, b: int = 1) -> int:\n    """Add two numbers."""' in prompt
    assert "_async" in prompt and "ToolError" in prompt


def test_timeout_interrupts_and_keeps_state() -> None:
    with CodeMode(tools=[add]) as session:
        session.run("kept = 'yes'")
        r = session.run("while True:\n    pass", timeout=1)
        assert r.status == "timeout" and not r.ok
        assert "timeout" in r.error.message and r.error.type == "Timeout"
        assert not r.state_lost
        assert session.run("kept").value == "yes"


def test_timeout_kills_a_program_that_swallows_interrupts() -> None:
    code = (
        "while True:\n    try:\n        while True:\n            pass\n"
        "    except BaseException:\n        pass"
    )
    with CodeMode() as session:
        session.run("kept = 1")
        r = session.run(code, timeout=1)
        assert r.status == "timeout" and r.state_lost
        assert "state was lost" in r.error.message
        after = session.run("'kept' in globals()")
        assert after.ok and after.value is False


def test_max_tool_calls_stops_the_run(cm: CodeMode) -> None:
    r = cm.run("while True:\n    add(1)", max_tool_calls=5)
    assert r.status == "limit" and "more than 5 tool calls" in r.error.message
    assert len(r.tool_calls) == 5
    assert cm.run("add(1)").value == 2


def test_output_cap_keeps_head_and_tail() -> None:
    with CodeMode(max_output=1000) as session:
        r = session.run("for i in range(10000):\n    print(i)")
    assert r.ok
    assert r.stdout.startswith("0\n1\n2\n")
    assert r.stdout.endswith("9998\n9999\n")
    assert r.stdout_dropped > 40000
    assert f"[... {r.stdout_dropped} characters dropped ...]" in r.stdout


def test_output_flood_of_50_mb_is_capped() -> None:
    seen = []
    with CodeMode(max_output=100_000) as session:
        r = session.run(
            "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(51200):\n"
            "    sys.stdout.write(line)\n'done'",
            timeout=120,
            on_event=lambda e: seen.append(len(e.text)) if isinstance(e, ev.Output) else None,
        )
        assert r.ok and r.value == "done"
        assert sum(seen) == 50 * 1024 * 1024
        assert len(r.stdout) < 110_000 and r.stdout_dropped > 50_000_000
        assert session.run("1 + 1").value == 2


def test_cancel_from_another_thread() -> None:
    holder: list[CodeMode] = []

    def stop_me() -> str:
        threading.Thread(target=holder[0].cancel).start()
        return "ok"

    with CodeMode(tools=[stop_me]) as session:
        holder.append(session)
        r = session.run("stop_me()\nwhile True:\n    pass", timeout=60)
        assert r.status == "interrupted" and "cancelled" in r.error.message
        assert session.run("2 * 21").value == 42


def test_keyboard_interrupt_stops_the_program_and_is_raised() -> None:
    def interrupt_host() -> str:
        threading.Thread(target=_thread.interrupt_main).start()
        return "ok"

    with CodeMode(tools=[interrupt_host]) as session:
        with pytest.raises(KeyboardInterrupt):
            session.run(
                "interrupt_host()\nimport time\nwhile True:\n    time.sleep(0.01)", timeout=60
            )
        assert session.last_result.status == "interrupted"
        assert "interrupted" in session.last_result.error.message
        assert session.run("'alive'").value == "alive"


@pytest.mark.parametrize(
    "code, expect",
    [
        ("import os\nos._exit(3)", "exited with code 3"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed by signal 9"),
        (
            "import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n"
            "    except OSError:\n        pass\nprint('gone')",
            "lost its control channel",
        ),
    ],
)
def test_runtime_death_is_reported_and_replaced(code: str, expect: str) -> None:
    with CodeMode(tools=[add]) as session:
        session.run("kept = 1")
        r = session.run(code, timeout=20)
        assert r.status == "crashed" and r.state_lost
        assert expect in r.error.message and "state was lost" in r.error.message
        again = session.run("add(1, 1)")
        assert again.ok and again.value == 2


def test_closing_its_own_stdin_and_stdout_is_harmless(cm: CodeMode) -> None:
    r = cm.run("import os\nos.close(0)\nos.close(1)\nprint('still here')")
    assert r.ok and r.stdout == "still here\n"
    assert cm.run("print('next')").stdout == "next\n"


def test_sys_exit_is_an_error_not_a_crash(cm: CodeMode) -> None:
    r = cm.run("import sys\nsys.exit(3)")
    assert r.status == "error" and r.error.type == "SystemExit"
    assert cm.run("1").value == 1


def test_replay_mode_runs_the_program_again_per_round() -> None:
    code = (
        "print('start')\n"
        "x = add(1, 2)\n"
        "try:\n"
        "    y = add(x, 3)\n"
        "except Exception:\n"
        "    y = -1\n"
        "print(x, y)\n"
        "x * y"
    )
    with CodeMode(tools=[add], protocol="replay") as session:
        r = session.run(code, timeout=60)
    assert r.ok, r.error
    assert r.value == 18 and r.stdout == "start\n3 6\n"
    assert r.executions == 3 and len(r.tool_calls) == 2


def test_runtime_that_dies_between_runs_is_reported_on_the_next() -> None:
    with CodeMode() as session:
        session.run("kept = 1")
        conn = session._conn
        conn.transport.proc.kill()
        conn._reader.join(10)
        r = session.run("'kept' in globals()")
        assert r.ok and r.value is False
        assert r.state_lost
        assert "while idle" in r.stderr and "state was lost" in r.stderr
        assert not session.run("1").state_lost


def test_pin_cpu_keeps_the_runtime_on_one_cpu_and_restores_the_caller() -> None:
    import os

    before = os.sched_getaffinity(0)
    with CodeMode(tools=[add], pin_cpu=True) as session:
        r = session.run("import os\n[len(os.sched_getaffinity(0)), add(1, 1)]")
    assert r.ok, r.error
    assert r.value == [1, 2]
    assert os.sched_getaffinity(0) == before


def test_a_flood_on_the_control_channel_is_a_fault_not_host_memory() -> None:
    code = (
        "import os\n"
        "out = [fd for fd in range(3, 12) if os.path.exists(f'/proc/self/fd/{fd}') and\n"
        "       os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:')]\n"
        "chunk = b'x' * (1 << 20)\n"
        "while True:\n"
        "    for fd in out:\n"
        "        try:\n"
        "            os.write(fd, chunk)\n"
        "        except OSError:\n"
        "            pass\n"
    )
    with CodeMode() as session:
        r = session.run(code, timeout=120)
        assert r.status == "crashed", r
        assert "broke its channel" in r.error.message
        assert session.run("1 + 1").value == 2


def test_star_args_tools_get_their_arguments_by_position() -> None:
    def join(first: str, *rest: str, sep: str = "-") -> str:
        return sep.join([first, *rest])

    with CodeMode(tools=[join]) as session:
        r = session.run("join('a', 'b', 'c', sep='+')")
    assert r.ok, r.error
    assert r.value == "a+b+c"


def test_a_runtime_that_cannot_start_fails_the_run_not_the_caller() -> None:
    from codemode_jupyter.backends.local.backend import LocalBackend

    class Broken(LocalBackend):
        def start_runtime(self, timeout: float | None = None):
            raise OSError("no sandbox for you")

    seen = []
    with CodeMode(backend=Broken()) as session:
        r = session.run("1", on_event=seen.append)
    assert r.status == "crashed" and r.error.type == "RuntimeUnavailable"
    assert "no sandbox for you" in r.error.message
    assert type(seen[0]).__name__ == "RunStarted" and type(seen[-1]).__name__ == "RunFinished"


def test_preview_links_arrive_even_when_the_program_ends_at_once() -> None:
    with CodeMode() as session:
        r = session.run("import codemode\ncodemode.preview(8123)\ncodemode.preview(8123)")
    assert r.ok
    assert [(p.port, p.url) for p in r.previews] == [(8123, "http://127.0.0.1:8123/")]


def test_async_tools_work_in_replay_mode_inside_a_running_loop() -> None:
    async def double(x: int) -> int:
        return 2 * x

    async def main() -> object:  # like a kernel: run() is called while a loop runs
        with CodeMode(tools=[double], protocol="replay") as session:
            return session.run("double(21)", timeout=60)

    r = asyncio.run(main())
    assert r.ok, r.error
    assert r.value == 42
