"""Plain Python callables as Code Mode tools: signatures, validation, stubs and the prompt.

Pydantic builds the argument model from each function's signature, so what the sandbox sends
is validated exactly as the annotations say before the function ever runs. It is imported when
first needed (a signature beyond plain types, a call whose values must be converted, a schema):
a session whose calls pass plain values never loads it, which keeps the host process small.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import inspect
import keyword
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

from codemode_jupyter.errors import ToolArgumentError, UnknownToolError
from codemode_jupyter.model.format import clip
from codemode_jupyter.support.loop_thread import run_coroutine

_MARK = "__codemode_tool__"


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    approve: bool = False,
) -> Any:
    """Mark a function as a Code Mode tool, optionally renaming or re-describing it.

    Usable bare (`@tool`) or with options (`@tool(name="search")`). The function is returned
    unchanged, so it stays callable as before. `approve=True`: where approvals are on (an
    agent server, `%%codemode --step`), each call waits for a person's decision.
    """

    def mark(target: Callable[..., Any]) -> Callable[..., Any]:
        if name is not None:
            _check_name(name)
        setattr(target, _MARK, {"name": name, "description": description, "approve": approve})
        return target

    return mark(fn) if fn is not None else mark


def is_tool_marked(obj: object) -> bool:
    """True for functions decorated with `@tool`."""
    return callable(obj) and isinstance(getattr(obj, _MARK, None), dict)


def _check_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"tool name {name!r} is not a valid Python identifier")


@dataclasses.dataclass(frozen=True)
class _Param:
    name: str
    kind: inspect._ParameterKind
    field: str


class Tool:
    """One host function the sandboxed program may call."""

    def __init__(
        self, fn: Callable[..., Any], name: str | None = None, description: str | None = None
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        _check_name(self.name)
        self.description = inspect.cleandoc(description or fn.__doc__ or "")
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = _signature(fn)
        self._hints = _type_hints(fn)
        self._params, self._fields = self._collect_fields()
        # Built on first use: a session (and its spare) starts without paying for it.
        self._args_model: type[BaseModel] | None = None
        self._schema: dict[str, Any] | None = None
        self._signature_text: str | None = None
        self._exact = self._exact_types()
        kinds = {p.kind for p in self._params}
        #: Parameter names positional arguments fill, or None when *args makes that unclear.
        self.positional_names: list[str] | None = (
            None
            if inspect.Parameter.VAR_POSITIONAL in kinds
            else [
                p.name
                for p in self._params
                if p.kind
                in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            ]
        )

    @classmethod
    def from_callable(cls, fn: Callable[..., Any] | Tool) -> Tool:
        """A Tool for `fn`, honouring `@tool(name=..., description=...)` if present."""
        if isinstance(fn, Tool):
            return fn
        mark = getattr(fn, _MARK, None) or {}
        return cls(fn, name=mark.get("name"), description=mark.get("description"))

    # --- the signature -----------------------------------------------------------------

    def _collect_fields(self) -> tuple[list[_Param], dict[str, tuple[Any, Any, Any]]]:
        """The parameters, and each one's model field: (annotation, kind, default), made into
        a pydantic field only when the model is built."""
        params, fields = [], {}
        for index, param in enumerate(self._signature.parameters.values()):
            annotation = _validatable(self._hints.get(param.name, Any))
            if param.kind is param.VAR_POSITIONAL:
                annotation = list[annotation]
            elif param.kind is param.VAR_KEYWORD:
                annotation = dict[str, annotation]
            default = param.default if param.default is not param.empty else ...
            field = f"p{index}"  # aliases keep names like `_x` or `model_config` legal
            fields[field] = (annotation, param, default)
            params.append(_Param(param.name, param.kind, field))
        return params, fields

    def _exact_types(self) -> dict[str, type | None] | None:
        """For a signature of plain parameters only (int, str, float, bool or Any; no *args,
        no **kwargs, defaults that are immutable): each parameter's type (None for Any). A
        call whose values are of exactly these types is valid as it is (see validate)."""
        exact: dict[str, type | None] = {}
        for param in self._signature.parameters.values():
            hint = self._hints.get(param.name, Any)
            if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                return None
            if hint not in _EXACT or (
                param.default is not param.empty and type(param.default) not in _IMMUTABLE
            ):
                return None
            exact[param.name] = None if hint is Any else hint
        return exact

    def _as_they_are(self, args: list[Any], kwargs: dict[str, Any]) -> bool:
        """Whether pydantic would accept these arguments unchanged: every value is of exactly
        its parameter's type, no name is given twice, none is missing (the hot path of a call:
        binding and validating cost more than the round trip)."""
        exact = self._exact
        if exact is None or len(args) > len(self.positional_names or ()):
            return False
        names = self.positional_names
        for name, value in zip(names, args, strict=False):
            kind = exact[name]
            if kind is not None and type(value) is not kind:
                return False
        for name, value in kwargs.items():
            if name not in exact or name in names[: len(args)]:
                return False
            kind = exact[name]
            if kind is not None and type(value) is not kind:
                return False
        given = len(args) + len(kwargs)
        return given == len(exact) or all(
            name in kwargs
            or i < len(args)
            or self._signature.parameters[name].default is not inspect.Parameter.empty
            for i, name in enumerate(exact)
        )

    def check(self) -> None:
        """Build the argument model now: raises if pydantic cannot check this signature."""
        self._model  # noqa: B018 - the property builds and keeps it

    @property
    def _model(self) -> type[BaseModel]:
        """The pydantic model that validates the arguments (made once, on first use)."""
        if self._args_model is None:
            from pydantic import ConfigDict, Field, create_model

            fields = {}
            for field, (annotation, param, default) in self._fields.items():
                if param.kind is param.VAR_POSITIONAL:
                    info = Field(default_factory=list, alias=param.name)
                elif param.kind is param.VAR_KEYWORD:
                    info = Field(default_factory=dict, alias=param.name)
                else:
                    info = Field(default, alias=param.name)
                fields[field] = (annotation, info)
            config = ConfigDict(
                arbitrary_types_allowed=True, populate_by_name=False, extra="forbid"
            )
            self._args_model = create_model(f"{self.name}_args", __config__=config, **fields)
        return self._args_model

    @property
    def signature(self) -> str:
        """The signature as the stub shows it, e.g. `(a: int, b: int = 1) -> int`."""
        if self._signature_text is None:  # made once: each run sends it to the runtime
            text = _format_signature(self._signature, self._hints)
            for cls in self.referenced_types():  # the prompt defines them by their short names
                text = text.replace(f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__)
            self._signature_text = text
        return self._signature_text

    def parameters_schema(self) -> dict[str, Any]:
        """JSON schema of the arguments (pydantic's, by parameter name); built once."""
        if self._schema is None:
            self._schema = self._model.model_json_schema(by_alias=True)
        return copy.deepcopy(self._schema)

    def stub(self) -> str:
        """A Python stub: `def name(params) -> ret:` with the docstring, as the prompt shows it."""
        prefix = "async def" if self.is_async else "def"
        head = f"{prefix} {self.name}{self.signature}:"
        doc = self.description or "(no description)"
        body = textwrap.indent(f'"""{doc}"""' if "\n" not in doc else f'"""\n{doc}\n"""', "    ")
        return f"{head}\n{body}"

    def referenced_types(self) -> list[type]:
        """Models, TypedDicts, dataclasses and enums the signature mentions, for the prompt."""
        found: list[type] = []
        for hint in self._hints.values():
            _collect_types(hint, found)
        return found

    # --- calls -----------------------------------------------------------------------

    def validate(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Check a call's arguments against the signature; return (args, kwargs) to call with.

        Raises ToolArgumentError with a message naming the tool and the argument.
        """
        if self._as_they_are(args, kwargs):
            return list(args), dict(kwargs)
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ToolArgumentError(f"{exc}; expected {self.name}{self.signature}") from None
        from pydantic import ValidationError

        by_alias = {}
        for param in self._params:
            if param.name in bound.arguments:
                by_alias[param.name] = bound.arguments[param.name]
        try:
            model = self._model.model_validate(by_alias)
        except ValidationError as exc:
            raise ToolArgumentError(_describe_validation(exc, self)) from None
        except Exception as exc:  # the model itself could not be made from the signature
            raise ToolArgumentError(
                f"{self.name}'s signature cannot be checked ({type(exc).__name__}: {exc})"
            ) from None
        validated = {param.name: getattr(model, param.field) for param in self._params}
        # BoundArguments knows which values must go by position (e.g. before *args).
        call = inspect.BoundArguments(self._signature, validated)
        return list(call.args), dict(call.kwargs)

    def invoke(self, kwargs: dict[str, Any]) -> Any:
        """Validate and call with keyword arguments (the Tools panel's path); awaits async tools."""
        call_args, call_kwargs = self.validate([], kwargs)
        result = self.fn(*call_args, **call_kwargs)
        if inspect.isawaitable(result):
            result = run_coroutine(result)
        return result

    def __repr__(self) -> str:
        return f"<Tool {self.name}{self.signature}>"


class ToolRegistry:
    """The tools of a run, by name (a later tool of the same name wins)."""

    def __init__(self, tools: Iterable[Callable[..., Any] | Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for fn in tools:
            item = Tool.from_callable(fn)
            self._tools[item.name] = item
        self._specs: list[dict[str, str]] | None = None

    def find(self, name: str) -> Tool | None:
        """The tool named `name`, or None."""
        return self._tools.get(name)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise UnknownToolError(f"no tool named {name!r} (tools: {known})") from None

    def names(self) -> list[str]:
        return list(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def specs(self) -> list[dict[str, str]]:
        """What the runtime needs to bind stubs: names, signatures, docstrings (made once: a
        registry's tools do not change, and each run sends them)."""
        if self._specs is None:
            self._specs = [
                {"name": t.name, "signature": t.signature, "doc": t.description} for t in self
            ]
        return self._specs

    def system_prompt(self) -> str:
        """Instructions and every tool as a Python stub, for an LLM that writes programs."""
        return render_prompt(self)


_PROMPT_HEAD = """\
Write a Python 3 program to solve the task. It runs in a sandbox with no network and no access \
to the host; to act on the world it calls the tools below, which are ordinary functions already \
defined in the program's global namespace (no import needed). Call them like any function, e.g. \
`result = {example}`. Each call runs on the host and returns JSON data (dict, list, str, int, \
float, bool or None); arguments must be JSON values too. A tool that fails raises ToolError (also \
an instance of the original exception type, e.g. ValueError), which the program can catch.

Every tool also has an async twin named `<tool>_async` for running calls concurrently, e.g. \
`await asyncio.gather({example_async})`; top-level `await` is allowed. Tools are also available \
as `external_<tool>`. Use print() for what should be seen; the value of the program's last \
expression is returned as its result. Variables persist between programs of one session.
"""


def render_prompt(registry: ToolRegistry) -> str:
    tools = list(registry)
    if not tools:
        return _PROMPT_HEAD.format(example="tool(...)", example_async="tool_async(...)") + (
            "\nNo tools are available.\n"
        )
    first = tools[0].name
    head = _PROMPT_HEAD.format(example=f"{first}(...)", example_async=f"{first}_async(...), ...")
    types_seen: list[type] = []
    for item in tools:
        for cls in item.referenced_types():
            if cls not in types_seen:
                types_seen.append(cls)
    parts = [head, "Tools:", "", "```python"]
    parts += [_type_stub(cls) + "\n" for cls in types_seen]
    parts += [item.stub() + "\n" for item in tools]
    parts[-1] = parts[-1].rstrip("\n")
    parts.append("```")
    return "\n".join(parts) + "\n"


# --- helpers --------------------------------------------------------------------------------


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        return inspect.signature(fn)


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable string annotations: fall back to the raw ones
        raw = getattr(fn, "__annotations__", {})
        return {k: v for k, v in raw.items() if not isinstance(v, str)}


#: Annotations whose values of exactly that type pydantic returns unchanged.
_EXACT = frozenset({int, str, float, bool, Any})
_IMMUTABLE = (int, str, float, bool, type(None), bytes)

#: Annotations pydantic always validates as they are.
_PLAIN = frozenset({int, str, float, bool, bytes, list, dict, tuple, set, object, type(None), Any})


def _validatable(hint: Any) -> Any:
    """The annotation pydantic can validate: typing.TypedDict (refused by pydantic before
    Python 3.12) becomes its typing_extensions twin; anything else it cannot use becomes Any."""
    if hint in _PLAIN:  # no need to ask pydantic (a TypeAdapter each: most of a tool's making)
        return hint
    if typing.is_typeddict(hint) and type(hint).__module__ == "typing":
        import typing_extensions  # only for this (3.7 MiB of a python that imports it)

        fields = {k: _validatable(v) for k, v in _type_hints(hint).items()}
        return typing_extensions.TypedDict(hint.__name__, fields, total=hint.__total__)
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if args and origin is not typing.Literal and origin is not typing.Annotated:
        try:
            converted = tuple(_validatable(a) for a in args)
            if converted != args:
                hint = (typing.Union if origin in (typing.Union, types.UnionType) else origin)[
                    converted if len(converted) > 1 else converted[0]
                ]
        except TypeError:
            return Any
    from pydantic import ConfigDict, TypeAdapter

    for config in (None, ConfigDict(arbitrary_types_allowed=True)):
        try:
            TypeAdapter(hint, config=config)
            return hint
        except Exception:
            continue
    return Any


def _format_signature(sig: inspect.Signature, hints: dict[str, Any]) -> str:
    params = []
    for param in sig.parameters.values():
        hint = hints.get(param.name, param.annotation)
        params.append(param.replace(annotation=hint))
    ret = hints.get("return", sig.return_annotation)
    sig = sig.replace(parameters=params, return_annotation=ret)
    return _clean_annotation_text(str(sig))


def _clean_annotation_text(text: str) -> str:
    for prefix in ("typing.", "typing_extensions.", "collections.abc.", "__main__."):
        text = text.replace(prefix, "")
    return text.replace("NoneType", "None")


def _collect_types(hint: Any, found: list[type]) -> None:
    if isinstance(hint, type) and hint not in found and _is_structured(hint):
        found.append(hint)
        for sub in _type_hints(hint).values() if not issubclass(hint, enum.Enum) else ():
            _collect_types(sub, found)
        return
    for arg in typing.get_args(hint):
        _collect_types(arg, found)


def _is_structured(cls: type) -> bool:
    return (
        _is_model(cls)
        or typing.is_typeddict(cls)
        or dataclasses.is_dataclass(cls)
        or (issubclass(cls, enum.Enum) and cls is not enum.Enum)
    )


def _is_model(cls: type) -> bool:
    """A pydantic model (not BaseModel itself); none can exist before pydantic is loaded."""
    main = sys.modules.get("pydantic.main")
    return main is not None and issubclass(cls, main.BaseModel) and cls is not main.BaseModel


def _type_stub(cls: type) -> str:
    if issubclass(cls, enum.Enum):
        members = [f"    {m.name} = {m.value!r}" for m in cls]
        return f"class {cls.__name__}(Enum):\n" + "\n".join(members)
    base = (
        "TypedDict"
        if typing.is_typeddict(cls)
        else ("BaseModel" if _is_model(cls) else "dataclass")
    )
    lines = [
        f"class {cls.__name__}({base}):"
        if base != "dataclass"
        else f"@dataclass\nclass {cls.__name__}:"
    ]
    if cls.__doc__ and base != "dataclass" and not cls.__doc__.startswith(cls.__name__ + "("):
        lines.append(f'    """{inspect.cleandoc(cls.__doc__)}"""')
    for name, hint in _type_hints(cls).items():
        lines.append(f"    {name}: {_clean_annotation_text(inspect.formatannotation(hint))}")
    return "\n".join(lines)


def _describe_validation(exc: ValidationError, item: Tool) -> str:
    aliases = {p.field: p.name for p in item._params}
    problems = []
    for error in exc.errors(include_url=False):
        loc = [aliases.get(str(part), str(part)) for part in error.get("loc", ())]
        where = ".".join(loc) or "arguments"
        shown = clip(repr(error.get("input")), 60, "...")
        problems.append(f"argument {where!r}: {error.get('msg')} (got {shown})")
    return "; ".join(problems) + f"; expected {item.name}{item.signature}"
