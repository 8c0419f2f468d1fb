"""The example notebooks: nbval passes on the committed outputs, runs are deterministic, and
the README's main-job command prints what the quickstart's cells produced."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from codemode_jupyter.jupyter.headless import execute_notebook
from codemode_jupyter.jupyter.views.transcript import MIME_RUN

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXAMPLES = (
    "quickstart.ipynb",
    "tool-debugging.ipynb",
    "previews.ipynb",
    "batch.ipynb",
    "rich-output.ipynb",
    "agent.ipynb",
)


def test_examples_are_committed_with_outputs():
    for name in EXAMPLES:
        nb = json.loads((NOTEBOOKS / name).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c["execution_count"] for c in code), name
        assert any(c["outputs"] for c in code), name


def test_nbval_passes_on_the_committed_notebooks():
    # --nbval-current-env: the kernel is this interpreter, whatever kernelspecs the user has.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-q",
            str(NOTEBOOKS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", done.stdout) and "failed" not in done.stdout


def compared(nb) -> list:
    """What nbval compares in each cell: every output's data but widget views, and errors."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            if output.output_type == "stream":
                outputs.append((output.name, output.text))
            elif output.output_type == "error":
                outputs.append((output.ename, output.evalue))
            else:
                data = {
                    k: v
                    for k, v in output.data.items()
                    if k != "application/vnd.jupyter.widget-view+json"
                }
                outputs.append(json.dumps(data, sort_keys=True))
        cells.append(outputs)
    return cells


def test_two_executions_leave_identical_compared_outputs():
    first = execute_notebook(NOTEBOOKS / "quickstart.ipynb")
    second = execute_notebook(NOTEBOOKS / "quickstart.ipynb")
    assert compared(first) == compared(second)
    # ... while the timings, which do differ, are kept in the output metadata.
    durations = [
        o.metadata[MIME_RUN]["result"]["duration"]
        for nb in (first, second)
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "metadata" in o and MIME_RUN in o.metadata
    ]
    assert durations and all(d > 0 for d in durations)


def test_main_job_command_prints_what_the_cells_produced():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "codemode_jupyter.cli",
            "run",
            str(NOTEBOOKS / "quickstart.ipynb"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Paris: 18 °C = 64.4 °F" in out
    assert "── codemode: ok, 6 tool calls in 6 rounds" in out
    assert "Out[4]: 'Lima'" in out
    assert "ZeroDivisionError: division by zero" in out  # the expected error cell
    assert "still here: ['Lima', 'Oslo', 'Paris']" in out
    assert "live view" not in out
