"""Kernels of this Python environment, and notebooks executed headless (CLI and tests).

A notebook's kernelspec name ("python3") may resolve to another environment's kernel if the
user installed one; `CURRENT_ENV` always starts `sys.executable -m ipykernel_launcher`, so the
kernel imports this very installation of codemode_jupyter.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager

CURRENT_ENV = "codemode-current-env"


class CurrentEnvKernelSpecManager(KernelSpecManager):
    """Knows one extra kernel, CURRENT_ENV: this interpreter running ipykernel."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name == CURRENT_ENV:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name=f"Python ({sys.executable})",
                language="python",
                metadata={"debugger": False},
            )
        return super().get_kernel_spec(kernel_name)


def kernel_manager(**kwargs: Any) -> KernelManager:
    """A KernelManager (not started) for a kernel of this environment."""
    return KernelManager(
        kernel_name=CURRENT_ENV, kernel_spec_manager=CurrentEnvKernelSpecManager(), **kwargs
    )


def execute_notebook(path: str | Path, *, timeout: float = 300.0, cwd: str | Path | None = None):
    """Execute a notebook with nbclient in a kernel of this environment; return the notebook.

    Raises nbclient's CellExecutionError on a cell that fails without
    `# NBVAL_RAISES_EXCEPTION` or a `raises-exception` tag.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    tagged = _allow_expected_errors(nb)
    km = kernel_manager()
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        # The kernel's own log (e.g. "running over TCP without encryption") is not output.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        resources={"metadata": {"path": str(cwd or path.parent)}},
    )
    try:
        client.execute()
    finally:
        for cell in tagged:
            _untag(cell)
        # nbclient leaves a kernel it did not create running; a clean shutdown lets the
        # extension close its sessions.
        if km.has_kernel:
            km.shutdown_kernel(now=False)
    return nb


def _allow_expected_errors(nb: Any) -> list[Any]:
    """Tag cells marked `# NBVAL_RAISES_EXCEPTION` as nbclient's `raises-exception`.

    Returns the cells tagged here, so the tags can be taken off again before saving.
    """
    tagged = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "NBVAL_RAISES_EXCEPTION" not in cell.source:
            continue
        tags = cell.metadata.setdefault("tags", [])
        if "raises-exception" not in tags:
            tags.append("raises-exception")
            tagged.append(cell)
    return tagged


def _untag(cell: Any) -> None:
    tags = cell.metadata.get("tags", [])
    if "raises-exception" in tags:
        tags.remove("raises-exception")
    if not tags:
        cell.metadata.pop("tags", None)
