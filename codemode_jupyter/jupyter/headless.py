"""Kernels of this Python environment, and notebooks executed headless (CLI and tests).

A notebook's kernelspec name ("python3") may resolve to another environment's kernel if the
user installed one; `CURRENT_ENV` always starts `sys.executable -m ipykernel_launcher`, so the
kernel imports this very installation of codemode_jupyter.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager

if TYPE_CHECKING:
    from nbformat import NotebookNode

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


def execute_notebook(
    path: str | Path, *, timeout: float = 300.0, cwd: str | Path | None = None
) -> NotebookNode:
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


class Execution:
    """One executed cell: the reply and the iopub messages it caused (status ones left out)."""

    def __init__(self, reply: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        self.reply = reply
        self.messages = messages

    @property
    def ok(self) -> bool:
        return self.reply["content"]["status"] == "ok"

    def of_type(self, *kinds: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in kinds]

    def stream(self, name: str = "stdout") -> str:
        return "".join(
            m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == name
        )

    def displays(self, mime: str = "text/plain") -> list[Any]:
        """The `mime` data of every display_data, in order."""
        return [
            m["content"]["data"][mime]
            for m in self.of_type("display_data")
            if mime in m["content"]["data"]
        ]

    @property
    def result(self) -> str | None:
        """Out[n] as text/plain, if the cell had a value."""
        found = self.of_type("execute_result")
        return found[0]["content"]["data"]["text/plain"] if found else None

    @property
    def error(self) -> dict[str, Any] | None:
        found = self.of_type("error")
        return found[0]["content"] if found else None


class KernelSession:
    """A started kernel of this environment and a client, for tests and benchmarks."""

    def __init__(self, extra_arguments: list[str] | None = None, env: dict[str, str] | None = None):
        self.km = kernel_manager()
        self.km.start_kernel(
            extra_arguments=["--IPKernelApp.log_level=ERROR", *(extra_arguments or [])],
            **({"env": env} if env is not None else {}),
        )
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(
        self,
        code: str,
        *,
        stdin: list[str] | None = None,
        on_message: Any = None,
        timeout: float = 60.0,
    ) -> Execution:
        """Run a cell; answer input requests from `stdin` in order; collect its messages.

        `on_message(msg)` sees each iopub message as it arrives (e.g. to interrupt the kernel
        once the program has started).
        """
        messages: list[dict[str, Any]] = []
        answers = list(stdin or [])

        def output_hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] not in ("status", "execute_input"):
                messages.append(msg)
            if on_message is not None:
                on_message(msg)

        def stdin_hook(msg: dict[str, Any]) -> None:
            messages.append(msg)
            self.kc.input(answers.pop(0) if answers else "")

        reply = self.kc.execute_interactive(
            code,
            output_hook=output_hook,
            stdin_hook=stdin_hook,
            allow_stdin=stdin is not None,
            timeout=timeout,
        )
        return Execution(reply, messages)

    def pid(self) -> int:
        return self.km.provisioner.process.pid  # type: ignore[union-attr]

    def shutdown(self) -> None:
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=False)
