"""JupyterLab in headless Chromium: a program's displays and files inside the run card.

A small notebook written into the lab root: a %%codemode cell shows an HTML table and a
matplotlib figure, writes a CSV under outputs/, then calls a tool that waits until the test
creates a file. While it waits, the live card shows the image and the table; when it ends,
the finished card shows them in time order with the output and the call, and links the CSV;
after save, kernel shutdown and a reload, the saved card shows them again, and so does
Notebook 7. Each display is shown once: its own output (marked for the card) stays hidden.
Every wait is on a condition in the page or on disk; screenshots go to
test-artifacts/browser/rich-*.png.
"""

from __future__ import annotations

import json
import re

import pytest
from browser_lab import (
    BROWSER_MARKS,
    LONG,
    RUN_MIME,
    browser_page,
    cell_index,
    cell_node,
    cells,
    console_errors,
    lab_server,
    open_notebook,
    run_cells,
    save_notebook,
    shot,
    start_cell,
    wait_cell_done,
)

pytestmark = BROWSER_MARKS

NAME = "rich-card.ipynb"
MARKER = "application/vnd.codemode.display+json"

TOOL = '''import os, time


def wait_for_go() -> str:
    """Returns once go.flag exists (the browser test creates it)."""
    deadline = time.monotonic() + 120
    while not os.path.exists("go.flag"):
        if time.monotonic() > deadline:
            return "no go"
        time.sleep(0.05)
    return "go"'''

CELL = """%%codemode
from codemode import HTML
import matplotlib.pyplot as plt
print("start")
display(HTML("<table class='sales'><tr><th>month</th><th>units</th></tr>"
             "<tr><td>Jan</td><td>120</td></tr></table>"))
plt.figure(figsize=(3, 2))
plt.plot([3, 5, 4])
plt.show()
import os
os.makedirs("outputs", exist_ok=True)
with open("outputs/units.csv", "w") as f:
    f.write("month,units\\nJan,120\\nFeb,130\\n")
print("waiting")
print(wait_for_go())"""


def notebook_json() -> dict:
    def code(source: str) -> dict:
        return {
            "cell_type": "code",
            "metadata": {},
            "source": source,
            "outputs": [],
            "execution_count": None,
        }

    return {
        "cells": [code("%load_ext codemode_jupyter"), code(TOOL), code(CELL)],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    source = tmp_path_factory.mktemp("source") / NAME
    source.write_text(json.dumps(notebook_json()))
    with lab_server(tmp_path_factory.mktemp("lab"), [source], "rich-jupyter-lab.log") as lab:
        yield lab


@pytest.fixture(scope="module")
def page(lab):
    with browser_page("rich-console.log") as page:
        yield page


# What the cell's outputs show: the card's timeline kinds, and every visible image and table
# in the cell (inside the card or not), so a display shown twice is seen.
JS_SHOWN = """(index) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
  const visible = node => node.offsetParent !== null;
  const area = cell.node.querySelector('.jp-OutputArea');
  const card = area.querySelector('.codemode-RunCard');
  const items = card ? Array.from(card.querySelectorAll('.codemode-Timeline > li')) : [];
  return {
    status: card ? card.dataset.status : null,
    kinds: items.map(li => li.classList.contains('codemode-Output')
        ? 'out:' + li.textContent.trim().split('\\n')[0]
        : li.className.split(' ')[0].replace('codemode-', '')),
    images: Array.from(area.querySelectorAll('img')).filter(visible)
        .map(img => img.closest('.codemode-Display') ? 'card-display'
             : img.closest('.codemode-Artifact') ? 'card-file' : 'outside'),
    tables: Array.from(area.querySelectorAll('table')).filter(visible)
        .map(t => t.closest('.codemode-Display') ? 'card-display:' + t.textContent
             : t.closest('.codemode-Artifact') ? 'card-file:' + t.textContent
             : 'outside:' + t.textContent),
    figureLoaded: Array.from(card ? card.querySelectorAll('.codemode-Display img') : [])
        .every(img => img.complete && img.naturalWidth > 0),
  };
}"""


def shown(page, index: int) -> dict:
    return page.evaluate(JS_SHOWN, index)


def wait_shown(page, index: int, condition: str) -> None:
    """Wait until the cell's card satisfies `condition` (JS over `s`, the JS_SHOWN result)."""
    page.wait_for_function(
        f"(index) => {{ const s = ({JS_SHOWN})(index); return !!(s.status && ({condition})); }}",
        arg=index,
        timeout=LONG,
    )


def test_displays_and_files_in_the_live_and_saved_card(lab, page):
    try:
        scenario(lab, page)
    except BaseException:
        shot(page, "rich-failure")
        raise


def scenario(lab, page) -> None:
    go = lab["root"] / "go.flag"
    open_notebook(page, lab, NAME)
    run_cells(page, [0, 1])
    index = cell_index(page, "%%codemode")

    # ---- 1. live: the card shows the table and the figure while the tool waits ----
    start_cell(page, index)
    wait_shown(
        page,
        index,
        "s.status === 'running' && s.kinds.includes('out:waiting')"
        " && s.images.includes('card-display') && s.figureLoaded",
    )
    live = shown(page, index)
    assert live["kinds"][:3] == ["out:start", "Display", "Display"], live
    # Each display once, inside the card: its own output (marked) is hidden.
    assert live["images"] == ["card-display"], live
    assert live["tables"] == ["card-display:monthunitsJan120"], live
    cell_node(page, index).scroll_into_view_if_needed()
    shot(page, "rich-1-live")

    # ---- 2. finished: in time order with output and the call, the CSV linked ----
    go.write_text("go")
    assert wait_cell_done(page) == "ok"
    wait_shown(page, index, "s.status === 'ok' && s.images.length && s.figureLoaded")
    done = shown(page, index)
    assert done["kinds"] == ["out:start", "Display", "Display", "out:waiting", "ToolCall", "out:go"]
    assert done["images"] == ["card-display"], done
    assert done["tables"] == [
        "card-display:monthunitsJan120",
        "card-file:monthunitsJan120Feb130",
    ], done
    card = cell_node(page, index).locator(".codemode-RunCard")
    link = card.locator(".codemode-Artifact a")
    link.wait_for(state="visible")
    assert link.inner_text() == "units.csv"
    href = link.get_attribute("href")
    assert href and re.search(r"/files/codemode-outputs/\w+/run-\d+/units\.csv", href), href
    # The link opens the file through the server.
    fetched = page.evaluate("(url) => fetch(url).then(r => r.status + ' ' + r.statusText)", href)
    assert fetched.startswith("200"), fetched
    model = cells(page)[index]["outputs"]
    assert sum(MARKER in o["mimes"] for o in model) == 2, model
    card.scroll_into_view_if_needed()
    shot(page, "rich-2-finished")

    # The Tools panel's recent run shows the displays too.
    page.evaluate("() => window.jupyterapp.commands.execute('codemode:open-tools')")
    run_item = page.locator("#codemode-tools .codemode-RunItem").first
    run_item.wait_for(state="visible")
    run_item.locator(".codemode-RunSummary").click()
    run_item.locator(".codemode-Display img").wait_for(state="visible")
    assert "Jan" in run_item.locator(".codemode-Display table").inner_text()
    shot(page, "rich-2b-tools-panel")
    page.evaluate("() => window.jupyterapp.shell.collapseRight()")

    # ---- 3. saved, kernel shut down, reloaded: the card alone shows them again ----
    save_notebook(page)
    saved = json.loads((lab["root"] / NAME).read_text())
    (run,) = [o for o in saved["cells"][index]["outputs"] if o.get("data", {}).get(RUN_MIME)]
    png_entries = run["metadata"][RUN_MIME]["timeline"]
    assert any("image/png" in e.get("data", {}) for e in png_entries.values())
    assert not any("image/png" in e.get("data", {}) for e in run["data"][RUN_MIME]["timeline"])
    page.evaluate(
        "async () => { await window.jupyterapp.shell.currentWidget.sessionContext.shutdown(); }"
    )
    page.reload()
    open_notebook(page, lab, NAME)
    wait_shown(page, index, "s.status === 'ok' && s.images.length && s.figureLoaded")
    again = shown(page, index)
    assert again == done, (again, done)
    cell_node(page, index).locator(".codemode-RunCard").scroll_into_view_if_needed()
    shot(page, "rich-3-saved-after-reload")
    assert not console_errors(page), console_errors(page)


def test_notebook7_shows_each_display_once_in_the_saved_card(lab, page):
    """The notebook saved by the test above, in Notebook 7: same card, marked outputs hidden."""
    pytest.importorskip("notebook")
    try:
        open_notebook(page, lab, NAME, ui="notebooks")
        index = cell_index(page, "%%codemode")
        wait_shown(page, index, "s.status === 'ok' && s.images.length && s.figureLoaded")
        saved = shown(page, index)
        assert saved["images"] == ["card-display"], saved
        assert saved["tables"][0] == "card-display:monthunitsJan120", saved
        cell_node(page, index).locator(".codemode-RunCard").scroll_into_view_if_needed()
        shot(page, "rich-4-notebook7")
    except BaseException:
        shot(page, "rich-failure-notebook7")
        raise
