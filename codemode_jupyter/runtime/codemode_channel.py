"""The runtime's output side: frames written whole to the control channel, and the program's
stdout/stderr (its print()s, and what lands on its fd 1/2) turned into `out` frames.

Part of the sandbox runtime (codemode_runtime.py): standard library only.
"""

from __future__ import annotations

import _signal  # what `signal` wraps (its wrappers make an enum member of each number)
import codecs
import io
import itertools
import os
import select
import threading
import time
from collections import deque

import codemode_protocol as P

_FLUSH_AT = 1 << 16  # chars held at most before they go out as a frame
_FRAME_TEXT = 1 << 20
_FLUSH_DELAY = 0.01  # the longest a partial line waits
#: A line written within _BURST of its stream's last frame is part of a burst: it waits up to
#: _BURST for more (or _FLUSH_AT chars), so a loop of prints sends a few large frames instead
#: of one per line. A line after a quiet moment still goes out at once.
_BURST = 0.0005
_NEVER = float("inf")
_PUMP_FRAME = 1 << 18  # bytes an fd pump reads at most before it sends them
_ALL_SIGNALS = _signal.valid_signals()


class Channel:
    """The runtime's end of the control channel: frame writes, serialised by a lock.

    A frame is never left half written (the host would take the channel as broken and stop the
    runtime): a pipe takes a write of up to PIPE_BUF bytes whole or not at all, and a longer
    one is written with this thread's signals held, so a KeyboardInterrupt (an interrupt of the
    run) comes once the frame is whole. A signal handler that prints while this thread writes
    a frame has its own frame written right after, not in the middle (nor waiting for itself).
    """

    def __init__(self, out_fd: int) -> None:
        self._fd = out_fd
        self._lock = threading.Lock()
        self._writer = 0  # the thread writing now
        self._after: deque[bytes] = deque()  # frames of signal handlers that ran meanwhile

    def send(self, frame: dict) -> None:
        self.send_bytes(P.encode(frame))

    def send_bytes(self, data: bytes) -> None:
        me = threading.get_ident()
        if self._writer == me:  # a signal handler, inside this thread's own write
            self._after.append(data)
            return
        with self._lock:
            self._writer = me
            try:
                self._write(data)
                while self._after:
                    self._write(self._after.popleft())
            finally:
                self._writer = 0

    def _write(self, data: bytes) -> None:
        try:
            if len(data) <= select.PIPE_BUF:
                os.write(self._fd, data)  # whole or not at all
                return
            held = _signal.pthread_sigmask(_signal.SIG_BLOCK, _ALL_SIGNALS)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            finally:
                _signal.pthread_sigmask(_signal.SIG_SETMASK, held)
        except OSError:
            os._exit(P.CHANNEL_LOST)  # the program broke the channel: nothing left to serve


#: Bytes the plain form of an `out` frame (P.OUT_PLAIN) may not hold: those a JSON string may
#: not hold raw (control characters), and quote, backslash and DEL; newlines become DEL.
_NOT_PLAIN = bytes(range(32)).replace(b"\n", b"") + b'"\\\x7f'
_NOT_PLAIN_EACH = [bytes([byte]) for byte in _NOT_PLAIN]
#: Up to this many bytes, one translate() pass finds them quicker; above it, one memchr per
#: byte value (`in`) does: 0.4 against 0.65 ns per byte.
_SCAN_EACH = 2048


def encode_out(stream: int, text: str) -> bytes:
    """The `out` frame for `text`: the plain form where the text allows it (the JSON encoder's
    per-character loop cost 21 ms per MiB of 1 KiB lines in the runtime's python, and the host
    reads this form without its decoder too), else the JSON form."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > _SCAN_EACH:
        plain = not any(map(data.__contains__, _NOT_PLAIN_EACH))
    else:
        plain = len(data.translate(None, _NOT_PLAIN)) == len(data)
    if plain:
        return b"".join((P.OUT_PLAIN[stream], data.replace(b"\n", b"\x7f"), b'"}\n'))
    return P.encode({"t": P.OUT, "s": stream, "d": text})


class TextStream(io.TextIOBase):
    """sys.stdout / sys.stderr for the program: text becomes `out` frames.

    A line goes out at once, unless it comes within _BURST of the last frame (a loop of
    prints): then it waits up to _BURST for more; a partial line waits up to _FLUSH_DELAY.

    While a burst waits for its flush (`_hold`), a write only queues its text, without the
    lock (print() writes twice, and the lock and the rules cost most of a print): a deque's
    appends are thread-safe, a flush takes the texts queued so far off its left, and a write
    that finds the hold over once its text is queued makes sure a flush will take it.
    """

    def __init__(self, channel: Channel, stream: int, fd: int, flusher: Flusher) -> None:
        self._channel = channel
        self._stream = stream
        self._fd = fd
        self._flusher = flusher
        # Reentrant: a signal handler that prints while this thread writes must not deadlock.
        self._lock = threading.RLock()
        self._queue: deque[str] = deque()  # written, not sent yet
        self._size = 0  # about the chars queued (writes without the lock may miss a few)
        self._hold = False  # a burst's flush is due within _BURST: writes just queue
        self._flushing = False  # this stream sends now (a signal handler may write meanwhile)
        self._sent = 0.0  # when this stream last sent a frame (time.monotonic)
        self._due = _NEVER  # when the flusher is to send what waits here
        self.buffer = BinaryStream(self)

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        if self._hold and text.__class__ is str:
            self._queue.append(text)
            self._size += len(text)
            if self._hold and self._size < _FLUSH_AT:
                return len(text)  # the burst's flush, not begun yet, will take it
            with self._lock:
                self._settle(text)
            return len(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._queue.append(text)
            self._size += len(text)
            self._settle(text)
        return len(text)

    def _settle(self, text: str) -> None:
        """`text` was queued last: send or schedule what waits (holding the lock)."""
        if not self._queue:
            return  # a flush took it already
        if self._size >= _FLUSH_AT:
            self._flush_locked()
        elif "\n" in text:
            now = time.monotonic()
            if now - self._sent >= _BURST:
                self._flush_locked()
            elif not self._hold:
                self._hold = True
                if now + _BURST < self._due:
                    self._schedule(now + _BURST)
        elif self._due == _NEVER:
            self._schedule(time.monotonic() + _FLUSH_DELAY)

    def _schedule(self, due: float) -> None:
        self._due = due
        self._flusher.wake(self, due)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def sync(self) -> None:
        """flush(), unless nothing waits and no other thread sends (the usual case before a
        tool call): text is queued before it is taken, and taken only while _flushing."""
        if self._queue or self._flushing:
            self.flush()

    def _flush_locked(self) -> None:
        self._hold = False  # first: a write that queues after this takes the locked path
        self._due = _NEVER
        if self._flushing:  # a signal handler wrote during this thread's own send
            self._schedule(time.monotonic() + _BURST)
            return
        queue = self._queue
        if not queue:
            return
        self._flushing = True
        try:
            # All in C, so no signal handler runs between the pops and no text is dropped.
            text = "".join(itertools.islice(iter(queue.popleft, None), len(queue)))
            self._size = 0
            self._sent = time.monotonic()
            for start in range(0, len(text), _FRAME_TEXT):  # bounded frames, however big a write
                chunk = text[start : start + _FRAME_TEXT]
                self._channel.send_bytes(encode_out(self._stream, chunk))
        finally:
            self._flushing = False

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


class BinaryStream(io.RawIOBase):
    """sys.stdout.buffer: bytes are decoded (UTF-8, replacing bad bytes) into the text stream."""

    def __init__(self, text: TextStream) -> None:
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data: bytes) -> int:
        self._text.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self) -> None:
        self._text.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._text.fileno()


class Flusher(threading.Thread):
    """Sends what a stream holds once it is due: partial lines after _FLUSH_DELAY (so
    `print(end="")` still streams), the lines of a burst after _BURST.

    A signal handler that prints may call wake() while the main thread is inside wake(): so
    the lock is reentrant and the flusher is woken by releasing a bare lock (a C call that never
    blocks), not by an Event, whose set() takes a lock of its own in Python code.
    """

    def __init__(self) -> None:
        super().__init__(name="codemode-flusher", daemon=True)
        self._due: dict[TextStream, float] = {}  # stream -> when to flush it (monotonic)
        self._lock = threading.RLock()
        self._woken = threading.Lock()  # released: wake() was called since the last look
        self._woken.acquire()

    def wake(self, stream: TextStream, due: float) -> None:
        """Flush `stream` at `due` (time.monotonic), unless an earlier time is asked already."""
        with self._lock:
            if self._due.get(stream, _NEVER) <= due:
                return
            # min(): a handler's wake() may have come in between, asking for an earlier time.
            self._due[stream] = min(due, self._due.get(stream, _NEVER))
        try:
            self._woken.release()
        except RuntimeError:
            pass  # released already: the flusher looks anew anyway

    def run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                ready = [stream for stream, due in self._due.items() if due <= now]
                for stream in ready:
                    del self._due[stream]
                wait = min(self._due.values(), default=now + 3600) - now
            for stream in ready:
                stream.flush()
            if not ready:
                self._woken.acquire(timeout=wait)  # _due is read anew after a wake()


class FdPump:
    """Forwards what lands on the program's fd 1/2 pipes (subprocesses, os.write, C code)."""

    def __init__(self, channel: Channel, stream: int, read_fd: int) -> None:
        self._channel = channel
        self._stream = stream
        self._fd = self.fd = read_fd
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._ended = False
        os.set_blocking(read_fd, False)
        threading.Thread(target=self._run, name=f"codemode-fd{stream}", daemon=True).start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._ended:
            poller.poll()
            self.drain()

    def settle(self) -> None:
        """Return once a drain going on in the pump's thread has sent what it read."""
        if self._lock.locked():
            with self._lock:
                pass

    def drain(self) -> None:
        """Forward everything readable now; a sync point before call and done frames."""
        with self._lock:
            chunks, size = [], 0
            while not self._ended:
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    # Every writer closed the pipe (the program closed its fd): nothing more can
                    # come, and polling a hung-up pipe would spin.
                    self._ended = True
                    break
                chunks.append(data)
                size += len(data)
                if size >= _PUMP_FRAME:  # the host decodes this while the next is read
                    self._send(chunks)
                    chunks, size = [], 0
            self._send(chunks)

    def _send(self, chunks: list[bytes]) -> None:
        if chunks:
            text = self._decoder.decode(b"".join(chunks))
            if text:
                self._channel.send_bytes(encode_out(self._stream, text))
