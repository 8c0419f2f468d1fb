"""Frames between the host and the sandbox runtime: one JSON object per line.

Standard library only: this file is shipped into the sandbox next to codemode_runtime.py, and
the host imports it too, so both sides share one definition.

Host -> runtime (the runtime's stdin):
    run        {"t": "run", "id": str, "code": str, "tools": [{"name", "signature", "doc"}],
                "limits": {"display": int, "artifacts": int, "artifact_bytes": int}}
               (tools and limits are optional: a frame without them keeps the last run
               frame's, the runtime's defaults and no tools before any; a limit missing from
               limits takes the runtime's default)
               optional "inputs": {name: JSON value}, bound as variables before the code runs
               (a pool task's inputs: the program's text stays as written)
    put        {"t": "put", "path": str, "d": str (base64), "more": bool}
               a file for the work dir, in chunks (each under 1 MiB), before a run frame;
               a chunk with more=false ends the file. A failed write fails the next run.
    result     {"t": "result", "id": int, "ok": true, "value": any}
               {"t": "result", "id": int, "ok": false, "error": {"type", "message"}}
    interrupt  {"t": "interrupt", "id": str}
    reset      {"t": "reset"}   a fresh namespace, and the process put back as a fresh program
               finds it (the runtime's Baseline)

    With SEQUENCED on its command line (the Daytona backend, whose writes are HTTP requests a
    retry may deliver twice), the runtime takes a batch line `#N` ahead of each batch of
    frames the host writes at once, N counting up from 1; a batch whose N is not above the
    last one taken was delivered again, and is dropped whole (Sequenced). Without it (the
    local backend's pipes, which never repeat a write) there are no batch lines.

Runtime -> host (the runtime's stdout; the program's own output never goes there raw):
    ready      {"t": "ready", "pid": int, "python": str}
    out        {"t": "out", "s": 1 | 2, "d": str}
               {"t": "out", "s": 1 | 2, "n": str}  the same, with each newline of the text
               sent as U+007F (DEL), for text with no DEL, quote, backslash or other control
               character: written and read without a JSON codec (OUT_PLAIN, decode_out)
    call       {"t": "call", "id": int, "name": str, "args": list, "kwargs": dict}
    preview    {"t": "preview", "port": int}
    display    {"t": "display", "data": {mime: str | JSON}, "metadata": {mime: dict}}
               display() in the program: a MIME bundle with "text/plain" always present
               (binary types as base64 text), sent in order with the program's output
    artifact   {"t": "artifact", "name": str, "d": str (base64), "more": bool}
               a file the program left under outputs/ (or passed to codemode.save()), in
               chunks, sent at the end of a run before its done frame
    done       {"t": "done", "id": str, "ok": true, "value": any, "repr": str | null,
                "bundle": {mime: str | JSON} (optional: the value's rich representation)}
               {"t": "done", "id": str, "ok": false, "error": {"type", "message", "traceback"}}
    reset_done {"t": "reset_done"}
               {"t": "reset_done", "clean": false, "threads": int}  threads a program started
               still run: the runtime cannot be reset, and the host replaces it

A run's id is a random token the host makes for each run, so no frame left over from an earlier
run (or forged by its background threads) can pass for the current run's. The host checks every
frame's fields (connection.py); a frame that does not fit is a fault of the runtime.
"""

from __future__ import annotations

import json
import os

RUN = "run"
RESULT = "result"
INTERRUPT = "interrupt"
RESET = "reset"
PUT = "put"

READY = "ready"
OUT = "out"
CALL = "call"
PREVIEW = "preview"
DISPLAY = "display"
ARTIFACT = "artifact"
DONE = "done"
RESET_DONE = "reset_done"

STDOUT = 1
STDERR = 2

#: The runtime's exit code when its control channel broke (the program closed or broke it).
CHANNEL_LOST = 70
CHUNK = 768 << 10  # bytes of file data per put/artifact frame (1 MiB once in base64)

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_quote = json.encoder.encode_basestring  # a str as a JSON string (ensure_ascii=False)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # encode() never writes NaN or Infinity


_decoder = json.JSONDecoder(parse_constant=_no_constants)
_decode = _decoder.decode
# The C scanner under `decode`: a frame as encode() writes it (no surrounding whitespace) is
# read without the decoder's two whitespace regexes; anything else takes the full decoder.
_scan = json.scanner.make_scanner(_decoder)


_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def encode(frame: dict) -> bytes:
    """One frame as a line of UTF-8 JSON. Raises ValueError/TypeError if it is not JSON-able."""
    if _c_make_encoder is None:  # no C accelerator in this python
        return (_encoder.encode(frame) + "\n").encode("utf-8", "surrogatepass")
    # What _encoder.encode does, minus its Python layers (every call and run sends frames).
    chunks = _c_make_encoder({}, _encoder.default, _quote, None, ":", ",", False, False, False)(
        frame, 0
    )
    return ("".join(chunks) + "\n").encode("utf-8", "surrogatepass")


def encode_run(run_id: str, code: str) -> bytes:
    """encode({"t": RUN, "id": run_id, "code": code}), byte for byte, without the generic
    encoder (the host sends one with every run)."""
    text = f'{{"t":"{RUN}","id":{_quote(run_id)},"code":{_quote(code)}}}\n'
    return text.encode("utf-8", "surrogatepass")


_RESULT_HEAD = b'{"t":"%s","id":%%d,"ok":true,"value":' % RESULT.encode()
_LITERALS = {True: b"true}\n", False: b"false}\n", None: b"null}\n"}


def encode_plain_result(call_id: int, value: object) -> bytes | None:
    """encode() of a successful `result` frame whose value is an int, a str, a bool or None,
    byte for byte, without the generic encoder (the host answers every call); None for any
    other value."""
    kind = type(value)
    if kind is int:
        return _RESULT_HEAD % call_id + b"%d}\n" % value
    if kind is str:
        text = _quote(value).encode("utf-8", "surrogatepass")
        return b"".join((_RESULT_HEAD % call_id, text, b"}\n"))
    if kind is bool or value is None:
        return _RESULT_HEAD % call_id + _LITERALS[value]
    return None


def decode(line: bytes) -> dict:
    """Parse one line; raises ValueError on anything that is not a JSON object frame."""
    text = line.decode("utf-8", "replace")
    try:
        try:
            frame, end = _scan(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            frame = _decode(text)  # whitespace around the frame, or an error to report
    except RecursionError:
        raise ValueError("nested too deep") from None
    if not isinstance(frame, dict) or "t" not in frame:
        raise ValueError("not a frame")
    return frame


#: The start of a plain `out` frame for stream 1 and 2: `"n"` holds text with no quote,
#: backslash, DEL or control character but newlines, which are DEL, so the text needs no
#: escapes and no JSON codec on either side (a JSON decoder reads the frame too). DEL stands in
#: for the newline because it is one byte that JSON strings may hold raw and text rarely does.
OUT_PLAIN = {stream: b'{"t":"out","s":%d,"n":"' % stream for stream in (STDOUT, STDERR)}
_PLAIN_START = len(OUT_PLAIN[STDOUT])
_PLAIN_STREAMS = {head: stream for stream, head in OUT_PLAIN.items()}


def decode_out(line: bytes) -> tuple[int, str] | None:
    """(stream, text) of a plain `out` frame (OUT_PLAIN), the same as `out_text` of its JSON
    decoding, without the JSON decoder (whose per-character loop was most of the host's cost
    of reading output); None for any other line, which is then decoded as JSON. A raw control
    character, which JSON refuses, is taken as text here: nothing the runtime could not send
    escaped."""
    stream = _PLAIN_STREAMS.get(line[:_PLAIN_START])
    end = len(line) - 2
    if stream is None or end < _PLAIN_START or not line.endswith(b'"}'):
        return None
    if line.find(b'"', _PLAIN_START, end) >= 0 or line.find(b"\\", _PLAIN_START, end) >= 0:
        return None  # not the plain form (another field, or escapes): the JSON decoder's job
    text = line[_PLAIN_START:end].replace(b"\x7f", b"\n")
    return stream, text.decode("utf-8", "replace")


def out_text(frame: dict) -> str:
    """The text of a decoded `out` frame, in either form ("d", or "n" with DEL for newline)."""
    text = frame.get("d")
    return frame["n"].replace("\x7f", "\n") if text is None else text


MAX_FRAME = 256 << 20  # the host refuses longer frames: a flood on the channel is a fault


class FrameTooLarge(ValueError):
    """A line on the control channel exceeded the splitter's limit."""


#: Reads of at least this many bytes are split by LineSplitter._find_lines; smaller ones (a
#: few frames: calls, results) by one split(), quicker for them.
_FIND_LINES = 1 << 16


class LineSplitter:
    """Turns a byte stream into complete lines, keeping the unfinished tail for later.

    Pieces of a long line are collected and joined once, so a line of n bytes that arrives in
    k reads costs O(n), not O(n * k).
    """

    __slots__ = ("_limit", "_parts", "_size")

    def __init__(self, limit: int = 0) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = limit  # longest line accepted, in bytes (0: no limit)

    def feed(self, data: bytes) -> list[bytes]:
        """Complete lines in `data`; raises FrameTooLarge past the limit."""
        end = data.find(b"\n")
        if end < 0:
            self._parts.append(data)
            self._size += len(data)
            if self._limit and self._size > self._limit:
                raise FrameTooLarge(f"a frame grew past {self._limit} bytes")
            return []
        self._size = 0
        if len(data) >= _FIND_LINES:
            return self._find_lines(data, end)
        if self._parts:
            self._parts.append(data)
            data = b"".join(self._parts)
            self._parts = []
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            self._parts.append(tail)
        return lines

    def _find_lines(self, data: bytes, end: int) -> list[bytes]:
        """The lines of a large read (output), `end` the first newline: split() looks at each
        byte in turn where find() is a memchr per line (3.8 -> 0.7 ms per 10 MiB of 64 KiB
        frames), and the unfinished line is joined alone, not with the whole read."""
        if self._parts:
            self._parts.append(data[:end])
            lines = [b"".join(self._parts)]
            self._parts = []
        else:
            lines = [data[:end]]
        find = data.find
        start = end + 1
        end = find(b"\n", start)
        while end >= 0:
            lines.append(data[start:end])
            start = end + 1
            end = find(b"\n", start)
        if start < len(data):
            self._parts.append(data[start:])
        return lines


#: The runtime's command-line flag: batches of host frames come with batch lines (Sequenced).
SEQUENCED = "--sequenced"
_BATCH = b"#"


def batch_line(number: int) -> bytes:
    """The line that goes ahead of the host's `number`th batch of frames (SEQUENCED)."""
    return b"#%d\n" % number


class Sequenced:
    """A LineSplitter's lines, minus the batch lines and every batch delivered again.

    A retried request that had reached the runtime delivers its batch a second time (later,
    too, if the first try was slow): any batch not numbered above the last one taken is
    dropped, so no frame (a run, a file chunk, a tool's result) is taken twice. The host
    writes whole frames, so a batch is whole lines. A check per line, on this path only.
    """

    __slots__ = ("_feed", "_keep", "_last")

    def __init__(self, splitter: LineSplitter) -> None:
        self._feed = splitter.feed
        self._last = 0
        self._keep = True

    def feed(self, data: bytes) -> list[bytes]:
        """The frame lines in `data` to take (LineSplitter.feed, deduplicated)."""
        lines = []
        for line in self._feed(data):
            if line[:1] == _BATCH:
                number = int(line[1:])  # ValueError, as decode() raises for a bad frame
                self._keep = number > self._last
                if self._keep:
                    self._last = number
            elif self._keep:
                lines.append(line)
        return lines


#: The longest a side of the channel polls without sleeping for the next frame (seconds):
#: for the answer to a tool call or result, and for other frames (a run's start and end).
SPIN_MAX = 200e-6
SPIN_MAX_OTHER = 500e-6
#: A wait longer than this that no spin caught is a pause (the person, a slow tool).
IDLE_GAP = 10e-3
#: Misses in a row (waits the whole spin did not catch, pauses aside) after which as many
#: waits sleep at once, then spinning tries again: a slow tool called in a loop.
PATIENCE = 8
#: Yield the CPU between looks: if both sides share one CPU, the other side then runs.
SPIN_YIELD = True


class Spin:
    """How long to look for the next frame without sleeping.

    A sleeping thread takes tens of microseconds to wake on another CPU (far more on a VM), so
    a frame that comes within the spin is much quicker to catch awake; the spin yields the CPU
    between looks (if both sides share a CPU, the other one then runs). Every wait spins up to
    the maximum: a spin learnt from past waits made one slow wait (a run's first frame after a
    pause, an async tool) cost the fast waits after it a wake-up each (bench/README.md). Only
    PATIENCE misses in a row (a slow tool called in a loop) make the next PATIENCE waits sleep
    at once. Off for good when this thread may use a single CPU only (pin_cpu): spinning there
    keeps the other side from running.
    """

    __slots__ = ("_misses", "_resting", "enabled", "limit", "maximum")

    def __init__(self, maximum: float = SPIN_MAX) -> None:
        self._misses = 0
        self._resting = 0
        self.maximum = self.limit = maximum
        self.enabled = True
        self.check_cpus()

    def check_cpus(self) -> bool:
        """Spin only if this thread may run on more than one CPU (pinning can change that);
        returns whether it does."""
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = 2
        self.enabled = cpus > 1
        self._misses = self._resting = 0
        self.limit = self.maximum if self.enabled else 0.0
        return self.enabled

    def record(self, waited: float, caught: bool) -> None:
        """One wait for a frame took `waited` seconds; `caught`: the spin found the frame."""
        if not self.enabled:
            return
        if self._resting:
            self._resting -= 1
            if not self._resting:
                self.limit = self.maximum
        elif caught:
            self._misses = 0
        elif waited <= IDLE_GAP:  # longer: a pause, which says nothing about the next wait
            self._misses += 1
            if self._misses >= PATIENCE:
                self._misses, self._resting, self.limit = 0, PATIENCE, 0.0
