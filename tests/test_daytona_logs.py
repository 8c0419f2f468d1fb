"""The Daytona log stream: messages cut anywhere, and reconnects that resume at the exact byte.

The end-to-end tests drive the real `daytona` SDK against the loopback server, which sends
each command's log as the daemon does (1,024-byte reads, NUL-padded) and drops the websocket
at the awkward places injected here: inside a stream marker, inside a UTF-8 character, right
before a tool call or the completion frame.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator

import pytest

from codemode_jupyter import CodeMode
from codemode_jupyter.backends.daytona.logs import (
    STDERR_MARK,
    STDOUT_MARK,
    LogDemux,
    LogReplayMismatch,
)
from codemode_jupyter.backends.daytona.retries import RetryPolicy
from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

pytestmark = pytest.mark.timeout(60)

KEY = "loopback-logs-key"
FAST = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05, request_timeout=5.0)


def _before_frame(kind: str) -> re.Pattern[bytes]:
    """The stdout marker of a log chunk that starts with a `kind` frame."""
    return re.compile(re.escape(STDOUT_MARK) + rb'(?=\{[^\n]*"t":"' + kind.encode() + b'")')


# --- the demultiplexer, on bytes ------------------------------------------------------------------


def _log(chunks: list[tuple[int, bytes]]) -> bytes:
    return b"".join((STDOUT_MARK if s == 1 else STDERR_MARK) + d for s, d in chunks)


def _collect(out: dict[int, bytearray], pieces: list[tuple[int, bytes]]) -> None:
    for stream, data in pieces:
        out[stream] += data


CHUNKS = [
    (1, '{"t":"out","d":"café"}\n'.encode()),
    (2, "tracé ✓\n".encode()),
    (1, '{"t":"call","x":"🙂"}\n'.encode()),
    (1, b'{"t":"done"}\n'),
    (2, b"codemode-runtime-exit 0\n"),
]


def test_demux_splits_streams_whatever_the_message_boundaries() -> None:
    log = _log(CHUNKS)
    for size in range(1, 12):
        demux, out = LogDemux(), {1: bytearray(), 2: bytearray()}
        for i in range(0, len(log), size):
            _collect(out, demux.feed(log[i : i + size] + b"\x00" * 3))  # padding is dropped
        assert bytes(out[1]) == b"".join(d for s, d in CHUNKS if s == 1), size
        assert bytes(out[2]) == b"".join(d for s, d in CHUNKS if s == 2), size


def test_demux_resumes_at_the_exact_byte_after_a_reconnect_anywhere() -> None:
    """The stream is cut at every byte (inside markers and characters included); the replay
    that follows is read from the start and delivers exactly the rest."""
    log = _log(CHUNKS)
    rng = random.Random(8)
    for cut in range(1, len(log)):
        demux, out = LogDemux(), {1: bytearray(), 2: bytearray()}
        _collect(out, demux.feed(log[:cut]))
        demux.restart()  # the connection died; the daemon replays the log from its start
        step = rng.randint(1, 40)
        for i in range(0, len(log), step):
            _collect(out, demux.feed(log[i : i + step]))
        assert bytes(out[1]) == b"".join(d for s, d in CHUNKS if s == 1), cut
        assert bytes(out[2]) == b"".join(d for s, d in CHUNKS if s == 2), cut


def test_demux_never_drops_bytes_before_a_marker() -> None:
    demux = LogDemux()
    assert demux.feed(b"unmarked\n" + STDERR_MARK + b"err") == [(1, b"unmarked\n"), (2, b"err")]


def test_a_replay_that_differs_is_refused() -> None:
    demux = LogDemux()
    demux.feed(STDOUT_MARK + b'{"t":"out","d":"one"}\n')
    demux.restart()
    with pytest.raises(LogReplayMismatch):
        demux.feed(STDOUT_MARK + b'{"t":"out","d":"two"}\n')


# --- end to end: the real SDK, the loopback server, a real runtime --------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[DaytonaLoopbackServer]:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    with DaytonaLoopbackServer(api_key=KEY, log_read_size=1024) as srv:
        yield srv


@pytest.fixture
def cm(server: DaytonaLoopbackServer) -> Iterator[CodeMode]:
    server.clear_faults()

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    with CodeMode(
        tools=[add], backend="daytona", api_url=server.api_url, api_key=KEY, retry=FAST, timeout=20
    ) as session:
        assert session.run("0").ok  # a warm runtime: the cuts land in what comes next
        server.reset_counts()
        yield session
    server.clear_faults()


def _cut(
    server: DaytonaLoopbackServer, inside: bytes | re.Pattern[bytes], offset: int, times: int = 2
) -> None:
    server.drop_log_streams(times=times, inside=inside, offset=offset)


# (pattern, offset, cuts): every line has its characters, so two cuts always find a place;
# how many chunks (each behind a marker) the lines come in is up to the pipes, so one cut there.
AWKWARD = {
    "stdout marker, 1 byte in": (STDOUT_MARK, 1, 1),
    "stdout marker, 2 bytes in": (STDOUT_MARK, 2, 1),
    "e-acute, 1 byte in": ("é".encode(), 1, 2),
    "emoji, 1 byte in": ("🙂".encode(), 1, 2),
    "emoji, 3 bytes in": ("🙂".encode(), 3, 2),
}


@pytest.mark.parametrize("where", list(AWKWARD))
def test_sixty_lines_survive_reconnects_cut_at_awkward_bytes(
    server: DaytonaLoopbackServer, cm: CodeMode, where: str
) -> None:
    inside, offset, cuts = AWKWARD[where]
    _cut(server, inside, offset, cuts)
    result = cm.run("for i in range(60):\n    print(f'line {i} café 🙂')")
    assert result.ok, result.error
    assert result.stdout == "".join(f"line {i} café 🙂\n" for i in range(60))
    assert server.log_drops_pending == 0  # the cuts happened
    assert server.counts["command.logs.ws"] == cuts  # a reconnect after each


@pytest.mark.parametrize("offset", [1, 2])
def test_tool_calls_survive_a_cut_inside_the_marker_before_them(
    server: DaytonaLoopbackServer, cm: CodeMode, offset: int
) -> None:
    _cut(server, _before_frame("call"), offset, times=3)
    result = cm.run("r = [add(i, i) for i in range(20)]\nprint('sum', sum(r))\nsum(r)")
    assert result.ok, result.error
    assert result.value == 380 and result.stdout == "sum 380\n"
    assert len(result.tool_calls) == 20
    assert server.log_drops_pending == 0


@pytest.mark.parametrize(
    "inside,offset",
    [(_before_frame("done"), 1), (_before_frame("done"), 2), ("é".encode(), 1)],
    ids=["marker-1", "marker-2", "e-acute-1"],
)
def test_the_completion_frame_survives_a_cut(
    server: DaytonaLoopbackServer, cm: CodeMode, inside: bytes | re.Pattern[bytes], offset: int
) -> None:
    _cut(server, inside, offset, times=1)
    result = cm.run("'café'")
    after = cm.run("'still here'")
    assert result.ok, result.error
    assert result.value == "café" and not result.state_lost
    assert after.ok and after.value == "still here" and not after.state_lost
    assert server.log_drops_pending == 0


def test_the_runtime_exit_is_seen_through_a_cut_inside_the_stderr_marker(
    server: DaytonaLoopbackServer, cm: CodeMode
) -> None:
    _cut(server, STDERR_MARK, 2, times=1)
    result = cm.run("import os\nos._exit(3)")
    assert result.status == "crashed" and result.state_lost
    assert "exited with code 3" in result.error.message
    assert server.log_drops_pending == 0
    assert cm.run("1 + 1").value == 2


def test_drops_with_progress_between_them_never_end_the_run(
    server: DaytonaLoopbackServer, cm: CodeMode
) -> None:
    """Only drops in a row count against the retry budget (4 here): a long session loses its
    stream now and then, and each reconnect that reads on starts the count again."""
    _cut(server, "é".encode(), 1, times=10)
    result = cm.run("for i in range(60):\n    print(f'line {i} café')")
    assert result.ok, result.error
    assert result.stdout == "".join(f"line {i} café\n" for i in range(60))
    assert server.log_drops_pending == 0
