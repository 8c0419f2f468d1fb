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
    _allow_expected_errors(nb)
    client = NotebookClient(
        nb,
        km=kernel_manager(),
        timeout=timeout,
        resources={"metadata": {"path": str(cwd or path.parent)}},
    )
    client.execute()
    return nb


def _allow_expected_errors(nb: Any) -> None:
    # nbclient honours the `raises-exception` tag; nbval's comment marker means the same.
    for cell in nb.cells:
        if cell.cell_type == "code" and "NBVAL_RAISES_EXCEPTION" in cell.source:
            tags = cell.metadata.setdefault("tags", [])
            if "raises-exception" not in tags:
                tags.append("raises-exception")
