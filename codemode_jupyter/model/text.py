"""Small text helpers shared by the engine and the views: shortened reprs and clipped text."""

from __future__ import annotations

import reprlib
from functools import cache
from typing import Any


@cache
def _repr_within(limit: int) -> reprlib.Repr:
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    return shortener


def short_repr(value: Any, limit: int = 80) -> str:
    """`repr(value)` with long strings and other long reprs cut to about `limit` characters
    (reprlib's way: the middle goes); never raises, whatever the value's own repr does."""
    try:
        return _repr_within(limit).repr(value)
    except Exception:  # a repr that fails must not turn a clear message into a crash
        return f"<{type(value).__name__} object>"


def clip(text: str, limit: int, ellipsis: str = "…") -> str:
    """`text` cut to at most `limit` characters, `ellipsis` included where it was cut."""
    return text if len(text) <= limit else text[: limit - len(ellipsis)] + ellipsis
