"""Checks for the numbers a session and a run take, made before anything starts.

A wrong value (a string, NaN, a negative count) fails here with a clear ValueError, not after
the program was sent or deep inside a backend.
"""

from __future__ import annotations

import math
from typing import Any


def positive_seconds(name: str, value: Any) -> float:
    """A finite number of seconds above zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"{name} must be a number of seconds, not {type(value).__name__} {value!r:.40}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds above 0, not {value!r}")
    return float(value)


def count(name: str, value: Any, minimum: int = 0) -> int:
    """A whole number, at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, not {type(value).__name__} {value!r:.40}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def port(value: Any) -> int:
    """A TCP port number, 1-65535."""
    number = count("port", value, 1)
    if number > 65535:
        raise ValueError(f"port must be between 1 and 65535, not {number}")
    return number
