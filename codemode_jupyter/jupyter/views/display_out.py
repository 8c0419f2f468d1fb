"""Display events as real display outputs of the running cell, rendered by the front end's own
renderers and kept in the saved notebook.

With the rich run view, the run card shows each display too, in time order with output and
calls. So that JupyterLab and Notebook 7 show it once, each output then carries a marker type,
`MIME_SHOWN_IN_RUN`, which the labextension renders as nothing with a rank that wins (its
output area is hidden by a style); front ends without the extension (classic Notebook, VS
Code, nbconvert) do not know the marker and show the display as usual.

The engine calls `on_event` from its I/O thread; the publisher is made on the kernel's main
thread while the cell runs and publishes under that cell's parent header, so each display lands
in the cell that ran the program whichever thread sends it.
"""

from __future__ import annotations

from typing import Any

from codemode_jupyter.model.events import Display, Event

#: The marker type of a display the run card shows (its value is the same on every run:
#: nbval compares it).
MIME_SHOWN_IN_RUN = "application/vnd.codemode.display+json"
SHOWN_IN_RUN = {"shown_in": "run"}


class CellDisplays:
    """Publishes each Display event as a display_data output of the current cell.

    `marked`: the cell has a rich run view that shows the displays (see the module doc).
    """

    def __init__(self, shell: Any = None, *, marked: bool = False) -> None:
        self.marked = marked
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
        data = {**event.data, MIME_SHOWN_IN_RUN: SHOWN_IN_RUN} if self.marked else event.data
        try:
            publish_display_data(data, event.metadata)
        finally:
            if token is not None:
                pub.reset_thread_parent(token)


def publish_display(event: Event) -> None:
    """One-off form for scripts: publish `event` if it is a Display (uses the global parent)."""
    if isinstance(event, Display):
        from IPython.display import publish_display_data

        publish_display_data(event.data, event.metadata)
