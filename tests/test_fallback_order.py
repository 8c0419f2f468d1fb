"""A notebook saved with `%%codemode` cells, opened without the extension (nbconvert to HTML
and to text, as VS Code, GitHub and nbviewer show it), shows each run in time order."""

from __future__ import annotations

import re
import subprocess
import sys

import nbformat
import pytest
from nbconvert import HTMLExporter, MarkdownExporter
from traitlets.config import Config

CELLS = [
    "%load_ext codemode_jupyter",
    "def ping(n: int) -> int:\n    return n + 1\n",
    "%%codemode\nprint('first print')\nx = ping(n=41)\nprint('after the call', x)\n"
    "print(ping(n=1))\nprint('last print')",
]
#: What each run shows, in the order it happened.
ORDER = ["first print", "ping(n=41)", "after the call 42", "ping(n=1)", "2", "last print"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    folder = tmp_path_factory.mktemp("fallback")
    path = folder / "run.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)
    # As a person refreshes a notebook (and in a process of its own, so its kernel client
    # leaves nothing in this one for later tests' leak checks).
    subprocess.run(
        [sys.executable, "-m", "codemode_jupyter.cli", "run", str(path), "--save", str(path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return nbformat.read(path, as_version=4)


def in_order(text: str, parts: list[str]) -> bool:
    """Whether `parts` appear in `text` one after the other (each as a whole line's text)."""
    place = 0
    for part in parts:
        found = re.compile(rf"(^|[>\s]){re.escape(part)}($|[<\s])", re.M).search(text, place)
        if found is None:
            return False
        place = found.end()
    return True


def run_part(text: str) -> str:
    """The converted notebook from the run's cell on (the tool's source names `ping` too)."""
    return text[text.index("first print") :]


def test_nbconvert_html_shows_the_run_in_time_order(saved: nbformat.NotebookNode) -> None:
    body, _ = HTMLExporter().from_notebook_node(saved)
    assert "codemode-fallback" in body
    part = run_part(body.split("codemode-fallback", 1)[1])
    assert in_order(part, ORDER), part[:3000]
    assert "ping(n=41) -&gt; 42" in part


def test_nbconvert_text_shows_the_run_in_time_order(saved: nbformat.NotebookNode) -> None:
    # A front end that shows text only.
    text_only = Config({"NbConvertBase": {"display_data_priority": ["text/plain"]}})
    body, _ = MarkdownExporter(config=text_only).from_notebook_node(saved)
    assert "codemode-fallback" not in body
    part = run_part(body[body.index("── codemode") :])
    assert in_order(part, ORDER), part
    assert "ping(n=41) -> 42" in [line.strip() for line in part.splitlines()]
