"""Display events as real display outputs of the running cell, rendered by the front end's own
renderers and kept in the saved notebook.

The engine calls `on_event` from its I/O thread; the publisher is made on the kernel's main
thread while the cell runs and publishes under that cell's parent header, so each display lands
in the cell that ran the program whichever thread sends it.
"""

from __future__ import annotations

from typing import Any

from ..events import Display, Event


class CellDisplays:
    """Publishes each Display event as a display_data output of the current cell."""

    def __init__(self, shell: Any = None) -> None:
        if shell is None:
            from IPython import get_ipython

            shell = get_ipython()
        self._pub = getattr(shell, "display_pub", None)
        self._parent = getattr(self._pub, "parent_header", None) or None

    def on_event(self, event: Event) -> None:
        """Engine callback: publish displays, ignore every other event."""
        if isinstance(event, Display):
            self.publish(event)

    def publish(self, event: Display) -> None:
        from IPython.display import publish_display_data

        pub = self._pub
        # ipykernel keeps the parent header per thread (a context variable): set this cell's
        # for the engine's thread while it publishes, and put back what was there.
        token = None
        if self._parent is not None and hasattr(pub, "set_thread_parent"):
            token = pub.set_thread_parent(self._parent)
        try:
            publish_display_data(event.data, event.metadata)
        finally:
            if token is not None:
                pub.reset_thread_parent(token)


def publish_display(event: Event) -> None:
    """One-off form for scripts: publish `event` if it is a Display (uses the global parent)."""
    if isinstance(event, Display):
        from IPython.display import publish_display_data

        publish_display_data(event.data, event.metadata)
