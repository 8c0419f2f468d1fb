"""Which functions of the notebook are tools.

Every plain function defined in the notebook (its `__module__` is `__main__`, its name does
not start with `_`) is a tool, and so is anything marked with `@codemode_jupyter.tool`
wherever it was defined. Imported, unmarked functions are not tools, unless a cell names them
in `--tools`. Discovery runs before every cell, so redefining a function takes effect at once.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from codemode_jupyter.errors import UnknownToolError
from codemode_jupyter.tools.tool import Tool, is_tool_marked


@dataclass
class Discovery:
    """The tools a cell gets, by name, in definition order, and what could not be a tool."""

    tools: dict[str, Tool] = field(default_factory=dict)
    #: name -> why the function could not be turned into a tool (shown by `%codemode tools`)
    skipped: dict[str, str] = field(default_factory=dict)

    def tool_list(self) -> list[Tool]:
        return list(self.tools.values())


def _is_notebook_function(name: str, obj: Any) -> bool:
    return (
        isinstance(obj, types.FunctionType)
        and not name.startswith("_")
        and obj.__module__ == "__main__"
        and obj.__name__ != "<lambda>"
    )


class ToolCache:
    """Tool objects by function identity: building one (schema, stub) costs more than a cell."""

    def __init__(self) -> None:
        self._tools: dict[int, tuple[Callable[..., Any], Tool]] = {}

    def get(self, fn: Callable[..., Any]) -> Tool:
        hit = self._tools.get(id(fn))
        if hit is not None and hit[0] is fn:
            return hit[1]
        built = Tool.from_callable(fn)
        built.check()  # a signature pydantic cannot check makes the function "not a tool" here
        # Keeping `fn` alive here pins its id, so a reused id can never alias another function.
        self._tools[id(fn)] = (fn, built)
        return built

    def prune(self, alive: Iterable[Callable[..., Any]]) -> None:
        keep = {id(fn) for fn in alive}
        for key in [k for k in self._tools if k not in keep]:
            del self._tools[key]


def discover(
    namespace: Mapping[str, Any],
    *,
    hidden: Container[str] = (),
    only: Iterable[str] | None = None,
    cache: ToolCache | None = None,
) -> Discovery:
    """The notebook's tools; `only` (from `--tools`) keeps just those names.

    Raises UnknownToolError when `only` names a tool that is neither discovered nor a callable
    in the namespace.
    """
    cache = cache or ToolCache()
    found = Discovery()
    seen: set[int] = set()
    for name, obj in list(namespace.items()):
        if name in hidden or id(obj) in seen:
            continue
        if not (_is_notebook_function(name, obj) or _marked(obj)):
            continue
        seen.add(id(obj))
        _add(found, name, obj, cache)
    cache.prune(t.fn for t in found.tools.values())
    if only is not None:
        found = _select(found, list(only), namespace, cache)
    return found


def _marked(obj: Any) -> bool:
    try:
        return callable(obj) and is_tool_marked(obj)
    except Exception:
        return False


def _add(found: Discovery, name: str, obj: Callable[..., Any], cache: ToolCache) -> None:
    try:
        tool = cache.get(obj)
    except Exception as exc:
        found.skipped[name] = f"{type(exc).__name__}: {exc}"
        return
    found.tools[tool.name] = tool


def _select(
    found: Discovery, names: list[str], namespace: Mapping[str, Any], cache: ToolCache
) -> Discovery:
    selected = Discovery(skipped=found.skipped)
    missing = []
    for name in names:
        if name in found.tools:
            selected.tools[name] = found.tools[name]
        elif callable(namespace.get(name)):
            # Naming an imported function in --tools is how a cell opts it in.
            _add(selected, name, namespace[name], cache)
        else:
            missing.append(name)
    if missing:
        available = ", ".join(found.tools) or "none"
        raise UnknownToolError(
            f"unknown tool{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
            f"(available: {available})"
        )
    return selected
