"""The saved example notebooks carry no dead links: every relative link (in markdown, in HTML
outputs, and an artifact's `rel` on a run's card) names a file that is in the repository."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_LINKS = [
    re.compile(r"\]\(\s*<?([^)\s>]+)"),  # markdown [text](target)
    re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE),
]


def links_in_text(text: str) -> Iterator[str]:
    for pattern in _LINKS:
        yield from pattern.findall(text)


def links_in_data(value: Any) -> Iterator[str]:
    """Links in an output's data or metadata: its HTML and markdown, and every `rel`."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "rel" and isinstance(item, str):
                yield item
            elif key in ("text/html", "text/markdown"):
                yield from links_in_text(_text(item))
            else:
                yield from links_in_data(item)
    elif isinstance(value, list):
        for item in value:
            yield from links_in_data(item)


def _text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else str(source)


def notebook_links(path: Path) -> Iterator[str]:
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            yield from links_in_text(_text(cell["source"]))
        for output in cell.get("outputs", []):
            yield from links_in_data(output.get("data", {}))
            yield from links_in_data(output.get("metadata", {}))


def dead(path: Path, link: str) -> bool:
    """Whether `link` is relative (no scheme, no host, not an anchor) and names no file."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or not parts.path or link.startswith(("#", "/")):
        return False
    return not (path.parent / unquote(parts.path)).exists()


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_saved_notebooks_link_no_missing_file(path: Path) -> None:
    missing = [link for link in notebook_links(path) if dead(path, link)]
    assert not missing, (
        f"{path.name} links to files that are not in the repository: {missing} "
        "(an artifact's `rel` on a run card points into codemode-outputs/, which is not "
        "committed: save the notebook without it)"
    )


def test_the_check_sees_each_kind_of_link(tmp_path: Path) -> None:
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["[a](gone.md) [b](https://x.org) [c](#top)"]},
            {
                "cell_type": "code",
                "source": [],
                "outputs": [
                    {"data": {"text/html": ['<a href="gone.html">', '<img src="here.png">']}},
                    {"metadata": {"run": {"result": {"artifacts": [{"rel": "out/gone.csv"}]}}}},
                ],
            },
        ]
    }
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    (tmp_path / "here.png").write_bytes(b"")
    missing = [link for link in notebook_links(path) if dead(path, link)]
    assert missing == ["gone.md", "gone.html", "out/gone.csv"]
