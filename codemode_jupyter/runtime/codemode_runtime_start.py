"""Runs codemode_runtime.py, next to this file, as a script, but from its cached bytecode.

Python compiles a script anew on every start; only an imported module's bytecode is read from
`__pycache__`. The local backend writes the runtime's bytecode there (backends/local/bytecode.py),
and this start script runs it exactly as `python codemode_runtime.py` would run the source:
as the `__main__` module, with the same globals and sys.argv, so classes made by the runtime
are still `__main__`'s. Without usable bytecode (another python version) the loader compiles
the source, as the script's start did.
"""

import os
import sys
from importlib.machinery import SourceFileLoader


def _run_runtime() -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "codemode_runtime.py")
    loader = SourceFileLoader("__main__", path)
    code = loader.get_code("__main__")
    sys.argv[0] = path
    # The globals a script starts with (Python's own start of a file), in place of this
    # one's: from here on, this function sees none of the names it imported.
    namespace = sys.modules["__main__"].__dict__
    builtins = namespace["__builtins__"]
    namespace.clear()
    namespace.update(
        __name__="__main__",
        __doc__=None,
        __package__=None,
        __loader__=loader,
        __spec__=None,
        __annotations__={},
        __builtins__=builtins,
        __file__=path,
        __cached__=None,
    )
    exec(code, namespace)


if __name__ == "__main__":  # not when a spawned multiprocessing child imports this anew
    _run_runtime()
