"""Displays a run sends (display() in the program, its figures): checked, and kept within the
run's caps, so a program that displays in a loop cannot flood the host or the front end.

One display may take `MAX_ONE_DISPLAY` characters (10 MiB), a run's displays together
`max_display_bytes`, and a run keeps at most `max_displays` of them; what is left out is
counted and said at the end of the run's stderr, as dropped output is. A display's size is
everything the host would keep of it: its MIME types, their data and its metadata; the run's
value bundle counts against the same caps.
"""

from __future__ import annotations

import json
from typing import Any

from codemode_jupyter.errors import BadDisplay

MAX_ONE_DISPLAY = 10 << 20
MAX_DISPLAY_BYTES = 50 << 20
MAX_DISPLAYS = 500
_JSON_SUFFIX = "+json"


def check_bundle(data: Any, what: str = "'display' frame") -> None:
    """A MIME bundle: a dict of MIME type to text (JSON data for JSON types), with text/plain."""
    if not isinstance(data, dict) or not data:
        raise BadDisplay(f"{what} without a MIME bundle")
    if not isinstance(data.get("text/plain"), str):
        raise BadDisplay(f"{what} without text/plain")
    for mime, value in data.items():
        if not (isinstance(mime, str) and 0 < len(mime) <= 200 and "/" in mime):
            raise BadDisplay(f"{what} with a bad MIME type {mime!r:.40}")
        if not isinstance(value, str) and not is_json_type(mime):
            raise BadDisplay(f"{what} with {mime} data that is not text")


def check_display_frame(frame: dict) -> None:
    check_bundle(frame.get("data"))
    metadata = frame.get("metadata", {})
    if not isinstance(metadata, dict):
        raise BadDisplay("'display' frame with metadata that is not an object")


def is_json_type(mime: str) -> bool:
    return mime == "application/json" or mime.endswith(_JSON_SUFFIX)


def kept_size(data: dict[str, Any], metadata: Any = None, cap: int = -1) -> int:
    """Characters the host keeps of a display: its MIME types, their data and its metadata.
    Counting stops past `cap` (if given): then some size over `cap` is returned."""
    size = len(_dumps(metadata)) if metadata else 0
    for mime, value in data.items():
        size += len(mime) + (len(value) if isinstance(value, str) else len(_dumps(value)))
        if 0 <= cap < size:
            break
    return size


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # as the runtime measures it


class DisplayBook:
    """The displays of one run, within its caps. Used from the engine's I/O thread only."""

    def __init__(
        self,
        max_bytes: int = MAX_DISPLAY_BYTES,
        max_count: int = MAX_DISPLAYS,
        max_one: int = MAX_ONE_DISPLAY,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.max_one = min(max_one, max_bytes)
        self.items: list[dict[str, Any]] = []
        self.size = 0
        self.dropped = 0
        self.dropped_size = 0
        self.value_dropped = 0  # the size of the value's bundle, if it was left out

    def add(self, data: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any] | None:
        """The display as kept (None if it was left out: too big, or past the run's caps)."""
        size = -1 if len(self.items) >= self.max_count else self._fits(data, metadata)
        if size < 0:
            self.dropped += 1
            self.dropped_size += -size if size < -1 else kept_size(data, metadata, self.max_one)
            return None
        item = {"data": data, "metadata": metadata}
        self.items.append(item)
        return item

    def keep_value(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """The run's value bundle as kept (None if it is over the caps: its value and repr
        stay), counted with the displays."""
        size = self._fits(data, None)
        if size < 0:
            self.value_dropped = -size
            return None
        return data

    def _fits(self, data: dict[str, Any], metadata: Any) -> int:
        """The bundle's size, counted as kept, if it fits the caps; else minus what was
        counted of it (counting stops past the room left)."""
        room = min(self.max_one, self.max_bytes - self.size)
        size = kept_size(data, metadata, room)
        if size > room:
            return -size
        self.size += size
        return size

    def note(self) -> str:
        """What was left out, for the run's stderr ('' if nothing was)."""
        note = ""
        if self.value_dropped:
            note = (
                f"[codemode] the value's rich forms (over {self.value_dropped / 2**20:.1f} MiB) "
                "were dropped: they count against the run's display caps; its repr is kept\n"
            )
        if not self.dropped:
            return note
        return note + (
            f"[codemode] {self.dropped} display(s) ({self.dropped_size / 2**20:.1f} MiB) "
            f"were dropped: a run keeps at most {self.max_count} displays and "
            f"{self.max_bytes / 2**20:g} MiB of them, {self.max_one / 2**20:g} MiB each\n"
        )
