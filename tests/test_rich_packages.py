"""The sandbox's own packages on the local backend: pip on the host into a per-project
directory, mounted read-only into the jail (which stays without network). Installs a small
pure-Python package from the registry."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from codemode_jupyter import CodeMode
from codemode_jupyter.engine.packages import PackageInstallError, install

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def packages_dir() -> Iterator[Path]:
    # Under /tmp, readable by the jail's own uid (pytest's tmp_path is private to root).
    path = Path(tempfile.mkdtemp(prefix="codemode-test-packages-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_packages_install_into_the_project_dir_and_import_in_the_jail(packages_dir: Path) -> None:
    with CodeMode(packages=["tabulate"], packages_dir=packages_dir, outputs_dir=None) as cm:
        result = cm.run(
            "import tabulate\n(tabulate.__file__, tabulate.tabulate([[1, 2]]))", timeout=60
        )
        assert result.ok, result.error
        assert result.value[0].startswith("/opt/codemode-packages/")
        assert "1  2" in result.value[1]
        status = cm.status()
        assert status["packages"].startswith("tabulate==") and status["python"]
        # Read-only in the jail, and the jail still has no network.
        denied = cm.run("open('/opt/codemode-packages/x', 'w')", timeout=30)
        assert denied.status == "error" and denied.error.type == "OSError"
    assert any(p.name.startswith("tabulate") for p in packages_dir.iterdir())


def test_a_failing_install_gives_pips_error_and_the_session_stays_usable(
    packages_dir: Path,
) -> None:
    with CodeMode(packages_dir=packages_dir, outputs_dir=None) as cm:
        assert cm.run("x = 41", timeout=30).ok
        failed = install(cm, ["codemode-no-such-package-0xdeadbeef"])
        assert not failed.ok
        assert "No matching distribution" in failed.output or "ERROR" in failed.output
        assert cm.run("x + 1", timeout=30).value == 42  # state kept
        with pytest.raises(ValueError, match="requirement strings"):
            install(cm, ["--index-url=http://evil"])


def test_packages_given_to_the_session_fail_its_run_clearly_until_they_install(
    packages_dir: Path,
) -> None:
    with CodeMode(
        packages=["codemode-no-such-package-0xdeadbeef"],
        packages_dir=packages_dir,
        outputs_dir=None,
    ) as cm:
        with pytest.raises(PackageInstallError, match="pip could not install"):
            cm.run("1", timeout=30)
        cm._packages_pending = []  # the user drops the bad requirement
        assert cm.run("1", timeout=30).value == 1


def test_pip_install_into_a_session_without_a_packages_dir_mounts_one(
    packages_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(packages_dir)  # the project: .codemode/ is made here
    with CodeMode(outputs_dir=None) as cm:
        assert cm.run("1", timeout=30).ok
        result = install(cm, ["tabulate"])
        assert result.ok, result.output
        assert "restarted" in result.output
        assert cm.run("import tabulate\n1", timeout=60).ok
    assert (packages_dir / ".codemode").is_dir()
    assert os.listdir(packages_dir / ".codemode")[0].startswith("sandbox-packages-py3.")


def test_pip_command_parses_installs_and_reports(packages_dir: Path) -> None:
    import io

    from codemode_jupyter.jupyter.commands.pip import PipUsageError, parse, pip_command

    assert parse("install tabulate 'six>=1'") == ["tabulate", "six>=1"]
    for bad in ("", "uninstall x", "install", "install -e ."):
        with pytest.raises(PipUsageError):
            parse(bad)
    with CodeMode(packages_dir=packages_dir, outputs_dir=None) as cm:
        out = io.StringIO()
        assert pip_command(cm, "install tabulate", out)
        assert "[codemode] installed (tabulate ->" in out.getvalue()
        out = io.StringIO()
        assert not pip_command(cm, "install codemode-no-such-package-0xdeadbeef", out)
        assert "pip failed; nothing else changed" in out.getvalue()
