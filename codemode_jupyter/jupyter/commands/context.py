"""What a `%codemode` command may use of the magics: commands take this context, so they do not
import jupyter/magics.py (which imports them). `CodeModeMagics` is the one implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from codemode_jupyter.jupyter.config import CodeMode as Settings
    from codemode_jupyter.jupyter.discovery import Discovery
    from codemode_jupyter.jupyter.sessions import SessionPool
    from codemode_jupyter.model.result import RunResult


class CommandContext(Protocol):
    """The shell, the settings, the sessions, the runs so far and the tools of the magics."""

    shell: Any
    settings: Settings
    pool: SessionPool
    last_result: RunResult | None

    @property
    def runs(self) -> Sequence[Any]:
        """The runs recorded so far (RunRecord), oldest first."""

    def current_session(self) -> Any:
        """The session the next plain `%%codemode` cell would use (created if needed)."""

    def tools(self) -> Discovery:
        """The tools a plain `%%codemode` cell would get now."""

    def record_agent_run(
        self,
        code: str,
        result: RunResult,
        execution_count: int | None,
        entries: list[dict[str, Any]] | None = None,
    ) -> None:
        """List an agent's run with the cells' runs."""
