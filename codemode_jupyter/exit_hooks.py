"""Work to do when the interpreter exits, while thread pools still take work.

Closing a Daytona sandbox at exit needs an executor (aiohttp resolves host names on asyncio's
default executor), and by `atexit` time concurrent.futures refuses new work, so the delete
requests would never go out. Threading exit hooks run in reverse order of registration,
before `atexit`: one registered after concurrent.futures' own runs while executors still work.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable


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
