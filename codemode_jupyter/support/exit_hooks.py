"""Work to do when the interpreter exits, while thread pools still take work.

Closing a Daytona sandbox at exit needs an executor (aiohttp resolves host names on asyncio's
default executor), and by `atexit` time concurrent.futures refuses new work, so the delete
requests would never go out. Threading exit hooks run in reverse order of registration,
before `atexit`: one registered after concurrent.futures' own runs while executors still work.

SIGTERM's default action ends the process on the spot, with no exit hook run: sandboxes and
jail directories would be left behind. `exit_on_sigterm` makes it end the interpreter as
Ctrl-C ends a script instead: an exception (SystemExit with status 143, 128 + SIGTERM, as a
shell reports a process SIGTERM killed) unwinds the main thread, so `with` blocks close what
they hold, and then the exit hooks run.
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any


def at_exit(fn: Callable[[], None]) -> None:
    """Call `fn` at interpreter exit, before thread pools stop taking work."""
    import concurrent.futures.thread  # noqa: F401 - registers its own hook first

    register = getattr(threading, "_register_atexit", None)  # CPython's, guarded
    try:
        if register is None:
            raise RuntimeError("no threading exit hooks")
        register(fn)
    except RuntimeError:  # an old or exiting interpreter: atexit is the next best
        atexit.register(fn)


def exit_on_sigterm() -> None:
    """Make SIGTERM end the interpreter through its exit hooks (see the module's docstring).

    Only from the main thread (where handlers are set) and only over the default action: a
    handler the program or its framework set stays in charge. The default comes back first
    thing in the handler, so a second SIGTERM ends the process at once, as before. Not in
    IPython (a kernel): it would catch the SystemExit of a busy cell and carry on, where
    SIGTERM is meant to end it; a kernel closes its pools at shutdown.
    """
    if threading.current_thread() is not threading.main_thread() or _in_ipython():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError):  # not the main interpreter (a subinterpreter)
        pass


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    return get is not None and get() is not None


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signum, signal.SIG_DFL)  # the default action, chained: the next one kills
    raise SystemExit(128 + signum)
