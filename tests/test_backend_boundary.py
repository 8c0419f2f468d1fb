"""Backends by capability: no module outside backends/ names a backend or imports its insides,
and a backend the rest of the package has never heard of runs a session and a pool."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

import codemode_jupyter
from codemode_jupyter import CodeMode, Pool
from codemode_jupyter import backends as registry
from codemode_jupyter.backends.local.backend import LocalBackend
from codemode_jupyter.backends.local.options import LocalOptions

PACKAGE = Path(codemode_jupyter.__file__).resolve().parent
#: Where backends may be named: their own package (the registry in backends/__init__.py lists
#: them), and the loopback Daytona server, which plays Daytona and runs its sandboxes in local
#: jails (a test double of a backend's service, not a client of the backends).
ALLOWED = ("backends", "testing")


def _outside_modules() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in ALLOWED
    ]


def _leaks(path: Path) -> list[str]:
    """Each place in `path` that names a backend (a string that is a backend's name) or
    imports a backend's own modules."""
    internals = tuple(f"codemode_jupyter.backends.{name}" for name in registry.BACKENDS)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        line = f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in registry.BACKENDS or node.value.startswith(internals):
                found.append(f"{line}: names a backend: {node.value!r}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            imported = [f"{module}.{alias.name}" for alias in node.names] + [module]
            if any(name.startswith(internals) for name in imported):
                found.append(f"{line}: imports a backend's module: {module}")
        elif isinstance(node, ast.Import):
            found += [
                f"{line}: imports a backend's module: {alias.name}"
                for alias in node.names
                if alias.name.startswith(internals)
            ]
    return found


def test_no_module_outside_backends_names_a_backend_or_imports_its_insides() -> None:
    modules = _outside_modules()
    assert len(modules) > 50  # the walk found the package
    leaks = [leak for path in modules for leak in _leaks(path)]
    assert leaks == []


def test_the_boundary_check_sees_a_leak(tmp_path: Path) -> None:
    # The check itself: a comparison with a backend's name and an import of its insides.
    leaky = tmp_path / "leaky.py"
    leaky.write_text(
        "from codemode_jupyter.backends.daytona.backend import DaytonaBackend\n"
        "import codemode_jupyter.backends.local.jail\n"
        "from codemode_jupyter.backends import daytona\n"
        "def spare(backend):\n"
        '    """Docstrings may say local or daytona."""\n'
        '    return backend == "local"\n'
    )
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path
    try:
        leaks = _leaks(leaky)
    finally:
        PACKAGE = saved
    assert len(leaks) == 4, leaks


# --- a third backend, unknown to the engine, the pool and the magics -------------------------


@dataclass(frozen=True)
class ThirdOptions(LocalOptions):
    backend: ClassVar[str] = "third"


class ThirdBackend(LocalBackend):
    """A backend of its own name (running in the local jail, for a real runtime)."""

    name = "third"
    label = "Third"
    options_type = ThirdOptions
    spare_helps = False
    create_interval = 0.0


@pytest.fixture
def third(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry._CLASSES, "third", (__name__, "ThirdBackend"))
    monkeypatch.setitem(registry._OPTIONS, "third", (__name__, "ThirdOptions"))
    return "third"


def add(a: int, b: int) -> int:
    return a + b


def test_a_third_backend_runs_a_session_and_a_pool_by_name(third: str) -> None:
    with CodeMode(tools=[add], backend=third) as session:
        assert session.status()["spare_runtime"] == "off"  # as the backend says
        assert session.run("add(1, 2)").value == 3
        assert type(session.backend) is ThirdBackend
    with Pool(tools=[add], backend=third, size=2) as pool:
        results = pool.map("add(x, 1)", inputs=[{"x": 1}, {"x": 2}])
    assert [r.value for r in results] == [2, 3]
