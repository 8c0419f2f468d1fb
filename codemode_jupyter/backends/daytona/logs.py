"""A Daytona session command's log stream, read as bytes.

The daemon writes each chunk of a command's output to the command's log behind a 3-byte marker
(stdout and stderr have one each) and sends the log over a websocket in reads of its own size
(1,024 bytes, padded with NULs), so a message may end anywhere: inside a marker, inside a UTF-8
character. The SDK's `get_session_command_logs_async` decodes as it demultiplexes and, when the
stream closes, hands the partial bytes it held to its callbacks as text ("\\x01\\x01", or U+FFFD),
which no count of characters can take back. So the SDK opens the websocket (its HTTP session,
its URL, its credentials) and the bytes are demultiplexed here, where the position in the stream
is exact: after a reconnect (the daemon replays the log from its start) reading resumes at the
very next byte, whatever was cut.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

STDOUT_MARK = b"\x01\x01\x01"
STDERR_MARK = b"\x02\x02\x02"
_MARKS = re.compile(re.escape(STDOUT_MARK) + b"|" + re.escape(STDERR_MARK))
_CHECK = 64  # bytes at the end of what was read that a replay must match


class LogStreamError(RuntimeError):
    """The log stream ended abnormally (worth a reconnect)."""


class LogReplayMismatch(LogStreamError):
    """A reconnected stream did not replay what was read before: resuming would corrupt."""


class LogDemux:
    """Splits the log stream back into stdout and stderr bytes, across reconnects.

    `feed` takes each message and returns the (stream, bytes) it completes: stream 1 is
    stdout, 2 stderr. Only a tail that may be the start of a marker is held back, nothing is
    decoded, and nothing is dropped: bytes before any marker count as stdout. `position` is
    how many bytes of the stream (NUL padding aside) were taken; after `restart`, that many
    bytes of the replay are passed over, and the last of them must match what was read.
    """

    def __init__(self) -> None:
        self.position = 0
        self._skip = 0  # bytes of the current replay still to pass over
        self._recent = b""  # the last bytes taken in, to check a replay against
        self._replayed = bytearray()  # the replay's bytes over that same stretch
        self._held = b""  # a tail that may be the first bytes of a marker
        self._stream = 1

    def restart(self) -> None:
        """A new connection: the daemon sends the log again from its first byte."""
        self._skip = self.position
        self._replayed = bytearray()

    def feed(self, message: bytes) -> list[tuple[int, bytes]]:
        # The daemon pads short reads with NULs; no stream byte is NUL (frames are JSON, and
        # markers and the runtime's stderr never hold one), so the padding goes, wherever it is.
        data = message.replace(b"\x00", b"")
        if self._skip:
            data = self._pass_replay(data)
        if not data:
            return []
        self.position += len(data)
        self._recent = (self._recent + data)[-_CHECK:]
        return self._split(self._held + data)

    def _pass_replay(self, data: bytes) -> bytes:
        start = self.position - self._skip  # the replay's offset of data[0]
        cut = min(self._skip, len(data))
        first = max(0, self.position - len(self._recent) - start)
        if first < cut:
            self._replayed += data[first:cut]
        self._skip -= cut
        if not self._skip and bytes(self._replayed) != self._recent:
            raise LogReplayMismatch(
                "the log stream replayed after a reconnect does not match "
                "what was read before it; output would be corrupted"
            )
        return data[cut:]

    def _split(self, buf: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        start = 0
        for mark in _MARKS.finditer(buf):
            if mark.start() > start:
                out.append((self._stream, buf[start : mark.start()]))
            self._stream = 1 if mark.group() == STDOUT_MARK else 2
            start = mark.end()
        held = _marker_start(buf, start)
        self._held = buf[len(buf) - held :]
        if len(buf) - held > start:
            out.append((self._stream, buf[start : len(buf) - held]))
        return out


def _marker_start(buf: bytes, start: int) -> int:
    """How many bytes at the end of buf[start:] may be the beginning of a marker."""
    for size in (2, 1):
        tail = buf[-size:]
        if len(buf) - start >= size and tail in (STDOUT_MARK[:size], STDERR_MARK[:size]):
            return size
    return 0


def supported(process: Any) -> bool:
    """Whether this SDK's process API opens log websockets the way `open_log_stream` uses."""
    api = getattr(process, "_api_client", None)
    return hasattr(process, "_open_ws") and hasattr(api, "_get_session_command_logs_serialize")


async def open_log_stream(process: Any, session_id: str, command_id: str) -> Any:
    """The command's follow-logs websocket, opened by the SDK (an AsyncProcess) the way its own
    `get_session_command_logs_async` opens it, and handed back unread."""
    _, url, headers, *_ = process._api_client._get_session_command_logs_serialize(
        session_id=session_id,
        command_id=command_id,
        follow=True,
        _request_auth=None,
        _content_type=None,
        _headers=None,
        _host_index=None,
    )
    return await process._open_ws(re.sub(r"^http", "ws", url), headers)


async def read_log_stream(ws: Any, on_message: Callable[[bytes], None]) -> None:
    """Hand each message to `on_message` until the stream ends. Returns on a clean close
    (1000); raises LogStreamError on any other end. Closes the websocket either way."""
    from aiohttp import WSMsgType

    try:
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.BINARY:
                on_message(msg.data)
            elif msg.type == WSMsgType.TEXT:
                on_message(msg.data.encode("utf-8"))
            elif msg.type == WSMsgType.ERROR:
                raise LogStreamError(f"log stream error: {ws.exception()}")
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                code = msg.data if msg.type == WSMsgType.CLOSE else ws.close_code
                if code in (None, 1000):
                    return
                reason = msg.extra if msg.type == WSMsgType.CLOSE and msg.extra else "closed"
                raise LogStreamError(f"log stream {reason} (close code {code})")
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
