"""Input requests that a retry delivers twice (a 504 after the toolbox wrote the input).

The real `daytona` SDK against the loopback server, whose `served` faults carry a request out
and then answer 504, as a gateway that timed out on a request that did succeed behind it. The
backend retries it; the runtime must take each batch of frames once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST

from codemode_jupyter import CodeMode, Pool
from codemode_jupyter.runtime import codemode_protocol as P
from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("daytona_faults_cleared")]

KEY = "loopback-replay-key"


class Counted:
    """A host tool that counts its calls (and may run a hook on one of them)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.on_call: dict[int, object] = {}

    def add(self, a: int, b: int) -> int:
        """Add two numbers."""
        self.calls.append((a, b))
        hook = self.on_call.pop(len(self.calls), None)
        if callable(hook):
            hook()
        return a + b


@pytest.fixture
def tool() -> Counted:
    return Counted()


@pytest.fixture
def cm(server: DaytonaLoopbackServer, tool: Counted) -> Iterator[CodeMode]:
    with CodeMode(
        tools=[tool.add], backend="daytona", api_url=server.api_url, api_key=KEY, retry=FAST
    ) as session:
        assert session.run("1").ok  # a live runtime: the fault hits the run under test
        yield session


def replay_next_input(server: DaytonaLoopbackServer, times: int = 1) -> None:
    """The next `times` input requests are written to the runtime, then answered 504."""
    server.inject("command.input", status=504, served=True, times=times)


def test_a_run_delivered_twice_runs_once(
    server: DaytonaLoopbackServer, cm: CodeMode, tool: Counted
) -> None:
    replay_next_input(server)
    result = cm.run("print('start')\nx = add(1, 2)\nprint('got', x)\nx")
    assert result.status == "ok", result.error
    assert result.stdout == "start\ngot 3\n"
    assert result.value == 3
    assert tool.calls == [(1, 2)]
    assert cm.status()["inputs_resent"] == "1"  # the replayed request, counted as one
    # Nothing of a second execution leaks into the next run.
    after = cm.run("print('next')")
    assert (after.status, after.stdout) == ("ok", "next\n")
    assert tool.calls == [(1, 2)]


def test_a_result_delivered_twice_is_not_the_answer_to_a_later_call(
    server: DaytonaLoopbackServer, cm: CodeMode, tool: Counted
) -> None:
    # The first call's result goes out in the request made right after the tool returns.
    tool.on_call[1] = lambda: replay_next_input(server)
    result = cm.run("a = add(1, 2)\nb = add(10, 20)\nc = add(100, 200)\nprint(a, b, c)\n[a, b, c]")
    assert result.status == "ok", result.error
    assert result.value == [3, 30, 300]
    assert result.stdout == "3 30 300\n"
    assert tool.calls == [(1, 2), (10, 20), (100, 200)]
    assert cm.status()["inputs_resent"] == "1"


def test_a_file_delivered_twice_arrives_once(
    server: DaytonaLoopbackServer, cm: CodeMode, tmp_path: Path
) -> None:
    data = tmp_path / "data.bin"
    content = os.urandom(2 * P.CHUNK + 10)  # three put frames, each one to be replayed
    data.write_bytes(content)
    replay_next_input(server, times=3)  # within one request's retries, however it batches
    result = cm.run(
        "import hashlib\nprint(hashlib.sha256(open('data.bin', 'rb').read()).hexdigest())",
        files=[str(data)],
    )
    server.clear_faults()
    assert result.status == "ok", result.error
    assert result.stdout == hashlib.sha256(content).hexdigest() + "\n"
    after = cm.run("print('next')")
    assert (after.status, after.stdout) == ("ok", "next\n")


def test_the_task_after_a_replayed_input_runs_at_once_on_the_same_runtime(
    server: DaytonaLoopbackServer, tool: Counted
) -> None:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    with Pool(
        tools=[tool.add],
        backend="daytona",
        api_url=server.api_url,
        api_key=KEY,
        retry=FAST,
        size=1,
        start_backoff=0.05,
    ) as pool:
        replay_next_input(server)  # the first task's run frame
        results = pool.map("print('task', x)\nadd(x, 1)", inputs=[{"x": 1}, {"x": 2}])
        summary = pool.summary()
    assert [(r.status, r.value, r.result.stdout) for r in results] == [
        ("ok", 2, "task 1\n"),
        ("ok", 3, "task 2\n"),
    ]
    assert [len(r.attempts) for r in results] == [1, 1]
    assert tool.calls == [(1, 1), (2, 1)]
    # The second task's reset was answered: its runtime was not given up and replaced.
    assert server.counts["session.exec"] == 1
    assert summary["sandboxes_replaced"] == 0


def test_sequenced_lines_take_each_batch_once_however_the_reads_split_it() -> None:
    batches = [P.batch_line(n) + b'{"t":"reset"}\n' * n for n in (1, 2, 3)]
    # Batch 2 delivered twice in a row, batch 1 again late (a slow first try), all split.
    stream = batches[0] + batches[1] + batches[1] + batches[2] + batches[0]
    lines = P.Sequenced(P.LineSplitter())
    taken = [line for i in range(0, len(stream), 5) for line in lines.feed(stream[i : i + 5])]
    assert taken == [b'{"t":"reset"}'] * 6
    with pytest.raises(ValueError):
        lines.feed(b"#x\n")
