"""Files in (uploads) and out (artifacts), on the local jail and on Daytona over the loopback
server with the real SDK; both go over the runtime's own channel."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import FAST

from codemode_jupyter import CodeMode
from codemode_jupyter.engine.files import ArtifactWriter, plan_uploads

pytestmark = pytest.mark.timeout(120)

KEY = "rich-files-key"

PROGRAM = """
import os, codemode
data = open("in/data.csv").read()
nested = open("tree/sub/deep.txt").read()
os.makedirs("outputs/plots", exist_ok=True)
open("outputs/summary.txt", "w").write(data.upper())
open("outputs/plots/p.bin", "wb").write(bytes(range(256)) * 4000)
open("elsewhere.txt", "w").write("saved")
codemode.save("elsewhere.txt")
nested
"""


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "deep.txt").write_text("deep")
    return tmp_path


def check_round_trip(cm: CodeMode, inputs: Path, outputs: Path) -> None:
    result = cm.run(
        PROGRAM, files=[f"{inputs / 'data.csv'}:in/data.csv", inputs / "tree"], timeout=60
    )
    assert result.ok, (result.error, result.stderr)
    assert result.value == "deep"
    by_name = {a.name: a for a in result.artifacts}
    assert sorted(by_name) == ["elsewhere.txt", "plots/p.bin", "summary.txt"]
    binary = bytes(range(256)) * 4000  # several chunks
    p = by_name["plots/p.bin"]
    assert p.size == len(binary) and p.sha256 == hashlib.sha256(binary).hexdigest()
    assert Path(p.path).read_bytes() == binary
    assert Path(by_name["summary.txt"].path).read_text() == "A,B\n1,2\n"
    assert Path(p.path).is_relative_to(outputs) and "run-1" in p.path
    again = cm.run("open('outputs/new.txt', 'w').write('n')", timeout=60)
    assert [a.name for a in again.artifacts] == ["new.txt"]  # unchanged files stay put
    assert "run-2" in again.artifacts[0].path


def test_upload_and_artifacts_on_the_local_jail(inputs: Path, tmp_path: Path) -> None:
    outputs = tmp_path / "outs"
    with CodeMode(outputs_dir=outputs) as cm:
        check_round_trip(cm, inputs, outputs)


def test_upload_and_artifacts_on_daytona(server, inputs: Path, tmp_path: Path) -> None:
    outputs = tmp_path / "outs"
    with CodeMode(
        backend="daytona", api_url=server.api_url, api_key=KEY, retry=FAST, outputs_dir=outputs
    ) as cm:
        check_round_trip(cm, inputs, outputs)


def test_session_files_come_back_with_every_new_runtime(inputs: Path) -> None:
    with CodeMode(files=[inputs / "data.csv"], outputs_dir=None) as cm:
        assert cm.run("open('data.csv').read()", timeout=30).value == "a,b\n1,2\n"
        assert cm.run("open('data.csv').read()", timeout=30, fresh=True).value == "a,b\n1,2\n"


def test_missing_or_bad_uploads_fail_clearly_and_leave_the_session_usable(
    inputs: Path, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        CodeMode(files=[tmp_path / "nope.csv"])
    with CodeMode(outputs_dir=None, max_upload_bytes=4) as cm:
        with pytest.raises(FileNotFoundError, match="nope"):
            cm.run("1", files=[tmp_path / "nope"])
        with pytest.raises(ValueError, match="more than the 4 allowed"):
            cm.run("1", files=[inputs / "data.csv"])
        with pytest.raises(ValueError, match="relative path"):
            cm.run("1", files=[(inputs / "data.csv", "../x")])
        assert cm.run("1 + 1", timeout=30).value == 2


def test_an_upload_that_cannot_be_written_fails_the_run_not_the_session(inputs: Path) -> None:
    with CodeMode(outputs_dir=None) as cm:
        cm.run("import os\nos.makedirs('blocked')", timeout=30)
        # "blocked" is a directory in the sandbox: writing a file there fails.
        failed = cm.run("1", files=[(inputs / "data.csv", "blocked")], timeout=30)
        assert failed.status == "error" and "blocked" in failed.error.message
        assert cm.run("2", timeout=30).value == 2


def test_artifact_caps_leave_files_behind_and_say_which(tmp_path: Path) -> None:
    with CodeMode(outputs_dir=tmp_path, max_artifacts=2, max_artifact_bytes=10_000) as cm:
        result = cm.run(
            "import os\nos.makedirs('outputs')\n"
            "for name in 'abc':\n    open(f'outputs/{name}.txt', 'w').write(name)\n"
            "open('outputs/big.bin', 'wb').write(b'x' * 20_000)",
            timeout=30,
        )
    assert result.ok, result.error
    assert [a.name for a in result.artifacts] == ["a.txt", "b.txt"]
    assert "big.bin (20,000 bytes)" in result.stderr and "c.txt (1 bytes)" in result.stderr


def test_host_refuses_artifact_names_outside_its_folder(tmp_path: Path) -> None:
    writer = ArtifactWriter(tmp_path / "run", max_files=5, max_bytes=100)
    assert writer.feed("../escape.txt", "eA==", False) is None
    assert writer.feed("/abs.txt", "eA==", False) is None
    assert writer.feed("ok.txt", "eA==", True) is None  # more to come
    assert writer.feed("ok.txt", "not base64!", False) is None
    kept = writer.feed("fine.txt", "eA==", False)
    assert kept is not None and Path(kept.path).read_bytes() == b"x"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "run" / "ok.txt").exists()
    assert "not a usable name" in writer.finish()


def test_plan_uploads_walks_folders_in_order(inputs: Path) -> None:
    plan = plan_uploads([f"{inputs / 'tree'}:t"])
    assert [u.dest for u in plan] == ["t/sub/deep.txt"]
