"""The host's end of one live runtime: its transport, and the I/O thread that routes frames.

Output frames go straight to the current run's sink (so streaming never waits for a tool);
every other frame is queued in `inbox` for the thread that runs the program's tools.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Protocol

from .backends import Transport
from .runtime import codemode_protocol as P


class OutputSink(Protocol):
    def output(self, stream: int, text: str) -> None: ...


class RuntimeConnection:
    """One live runtime: its transport and the I/O thread that routes its frames."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.alive = True
        self.fault = ""
        self.info: dict[str, Any] = {}
        self.sink: OutputSink | None = None
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._late: list[tuple[int, str]] = []
        self._reader = threading.Thread(target=self._read_loop, name="codemode-io", daemon=True)
        self._reader.start()

    def send(self, frame: dict) -> None:
        self.transport.write(P.encode(frame))

    def _read_loop(self) -> None:
        splitter = P.LineSplitter(P.MAX_FRAME)
        while True:
            data = self.transport.read()
            if not data:
                break
            try:
                lines = splitter.feed(data)
            except P.FrameTooLarge as exc:
                self.fault = f"the runtime broke its channel ({exc})"
                self.transport.kill()  # the host's memory is not the sandbox's to fill
                break
            for line in lines:
                self._route(line)
        self.alive = False
        self.inbox.put(("eof", None))

    def _route(self, line: bytes) -> None:
        try:
            frame = P.decode(line)
        except ValueError:
            return  # not a frame: a hostile or broken runtime gets no say
        kind = frame["t"]
        if kind == P.OUT:
            sink = self.sink
            text = frame.get("d", "")
            stream = 2 if frame.get("s") == P.STDERR else 1
            if sink is None:
                self._late.append((stream, text))
            else:
                sink.output(stream, text)
        elif kind == P.READY:
            self.info = frame
        else:
            self.inbox.put((kind, frame))

    def take_late_output(self) -> list[tuple[int, str]]:
        """Output that arrived between runs (background threads), for the next run to show."""
        late, self._late = self._late, []
        return late

    def close(self) -> None:
        self.transport.kill()
        self.alive = False
