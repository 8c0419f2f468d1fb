"""The Daytona backend, driven through the real `daytona` SDK against the loopback server.

Nothing here stubs the SDK: every request goes over HTTP/websocket to
codemode_jupyter.testing.daytona_server on 127.0.0.1, whose sandboxes run in the local jail.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import FAST, dead_pid, free_port

from codemode_jupyter import CodeMode
from codemode_jupyter.backends.daytona.backend import DaytonaBackend, cleanup_orphans
from codemode_jupyter.backends.daytona.errors import DaytonaAuthError, DaytonaBackendError
from codemode_jupyter.backends.daytona.options import (
    LABEL_CREATOR,
    LABEL_HOST,
    LABEL_PID,
    LABEL_SESSION,
)
from codemode_jupyter.backends.daytona.retries import RetryPolicy
from codemode_jupyter.model import events as ev
from codemode_jupyter.runtime import codemode_protocol as P
from codemode_jupyter.testing.daytona_server import DaytonaLoopbackServer

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("daytona_faults_cleared")]

KEY = "loopback-test-key"


def connect(server: DaytonaLoopbackServer, tools: tuple = (), **options: object) -> CodeMode:
    options.setdefault("retry", FAST)
    return CodeMode(
        tools=list(tools), backend="daytona", api_url=server.api_url, api_key=KEY, **options
    )


def get_weather(city: str) -> dict:
    """Current weather for a city."""
    return {"city": city, "temp_c": 21}


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def sandbox_of(cm: CodeMode) -> str:
    return cm.status()["sandbox"]


# --- single execution ----------------------------------------------------------------------------


def test_notebook_run_with_tools_streams_in_program_order(server: DaytonaLoopbackServer) -> None:
    events: list[ev.Event] = []
    with connect(server, (get_weather,)) as cm:
        result = cm.run(
            "print('start')\n"
            "for city in ['Paris', 'Oslo']:\n"
            "    w = get_weather(city)\n"
            "    print(city, w['temp_c'])\n"
            "'done'",
            on_event=events.append,
        )
    assert result.ok, result.error
    assert result.stdout == "start\nParis 21\nOslo 21\n"
    assert result.value == "done"
    assert [c.name for c in result.tool_calls] == ["get_weather", "get_weather"]
    assert result.backend == "daytona"
    trace = [
        (type(e).__name__, getattr(e, "text", getattr(e, "name", "")))
        for e in events
        if not isinstance(e, (ev.RunStarted, ev.RunFinished))
    ]
    assert trace == [
        ("Output", "start\n"),
        ("ToolCallStarted", "get_weather"),
        ("ToolCallFinished", "get_weather"),
        ("Output", "Paris 21\n"),
        ("ToolCallStarted", "get_weather"),
        ("ToolCallFinished", "get_weather"),
        ("Output", "Oslo 21\n"),
    ]


def test_output_reaches_the_host_while_the_program_waits_on_a_tool(
    server: DaytonaLoopbackServer,
) -> None:
    """Streaming, not delivery at the end: the program prints, then blocks on a tool call;
    the tool (run by the host before it answers) finds the print already received."""
    seen: list[str] = []

    def host_saw() -> str:
        """What output the host has received so far."""
        return "".join(seen)

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Output):
            seen.append(event.text)

    with connect(server, (host_saw,)) as cm:
        cm.run("0")
        result = cm.run(
            "print('before the call')\nanswer = host_saw()\nprint('after the call')\nanswer",
            on_event=on_event,
        )
    assert result.ok, result.error
    assert result.value == "before the call\n"  # the host had it before it answered
    assert result.stdout == "before the call\nafter the call\n"


def test_state_persists_and_a_warm_cell_is_one_request(server: DaytonaLoopbackServer) -> None:
    with connect(server, (add,)) as cm:
        assert cm.run("x = 40").ok
        server.reset_counts()
        result = cm.run("x + 2")
        warm = server.counts
        server.reset_counts()
        rounds = cm.run("a = add(1, 2)\nb = add(a, 3)\nb")
        with_tools = server.counts
    assert result.value == 42
    assert warm == {"command.input": 1}, warm  # target: at most 3 requests and 1 websocket
    assert rounds.value == 6 and rounds.rounds == 2
    assert with_tools == {"command.input": 1 + 2}, with_tools  # exactly one per tool round


def test_results_of_a_round_go_in_one_request(server: DaytonaLoopbackServer) -> None:
    gate: dict = {"started": 0, "all_in": None}

    async def slow_add(a: int, b: int) -> int:
        """Returns once all five calls of the round are in flight."""
        gate["all_in"] = gate["all_in"] or asyncio.Event()
        gate["started"] += 1
        if gate["started"] == 5:
            gate["all_in"].set()
        await asyncio.wait_for(gate["all_in"].wait(), 10)
        return a + b

    code = (
        "import asyncio\n"
        "r = await asyncio.gather(*(slow_add_async(i, i) for i in range(5)))\n"
        "sum(r)"
    )
    with connect(server, (slow_add,)) as cm:
        cm.run("0")
        server.reset_counts()
        result = cm.run(code)
        counts = server.counts
    assert result.ok, result.error
    assert result.value == 20 and result.rounds == 1
    assert counts == {"command.input": 2}  # the run frame, then the round's 5 results


def test_first_cell_cost_and_input_echo_suppressed(server: DaytonaLoopbackServer) -> None:
    with connect(server) as cm:
        assert cm.run("print('hi')").stdout == "hi\n"
        sandbox = server.sandboxes[sandbox_of(cm)]
        commands = sandbox.commands()
        counts = server.counts
    assert len(commands) == 1 and not commands[0].echo
    assert "codemode_runtime.py" in commands[0].command
    for route in (
        "sandbox.create",
        "toolbox.home_dir",
        "files.upload",
        "session.create",
        "session.exec",
        "command.logs.ws",
        "command.input",
    ):
        assert counts.get(route) == 1, counts


def test_transport_moves_frames_both_ways(server: DaytonaLoopbackServer) -> None:
    backend = DaytonaBackend(api_url=server.api_url, api_key=KEY, retry=FAST)
    try:
        transport = backend.start_runtime()
        assert transport.batch_results
        splitter = P.LineSplitter()

        def frames() -> Iterator[dict]:
            while True:
                data = transport.read()
                assert data, transport.exit_info()
                for line in splitter.feed(data):
                    yield P.decode(line)

        stream = frames()
        assert next(stream)["t"] == P.READY
        tools = [{"name": "double", "signature": "(x)", "doc": ""}]
        transport.write(
            P.encode({"t": P.RUN, "id": 1, "code": "print(double(21))", "tools": tools})
        )
        call = next(stream)
        assert call["t"] == P.CALL and call["args"] == [21]
        transport.write(P.encode({"t": P.RESULT, "id": call["id"], "ok": True, "value": 42}))
        out = next(stream)
        assert (out["t"], out["s"], P.out_text(out)) == (P.OUT, 1, "42\n")
        assert next(stream)["t"] == P.DONE
        transport.kill()
        assert transport.read() == b""
        assert "stopped" in transport.exit_info()
    finally:
        backend.close()


def test_unicode_and_large_output_cross_intact(server: DaytonaLoopbackServer) -> None:
    with connect(server, (get_weather,)) as cm:
        result = cm.run("s = 'héllo ✓ \\u00e9' * 3000\nprint(s)\nget_weather('Zürich')['city']")
    assert result.ok, result.error
    assert result.stdout == "héllo ✓ é" * 3000 + "\n"
    assert result.value == "Zürich"


def test_runtime_exit_is_reported_and_replaced(server: DaytonaLoopbackServer) -> None:
    with connect(server) as cm:
        cm.run("x = 1")
        crashed = cm.run("import os; os._exit(3)")
        after = cm.run("'x' in globals()")
    assert crashed.status == "crashed" and crashed.state_lost
    assert "exited with code 3" in crashed.error.message
    assert after.ok and after.value is False


def test_timeout_kills_a_hung_program(server: DaytonaLoopbackServer) -> None:
    with connect(server) as cm:
        result = cm.run(
            "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass",
            timeout=1,
        )
        sandbox = server.sandboxes[sandbox_of(cm)]
        after = cm.run("1 + 1")
    assert result.status == "timeout" and result.state_lost
    assert after.value == 2
    assert server.counts.get("session.delete", 0) >= 1
    assert all(cmd.exit_code is not None for cmd in sandbox.commands()[:-1])


# --- replay ---------------------------------------------------------------------------------------


def test_replay_protocol_over_code_run(server: DaytonaLoopbackServer) -> None:
    with connect(server, (add,), protocol="replay") as cm:
        result = cm.run("a = add(1, 2)\nb = add(a, 3)\nprint(b)\nb")
    assert result.ok, result.error
    assert result.value == 6 and result.stdout.endswith("6\n")
    assert server.counts["process.code_run"] == 3  # N sequential calls: N + 1 executions
    assert "session.exec" not in server.counts


# --- previews -------------------------------------------------------------------------------------


def test_preview_link_is_signed_and_reaches_the_sandbox() -> None:
    port = free_port()
    code = (
        "import http.server, threading\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'from sandbox')\n"
        "    def log_message(self, *a): pass\n"
        f"srv = http.server.HTTPServer(('127.0.0.1', {port}), H)\n"
        "threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
        f"codemode.preview({port})\n"
    )
    events: list[ev.Event] = []
    with DaytonaLoopbackServer(api_key=KEY, network=True) as srv, connect(srv) as cm:
        result = cm.run(code, on_event=events.append)
        assert result.ok, result.error
        url = result.previews[0].url
        with urllib.request.urlopen(url, timeout=10) as response:  # no header, no key
            body = response.read()
        plain = cm.preview(port).url
    assert result.previews[0].port == port and "/preview-signed/" in url
    assert body == b"from sandbox"
    assert any(isinstance(e, ev.PreviewAnnounced) and e.preview.url == url for e in events)
    assert plain != url  # a fresh signature each time


# --- attach, lifecycle, cleanup ---------------------------------------------------------------


def _create_with_sdk(server: DaytonaLoopbackServer, labels: dict[str, str] | None = None) -> str:
    from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

    client = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
    sandbox = client.create(CreateSandboxFromSnapshotParams(labels=labels or {}))
    return sandbox.id


def test_attached_sandbox_is_used_and_never_deleted(server: DaytonaLoopbackServer) -> None:
    from daytona import Daytona, DaytonaConfig

    mine = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url)).get(_create_with_sdk(server))
    server.reset_counts()
    with connect(server, sandbox=mine) as cm:
        assert cm.run("open('note.txt', 'w').write('kept'); 1").ok
        assert cm.status()["attached"] == "yes"
    with connect(server, sandbox=mine.id) as cm:  # by id, and the files are still there
        assert cm.run("open('note.txt').read()").value == "kept"
    assert mine.id in server.sandboxes
    assert all(cmd.exit_code is not None for cmd in server.sandboxes[mine.id].commands())
    assert server.counts.get("sandbox.create", 0) == 0
    assert server.counts.get("sandbox.delete", 0) == 0


def test_attach_by_async_sandbox_object(server: DaytonaLoopbackServer) -> None:
    from daytona import AsyncDaytona, DaytonaConfig

    async def create() -> object:
        async with AsyncDaytona(DaytonaConfig(api_key=KEY, api_url=server.api_url)) as client:
            return await client.create()

    mine = asyncio.run(create())  # an AsyncSandbox whose client and loop are gone
    with connect(server, (add,), sandbox=mine) as cm:
        assert cm.run("add(1, 1)").value == 2
        assert cm.status()["sandbox"] == mine.id
    assert mine.id in server.sandboxes


def test_credentials_and_endpoint_from_the_environment(
    server: DaytonaLoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAYTONA_API_KEY", KEY)
    monkeypatch.setenv("DAYTONA_API_URL", server.api_url)
    monkeypatch.setenv("DAYTONA_TARGET", "eu")
    with CodeMode(tools=[add], backend="daytona") as cm:
        assert cm.run("add(2, 2)").value == 4
        status = cm.status()
    assert status["api_url"] == server.api_url and status["target"] == "eu"
    assert server.counts["sandbox.create"] == 1


def test_created_sandbox_is_labelled_auto_stops_and_is_deleted(
    server: DaytonaLoopbackServer,
) -> None:
    cm = connect(server, labels={"team": "data"}, auto_stop_minutes=7, session_label="kernel-1")
    cm.run("1")
    sandbox_id = sandbox_of(cm)
    dto = server.sandboxes[sandbox_id].dto
    assert dto["labels"][LABEL_CREATOR] == "true"
    assert dto["labels"][LABEL_SESSION] == "kernel-1"
    assert dto["labels"][LABEL_PID] == str(os.getpid())
    assert dto["labels"]["team"] == "data"
    assert dto["autoStopInterval"] == 7
    cm.close()
    assert sandbox_id not in server.sandboxes
    assert server.counts["sandbox.delete"] == 1


def test_cleanup_deletes_orphans_only(server: DaytonaLoopbackServer) -> None:
    host = socket.gethostname()
    dead = str(dead_pid())
    orphan = _create_with_sdk(server, {LABEL_CREATOR: "true", LABEL_HOST: host, LABEL_PID: dead})
    foreign = _create_with_sdk(
        server, {LABEL_CREATOR: "true", LABEL_HOST: "elsewhere", LABEL_PID: "1"}
    )
    unrelated = _create_with_sdk(server, {"owner": "someone"})
    with connect(server) as cm:
        cm.run("1")
        live = sandbox_of(cm)
        listed = cleanup_orphans(api_key=KEY, api_url=server.api_url, dry_run=True)
        assert {o.id for o in listed} >= {orphan, foreign, live}
        assert not any(o.deleted for o in listed)
        report = {o.id: o for o in cleanup_orphans(api_key=KEY, api_url=server.api_url)}
        assert live in server.sandboxes
    assert report[orphan].deleted and orphan not in server.sandboxes
    assert not report[foreign].deleted and foreign in server.sandboxes
    assert not report[live].deleted
    assert unrelated not in report and unrelated in server.sandboxes
    swept = cleanup_orphans(api_key=KEY, api_url=server.api_url, all_hosts=True)
    assert foreign in {o.id for o in swept if o.deleted}


# --- faults ---------------------------------------------------------------------------------------


def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAYTONA_API_KEY", raising=False)
    with pytest.raises(DaytonaAuthError, match="DAYTONA_API_KEY"):
        DaytonaBackend(api_url="http://127.0.0.1:9/api")


def test_rejected_api_key_fails_at_once(server: DaytonaLoopbackServer) -> None:
    cm = CodeMode(backend="daytona", api_url=server.api_url, api_key="wrong", retry=FAST)
    with pytest.raises(DaytonaAuthError, match="DAYTONA_API_KEY"):
        cm.run("1")
    cm.close()
    assert server.counts["sandbox.create"] == 1  # never retried


def test_401_mid_session_ends_the_run_with_the_variable_named(
    server: DaytonaLoopbackServer,
) -> None:
    with connect(server, (add,)) as cm:
        cm.run("0")
        server.reset_counts()
        server.inject("command.input", status=401)
        result = cm.run("add(1, 2)")
    assert result.status == "crashed"
    assert "DAYTONA_API_KEY" in result.error.message
    assert server.counts["command.input"] == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_errors_are_retried(server: DaytonaLoopbackServer, status: int) -> None:
    server.inject("sandbox.create", status=status, times=2)
    server.inject("session.exec", status=status)
    server.inject("command.input", status=status, times=2)
    with connect(server, (add,)) as cm:
        result = cm.run("add(2, 3)")
    assert result.value == 5, result.error
    counts = server.counts
    assert counts["sandbox.create"] == 3 and counts["session.exec"] == 2
    assert counts["command.input"] == 2 + 2


def test_retries_are_bounded(server: DaytonaLoopbackServer) -> None:
    server.inject("sandbox.create", status=503, times=100)
    cm = connect(server)
    result = cm.run("1")
    cm.close()
    assert result.status == "crashed" and "injected fault" in result.error.message
    assert server.counts["sandbox.create"] == FAST.attempts + 1


def test_an_unreachable_api_fails_after_bounded_retries() -> None:
    policy = RetryPolicy(attempts=2, backoff=0.01, request_timeout=5.0)
    cm = CodeMode(
        backend="daytona", api_url=f"http://127.0.0.1:{free_port()}/api", api_key=KEY, retry=policy
    )
    result = cm.run("1")
    cm.close()
    assert result.status == "crashed"
    assert re.search(
        r"cannot connect.*after 3 attempts.*DAYTONA_API_URL", result.error.message, re.S
    )


def test_slow_responses_time_out_and_are_retried(server: DaytonaLoopbackServer) -> None:
    policy = RetryPolicy(attempts=2, backoff=0.01, request_timeout=0.5)
    server.inject("session.create", delay=5)
    with connect(server, retry=policy) as cm:
        result = cm.run("7")
    assert result.value == 7
    assert server.counts["session.create"] == 2


def test_a_stalled_network_never_outlives_the_run_timeout(server: DaytonaLoopbackServer) -> None:
    with connect(server, (add,)) as cm:
        cm.run("0")
        server.inject("command.input", delay=30, times=10)
        done = threading.Event()
        result = None

        def run() -> None:
            nonlocal result
            result = cm.run("add(1, 2)", timeout=1)
            done.set()

        threading.Thread(target=run, daemon=True).start()
        assert done.wait(20), "the run outlived its timeout by far"
        server.clear_faults()
    assert result is not None and result.status == "timeout"


def test_a_stalled_api_never_outlives_the_start_timeout() -> None:
    """Every response stalls: starting a runtime within a run's 3 s gives up at about that
    time (not the backend's own minutes-long budget) and says what it was waiting for."""
    outcome: dict[str, BaseException] = {}
    done = threading.Event()
    with DaytonaLoopbackServer(api_key=KEY) as srv:
        srv.inject(None, delay=60, times=1000)
        backend = DaytonaBackend(api_url=srv.api_url, api_key=KEY, retry=FAST)

        def start() -> None:
            try:
                backend.start_runtime(timeout=3)
            except BaseException as exc:
                outcome["error"] = exc
            done.set()

        threading.Thread(target=start, daemon=True).start()
        assert done.wait(30), "starting the runtime outlived the run's timeout by far"
        backend.close()
    error = outcome.get("error")
    assert isinstance(error, DaytonaBackendError), error
    assert "3 s timeout" in str(error) and "create the sandbox" in str(error)


def test_a_slow_creation_carries_on_into_the_next_start(server: DaytonaLoopbackServer) -> None:
    server.inject("sandbox.create", delay=1.5)
    backend = DaytonaBackend(api_url=server.api_url, api_key=KEY, retry=FAST)
    try:
        with pytest.raises(DaytonaBackendError, match="still waiting to create the sandbox"):
            backend.start_runtime(timeout=0.2)
        transport = backend.start_runtime()  # waits for the same creation, not a second one
        transport.kill()
    finally:
        backend.close()
    assert server.counts["sandbox.create"] == 1


def test_dropped_log_stream_reconnects_without_loss(server: DaytonaLoopbackServer) -> None:
    with connect(server, (add,)) as cm:
        cm.run("0")
        server.drop_log_streams(times=2, after_chunks=1)  # the first reconnect drops too
        result = cm.run("for i in range(5):\n    print(i, add(i, i))\n'end'")
        after = cm.run("print('still here')")
    assert result.ok, result.error
    assert result.stdout == "".join(f"{i} {2 * i}\n" for i in range(5))
    assert after.stdout == "still here\n"
    assert server.counts["command.logs.ws"] >= 3


def test_a_log_stream_that_keeps_dropping_fails_the_run_clearly(
    server: DaytonaLoopbackServer,
) -> None:
    with connect(server) as cm:
        cm.run("0")
        server.drop_log_streams(times=100, after_chunks=0)
        result = cm.run("import time\nfor i in range(3):\n    print(i); time.sleep(0.05)")
        server.clear_faults()
        after = cm.run("1")
    assert result.status == "crashed"
    assert "log stream" in result.error.message
    assert after.value == 1


def test_sandbox_deleted_mid_run_is_replaced(server: DaytonaLoopbackServer) -> None:
    holder: dict[str, str] = {}

    def pull_the_plug() -> str:
        """Delete the sandbox from under the program."""
        server.delete_sandbox(holder["id"])
        return "gone"

    with connect(server, (pull_the_plug,)) as cm:
        cm.run("x = 1")
        holder["id"] = old = sandbox_of(cm)
        result = cm.run("pull_the_plug()\nprint('unreachable')")
        after = cm.run("'x' in globals()")
        new = sandbox_of(cm)
        assert new != old and new in server.sandboxes
        notice = cm.status().get("notice", "")
    assert result.status == "crashed" and result.state_lost
    assert "deleted" in result.error.message and old in result.error.message
    assert after.ok and after.value is False
    assert "lost" in notice


def test_sandbox_stopped_between_cells_is_restarted(server: DaytonaLoopbackServer) -> None:
    with connect(server) as cm:
        cm.run("x = 1")
        old = sandbox_of(cm)
        server.stop_sandbox(old)
        # Whether the runtime's end was noticed before this run or during it, the user
        # learns that the state is gone, and the run after works in the restarted sandbox.
        first = cm.run("'x' in globals()")
        result = cm.run("'x' in globals()") if first.status == "crashed" else first
        notice = cm.status().get("notice", "")
        assert sandbox_of(cm) == old
    assert first.ok or (first.state_lost and "no longer running" in first.error.message)
    assert result.ok and result.value is False
    assert server.counts["sandbox.start"] == 1
    assert "stopped" in notice


def test_every_wait_is_bounded_when_the_api_hangs(server: DaytonaLoopbackServer) -> None:
    policy = RetryPolicy(attempts=1, backoff=0.01, request_timeout=0.3)
    server.inject("sandbox.create", delay=30, times=10)
    cm = connect(server, retry=policy, create_timeout=0.5)
    result = cm.run("1", timeout=20)
    cm.close()
    assert not result.ok and "create" in result.error.message


# --- the server as a program --------------------------------------------------------------------


def test_server_runs_with_python_dash_m() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "codemode_jupyter.testing.daytona_server",
            "--port",
            str(port),
            "--api-key",
            KEY,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "DAYTONA_API_URL" in proc.stdout.readline() + proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        fault = json.dumps({"route": "sandbox.list", "status": 503}).encode()
        inject = urllib.request.Request(
            f"{base}/_admin/inject",
            data=fault,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(inject, timeout=5).read()
        listing = urllib.request.Request(
            f"{base}/api/sandbox", headers={"Authorization": f"Bearer {KEY}"}
        )
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(listing, timeout=5)
        assert json.loads(urllib.request.urlopen(listing, timeout=5).read())["items"] == []
        counts = json.loads(urllib.request.urlopen(f"{base}/_admin/counts", timeout=5).read())
        assert counts == {"sandbox.list": 2}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- live ---------------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.environ.get("DAYTONA_API_KEY"), reason="needs DAYTONA_API_KEY")
def test_live_daytona_run_with_tools() -> None:
    with CodeMode(tools=[add], backend="daytona", timeout=120) as cm:
        first = cm.run("x = add(40, 2)\nprint('x is', x)")
        second = cm.run("x")
        preview = cm.preview(8000).url
    assert first.ok, first.error
    assert first.stdout == "x is 42\n"
    assert second.value == 42
    assert preview.startswith("http")


def test_a_stalled_api_never_outlives_the_runs_timeout(server: DaytonaLoopbackServer) -> None:
    server.inject("sandbox.create", delay=120, times=100)
    cm = connect(server)
    result = cm.run("1", timeout=3)
    cm.close()
    assert result.status == "timeout" and result.error.type == "Timeout"
    assert "could not be started" in result.error.message
