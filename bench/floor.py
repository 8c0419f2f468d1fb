#!/usr/bin/env python
"""The physical floor of a round trip between two processes on this machine.

    python bench/floor.py            # about 10 s
    python bench/floor.py --quick    # about 3 s

What the engine's per-call and warm-run targets can be judged against: a parent and a forked
child bounce a message over two pipes, N times, and the median round trip is printed for

- raw 1-byte ping-pong, blocking reads (each side sleeps in read(): a wake-up per hop);
- the same with a short spin (non-blocking reads for up to SPIN µs, then a blocking one);
- JSON lines: a `call`-like frame out and a `result`-like frame back, encoded and decoded
  with the json module, blocking reads;
- each of the above with both processes pinned to one CPU (no cross-CPU wake-up).

Nothing here touches the engine: it is the floor under it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

US = 1e6


def _read_spin(fd: int, spin: float) -> bytes:
    """A read that first polls without blocking for `spin` seconds (0: block at once)."""
    if spin:
        end = time.perf_counter() + spin
        os.set_blocking(fd, False)
        try:
            while True:
                try:
                    return os.read(fd, 65536)
                except BlockingIOError:
                    if time.perf_counter() >= end:
                        break
        finally:
            os.set_blocking(fd, True)
    return os.read(fd, 65536)


def _echo(rfd: int, wfd: int, spin: float, as_json: bool) -> None:
    """The child: answer each message until the parent closes its end."""
    decode, encode = json.JSONDecoder().decode, json.JSONEncoder(separators=(",", ":")).encode
    while True:
        data = _read_spin(rfd, spin)
        if not data:
            os._exit(0)
        if as_json:
            frame = decode(data.decode())
            data = (
                encode({"t": "result", "id": frame["id"], "ok": True, "value": 1}) + "\n"
            ).encode()
        os.write(wfd, data)


def round_trips(count: int, spin: float = 0.0, as_json: bool = False, pin: bool = False) -> float:
    """The median round trip, in seconds, over `count` exchanges (after 10% warm-up)."""
    down_r, down_w = os.pipe()
    up_r, up_w = os.pipe()
    before = os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {max(before)})
    pid = os.fork()
    if pid == 0:
        os.close(down_w)
        os.close(up_r)
        _echo(down_r, up_w, spin, as_json)
    os.close(down_r)
    os.close(up_w)
    decode, encode = json.JSONDecoder().decode, json.JSONEncoder(separators=(",", ":")).encode
    times = []
    try:
        for i in range(count + count // 10):
            t0 = time.perf_counter()
            if as_json:
                frame = {"t": "call", "id": i, "name": "add", "args": [i], "kwargs": {}}
                os.write(down_w, (encode(frame) + "\n").encode())
                decode(_read_spin(up_r, spin).decode())
            else:
                os.write(down_w, b"x")
                _read_spin(up_r, spin)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(down_w)
        os.waitpid(pid, 0)
        os.close(up_r)
        os.sched_setaffinity(0, before)
    return statistics.median(times[count // 10 :])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer exchanges")
    args = parser.parse_args(argv)
    count = 1000 if args.quick else 5000
    print(
        f"# floor.py  {time.strftime('%Y-%m-%d %H:%M')}  load {os.getloadavg()[0]:.2f}  "
        f"cpus {os.cpu_count()}  python {sys.version.split()[0]}  N={count}"
    )
    print(f"{'round trip (median)':<44} {'any CPU':>10} {'one CPU':>10}")
    cases = [
        ("raw 1 byte, blocking reads", {}),
        ("raw 1 byte, spin 20 µs then block", {"spin": 20e-6}),
        ("raw 1 byte, spin 100 µs then block", {"spin": 100e-6}),
        ("JSON lines call/result, blocking reads", {"as_json": True}),
        ("JSON lines call/result, spin 100 µs", {"as_json": True, "spin": 100e-6}),
    ]
    for label, kwargs in cases:
        free = round_trips(count, **kwargs)
        pinned = round_trips(count, pin=True, **kwargs)
        print(f"{label:<44} {free * US:>8.1f}µs {pinned * US:>8.1f}µs")


if __name__ == "__main__":
    main()
