"""How a local runtime starts: from the bytecode the host wrote, as the script it always was,
and inside its memory cgroup, with real jails."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from codemode_jupyter import CodeMode
from codemode_jupyter.backends.local.backend import LocalBackend
from codemode_jupyter.backends.local.memory import find_cgroup_place
from codemode_jupyter.backends.processes import child_pids
from codemode_jupyter.runtime import RUNTIME_FILES

MODULES = tuple(name.removesuffix(".py") for name in RUNTIME_FILES)  # each from its bytecode
CGROUP_PLACE, WHY_NO_CGROUP = find_cgroup_place()


def _jail_cache_tag(python: str) -> str:
    done = subprocess.run(
        [python, "-I", "-S", "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_the_jailed_runtime_loads_the_bytecode_the_host_wrote() -> None:
    backend = LocalBackend()
    try:
        if _jail_cache_tag(backend.python) != sys.implementation.cache_tag:
            pytest.skip("the jail's python is another version: it compiles the sources")
        argv = [backend.python, "-I", "-v", backend._runtime_path(), *backend._limits_argv()]
        proc, memory = backend.jail.start(
            argv,
            before_run=backend._fill_runtime_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _, err = proc.communicate(timeout=60)  # no host on stdin: it ends after its start
        finally:
            if memory is not None:
                memory.close()
    finally:
        backend.close()
    log = err.decode(errors="replace")
    assert '"t":"ready"' not in log  # frames go to stdout only
    for module in MODULES:
        pyc = f"/opt/codemode/__pycache__/{module}.{sys.implementation.cache_tag}.pyc"
        assert f"code object from '{pyc}'" in log, f"{module} was compiled from its source"


def test_the_runtime_files_are_written_by_the_first_start_and_kept() -> None:
    backend = LocalBackend()
    assert not any(backend._runtime_dir.iterdir())  # written while the first bwrap starts
    with CodeMode(backend=backend, spare=False) as session:
        assert session.run("1").ok
        written = {p: p.stat().st_mtime_ns for p in backend._runtime_dir.rglob("*")}
        assert backend._runtime_dir / "codemode_runtime_start.py" in written
        assert session.run("2", fresh=True).ok  # a second start writes nothing
        assert {p: p.stat().st_mtime_ns for p in backend._runtime_dir.rglob("*")} == written


def test_bytecode_that_does_not_match_its_source_is_not_run() -> None:
    with CodeMode(spare=False) as session:
        assert session.run("1").ok
        # Code that would end the runtime at once, under each module's name, with the right
        # header but the hash of another source: the jail must compile the real source.
        wrong = compile("raise SystemExit(3)", "wrong", "exec")
        for pyc in (session.backend._runtime_dir / "__pycache__").iterdir():
            header = pyc.read_bytes()[:8]
            pyc.write_bytes(header + importlib.util.source_hash(b"other") + _marshal(wrong))
        result = session.run("21 * 2", fresh=True)
    assert result.ok and result.value == 42, result.error


def test_unreadable_bytecode_falls_back_to_the_source() -> None:
    with CodeMode(spare=False) as session:
        assert session.run("1").ok
        for pyc in (session.backend._runtime_dir / "__pycache__").iterdir():
            pyc.write_bytes(b"not bytecode")
        result = session.run("21 * 2", fresh=True)
    assert result.ok and result.value == 42, result.error


def test_the_program_sees_the_runtime_as_the_script_it_was() -> None:
    with CodeMode(spare=False) as session:
        result = session.run(
            "import sys, __main__\n"
            "(sys.argv[0], __main__.__file__, __main__.__name__, ToolError.__module__,\n"
            " 'serve_session' in vars(__main__), 'codemode_runtime' in sys.modules)"
        )
    assert result.ok, result.error
    path = "/opt/codemode/codemode_runtime.py"
    assert result.value == [path, path, "__main__", "__main__", True, False]


def _marshal(code: object) -> bytes:
    import marshal

    return marshal.dumps(code)


def _memory_cgroups_of_my_threads() -> dict[str, str]:
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            lines = Path(f"/proc/self/task/{tid}/cgroup").read_text().splitlines()
        except OSError:
            continue  # the thread ended
        found[tid] = next((line for line in lines if ":memory:" in line), "")
    return found


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in child_pids(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.skipif(
    CGROUP_PLACE is None or CGROUP_PLACE.version != 1, reason=f"no cgroup v1: {WHY_NO_CGROUP}"
)
def test_the_jail_is_in_its_cgroup_and_the_host_threads_stay_in_theirs() -> None:
    before = _memory_cgroups_of_my_threads()
    with CodeMode(memory_enforcement="cgroup", spare=False) as session:
        result = session.run("import subprocess\nsubprocess.Popen(['sleep', '30']).pid")
        assert result.ok, result.error
        transport = session._conn.transport
        members = {int(p) for p in (transport.memory.path / "cgroup.procs").read_text().split()}
        jailed = _descendants(transport.proc.pid)  # bwrap's sandbox, the runtime, its child
        assert len(jailed) >= 3
        assert jailed <= members
        assert transport.proc.pid not in members  # bwrap itself stays outside, as before
    assert not [t for t in threading.enumerate() if t.name == "codemode-cgroup"]
    after = _memory_cgroups_of_my_threads()
    assert {tid: after[tid] for tid in before if tid in after} == {
        tid: line for tid, line in before.items() if tid in after
    }
