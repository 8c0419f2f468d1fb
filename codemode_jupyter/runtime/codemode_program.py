"""A program's code: compiled (its last expression apart, its value is the result), run (with
top-level await), and its value encoded for the done frame.

Part of the sandbox runtime (codemode_runtime.py): standard library only.
"""

from __future__ import annotations

import _ast  # what the ast module re-exports; importing ast itself costs each start 1 ms more
import functools
import linecache
import types

import codemode_protocol as P

CELL = "<cell>"


def compile_program(code: str) -> tuple[types.CodeType, types.CodeType | None]:
    """The program's body, and its last expression separately (its value is the result)."""
    linecache.cache[CELL] = (len(code), None, code.splitlines(True), CELL)
    return _compiled(code)


@functools.lru_cache(maxsize=32)  # code objects are immutable: a program run again reuses them
def _compiled(code: str) -> tuple[types.CodeType, types.CodeType | None]:
    tree = compile(code, CELL, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)  # ast.parse
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    flags = _ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    body = compile(tree, CELL, "exec", flags=flags, dont_inherit=True)
    expr = compile(last, CELL, "eval", flags=flags, dont_inherit=True) if last else None
    return body, expr


_CO_COROUTINE = 0x0080  # inspect.CO_COROUTINE (inspect is not imported: it is slow to import)


def run_program(code: str, namespace: dict) -> object:
    body, expr = compile_program(code)
    is_async = any(c is not None and c.co_flags & _CO_COROUTINE for c in (body, expr))
    if not is_async:
        exec(body, namespace)
        return eval(expr, namespace) if expr is not None else None

    async def main() -> object:
        result = eval(body, namespace)
        if isinstance(result, types.CoroutineType):
            await result
        if expr is None:
            return None
        value = eval(expr, namespace)
        return await value if isinstance(value, types.CoroutineType) else value

    import asyncio  # only programs that await pay for it (a third of a cold start)

    return asyncio.run(main())


def encode_value(value: object) -> dict:
    if value is None:
        return {"value": None, "repr": None}
    text = repr(value)
    if len(text) > 10000:
        text = text[:10000] + "..."
    try:
        P.encode({"v": value})
    except (TypeError, ValueError, RecursionError):
        return {"value": None, "repr": text}
    return {"value": value, "repr": text}
