"""JupyterLab and Notebook 7 in headless Chromium: Kernel > Interrupt stops a `%%codemode`
loop and keeps the session (issue 18).

The steps a new user takes on a fresh kernel: load the extension, keep a variable, run a loop
that prints and sleeps, interrupt it from the Kernel menu once it has printed "5" (about 3 s),
then print the variable. The server interrupts the kernel as it always does (SIGINT to the
kernel's process group). Every wait is on the page; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json

import pytest
from browser_lab import (
    BROWSER_MARKS,
    add_code_cell,
    browser_page,
    cell_node,
    console_errors,
    lab_server,
    open_notebook,
    run_cells,
    shot,
    start_cell,
    wait_cell_done,
    wait_cell_shows,
)

pytestmark = BROWSER_MARKS

NOTEBOOK = "interrupt.ipynb"
LOOP = "%%codemode\nimport time\nfor i in range(100):\n    print(i)\n    time.sleep(0.5)"

# The program's output lines in a cell's run card.
JS_PRINTED = """(index) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
  return Array.from(cell.node.querySelectorAll('.codemode-Output'))
    .map(node => node.textContent).join('').split('\\n');
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("lab-interrupt")
    blank = home / NOTEBOOK
    blank.write_text(
        json.dumps(
            {
                "cells": [],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    with lab_server(home, [blank], "jupyter-lab-interrupt.log") as lab:
        yield lab


def printed(page, index: int) -> list[str]:
    return page.evaluate(JS_PRINTED, index)


def output_text(page, index: int) -> str:
    return cell_node(page, index).locator(".jp-Cell-outputWrapper").inner_text()


@pytest.mark.parametrize("ui", ["lab", "notebooks"])
def test_kernel_menu_interrupt_stops_the_loop_and_keeps_the_session(lab, ui):
    with browser_page(f"console-interrupt-{ui}.log") as page:
        open_notebook(page, lab, NOTEBOOK, ui=ui)
        # A fresh kernel each time: the notebook's kernel from the other UI's run is replaced.
        page.evaluate(
            "async () => {"
            " await window.jupyterapp.shell.currentWidget.sessionContext.restartKernel(); }"
        )
        run_cells(page, [add_code_cell(page, "%load_ext codemode_jupyter")])
        run_cells(page, [add_code_cell(page, "%%codemode\nkeep = 42")])
        loop = add_code_cell(page, LOOP)
        start_cell(page, loop)
        page.wait_for_function(f"(index) => ({JS_PRINTED})(index).includes('5')", arg=loop)
        page.evaluate("() => window.jupyterapp.commands.execute('kernelmenu:interrupt')")
        assert wait_cell_done(page) == "failed"
        wait_cell_shows(page, loop, '.codemode-RunCard[data-status="interrupted"]')
        cell_node(page, loop).scroll_into_view_if_needed()
        shot(page, f"interrupt-{ui}-1-stopped")
        stopped = output_text(page, loop)
        # The card and the error line agree: the program stopped, the session is kept.
        assert "replaced" not in stopped and "gone" not in stopped, stopped
        assert (
            "CodeModeInterrupted: the program was interrupted; the session is still there"
            in stopped
        ), stopped
        lines = printed(page, loop)
        assert lines[:6] == ["0", "1", "2", "3", "4", "5"] and "99" not in lines, lines

        after = add_code_cell(page, "%%codemode\nprint(keep)")
        run_cells(page, [after])
        wait_cell_shows(page, after, '.codemode-RunCard[data-status="ok"]')
        cell_node(page, after).scroll_into_view_if_needed()
        shot(page, f"interrupt-{ui}-2-kept")
        assert printed(page, after)[0] == "42", output_text(page, after)
        assert console_errors(page) == []
