"""Files, displays, tool results and packages under attack (issue 18): real local jails, a real
kernel, and programs that forge frames on the runtime's channel as a hostile program can."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST, loaded_kernel
from test_hardening import FORGE

from codemode_jupyter import CodeMode
from codemode_jupyter.engine.files import plan_uploads, put_frames
from codemode_jupyter.runtime import codemode_protocol as P

pytestmark = pytest.mark.timeout(180)

KEY = "hardening-files-key"


@pytest.fixture(params=["local", "daytona"])
def session(request: pytest.FixtureRequest) -> Callable[..., CodeMode]:
    """Makes a CodeMode on the local jail, or on Daytona over the loopback server."""
    if request.param == "local":
        return CodeMode
    server = request.getfixturevalue("server")
    daytona = {"backend": "daytona", "api_url": server.api_url, "api_key": KEY, "retry": FAST}
    return lambda **options: CodeMode(**daytona, **options)


# --- uploads never follow a link out of the uploaded tree ----------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """d/ with a file, a link to a private host file, a link to a host folder, a link to a
    file inside d/, and a FIFO; `secret.txt` and `outside/` are beside d/, not in it."""
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    secret.chmod(0o600)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "also-secret.txt").write_text("host folder")
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "ok.txt").write_text("fine")
    (d / "sub" / "deep.txt").write_text("deep")
    os.symlink(secret, d / "leak")
    os.symlink("/etc/shadow", d / "shadow")
    os.symlink(tmp_path / "outside", d / "dirlink")
    os.symlink("ok.txt", d / "alias")
    os.mkfifo(d / "fifo")
    return d


def test_a_folder_upload_skips_links_says_so_and_reads_nothing_outside(
    tree: Path, session: Callable[..., CodeMode]
) -> None:
    with session(outputs_dir=None) as cm:
        result = cm.run(
            "import os\n"
            "seen = sorted(os.path.join(r, f) for r, ds, fs in os.walk('d') for f in fs + ds)\n"
            "links = [p for p in ('d/leak', 'd/shadow', 'd/dirlink', 'd/alias', 'd/fifo')"
            " if os.path.lexists(p)]\n"
            "(seen, links, open('d/ok.txt').read())",
            files=[tree],
            timeout=60,
        )
        assert result.ok, (result.error, result.stderr)
        seen, links, ok = result.value
        assert seen == ["d/ok.txt", "d/sub", "d/sub/deep.txt"] and links == [] and ok == "fine"
        for name in ("d/leak", "d/shadow", "d/dirlink", "d/alias"):
            assert f"{name} (a symbolic link" in result.stderr, result.stderr
        assert "d/fifo (not a regular file)" in result.stderr
        assert "host secret" not in json.dumps(result.value)


def test_a_link_named_as_the_upload_is_refused_before_the_run(tree: Path) -> None:
    with CodeMode(outputs_dir=None) as cm:
        with pytest.raises(ValueError, match="symbolic link"):
            cm.run("1", files=[tree / "leak"])
        with pytest.raises(ValueError, match="symbolic link"):
            cm.run("1", files=[(tree / "dirlink", "x")])
        assert cm.run("1 + 1", timeout=30).value == 2
    with pytest.raises(ValueError, match="symbolic link"):
        CodeMode(files=[tree / "shadow"])


def test_a_link_swapped_in_after_the_walk_is_not_followed(tree: Path) -> None:
    plan = plan_uploads([tree])
    assert [u.dest for u in plan] == ["d/ok.txt", "d/sub/deep.txt"]
    secret = tree.parent / "secret.txt"
    (tree / "ok.txt").unlink()
    os.symlink(secret, tree / "ok.txt")  # a file swapped for a link
    shutil.rmtree(tree / "sub")
    os.symlink(tree.parent / "outside", tree / "sub")  # a folder on the way, too
    (tree.parent / "outside" / "deep.txt").write_text("host folder")
    skipped: list[str] = []
    frames = [P.decode(frame) for frame in put_frames(plan, skipped)]
    assert frames == []
    assert skipped == [
        "d/ok.txt (a symbolic link: not sent)",
        "d/sub/deep.txt (a symbolic link: not sent)",
    ]


# --- every byte kept of a display or a value bundle counts ---------------------------------

MiB = 1 << 20


def test_display_caps_count_mime_types_and_metadata_of_forged_frames() -> None:
    program = (
        FORGE
        + "many = {'text/plain': 'x', **{f'a/{i}': '' for i in range(300_000)}}\n"
        + "forge(json.dumps({'t': 'display', 'data': many}))\n"
        + "forge(json.dumps({'t': 'display', 'data': {'text/plain': 'm'}, "
        "'metadata': {'k': 'v' * (5 << 20)}}))\n" + "display('kept')\n"
    )
    with CodeMode(max_display_bytes=MiB, outputs_dir=None) as cm:
        result = cm.run("import json\n" + program, timeout=60)
        assert result.ok, (result.error, result.stderr)
        assert [d["data"]["text/plain"] for d in result.displays] == ["'kept'"]
        assert result.displays_dropped == 2 and "2 display(s)" in result.stderr
        assert cm.run("1", timeout=30).value == 1


def test_the_runtime_counts_mime_types_too() -> None:
    program = (
        "class Many:\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {f'a/{i}': '' for i in range(300_000)}\n"
        "display(Many())\n"
        "Many()"
    )
    with CodeMode(max_display_bytes=MiB, outputs_dir=None) as cm:
        result = cm.run(program, timeout=60)
    assert result.ok, (result.error, result.stderr)
    assert result.displays == [] and result.value_bundle is None
    assert "more than the 1 MiB one display may take" in result.stderr


def test_a_value_bundle_counts_against_the_runs_display_total() -> None:
    program = (
        "from codemode import HTML\n"
        "display(HTML('d' * 700_000))\n"
        "class Big:\n"
        "    def _repr_html_(self):\n"
        "        return 'v' * 700_000\n"
        "Big()"
    )
    with CodeMode(max_display_bytes=MiB, outputs_dir=None) as cm:
        result = cm.run(program, timeout=60)
    assert result.ok, (result.error, result.stderr)
    assert len(result.displays) == 1 and result.value_bundle is None
    assert result.value_repr and "the value's rich forms" in result.stderr


# --- pandas labels that would become one JSON key ------------------------------------------


def clashing_series() -> pd.Series:
    return pd.Series([10, 20], index=[1, "1"])


def clashing_frame() -> pd.DataFrame:
    return pd.DataFrame([[1, 2]], columns=[1, "1"])


def distinct_series() -> pd.Series:
    return pd.Series([10, 20], index=[1, 2])


def test_pandas_labels_that_become_one_json_key_are_a_clear_error() -> None:
    with CodeMode(tools=[clashing_series, clashing_frame, distinct_series], outputs_dir=None) as cm:
        for tool in ("clashing_series", "clashing_frame"):
            result = cm.run(f"{tool}()", timeout=30)
            assert result.status == "error", result.value
            assert "the same JSON key '1'" in result.error.message, result.error
        assert cm.run("distinct_series()", timeout=30).value == {"1": 10, "2": 20}


# --- artifacts: save() beside outputs/, and host write errors ------------------------------


def test_a_saved_file_with_the_name_of_one_in_outputs_brings_both_back(
    tmp_path: Path, session: Callable[..., CodeMode]
) -> None:
    with session(outputs_dir=tmp_path) as cm:
        result = cm.run(
            "import os, codemode\nos.makedirs('outputs', exist_ok=True)\n"
            "open('outputs/r.txt', 'w').write('from outputs')\n"
            "os.makedirs('x', exist_ok=True)\nopen('x/r.txt', 'w').write('from save')\n"
            "codemode.save('x/r.txt')\n"
            "codemode.save('outputs/r.txt')",  # the same file again: sent once
            timeout=30,
        )
    assert result.ok, (result.error, result.stderr)
    assert sorted(Path(a.path).read_text() for a in result.artifacts) == [
        "from outputs",
        "from save",
    ]
    assert [a.name for a in result.artifacts] == ["r.txt", "r.txt"]
    assert sorted(Path(a.path).name for a in result.artifacts) == ["r-2.txt", "r.txt"]


def test_artifacts_the_host_cannot_write_are_left_and_the_run_keeps_its_status(
    tmp_path: Path, session: Callable[..., CodeMode]
) -> None:
    long_name = "n" * 300
    with session(outputs_dir=tmp_path / "outs") as cm:
        assert cm.run("keep = 42", timeout=30).ok
        result = cm.run(
            "import os, codemode\nos.makedirs('outputs', exist_ok=True)\n"
            "open('outputs/a', 'w').write('a file')\n"
            "open('other', 'w').write('o')\n"
            f"codemode.save('other', {long_name!r})\n"
            "codemode.save('other', 'a/b')\n"
            "open('outputs/fine.txt', 'w').write('fine')\n"
            "keep + 1",
            timeout=30,
        )
        assert result.status == "ok" and result.value == 43, (result.error, result.stderr)
        assert sorted(a.name for a in result.artifacts) == ["a", "fine.txt"]
        left = " ".join(result.artifacts_left)
        assert f"{long_name} (the host could not write it: its name is too long" in left
        assert "a/b (the host could not write it: a file on the host is in the way" in left
        assert "files not brought back" in result.stderr
        assert cm.run("keep", timeout=30).value == 42


def test_an_artifact_name_no_host_file_can_have_is_left_not_a_crash(tmp_path: Path) -> None:
    program = (
        FORGE + "import base64\n"
        "forge(json.dumps({'t': 'artifact', 'name': 'a\\ud800.txt', 'd': 'eA==', 'more': False}))\n"
        "keep + 1"
    )
    with CodeMode(outputs_dir=tmp_path) as cm:
        assert cm.run("keep = 41", timeout=30).ok
        result = cm.run("import json\n" + program, timeout=30)
        assert result.status == "ok" and result.value == 42, (result.error, result.stderr)
        assert result.artifacts == [] and "not a usable name" in result.artifacts_left[0]


def test_an_outputs_dir_below_a_file_leaves_the_files_and_keeps_the_state(
    tmp_path: Path,
) -> None:
    (tmp_path / "plain").write_text("a file, not a folder")
    with CodeMode(outputs_dir=tmp_path / "plain" / "outs") as cm:
        assert cm.run("keep = 42", timeout=30).ok
        result = cm.run(
            "import os\nos.makedirs('outputs', exist_ok=True)\n"
            "open('outputs/f.txt', 'w').write('f')\nkeep",
            timeout=30,
        )
        assert result.status == "ok" and result.value == 42, (result.error, result.stderr)
        assert result.artifacts == []
        assert result.artifacts_left == [
            "f.txt (the host could not write it: a file on the host is in the way of its folder)"
        ]
        assert cm.run("keep", timeout=30).value == 42


# --- a failed pip install keeps the session's state ----------------------------------------


def wheel(folder: Path, name: str, body: str) -> Path:
    """A pure-Python wheel made here: pip installs it without a network."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": body,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


@pytest.fixture
def project() -> Iterator[Path]:
    # Under /tmp, readable by the jail's own uid (pytest's tmp_path is private to root).
    path = Path(tempfile.mkdtemp(prefix="codemode-test-project-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_failed_pip_install_in_a_kernel_keeps_the_sessions_variables(project: Path) -> None:
    broken = project / "cmbroken-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip archive")
    good = wheel(project, "cmgood", "VALUE = 7\n")
    with loaded_kernel() as k:
        assert k.execute(f"import os\nos.chdir({str(project)!r})").ok
        assert k.execute("%%codemode\nkeep = 42").ok
        failed = k.execute(f"%codemode pip install {broken}", timeout=120)
        assert "pip failed; nothing else changed" in failed.stream(), failed.stream()
        kept = k.execute("%%codemode\nkeep", timeout=60)
        assert kept.ok and kept.result == "42", (kept.error, kept.stream("stderr"))
        done = k.execute(f"%codemode pip install {good}", timeout=120)
        assert "[codemode] installed" in done.stream(), done.stream()
        assert "its earlier state was lost" in done.stream()  # said, as it happened
        imported = k.execute("%%codemode\nimport cmgood\ncmgood.VALUE", timeout=60)
        assert imported.ok and imported.result == "7", imported.error
