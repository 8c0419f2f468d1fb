"""The local backend's jail, tested with real programs trying to get out."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from conftest import dead_pid

from codemode_jupyter import CodeMode
from codemode_jupyter.backends.base import IsolationWarning
from codemode_jupyter.backends.local.backend import LocalBackend


@pytest.fixture(scope="module")
def jailed():
    with CodeMode() as session:
        assert session.status()["isolation"] == "bubblewrap"
        yield session


@pytest.fixture
def host_listener():
    """A TCP server on the host's loopback that records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(30)
    connected = threading.Event()

    def accept() -> None:
        try:
            conn, _ = server.accept()
            conn.sendall(b"hello from the host\n")
            conn.close()
            connected.set()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], connected
    server.close()


def test_host_environment_is_invisible(jailed: CodeMode, monkeypatch) -> None:
    monkeypatch.setenv("CODEMODE_TEST_SECRET", "s3cret")
    with CodeMode() as session:  # started after the variable was set
        r = session.run("import os\ndict(os.environ)")
    assert r.ok, r.error
    assert "CODEMODE_TEST_SECRET" not in r.value
    assert "s3cret" not in str(r.value)
    assert set(r.value) <= {
        "HOME",
        "PATH",
        "LANG",
        "USER",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
        "LC_CTYPE",
        "PWD",
    }


def test_host_files_and_home_are_invisible(jailed: CodeMode, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    code = (
        "import os\n"
        f"checks = {{'file': os.path.exists({str(secret)!r}), "
        f"'dir': os.path.exists({str(tmp_path)!r}), "
        f"'home': os.path.exists({str(Path.home())!r}) and bool(os.listdir({str(Path.home())!r})), "
        f"'cwd': os.path.exists({os.getcwd()!r} + '/pyproject.toml')}}\n"
        "checks['here'] = os.getcwd()\n"
        "checks"
    )
    r = jailed.run(code)
    assert r.ok, r.error
    assert r.value == {"file": False, "dir": False, "home": False, "cwd": False, "here": "/sandbox"}


def test_tool_source_never_enters_the_sandbox(tmp_path: Path) -> None:
    def secret_tool() -> str:
        token = "tool-internal-value-123"
        return token[:4]

    with CodeMode(tools=[secret_tool]) as session:
        r = session.run("import inspect\n(secret_tool.__doc__, secret_tool.__code__.co_consts)")
    assert r.ok
    assert "tool-internal-value-123" not in (r.value_repr or "") + str(r.value)


def test_host_loopback_port_is_unreachable(jailed: CodeMode, host_listener) -> None:
    port, connected = host_listener
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "    'connected'\n"
        "except OSError as e:\n"
        "    outcome = type(e).__name__\n"
        "outcome"
    )
    r = jailed.run(code)
    assert r.ok, r.error
    assert r.value in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert not connected.is_set()


def test_network_on_request_reaches_the_host(host_listener) -> None:
    port, connected = host_listener
    with CodeMode(network=True) as session:
        r = session.run(
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=10)\n"
            "s.makefile().readline()"
        )
    assert r.ok, r.error
    assert r.value == "hello from the host\n"
    assert connected.wait(10)


def test_mounts_show_chosen_host_paths(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    with CodeMode(mounts=[f"{tmp_path}:/data:ro"]) as session:
        r = session.run("open('/data/data.csv').read()")
        assert r.value == "a,b\n1,2\n"
        w = session.run("open('/data/new.txt', 'w').write('x')")
        assert w.status == "error" and w.error.type == "OSError"


def test_a_mount_that_does_not_exist_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        CodeMode(mounts=[f"{tmp_path}/nope:/data"]).backend  # noqa: B018 - builds the jail


def test_work_dir_and_tmp_are_writable_and_private(jailed: CodeMode) -> None:
    r = jailed.run(
        "open('note.txt', 'w').write('hi')\nopen('/tmp/t', 'w').write('x')\nopen('note.txt').read()"
    )
    assert r.value == "hi"
    ro = jailed.run("open('/usr/evil', 'w')")
    assert ro.status == "error" and ro.error.type == "OSError"


def test_memory_hog_is_stopped_and_the_next_run_works(jailed: CodeMode) -> None:
    r = jailed.run("hog = bytearray(3 * 1024 ** 3)")
    assert r.status in ("error", "crashed")
    if r.status == "error":  # the host refused to overcommit
        assert r.error.type == "MemoryError"
    else:
        assert "memory limit of 1024 MiB" in r.error.message
    assert jailed.run("sum(range(10))").value == 45


def test_fork_bomb_is_bounded() -> None:
    code = (
        "import os\n"
        "children = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            import time\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "except OSError as e:\n"
        "    print('stopped', type(e).__name__)\n"
        "children"
    )
    with CodeMode(max_procs=64) as session:
        r = session.run(code, timeout=60)
        assert r.ok, r.error
        assert "stopped BlockingIOError" in r.stdout
        assert 0 < r.value < 64
        assert session.run("'next cell works'", fresh=True).value == "next cell works"


def test_classic_fork_bomb_is_bounded_and_the_next_run_works() -> None:
    with CodeMode(max_procs=64) as session:
        r = session.run("import os\nwhile True:\n    os.fork()", timeout=60)
        assert r.status == "error" and r.error.type == "BlockingIOError"
        after = session.run("sum(range(5))")
        assert after.ok and after.value == 10


def test_isolation_none_warns_and_still_runs() -> None:
    with pytest.warns(IsolationWarning, match="WITHOUT isolation"):
        backend = LocalBackend(bwrap="/bin/false")
    with CodeMode(backend=backend) as session:
        assert session.status()["isolation"] == "none"
        r = session.run("print('ran')\n1 + 1")
        assert r.ok and r.value == 2 and r.isolation == "none"


def test_work_dirs_of_dead_sessions_are_swept(tmp_path: Path) -> None:
    import tempfile

    dead = str(dead_pid())
    orphan = Path(tempfile.gettempdir()) / f"codemode-jail-{dead}-x1"
    orphan.mkdir()
    mine = LocalBackend()
    try:
        assert not orphan.exists()
        assert mine._tmp.exists()
    finally:
        mine.close()
    assert not mine._tmp.exists()
