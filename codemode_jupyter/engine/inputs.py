"""A program's inputs: variables set before it runs, checked before anything runs."""

from __future__ import annotations

import json
import keyword
from collections.abc import Mapping
from typing import Any


def check_inputs(inputs: Any, reserved: set[str]) -> dict[str, Any] | None:
    """The inputs of one task as a dict of variable names to JSON-able values, or a clear
    ValueError naming what is wrong (before anything runs)."""
    if inputs is None:
        return None
    if not isinstance(inputs, Mapping):
        raise ValueError(
            f"a task's inputs must be a dict of variable names to values, not "
            f"{type(inputs).__name__}"
        )
    for name in inputs:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"input name {name!r} is not a valid Python variable name")
        if name in reserved:
            raise ValueError(f"input name {name!r} is a tool's name: the tool would be hidden")
    try:
        json.dumps(dict(inputs))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"a task's inputs must be JSON data (dicts, lists, str, numbers, bools, None): {exc}"
        ) from None
    return dict(inputs)
