"""The extension's lifecycle in real kernels: interrupt, unload, shutdown, config files, terminal.

Waits are on kernel messages or on process exit (pidfd), never on sleeps.
"""

from __future__ import annotations

import io
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, loaded_kernel

from codemode_jupyter import CodeMode
from codemode_jupyter.jupyter.headless import KernelSession
from codemode_jupyter.jupyter.views.live import TextView
from codemode_jupyter.jupyter.views.transcript import MIME_RUN


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (the sandbox runtimes and their jail)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def wait_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    """Wait for each process to exit; return those still alive after `timeout`."""
    alive = set()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            readable, _, _ = select.select([fd], [], [], timeout)
            if not readable:
                alive.add(pid)
        finally:
            os.close(fd)
    return alive


@pytest.fixture
def kernel():
    with loaded_kernel() as session:
        yield session


def interrupt_when(kernel, found) -> Any:
    """An iopub hook: interrupt the kernel once a live update's timeline satisfies `found`."""
    sent = []

    def hook(msg: dict) -> None:
        if msg["msg_type"] != "update_display_data" or sent:
            return
        payload = msg["content"]["data"].get(MIME_RUN)
        if payload and found(payload["timeline"]):
            sent.append(True)
            kernel.km.interrupt_kernel()

    return hook


def test_stop_button_interrupts_the_program_and_the_kernel_lives_on(kernel):
    # The live view shows "started": the program is in its loop.
    started = interrupt_when(
        kernel, lambda entries: any("started" in e.get("text", "") for e in entries)
    )
    execution = kernel.execute(
        "%%codemode\nprint('started', flush=True)\nwhile True:\n    pass", on_message=started
    )
    assert execution.reply["content"]["status"] == "error"
    assert execution.error["ename"] == "CodeModeInterrupted"
    assert len(execution.error["traceback"]) == 1  # short, no host stack
    status = kernel.execute("%codemode last").stream()
    assert status.startswith("last run: interrupted")
    assert kernel.execute("%%codemode\n'next cell works'").result == "'next cell works'"


def test_calls_in_flight_show_as_cancelled_after_an_interrupt(kernel):
    assert kernel.execute(
        "import asyncio\n"
        "async def wait(s: float) -> float:\n"
        "    await asyncio.sleep(s)\n    return s\n"
    ).ok
    in_flight = interrupt_when(
        kernel,
        lambda entries: any(e["kind"] == "call" and e["state"] == "running" for e in entries),
    )
    execution = kernel.execute(
        "%%codemode\nprint('waiting')\nawait wait_async(s=60)", on_message=in_flight
    )
    assert execution.error["ename"] == "CodeModeInterrupted"
    final = [
        m["content"]["data"][MIME_RUN]
        for m in execution.of_type("display_data")
        if MIME_RUN in m["content"]["data"]
    ]
    assert len(final) == 1 and final[0]["result"]["status"] == "interrupted"
    calls = [e for e in final[0]["timeline"] if e["kind"] == "call"]
    assert [(c["name"], c["state"]) for c in calls] == [("wait", "cancelled")]


LOOP = "%%codemode\nimport time\nfor i in range(100):\n    print(i)\n    time.sleep(0.5)"
#: The loop, with each interrupt swallowed: it never stops, so its runtime must be replaced.
STUBBORN = (
    "%%codemode\nimport time\nfor i in range(100):\n    print(i)\n    try:\n"
    "        time.sleep(0.5)\n    except KeyboardInterrupt:\n        pass"
)


def printed(line: str):
    """A live-update test: the program has printed `line` (a whole line)."""
    return lambda entries: line in "".join(e.get("text", "") for e in entries).split("\n")


def wait_for_runtime(kernel: KernelSession, timeout: float = 60.0) -> int:
    """Wait (bounded) until a jailed runtime runs below the kernel; its outer bwrap's pid.

    Sends the kernel nothing meanwhile, so it stays idle as a notebook does between cells.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _jailed_runtimes(descendants(kernel.pid())):
            while pid and _parent(pid) != kernel.pid():
                pid = _parent(pid)
            if pid:
                return pid
        # Polling the process table: a process's start sends the test nothing to wait on.
        time.sleep(0.02)
    pytest.fail("no runtime started after %load_ext")


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def ignores_sigint(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(re.search(r"^SigIgn:\s*([0-9a-f]+)", status, re.M).group(1), 16)
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def final_run(execution) -> dict:
    """The run+json payload a finished cell keeps, and its text/plain transcript."""
    finals = [
        m["content"]["data"] for m in execution.of_type("display_data")
        if MIME_RUN in m["content"]["data"]
    ]  # fmt: skip
    assert len(finals) == 1, finals
    return finals[0]


def test_an_interrupt_keeps_the_session_of_a_spare_started_while_the_kernel_was_idle():
    """Issue 18: Kernel > Interrupt in JupyterLab wiped the session while saying it was kept.

    %load_ext starts a spare runtime in the background; in a notebook it starts after the
    cell ended, while ipykernel ignores SIGINT (it does between requests), and a process
    inherits an ignored signal. The runtime stops its program with SIGINT, so that runtime
    could not be interrupted: after 0.5 s it was replaced. The kernel is interrupted as
    jupyter_server does it: SIGINT to the kernel's process group.
    """
    with loaded_kernel() as kernel:
        outer = wait_for_runtime(kernel)
        assert ignores_sigint(outer), "the spare should start while the kernel ignores SIGINT"
        # Its own session: a signal to the kernel's process group never reaches the jail.
        assert os.getsid(outer) != os.getsid(kernel.pid())
        assert kernel.km.provisioner.pgid == os.getpgid(kernel.pid())  # killpg, as the server
        assert kernel.execute("%%codemode\nkeep = 42").ok
        execution = kernel.execute(LOOP, on_message=interrupt_when(kernel, printed("5")))
        assert execution.error["ename"] == "CodeModeInterrupted"
        assert execution.error["traceback"] == [
            "CodeModeInterrupted: the program was interrupted; the session is still there"
        ]
        final = final_run(execution)
        assert final[MIME_RUN]["result"]["status"] == "interrupted"
        assert not final[MIME_RUN]["result"]["state_lost"]
        assert "replaced" not in final["text/plain"]
        assert kernel.execute("%%codemode\nprint(keep)").ok
        assert kernel.execute("%%codemode\nkeep").result == "42"


def test_an_interrupt_that_replaces_the_runtime_says_so_everywhere(kernel):
    assert kernel.execute("%%codemode\nkeep = 42").ok
    execution = kernel.execute(STUBBORN, on_message=interrupt_when(kernel, printed("1")))
    assert execution.error["ename"] == "CodeModeInterrupted"
    [line] = execution.error["traceback"]
    assert "replaced" in line and "still there" not in line, line
    final = final_run(execution)
    assert final[MIME_RUN]["result"]["state_lost"]
    assert "variables from earlier cells are gone" in final["text/plain"]
    gone = kernel.execute("%%codemode\nkeep")
    assert gone.error["ename"] == "CodeModeError" and "NameError" in gone.error["evalue"]


def test_the_terminal_view_says_when_the_runtime_was_replaced():
    err = io.StringIO()
    view = TextView(stdout=io.StringIO(), stderr=err)
    with CodeMode(spare=False) as session:
        assert session.run("keep = 42").ok
        view.finish(session.run("import os\nos._exit(3)", on_event=view.on_event))
    assert "variables from earlier cells are gone" in err.getvalue().splitlines()[-1]


def test_unload_closes_sessions_and_reload_works(kernel):
    assert kernel.execute("%%codemode\n1").ok
    runtimes = descendants(kernel.pid())
    assert runtimes, "a runtime process should be running"
    assert kernel.execute("%unload_ext codemode_jupyter").ok
    assert wait_gone(runtimes) == set()
    gone = kernel.execute("%%codemode\n1")
    assert gone.reply["content"]["ename"] == "UsageError"  # the magic is gone too
    assert kernel.execute("%load_ext codemode_jupyter").ok
    assert kernel.execute("%%codemode\n2").result == "2"


def test_kernel_shutdown_leaves_no_runtime_behind():
    session = KernelSession()
    try:
        assert session.execute("%load_ext codemode_jupyter").ok
        assert session.execute("%%codemode\n1").ok
        assert session.execute("%%codemode --network\n1").ok  # a second session
        runtimes = descendants(session.pid())
        assert len(runtimes) >= 2
    finally:
        session.shutdown()
    assert wait_gone(runtimes) == set()


def _jailed_runtimes(pids: set[int]) -> set[int]:
    """The sandbox runtimes among `pids` (by their command line)."""
    found = set()
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        program = cmdline.split(b"\0", 1)[0]
        if b"codemode_runtime" in cmdline and not program.endswith(b"bwrap"):
            found.add(pid)
    return found


def test_the_spare_runtime_is_counted_in_status_and_stopped_at_kernel_shutdown():
    session = KernelSession()
    try:
        assert session.execute("%load_ext codemode_jupyter").ok
        assert session.execute("%%codemode\n1").ok
        # The spare starts in the background: wait (bounded) until status says it is ready.
        for _ in range(600):
            status = session.execute("%codemode status").stream()
            if re.search(r"spare_runtime\s+ready", status):
                break
        else:
            pytest.fail(f"the spare never became ready:\n{status}")
        runtimes = _jailed_runtimes(descendants(session.pid()))
        assert len(runtimes) == 2, "the session's runtime and its spare"
        everything = descendants(session.pid())
    finally:
        session.shutdown()
    assert wait_gone(everything) == set()


def test_extension_and_settings_from_ipython_config(tmp_path):
    profile = tmp_path / "profile_default"
    profile.mkdir()
    (profile / "ipython_kernel_config.py").write_text(
        textwrap.dedent("""
        c.InteractiveShellApp.extensions = ["codemode_jupyter"]
        c.CodeMode.timeout = 7.5
        c.CodeMode.display = "text"
    """)
    )
    session = KernelSession(env={**os.environ, "IPYTHONDIR": str(tmp_path)})
    try:
        assert session.execute("%config CodeMode.timeout").result == "7.5"
        execution = session.execute("%%codemode\nprint('hi')\n3")
        assert execution.result == "3"
        # Text view: the program's output streams into the cell, no widget.
        assert execution.stream() == "hi\n"
        assert not execution.of_type("comm_open")
        # What stays is deterministic (no timings on stderr) and does not repeat the output.
        assert execution.stream("stderr") == "[codemode] local, isolation: bubblewrap\n"
        transcripts = execution.displays("text/plain")
        assert transcripts == ["── codemode: ok, no tool calls"]  # Out[n] has the value
    finally:
        session.shutdown()


def test_terminal_ipython_shows_text_not_widgets(tmp_path):
    cells = [
        "%load_ext codemode_jupyter",
        "def shout(text: str) -> str:\n    return text.upper()",
        "%%codemode\nprint(shout('from the sandbox'))\n41 + 1",
    ]
    driver = "ip = get_ipython()\n" + "".join(f"ip.run_cell({c!r});\n" for c in cells)
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor", "-c", driver],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "IPYTHONDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("FROM THE SANDBOX\nOut[")
    assert "]: 42\n" in done.stdout
    # Each call with its arguments and result; no colour codes when stderr is not a terminal.
    assert "  shout(text='from the sandbox') → 'FROM THE SANDBOX'  " in done.stderr
    assert "[codemode] ok in" in done.stderr and "\x1b[" not in done.stderr
    assert "VBox" not in done.stdout and "live view" not in done.stdout
    assert "── codemode" not in done.stdout  # the text view showed it all already


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("how", ["unload", "shutdown"])
def test_the_mcp_server_is_stopped_by_unload_and_by_kernel_shutdown(how):
    pytest.importorskip("mcp")
    port = free_port()
    session = KernelSession()
    try:
        assert session.execute("%load_ext codemode_jupyter").ok
        served = session.execute(f"%codemode serve --port {port} --token t0123456789abcdef")
        # The serving cell's feed states the URL (a display, not a printed stream).
        shown = "".join(served.displays())
        assert served.ok and f"127.0.0.1:{port}/mcp" in shown, served.messages
        assert _listening(port)
        if how == "unload":
            assert session.execute("%unload_ext codemode_jupyter").ok
            assert not _listening(port)
            threads = session.execute(
                "import threading\nprint([t.name for t in threading.enumerate() "
                "if t.name.startswith(('codemode-mcp', 'codemode-agent'))])"
            )
            assert threads.stream() == "[]\n"
    finally:
        pid = session.pid()
        session.shutdown()
    # The kernel has exited, and with it every socket it held.
    assert wait_gone({pid}) == set()
    assert not _listening(port)
