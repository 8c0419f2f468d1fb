"""`%load_ext codemode_jupyter`: register the magics, the config, the tools comm, cleanup.

Also loaded by listing `codemode_jupyter` in `c.InteractiveShellApp.extensions`. Sessions
are closed on `%unload_ext codemode_jupyter`, at interpreter exit (atexit, which a kernel
shutdown reaches), and when IPython itself runs its exit operations.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from codemode_jupyter.backends import backend_class, set_session_label
from codemode_jupyter.jupyter.config import CodeMode as Settings
from codemode_jupyter.jupyter.magics import CodeModeMagics
from codemode_jupyter.jupyter.tools_comm import ToolsComm

#: The loaded extension per shell (one in practice; a dict keeps tests honest).
_loaded: dict[int, _Extension] = {}


class _Extension:
    """What one load registered, so unload can take exactly that back."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.settings = Settings(parent=shell)
        self.magics = CodeModeMagics(shell, self.settings)
        self.comm = ToolsComm(discover=self.magics.tools, runs=lambda: list(self.magics.runs))
        self.magics.run_listeners.append(self.comm.push_runs)

    def load(self) -> None:
        self.shell.register_magics(self.magics)
        self.shell.configurables.append(self.settings)
        self.comm.register()
        self.shell.events.register("post_run_cell", self._post_run_cell)
        atexit.register(self.close)
        self._hook_kernel_shutdown()
        set_session_label(_kernel_id())  # backends label what they create with it (Daytona)
        self._warm_up()

    def _warm_up(self) -> None:
        """Open the default session now where a spare runtime helps (the local jail): it
        starts one in the background, so the first cell does not wait for it (nothing here
        blocks the load)."""
        try:
            if not backend_class(self.settings.backend).spare_helps:
                return
            self.magics.pool.get()
        except Exception:  # the first cell reports what is wrong, clearly
            pass

    def unload(self) -> None:
        self.close()
        atexit.unregister(self.close)
        self._unhook_kernel_shutdown()
        self.comm.unregister()
        _unregister_event(self.shell, "post_run_cell", self._post_run_cell)
        _remove(self.shell.configurables, self.settings)
        for kind in ("line", "cell"):
            registered = self.shell.magics_manager.magics[kind]
            if getattr(registered.get("codemode"), "__self__", None) is self.magics:
                del registered["codemode"]
        self.shell.magics_manager.registry.pop(type(self.magics).__name__, None)

    def close(self) -> None:
        from codemode_jupyter.jupyter.commands.serve import shutdown

        shutdown(self.magics)  # an agent server in this kernel: its port and thread go too
        self.magics.close()

    def _hook_kernel_shutdown(self) -> None:
        # A shutdown request (or restart) closes the sessions before the kernel process goes,
        # so runtimes and remote sandboxes do not outlive it even if the process is then
        # killed before atexit runs.
        kernel = getattr(self.shell, "kernel", None)
        if kernel is None or "do_shutdown" in vars(kernel):
            return
        original = kernel.do_shutdown

        def do_shutdown(restart: bool) -> Any:
            self.close()
            return original(restart)

        kernel.do_shutdown = do_shutdown
        self._kernel = kernel

    def _unhook_kernel_shutdown(self) -> None:
        kernel = getattr(self, "_kernel", None)
        if kernel is not None and "do_shutdown" in vars(kernel):
            del kernel.do_shutdown

    def _post_run_cell(self, result: Any) -> None:
        try:
            self.comm.push_tools_if_changed()
        except Exception:
            pass  # the panel is a convenience; a cell never fails because of it


def load_ipython_extension(ipython: Any) -> None:
    """Register `%%codemode`, `%codemode`, `%config CodeMode` and the `codemode.tools` comm."""
    if id(ipython) in _loaded:
        return
    extension = _Extension(ipython)
    extension.load()
    _loaded[id(ipython)] = extension


def unload_ipython_extension(ipython: Any) -> None:
    """Close every session (no runtime process stays) and take back what load registered."""
    extension = _loaded.pop(id(ipython), None)
    if extension is not None:
        extension.unload()


def get_magics(ipython: Any) -> CodeModeMagics | None:
    """The loaded magics of `ipython` (for tests and tools that want the sessions)."""
    extension = _loaded.get(id(ipython))
    return extension.magics if extension else None


def _unregister_event(shell: Any, name: str, callback: Any) -> None:
    try:
        shell.events.unregister(name, callback)
    except ValueError:
        pass


def _remove(items: list[Any], item: Any) -> None:
    if item in items:
        items.remove(item)


def _kernel_id() -> str | None:
    """This kernel's id (from its connection file's name), None outside a kernel."""
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:
        return None
    return name.removeprefix("kernel-").removesuffix(".json") or None
