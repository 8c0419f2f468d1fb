"""The sandbox runtime's files: one list of them (RUNTIME_FILES) that every way of shipping the
runtime takes, and none of them shown in a program's tracebacks."""

from __future__ import annotations

import sys

from codemode_jupyter import CodeMode
from codemode_jupyter.backends.base import RUNTIME_DIR, runtime_sources
from codemode_jupyter.backends.local.bytecode import runtime_bytecode
from codemode_jupyter.engine.replay import _packed_runtime
from codemode_jupyter.runtime import RUNTIME_FILES

#: Not shipped as a runtime module: the package's own marker and the local backend's start script.
NOT_SHIPPED = {"__init__.py", "codemode_runtime_start.py"}


def fail(message: str) -> str:
    raise ValueError(message)


def test_every_runtime_module_is_in_the_one_list() -> None:
    present = {path.name for path in RUNTIME_DIR.glob("*.py")} - NOT_SHIPPED
    assert set(RUNTIME_FILES) == present
    assert all(name.startswith("codemode_") for name in RUNTIME_FILES)  # no clash with a program


def test_uploads_bytecode_and_the_replay_bundle_take_the_one_list() -> None:
    assert set(runtime_sources()) == set(RUNTIME_FILES)
    assert set(_packed_runtime()) == set(RUNTIME_FILES)
    if sys.implementation.cache_tag is not None:
        stems = {name.split("/")[1].split(".")[0] for name in runtime_bytecode()}
        assert stems == {name.removesuffix(".py") for name in RUNTIME_FILES}


def test_no_runtime_module_shows_in_a_programs_traceback() -> None:
    """Errors raised inside the runtime's own modules (the stdout stream, a tool stub, the
    program runner) show the program's lines only."""
    programs = [
        "import sys\nsys.stdout.write(5)",  # TextStream.write raises (codemode_channel)
        "fail('no')",  # a failed tool call (codemode_runtime's stubs)
        "fail(object())",  # arguments that are not JSON values
        "print('a')\n1 / 0",
    ]
    with CodeMode([fail], spare=False) as session:
        results = [session.run(code) for code in programs]
    with CodeMode([fail], spare=False, protocol="replay") as session:
        replayed = session.run("fail('no')")
    for code, result in zip(programs, results, strict=True):
        assert not result.ok, code
        assert "<cell>" in result.error.traceback, result.error.traceback
        assert "codemode_" not in result.error.traceback, result.error.traceback
    assert not replayed.ok and "codemode_" not in replayed.error.traceback
