"""An interrupt stops the program and keeps the session, whatever signal set-up the runtime
was started with (issue 18).

The runtime stops a program by sending SIGINT to its own main thread. A process inherits an
ignored signal through exec, and ipykernel ignores SIGINT between requests, so a runtime
started then (a spare, after `%load_ext`) could not be interrupted: after 0.5 s it was replaced
and its variables were lost. Here the runtime is started while this process ignores SIGINT,
on the local backend and on Daytona (the loopback server starts its commands from this
process, as a toolbox that ignores SIGINT would), and must still stop on an interrupt.
"""

from __future__ import annotations

import _thread
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import FAST

from codemode_jupyter import CodeMode
from codemode_jupyter.model import events as ev

pytestmark = pytest.mark.timeout(60)

KEY = "loopback-interrupt-key"
LOOP = "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.01)"


def interrupt_when_looping(event: object) -> None:
    """Ctrl-C on the host's main thread once the program loops, as Kernel > Interrupt gives
    the kernel (not from a tool: a program waiting for a tool's result is stopped without a
    signal)."""
    if isinstance(event, ev.Output) and "looping" in event.text:
        threading.Thread(target=_thread.interrupt_main).start()


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """This process ignores SIGINT meanwhile (as an idle ipykernel does)."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def check_interrupt_keeps_state(session: CodeMode) -> None:
    with sigint_ignored():
        assert session.run("keep = 42").ok  # the runtime starts now, SIGINT ignored
    with pytest.raises(KeyboardInterrupt):
        session.run(LOOP, timeout=60, on_event=interrupt_when_looping)
    stopped = session.last_result
    assert stopped.status == "interrupted" and not stopped.state_lost, stopped.error
    assert session.run("keep").value == 42


def test_a_local_runtime_started_while_sigint_was_ignored_stops_and_keeps_its_state():
    with CodeMode(spare=False) as session:
        check_interrupt_keeps_state(session)


def test_a_daytona_runtime_started_while_sigint_was_ignored_stops_and_keeps_its_state(server):
    session = CodeMode(
        backend="daytona",
        api_url=server.api_url,
        api_key=KEY,
        retry=FAST,
    )
    with session:
        check_interrupt_keeps_state(session)
