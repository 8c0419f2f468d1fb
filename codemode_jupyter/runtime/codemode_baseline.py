"""The process as a fresh program finds it (Baseline), put back between a warm runtime's
programs, and the imports the runtime makes for itself later (runtime_import).

Part of the sandbox runtime (codemode_runtime.py): standard library only.
"""

from __future__ import annotations

import _imp
import _signal
import _thread
import _warnings
import builtins
import os
import sys
import threading
import types

_ALL_SIGNALS = _signal.valid_signals()


class Baseline:
    """The process as a fresh program finds it, taken before the first program runs and put
    back by reset(), so that a warm runtime's next program (a pool's next task) starts as a
    fresh one would: the environment variables, the working directory, the builtins, the
    modules (those a program imported are dropped; the attributes of the others are put
    back), sys.path and the import hooks, the warning filters, the signal handlers, the
    recursion limit and any trace or profile function. Threads a program left running cannot
    be undone: then reset() says the runtime must be replaced.

    Compiled modules cannot be loaded twice in one process (numpy refuses outright), and what
    a program imported along with one may be referred to by it: so the modules of a program
    that loaded a compiled one are all kept, as part of the runtime from then on (their
    attributes as they were when it ended).
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.environ = dict(os.environ)
        self.builtins = dict(builtins.__dict__)
        self.modules: dict[str, object] = {}
        self.attrs: list[tuple[dict, dict]] = []  # (a module's __dict__, its saved copy)
        self._adopt([name for name in sys.modules if name not in _OWN_MODULES])
        self.path = list(sys.path)
        self.meta_path = list(sys.meta_path)
        self.path_hooks = list(sys.path_hooks)
        self._filters = getattr(_warnings, "filters", [])  # the list warnings.filters is
        self.warnings = list(self._filters)
        self.signals = {s: _signal.getsignal(s) for s in _ALL_SIGNALS if s < _signal.NSIG}
        self.recursion = sys.getrecursionlimit()
        self.threads = _thread_count()

    def _adopt(self, names: list[str]) -> None:
        for name in names:
            module = self.modules[name] = sys.modules[name]
            if isinstance(module, types.ModuleType):
                self.attrs.append((module.__dict__, dict(module.__dict__)))

    def threads_left(self) -> int:
        """How many threads the programs started are still running."""
        return _thread_count() - self.threads

    def restore(self) -> None:
        """Put the process back as it was (the threads excepted: see threads_left)."""
        if sys.gettrace() is not None or sys.getprofile() is not None:
            sys.settrace(None)
            sys.setprofile(None)
        if os.environ != self.environ:  # by value: os.environ decodes anew on each read
            for key in [k for k in os.environ if k not in self.environ]:
                del os.environ[key]
            os.environ.update(self.environ)
        try:
            os.chdir(self.workdir)
        except OSError:
            pass  # removed by the program: the next one finds what a fresh runtime would
        if not _same(builtins.__dict__, self.builtins):
            _restore_mapping(builtins.__dict__, self.builtins)
        self._restore_modules()
        for current, saved in ((sys.path, self.path), (sys.meta_path, self.meta_path)):
            if current != saved:
                current[:] = saved
        if sys.path_hooks != self.path_hooks:
            sys.path_hooks[:] = self.path_hooks
            sys.path_importer_cache.clear()
        if self._filters != self.warnings:
            self._filters[:] = self.warnings
            getattr(_warnings, "_filters_mutated", lambda: None)()  # its cache of verdicts
        for signum, handler in self.signals.items():
            if _signal.getsignal(signum) is not handler:
                try:
                    _signal.signal(signum, handler)
                except (OSError, ValueError, TypeError):
                    pass  # one that cannot be set (SIGKILL) was never changed either
        if sys.getrecursionlimit() != self.recursion:
            sys.setrecursionlimit(self.recursion)

    def _restore_modules(self) -> None:
        modules = sys.modules
        new = [name for name in modules if name not in self.modules and name not in _OWN_MODULES]
        if _RUNTIME_MODULES.intersection(new):
            self._adopt([name for name in new if name in _RUNTIME_MODULES])
            new = [name for name in new if name not in _RUNTIME_MODULES]
        if any(_made_by_c(modules[name]) for name in new):
            self._adopt(new)  # kept: see the class's docstring
        else:
            for name in new:
                del modules[name]
        for name, module in self.modules.items():
            if modules.get(name) is not module:
                modules[name] = module
        for current, saved in self.attrs:
            if not _same(current, saved):
                _restore_mapping(current, saved, keep=_is_loaded_module)

    def note_path(self) -> None:
        """sys.path grew on the runtime's own account (a package directory appeared)."""
        self.path = list(sys.path)


#: Modules the runtime makes anew for each fresh namespace.
_OWN_MODULES = frozenset({"codemode"})
#: Modules the runtime imported for its own use after it started (runtime_import): kept by
#: resets like those it started with, so that each task does not import them again.
_RUNTIME_MODULES: set[str] = set()


def runtime_import(name: str) -> types.ModuleType:
    """Import a module the runtime needs now (not at start: each cold start would pay)."""
    module = sys.modules.get(name)
    if module is None:
        before = set(sys.modules)
        module = __import__(name)
        _RUNTIME_MODULES.update(set(sys.modules) - before)
    return module


_EXTENSION_SUFFIXES = tuple(_imp.extension_suffixes())


def _thread_count() -> int:
    """Threads started through `threading` or `_thread` that are still running."""
    count = getattr(_thread, "_count", None)
    return count() if count is not None else threading.active_count()


def _made_by_c(module: object) -> bool:
    """A module made by C code (an extension or a built-in): it cannot be made again."""
    try:
        origin = getattr(getattr(module, "__spec__", None), "origin", None)
    except Exception:  # anything may sit in sys.modules
        return False
    if not isinstance(origin, str):
        return False
    return origin == "built-in" or origin.endswith(_EXTENSION_SUFFIXES)


def _is_loaded_module(value: object) -> bool:
    """A submodule binding on its package: kept while the submodule stays loaded."""
    name = getattr(value, "__name__", None) if isinstance(value, types.ModuleType) else None
    return isinstance(name, str) and sys.modules.get(name) is value


def _same(current: dict, saved: dict) -> bool:
    """Whether two dicts hold the same items (values compared by identity first, in C)."""
    try:
        return current == saved
    except Exception:  # a value whose == is not a bool (an array put in place of another)
        return False


def _restore_mapping(current: dict, saved: dict, keep: object = None) -> None:
    """Make `current` hold `saved`'s items again (compared by identity); keys added since
    stay only if `keep(value)` says so."""
    for key in [k for k in current if k not in saved]:
        if keep is None or not keep(current[key]):
            del current[key]
    for key, value in saved.items():
        if key not in current or current[key] is not value:
            current[key] = value
