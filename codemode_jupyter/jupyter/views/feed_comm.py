"""The kernel side of the `codemode.feed` comm: the serving cell's record, kept by the page.

The feed's widgets are live state that a saved notebook loses. So each agent run's outputs
also go to the front end, which writes them into the serving cell as plain outputs (saved,
drawn without a kernel). The kernel opens one comm per `%codemode serve` (before the cell
displays the feed, so the page knows the feed is live when it draws it) and sends:

- on open, and in answer to the page's `{"op": "hello"}` (a page opened while the server
  runs joins the comm): `{"op": "open", "feed": ID, "url": ...}`;
- `{"op": "run", "feed": ID, "run": N, "outputs": [...], "keep": [N, ...]}`: run N's outputs
  (each marked `metadata.codemode_feed = {"feed": ID, "run": N}`), replacing its earlier
  ones; records of runs not in `keep` left the feed;
- `{"op": "stopped", "feed": ID, "text": ...}` then close: the server stopped.

Messages go out through ipykernel's IOPub thread from any thread, like widget state.
Outside a kernel (no comm manager) nothing is sent.
"""

from __future__ import annotations

import threading
from typing import Any

TARGET = "codemode.feed"
#: The serving cell's display: the feed's id and the server's info (never the token).
FEED_MIME = "application/vnd.codemode.feed+json"


class FeedComm:
    """One feed's comm; every method is a no-op once closed or outside a kernel."""

    def __init__(self, feed_id: str) -> None:
        self.feed_id = feed_id
        self._comm: Any = None
        self._lock = threading.Lock()  # sends come from the agent thread and clicks

    def open(self, info: dict[str, Any]) -> None:
        hello = {"op": "open", "feed": self.feed_id, "url": info.get("url", "")}
        try:
            from comm import create_comm

            comm = create_comm(target_name=TARGET, data=hello)
        except Exception:  # no kernel: the feed prints lines instead
            return
        # A page opened later joins the comm and says hello: tell it which feed this is.
        comm.on_msg(lambda msg: self._send(hello) if _data(msg).get("op") == "hello" else None)
        with self._lock:
            self._comm = comm

    def send_run(self, number: int, outputs: list[dict[str, Any]], keep: list[int]) -> None:
        self._send(
            {"op": "run", "feed": self.feed_id, "run": number, "outputs": outputs, "keep": keep}
        )

    def close(self, text: str) -> None:
        self._send({"op": "stopped", "feed": self.feed_id, "text": text})
        with self._lock:
            comm, self._comm = self._comm, None
        if comm is not None:
            try:
                comm.close()
            except Exception:
                pass  # the kernel is going away

    def _send(self, message: dict[str, Any]) -> None:
        with self._lock:
            comm = self._comm
            if comm is None:
                return
            try:
                comm.send(message)
            except Exception:
                self._comm = None  # the kernel's session is gone: nothing to tell


def _data(msg: dict[str, Any]) -> dict[str, Any]:
    return (msg.get("content") or {}).get("data") or {}
