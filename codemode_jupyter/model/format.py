"""How values, calls and durations are written as text: one format for every view.

Arguments and results are shown as Python literals, as the program sees them (`city='Paris'`,
`{'temp_c': 18}`). Durations use one rule set, mirrored by `formatDuration` in the
labextension's format.ts. Long text is cut at a word or token boundary and ends in an ellipsis.
"""

from __future__ import annotations

import reprlib
from typing import Any

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 6
_short.maxlevel = 3

#: Characters after which `clip` looks back for a boundary (a space or punctuation) to cut at.
_BOUNDARY = " ,;)]}"


def short_repr(value: Any) -> str:
    """A one-line repr, bounded in length (reprlib's abbreviations), for transcripts."""
    try:
        text = _short.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return " ".join(text.split())


def full_repr(value: Any) -> str:
    """The value's repr; `<type>` when its repr raises."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, at a boundary when one is near, with `…`."""
    if len(text) <= limit:
        return text
    cut = max(limit - 1, 1)
    # A boundary in the last quarter of the kept part reads better than a cut mid-token.
    for index in range(cut, max(cut * 3 // 4, 1) - 1, -1):
        if text[index - 1] in _BOUNDARY:
            cut = index
            break
    return text[:cut].rstrip() + "…"


def plural(count: int, word: str) -> str:
    """`1 tool call`, `2 tool calls`."""
    return f"{count} {word}{'s' if count != 1 else ''}"


def format_args(args: dict[str, Any]) -> str:
    """`a=1, b='x'`: a call's keyword arguments as the program wrote them."""
    return ", ".join(f"{key}={full_repr(value)}" for key, value in args.items())


def format_call(name: str, args: dict[str, Any]) -> str:
    """`name(a=1, b='x')`, each argument shortened (transcripts)."""
    inner = ", ".join(f"{key}={short_repr(value)}" for key, value in args.items())
    return f"{name}({inner})"


def format_duration(seconds: float) -> str:
    """Seconds as `850 µs`, `12.3 ms`, `1.24 s` or `2 min 5 s` (the same rules as format.ts)."""
    if seconds < 0.001:
        return f"{round(seconds * 1e6)} µs"
    if seconds < 1:
        ms = seconds * 1000
        digits = 2 if ms < 10 else 1 if ms < 100 else 0
        return f"{ms:.{digits}f} ms"
    if seconds < 60:
        return f"{seconds:.{2 if seconds < 10 else 1}f} s"
    minutes = int(seconds // 60)
    rest = round(seconds - minutes * 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
