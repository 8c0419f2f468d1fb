"""Compiled bytecode of the runtime's modules, so that a jailed python does not compile them
on every start (10-11 ms of CPU, a sixth of a cold start on a small VM).

Python reads a module's bytecode from `__pycache__`, but a jail cannot write one there (its
runtime files are read-only, and no jail may leave code for the next one to run). So the host
provides it, once per process: the code of each runtime module as this python loads it (from
the package's own `__pycache__` when pip or an import left one there, else compiled), written
as a checked hash-based .pyc (PEP 552) named for this interpreter. A jailed python uses it only
if it is the same implementation and version (the file name), with the same bytecode format
(the magic number), for the same source (the hash); otherwise it compiles the source, as it
always did.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import marshal
import sys
import types

from codemode_jupyter.backends.base import RUNTIME_DIR, RUNTIME_FILES

_CHECKED_HASH = 0b11  # the .pyc flags: hash-based, and the source is checked against it


@functools.cache
def runtime_bytecode() -> dict[str, bytes]:
    """{path under the runtime dir: .pyc data} for each runtime module; empty where this
    python keeps no bytecode cache (`sys.implementation.cache_tag` is None)."""
    tag = sys.implementation.cache_tag
    if tag is None:
        return {}
    found = {}
    for name in RUNTIME_FILES:
        stem = name.removesuffix(".py")
        source = (RUNTIME_DIR / name).read_bytes()
        found[f"__pycache__/{stem}.{tag}.pyc"] = b"".join(
            (
                importlib.util.MAGIC_NUMBER,
                _CHECKED_HASH.to_bytes(4, "little"),
                importlib.util.source_hash(source),
                marshal.dumps(_code(stem, source)),
            )
        )
    return found


def _code(stem: str, source: bytes) -> types.CodeType:
    """The module's code, for exactly `source`. The file name in it does not matter: the
    jail's loader sets it to where the jail finds the source."""
    path = RUNTIME_DIR / f"{stem}.py"
    if not sys.flags.optimize:  # else the host's bytecode is for -O, and the jail's python is not
        name = f"codemode_jupyter.runtime.{stem}"
        code = importlib.machinery.SourceFileLoader(name, str(path)).get_code(name)
        if path.read_bytes() == source:  # not edited meanwhile: the code is this source's
            return code
    return compile(source, stem, "exec", dont_inherit=True, optimize=0)
