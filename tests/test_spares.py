"""Spare runtimes: started ahead of need, fresh when taken, gone with their session."""

from __future__ import annotations

import gc

from codemode_jupyter import CodeMode


def add(a: int, b: int = 1) -> int:
    return a + b


def spare_pid(session: CodeMode) -> int:
    """The host pid of the session's spare runtime, once it is up."""
    conn = session._res.spare.wait_ready(timeout=30)
    assert conn is not None
    return conn.transport.proc.pid


def test_the_first_run_takes_the_spare_and_a_new_one_is_started() -> None:
    with CodeMode(tools=[add]) as session:
        first = spare_pid(session)
        r = session.run("add(1, 2)")
        assert r.ok and r.value == 3
        assert session._conn.transport.proc.pid == first
        second = spare_pid(session)
        assert second != first
        assert session.status()["spare_runtime"] == "ready"


def test_a_spare_is_fresh_its_own_namespace_and_home() -> None:
    with CodeMode() as session:
        session.run("x = 1\nopen('/sandbox/mine', 'w').write('a')")
        r = session.run("import os\n['x' in globals(), os.listdir('/sandbox')]", fresh=True)
        assert r.ok and r.value == [False, []], r


def test_after_a_crash_the_spare_takes_over_and_says_state_was_lost() -> None:
    with CodeMode(tools=[add]) as session:
        session.run("kept = 1")
        crashed = session.run("import os\nos._exit(3)")
        assert crashed.status == "crashed"
        r = session.run("[add(1), 'kept' in globals()]")
        assert r.ok and r.value == [2, False]


def test_spares_die_with_their_session_closed_or_collected() -> None:
    with CodeMode() as session:
        session.run("1")
        procs = [session._conn.transport.proc, session._res.spare.wait_ready(30).transport.proc]
    assert all(p.poll() is not None for p in procs)
    forgotten = CodeMode()
    proc = forgotten._res.spare.wait_ready(30).transport.proc
    del forgotten
    gc.collect()
    assert proc.poll() is not None


def test_spares_can_be_turned_off_and_are_off_for_daytona_and_replay() -> None:
    with CodeMode(spare=False) as session:
        assert session.status()["spare_runtime"] == "off"
        assert session.run("1").ok
    with CodeMode(protocol="replay") as session:
        assert session.status()["spare_runtime"] == "off"
