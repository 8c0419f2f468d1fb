"""A lean install: what the wheel requires, and the Daytona backend as an optional extra.

The wheel is built the way pip builds it, but with SKIP_JUPYTER_BUILDER set so npm does not
run: the JupyterLab extension is data files only, and leaving it out changes neither the
metadata nor the Python code checked here. A real install into a fresh virtualenv (and the
CLI running a notebook from it) is scripts/check-lean-install.sh: too slow for the suite.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from codemode_jupyter.jupyter.headless import KernelSession

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = "pip install 'codemode-jupyter[daytona]'"
#: Modules only the daytona extra provides for; everything else must need no extra.
DAYTONA_MODULES = ("codemode_jupyter/backends/daytona", "codemode_jupyter/testing/")
#: Modules only the agents extra provides for (MCP server, pydantic-ai).
AGENTS_MODULES = ("codemode_jupyter/agents/",)
#: Runs inside the sandbox, where nothing but the standard library exists.
SANDBOX_MODULES = ("codemode_jupyter/runtime/",)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "SKIP_JUPYTER_BUILDER": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        env=env,
        check=True,
        timeout=300,
    )
    (found,) = out.glob("codemode_jupyter-*.whl")
    return found


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's files, importable: its code and its dist-info (so its metadata) come first."""
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(name).decode())
    return [Requirement(line) for line in meta.get_all("Requires-Dist") or []]


def required(reqs: list[Requirement], extra: str = "") -> set[str]:
    """Distributions a plain install (extra "") or `[extra]` pulls in on this platform."""
    return {
        canonicalize_name(r.name)
        for r in reqs
        if r.marker is None or r.marker.evaluate({"extra": extra})
    }


def provided(dists: set[str]) -> set[str]:
    """`dists` and everything they require (as installed here), transitively."""
    seen: set[str] = set()
    todo = list(dists)
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            reqs = [Requirement(line) for line in metadata.requires(dist) or []]
        except metadata.PackageNotFoundError:
            continue  # not installed on this platform (e.g. a marker that does not apply)
        todo.extend(
            canonicalize_name(r.name)
            for r in reqs
            if r.marker is None or r.marker.evaluate({"extra": ""})
        )
    return seen


def third_party_imports(wheel: Path, *, daytona: bool) -> dict[str, set[str]]:
    """Distribution -> modules of the wheel importing it: those of the daytona extra's modules
    (daytona=True) or of all the others. The sandbox's and the agents extra's modules are left
    out (tests/test_agents_* need that extra and skip without it)."""
    found: dict[str, set[str]] = {}
    dists = metadata.packages_distributions()
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if not name.endswith(".py") or name.startswith(SANDBOX_MODULES + AGENTS_MODULES):
                continue
            if name.startswith(DAYTONA_MODULES) != daytona:
                continue
            for top in _imported(zf.read(name).decode()):
                if top in sys.stdlib_module_names or top == "codemode_jupyter":
                    continue
                for dist in dists.get(top, [top]):
                    found.setdefault(canonicalize_name(dist), set()).add(name)
    return found


def _imported(source: str) -> set[str]:
    """Top-level packages `source` imports, but for optional ones (inside a try whose
    handler catches ImportError)."""
    tree = ast.parse(source)
    optional = {
        id(node)
        for trial in ast.walk(tree)
        if _catches_import_error(trial)
        for stmt in trial.body
        for node in ast.walk(stmt)
    }
    tops = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def _catches_import_error(node: ast.AST) -> bool:
    if not isinstance(node, ast.Try):
        return False
    names = {
        n.id
        for h in node.handlers
        if h.type is not None
        for n in ast.walk(h.type)
        if isinstance(n, ast.Name)
    }
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def test_what_the_package_imports_a_plain_install_provides(wheel: Path) -> None:
    """Every module outside the Daytona ones imports only what a plain `pip install
    codemode-jupyter` brings: no extra is needed for the local backend or the CLI."""
    plain = required(requirements(wheel))
    needed = third_party_imports(wheel, daytona=False)
    # What `codemode-jupyter run` uses is required directly (it was only in the test extra).
    assert {"nbclient", "nbformat", "jupyter-client"} <= needed.keys() & plain
    everything = provided(plain)
    missing = {dist: sorted(mods) for dist, mods in needed.items() if dist not in everything}
    assert not missing, f"imported but not required without extras: {missing}"


def test_daytona_is_an_extra_the_tests_pull_in(wheel: Path) -> None:
    reqs = requirements(wheel)
    plain, with_daytona = required(reqs), required(reqs, "daytona")
    assert "daytona" not in plain and "aiohttp" not in plain
    assert third_party_imports(wheel, daytona=True).keys() <= with_daytona
    assert {"daytona", "aiohttp"} <= with_daytona
    assert "daytona" in required(reqs, "test")  # the tests use the real SDK
    (spec,) = {r.specifier for r in reqs if r.name == "daytona"}
    # A bounded range, and the SDK these tests run with lies inside it.
    assert {s.operator for s in spec} == {">=", "<"}
    assert spec.contains(Version(metadata.version("daytona")))


def _run_python(code: str, *path: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` in this Python with only `path` before its site-packages (and a cwd that
    holds no package: `-c` puts the cwd first on sys.path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=path[0],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_the_sdk_local_runs_and_daytona_names_the_extra(unpacked: Path) -> None:
    """The wheel's code with `import daytona` failing, as in a plain install."""
    done = _run_python(
        f"""
        import sys
        sys.modules["daytona"] = None  # `import daytona` now fails as if it were not installed
        import codemode_jupyter
        assert codemode_jupyter.__file__.startswith({str(unpacked)!r}), codemode_jupyter.__file__
        from codemode_jupyter import CodeMode
        from codemode_jupyter.backends import BackendConfigError, create_backend, require_backend

        with CodeMode(backend="local") as cm:
            result = cm.run("print(6 * 7)")
            print("local:", result.status, result.stdout.strip())
        attempts = (lambda: CodeMode(backend="daytona", api_key="not-needed-to-fail"),
                    lambda: create_backend("daytona"),
                    lambda: require_backend("daytona"))
        for attempt in attempts:
            try:
                attempt()
            except BackendConfigError as exc:
                print("daytona:", type(exc).__name__, isinstance(exc, ImportError), exc)
        """,
        unpacked,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "local: ok 42"
    assert len(lines) == 4, done.stdout
    for line in lines[1:]:
        assert line.startswith("daytona: BackendNotInstalled True "), line
        assert "daytona SDK, but it is not installed" in line
        assert line.endswith(INSTALL_HINT)


def test_an_sdk_older_than_the_extra_allows_is_named(unpacked: Path, tmp_path: Path) -> None:
    """An old daytona installed some other way: the error gives the range and the fix. Only
    the SDK's version is old here (its metadata, found first); its code is the real one."""
    info = tmp_path / "daytona-0.100.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: daytona\nVersion: 0.100.0\n")
    done = _run_python(
        """
        from codemode_jupyter.backends import BackendNotInstalled, create_backend
        try:
            create_backend("daytona", api_key="unused")
        except BackendNotInstalled as exc:
            print(exc)
        """,
        unpacked,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("the daytona backend needs daytona<"), message
    assert "(0.100.0 is installed)" in message
    assert message.endswith(INSTALL_HINT)


def test_magics_without_the_sdk_name_the_extra_and_local_cells_run() -> None:
    """In a real kernel where `import daytona` fails: every way of choosing Daytona gives the
    one-line error naming the extra, and local cells keep working around them."""
    session = KernelSession()
    try:
        blocked = session.execute('import sys; sys.modules["daytona"] = None')
        assert blocked.ok
        assert session.execute("%load_ext codemode_jupyter").ok

        def fails_naming_the_extra(code: str) -> None:
            error = session.execute(code).error
            assert error is not None, code
            assert error["ename"] == "BackendNotInstalled", error
            assert error["evalue"].endswith(INSTALL_HINT), error
            assert len(error["traceback"]) == 1, error  # the message, not the host's stack

        fails_naming_the_extra("%%codemode --backend daytona\n1")
        fails_naming_the_extra("%codemode cleanup --dry-run")
        fails_naming_the_extra("%codemode attach some-sandbox-id")
        local = session.execute("%%codemode --quiet\nprint('still local')")
        assert local.ok and "still local" in local.stream(), local.messages
        assert session.execute('%config CodeMode.backend = "daytona"').ok
        fails_naming_the_extra("%%codemode\n1")
        assert session.execute('%config CodeMode.backend = "local"').ok
        again = session.execute("%%codemode --quiet\nprint('local again')")
        assert again.ok and "local again" in again.stream(), again.messages
    finally:
        session.shutdown()
