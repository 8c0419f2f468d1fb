"""The engine's parts: backend options checked before anything starts, the one loop thread,
and the one place a RunResult is made, for session and replay runs alike."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading

import pytest

from codemode_jupyter import CodeMode
from codemode_jupyter.backends import BackendOptionError, create_backend, options_for
from codemode_jupyter.backends.daytona.options import DaytonaOptions
from codemode_jupyter.backends.local.backend import LocalBackend
from codemode_jupyter.backends.local.options import LocalOptions, Mount
from codemode_jupyter.backends.processes import owner_gone
from codemode_jupyter.model import events as ev
from codemode_jupyter.support.loop_thread import LoopThread, run_coroutine


def add(a: int, b: int = 1) -> int:
    return a + b


def _jail_dirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("codemode-jail")}


# --- backend options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: CodeMode(memroy_mb=256),
        lambda: create_backend("local", memroy_mb=256),
        lambda: LocalBackend(memroy_mb=256),
    ],
)
def test_a_wrong_option_name_is_named_with_the_valid_ones_before_anything_starts(make) -> None:
    dirs, threads = _jail_dirs(), threading.active_count()
    with pytest.raises(BackendOptionError) as caught:
        make()
    message = str(caught.value)
    assert "no option 'memroy_mb'" in message and "did you mean 'memory_mb'?" in message
    assert "its options are: bwrap, cpu_seconds, disk_mb" in message
    assert isinstance(caught.value, TypeError)  # as for any unexpected keyword argument
    assert _jail_dirs() == dirs and threading.active_count() == threads


def test_daytona_options_are_checked_without_a_key_or_a_server() -> None:
    with pytest.raises(BackendOptionError, match=r"no option 'api_kye'.*'api_key'"):
        CodeMode(backend="daytona", api_kye="x")
    with pytest.raises(BackendOptionError, match="the daytona backend has no option 'network'"):
        options_for("daytona", network=True)


def test_each_backend_takes_the_shared_options_it_uses() -> None:
    shared = {"network": True, "mounts": None, "memory_mb": 300, "sandbox": "sb-1"}
    local = options_for("local", shared, tmp_mb=32)
    assert isinstance(local, LocalOptions)
    assert (local.network, local.mounts, local.memory_mb, local.tmp_mb) == (True, (), 300, 32)
    daytona = options_for("daytona", shared, api_url="http://127.0.0.1:1/api")
    assert isinstance(daytona, DaytonaOptions) and daytona.sandbox == "sb-1"
    with pytest.raises(AttributeError):
        daytona.sandbox = "other"  # frozen


def test_local_options_check_their_values_and_parse_mounts(tmp_path) -> None:
    options = LocalOptions(mounts=[f"{tmp_path}:/data:rw"])
    assert options.mounts == (Mount(str(tmp_path), "/data", True),)
    with pytest.raises(ValueError, match="does not exist"):
        LocalOptions(mounts=[f"{tmp_path}/nope"])
    with pytest.raises(ValueError, match="tmp_mb must be a whole number"):
        CodeMode(tmp_mb=0)


def test_a_backend_takes_its_options_object(tmp_path) -> None:
    backend = create_backend("local", LocalOptions(network=True, disk_mb=64))
    try:
        assert backend.options.disk_mb == 64
        assert backend.status().details["network"] == "on"
    finally:
        backend.close()
    with pytest.raises(TypeError, match="takes LocalOptions, not DaytonaOptions"):
        LocalBackend(DaytonaOptions())
    with pytest.raises(TypeError, match="either an options object or keyword arguments"):
        create_backend("local", LocalOptions(), network=True)


def test_options_with_a_backend_instance_are_refused() -> None:
    backend = LocalBackend()
    try:
        with pytest.raises(TypeError, match="backend options go to the backend's constructor"):
            CodeMode(backend=backend, tmp_mb=32)
    finally:
        backend.close()


# --- the loop thread -----------------------------------------------------------------------


def test_the_loop_thread_survives_a_stray_task_and_stops_clean() -> None:
    loop = LoopThread("codemode-test-loop")

    async def stray() -> None:
        raise SystemExit("a stray task")

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    loop.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(stray()))
    assert loop.run(answer(), timeout=10) == 42  # the loop kept going

    async def forever() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(TimeoutError):
        loop.run(forever(), timeout=0.2)
    loop.close()
    loop.close()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == "codemode-test-loop"]
    with pytest.raises(RuntimeError, match="closed"):
        loop.submit(answer())


def test_run_coroutine_works_inside_a_running_loop() -> None:
    async def inner() -> str:
        await asyncio.sleep(0)
        return "done"

    async def main() -> str:
        return run_coroutine(inner())  # a kernel's thread: its loop is busy

    assert asyncio.run(main()) == "done"
    assert run_coroutine(inner()) == "done"
    assert not [t for t in threading.enumerate() if t.name == "codemode-await"]


# --- one RunResult, built one way ------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["session", "replay"])
def test_both_protocols_end_a_run_the_same_way(protocol: str) -> None:
    seen: list[tuple[str, object]] = []

    def listener(event: ev.Event) -> None:
        if isinstance(event, ev.RunFinished):
            seen.append(("finished", session.last_result is event.result))
        if isinstance(event, ev.ToolCallFinished):
            raise RuntimeError("listener bug")

    with CodeMode(tools=[add], protocol=protocol) as session:
        result = session.run("print(add(1, 2))\nadd(3)", on_event=listener)
    assert result.ok and result.value == 4 and result.stdout == "3\n"
    assert result.rounds == 2 and [c.id for c in result.tool_calls] == [1, 2]
    assert "the on_event listener raised RuntimeError: listener bug" in result.stderr
    assert result.executions == (3 if protocol == "replay" else 1)
    assert seen == [("finished", True)]  # recorded before listeners hear of the end
    assert session.history[-1] is result


def test_leftovers_are_told_by_the_pid_in_their_names() -> None:
    assert not owner_gone(f"codemode-jail-{os.getpid()}-abc", "codemode-jail-")
    assert not owner_gone("codemode-jail-notapid-abc", "codemode-jail-")
    assert not owner_gone("something-else-1", "codemode-jail-")
    dead = 4_000_000  # above the kernel's pid_max: no process has it
    while os.path.exists(f"/proc/{dead}"):
        dead += 1
    assert owner_gone(f"codemode-jail-{dead}-abc", "codemode-jail-")
