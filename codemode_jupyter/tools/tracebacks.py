"""A tool's traceback as a person wants to read it: from the tool's own code, cells named.

The frames that carried the call to the tool (the engine, validation, approvals, the comm, the
event loop an async tool ran on) say how the call got there, not what went wrong in it, so
the leading ones are dropped; an error raised by that machinery itself (bad arguments, a
rejected call) keeps no frames and is its one line `Type: message`. A frame from a notebook
cell is named `Cell In[n]`, as IPython's own tracebacks name it, not `/tmp/ipykernel_...py`.
"""

from __future__ import annotations

import os
import sys
import traceback
from importlib.util import find_spec
from pathlib import Path


def _directory(package: str) -> str:
    """Where `package` lives, found without importing it (a session of sync tools never
    loads asyncio)."""
    spec = find_spec(package)
    origin = spec.origin if spec is not None else None
    return str(Path(origin).resolve().parent) + os.sep if origin else os.sep + "nowhere" + os.sep


#: Directories whose leading frames are the way to the tool: this package and the stdlib's
#: futures and event loop (an async tool's result is re-raised through them).
_CARRIERS = tuple(_directory(p) for p in ("codemode_jupyter", "asyncio", "concurrent.futures"))


def tool_traceback(exc: BaseException) -> str:
    """`exc`'s traceback without the leading frames that carried the call (see above)."""
    frames = traceback.extract_tb(exc.__traceback__)
    while frames and frames[0].filename.startswith(_CARRIERS):
        frames.pop(0)
    for frame in frames:
        frame.filename = cell_name(frame.filename)
    lines = ["Traceback (most recent call last):\n", *frames.format()] if frames else []
    if type(exc).__module__.startswith("codemode_jupyter"):
        lines.append(f"{type(exc).__name__}: {exc}\n")  # not codemode_jupyter.tools.tool.X
    else:
        lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)


def cell_name(filename: str) -> str:
    """`Cell In[3]` for code from a notebook cell (as IPython's tracebacks say), else as is."""
    ipython = sys.modules.get("IPython")  # never imported here: only a running shell names cells
    if ipython is None:
        return filename
    try:
        label = ipython.get_ipython().compile.format_code_name(filename)
    except Exception:
        return filename
    return " ".join(label) if label else filename
