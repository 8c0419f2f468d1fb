"""JupyterLab in headless Chromium: the run view (live and saved), the Tools panel, Notebook 7.

Starts `jupyter lab` on 127.0.0.1 (a free port, a temporary root with a copy of
notebooks/quickstart.ipynb with its outputs cleared) and drives Debian's Chromium with
Playwright. Every wait is on an explicit condition in the page; nothing sleeps to synchronise.
Screenshots and the server log go to test-artifacts/browser/.

One scenario, in order (each step needs the previous one):
  1. run the notebook: each finished %%codemode cell shows one view of its run, its timeline
     in time order, the error only in the traceback and the value only as Out[n]; a slow cell
     updates its view live (a print after a call appears after it); an interrupted cell shows
     its call in flight as cancelled; the cell body is highlighted as Python;
  2. save, restart the kernel, reload the page: the notebook file holds no widget and no
     placeholder text, and every run's view is drawn again identically from the file alone;
  3. the Tools panel says the kernel extension is not loaded, then, after the first cells
     run again, lists the tools, calls them through their forms and as JSON (results,
     missing and unexpected arguments, validation errors, tracebacks), shows recent runs with
     readable call rows at the sidebar's default width, scrolls to a run's cell, and follows
     a redefined function.
A second test opens the same notebook in Notebook 7: saved runs render, and a cell runs live.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from browser_lab import (
    BROWSER_MARKS,
    ROOT,
    RUN_MIME,
    add_code_cell,
    browser_page,
    cell_index,
    cell_node,
    cells,
    console_errors,
    lab_server,
    run_cells,
    save_notebook,
    shot,
    start_cell,
    wait_cell_done,
    wait_cell_shows,
)
from browser_lab import open_notebook as open_named

QUICKSTART = ROOT / "notebooks" / "quickstart.ipynb"

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_server(tmp_path_factory.mktemp("lab"), [QUICKSTART], "jupyter-lab.log") as lab:
        yield lab


@pytest.fixture(scope="module")
def page(lab):
    with browser_page("console.log") as page:
        yield page


def open_notebook(page, lab) -> None:
    open_named(page, lab, QUICKSTART.name)


def open_tools_panel(page):
    page.evaluate("() => window.jupyterapp.commands.execute('codemode:open-tools')")
    panel = page.locator("#codemode-tools")
    panel.wait_for(state="visible")
    return panel


# The kinds of a cell's run-view timeline entries, in order (call rows by their state).
JS_TIMELINE = """(index) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
  const list = cell.node.querySelector('.jp-OutputArea .codemode-Timeline');
  if (!list) return null;
  return Array.from(list.children).map(li =>
    li.classList.contains('codemode-ToolCall') ? 'call:' + li.dataset.state
    : li.classList.contains('codemode-Output') ? 'out:' + li.textContent
    : li.className);
}"""


def timeline(page, index: int) -> list[str] | None:
    return page.evaluate(JS_TIMELINE, index)


def card_texts(page) -> list[str]:
    return page.locator(".jp-OutputArea .codemode-RunCard").all_inner_texts()


# --- the scenario -------------------------------------------------------------------------


def test_run_views_saved_runs_and_tools_panel(lab, page):
    try:
        scenario(lab, page)
    except BaseException:
        shot(page, "failure")
        raise


SLOW_CELL = (
    "%%codemode\nimport time\nprint('before')\nt = get_weather('Paris')['temp_c']\n"
    "print('after', t)\ntime.sleep(3)\nprint('done')"
)
WAIT_TOOL = (
    "import asyncio\n\n\nasync def wait(s: float) -> float:\n"
    '    """Waits s seconds."""\n    await asyncio.sleep(s)\n    return s\n'
)
INTERRUPTED_CELL = "%%codemode\nprint('waiting')\nawait wait_async(s=60)"


def scenario(lab, page) -> None:
    started = time.monotonic()
    open_notebook(page, lab)

    # The extension is loaded in the page: the sidebar tab and the renderer are registered.
    assert page.evaluate("() => window.jupyterapp.commands.hasCommand('codemode:open-tools')"), (
        "codemode-jupyter's front-end extension is not loaded"
    )

    # ---- 1. run the notebook up to the first %%codemode cell and the ones after it ----
    first_codemode = cell_index(page, "%%codemode")
    code_cells = [i for i, c in enumerate(cells(page)) if c["type"] == "code"]
    # Everything until the cell that fails on purpose (it is marked NBVAL_RAISES_EXCEPTION).
    failing = next(
        i
        for i, c in enumerate(cells(page))
        if c["type"] == "code" and "NBVAL_RAISES_EXCEPTION" in c["source"]
    )
    run_cells(page, [i for i in code_cells if i <= failing])

    cell = cell_node(page, first_codemode)
    # One view per finished cell: the run's card, and no widget.
    card = cell.locator(f'[data-mime-type="{RUN_MIME}"] .codemode-RunCard')
    card.wait_for(state="visible")
    assert cell.locator(".codemode-RunCard").count() == 1
    assert page.locator(".jp-OutputArea .jupyter-widgets").count() == 0
    assert card.get_attribute("data-status") == "ok"
    assert card.locator(".codemode-ToolCall").count() == 6
    # Time order: the three look-ups, then each conversion followed by the line it printed.
    order = timeline(page, first_codemode)
    assert order[:4] == ["call:ok"] * 4 and order[4].startswith("out:Paris"), order
    assert order[5] == "call:ok" and order[6].startswith("out: Oslo"), order
    facts = card.locator(".codemode-Facts").inner_text()
    assert "6 tool calls · 6 rounds" in facts and "local (isolation:" in facts
    assert re.search(r"\d+(\.\d+)? (µs|ms|s) ·", facts), facts
    assert card.locator(".codemode-CallText").first.inner_text() == "get_weather(city='Paris')"
    # The value is Out[n], not repeated in the view.
    assert card.locator('[data-kind="value"]').count() == 0
    assert "'Lima'" in cell.locator(".jp-OutputArea-executeResult").inner_text()
    cell.scroll_into_view_if_needed()
    shot(page, "1-finished-run")

    # The %%codemode body is highlighted as Python, and its first line marked as a magic.
    editor = cell.locator(".cm-content")
    assert editor.locator(".codemode-magic-name").inner_text() == "codemode"
    highlight = page.evaluate(
        """(index) => {
          const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
          const lines = Array.from(cell.node.querySelectorAll('.cm-content .cm-line')).slice(1);
          const spans = lines.flatMap(line => Array.from(line.querySelectorAll('span')));
          const keyword = spans.find(s => s.textContent === 'for');
          const plain = getComputedStyle(cell.node.querySelector('.cm-content')).color;
          return {spans: spans.length, keyword: keyword ? getComputedStyle(keyword).color : null,
                  plain};
        }""",
        first_codemode,
    )
    assert highlight["spans"] > 5, highlight
    assert highlight["keyword"] and highlight["keyword"] != highlight["plain"], highlight

    # The failing cell: one view (status error), the error once, in the red traceback.
    failing_cell = cell_node(page, failing)
    error_card = failing_cell.locator(f'[data-mime-type="{RUN_MIME}"] .codemode-RunCard')
    error_card.wait_for(state="visible")
    assert failing_cell.locator(".codemode-RunCard").count() == 1
    assert error_card.get_attribute("data-status") == "error"
    outputs_text = failing_cell.locator(".jp-OutputArea").inner_text()
    assert outputs_text.count("division by zero") == 1, outputs_text
    assert 'File "<cell>", line 4' in outputs_text

    # A slow cell: its view updates live, in time order, then shows the finished run.
    slow = add_code_cell(page, SLOW_CELL)
    start_cell(page, slow)
    page.wait_for_function(
        """(index) => {
          const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
          const card = cell.node.querySelector('.codemode-RunCard[data-status="running"]');
          return card && card.textContent.includes('after 18');
        }""",
        arg=slow,
    )
    live = timeline(page, slow)
    assert live[:3] == ["out:before", "call:ok", "out:after 18"], live
    assert cell_node(page, slow).locator(".codemode-RunCard").count() == 1
    cell_node(page, slow).scroll_into_view_if_needed()
    shot(page, "2-live-update")
    assert wait_cell_done(page) == "ok"
    slow_card = cell_node(page, slow).locator(".codemode-RunCard")
    assert slow_card.count() == 1 and slow_card.get_attribute("data-status") == "ok"
    assert timeline(page, slow) == ["out:before", "call:ok", "out:after 18\ndone"]

    # An interrupted cell: the call in flight shows as cancelled.
    run_cells(page, [add_code_cell(page, WAIT_TOOL)])
    waiting = add_code_cell(page, INTERRUPTED_CELL)
    start_cell(page, waiting)
    wait_cell_shows(page, waiting, '.codemode-ToolCall[data-state="running"]')
    page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.interrupt()"
    )
    assert wait_cell_done(page) == "failed"
    stopped = cell_node(page, waiting).locator(".codemode-RunCard")
    assert stopped.count() == 1 and stopped.get_attribute("data-status") == "interrupted"
    assert timeline(page, waiting) == ["out:waiting", "call:cancelled"]
    cell_node(page, waiting).scroll_into_view_if_needed()
    shot(page, "3-interrupted")

    # ---- 2. save, restart the kernel, reload: the runs are drawn again, identically ----
    before = card_texts(page)
    save_notebook(page)
    saved_text = (lab["root"] / "quickstart.ipynb").read_text()
    assert "codemode live view" not in saved_text
    assert "widget-view+json" not in saved_text
    saved = json.loads(saved_text)
    saved_runs = [
        o for c in saved["cells"] for o in c.get("outputs", []) if RUN_MIME in o.get("data", {})
    ]
    assert len(saved_runs) == len(before) >= 5

    page.evaluate(
        "async () => {"
        " await window.jupyterapp.shell.currentWidget.sessionContext.restartKernel(); }"
    )
    page.reload()
    open_notebook(page, lab)
    cards = page.locator(f'.jp-OutputArea [data-mime-type="{RUN_MIME}"] .codemode-RunCard')
    cards.first.wait_for(state="visible")
    assert card_texts(page) == before
    first_card = cell_node(page, first_codemode).locator(".codemode-RunCard")
    # Open a tool call: its full arguments and result are one click away.
    first_card.locator(".codemode-CallSummary").first.click()
    body = first_card.locator(".codemode-CallBody").first.inner_text()
    assert "city='Paris'" in body and "{'city': 'Paris', 'temp_c': 18}" in body
    leftovers = page.evaluate(
        """() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))
              .filter(node => node.offsetParent !== null)
              .map(node => node.textContent)
              .filter(text => /Loading widget|Error displaying widget|live view/.test(text))"""
    )
    assert not leftovers, leftovers
    first_card.scroll_into_view_if_needed()
    shot(page, "4-saved-runs-after-restart")

    # ---- 3. the Tools panel ----
    panel = open_tools_panel(page)
    # The restarted kernel has not loaded the extension: the panel says what to do.
    status = panel.locator(".codemode-PanelStatus")
    page.wait_for_function(
        "() => document.querySelector('#codemode-tools .codemode-PanelStatus')"
        ".dataset.state === 'unavailable'"
    )
    assert "%load_ext codemode_jupyter" in status.inner_text()

    # Load the extension and define the tools again: the panel connects and lists them.
    load_cell = cell_index(page, "%load_ext codemode_jupyter")
    tools_cell = cell_index(page, "def get_weather")
    run_cells(page, [load_cell, tools_cell])
    tool = panel.locator('.codemode-Tool[data-tool="get_weather"]')
    tool.wait_for(state="visible")
    assert panel.locator(".codemode-PanelStatus").get_attribute("data-state") == "ready"
    head = tool.locator(".codemode-ToolHead").inner_text()
    assert "get_weather" in head and "city: str" in head
    assert "Current weather for a city" in tool.locator(".codemode-ToolDoc").inner_text()
    assert panel.locator('.codemode-Tool[data-tool="to_fahrenheit"]').count() == 1

    # Call a tool through its form: one field per parameter; the result as Python sees it.
    tool.locator('input[name="city"]').fill("Oslo")
    tool.locator("button.codemode-ToolCallButton").click()
    result = tool.locator('.codemode-ToolResult[data-state="ok"]')
    result.wait_for(state="visible")
    assert "'temp_c': 7" in result.inner_text()

    # Raw JSON with a wrong name: missing and unexpected arguments, both reported.
    tool.locator(".codemode-ToolJson > summary").click()
    tool.locator("textarea.codemode-ToolArgs").fill('{"town": "Oslo"}')
    tool.locator("button.codemode-ToolCallButton").click()
    wrong = tool.locator('.codemode-ToolResult[data-state="error"]')
    wrong.wait_for(state="visible")
    assert wrong.inner_text() == "missing argument city; unexpected argument town"

    # Bad values: the validation error, checked on the host, and no host stack.
    f_tool = panel.locator('.codemode-Tool[data-tool="to_fahrenheit"]')
    f_tool.locator(".codemode-ToolJson > summary").click()
    f_tool.locator("textarea.codemode-ToolArgs").fill('{"temp_c": "hot"}')
    f_tool.locator("button.codemode-ToolCallButton").click()
    failure = f_tool.locator('.codemode-ToolResult[data-state="error"]')
    failure.wait_for(state="visible")
    assert "ToolArgumentError: argument 'temp_c'" in failure.inner_text()
    assert failure.locator(".codemode-Traceback").count() == 0

    # A tool that raises: the exception with its traceback, starting in the tool's code.
    raising_cell = add_code_cell(
        page,
        "def check_city(city: str) -> str:\n"
        '    """Fails for cities it does not know."""\n'
        '    known = {"Paris", "Oslo", "Lima"}\n'
        "    if city not in known:\n"
        '        raise KeyError(f"unknown city {city!r}")\n'
        "    return city\n",
    )
    run_cells(page, [raising_cell])
    c_tool = panel.locator('.codemode-Tool[data-tool="check_city"]')
    c_tool.wait_for(state="visible")
    c_tool.locator('input[name="city"]').fill("Atlantis")
    c_tool.locator('input[name="city"]').press("Enter")
    raised = c_tool.locator('.codemode-ToolResult[data-state="error"]')
    raised.wait_for(state="visible")
    trace = raised.locator(".codemode-Traceback").inner_text()
    assert trace.startswith("Traceback (most recent call last):")
    assert 'raise KeyError(f"unknown city {city!r}")' in trace
    assert "KeyError: \"unknown city 'Atlantis'\"" in trace
    assert "codemode_jupyter" not in trace  # the panel's own machinery is not shown
    c_tool.scroll_into_view_if_needed()
    shot(page, "5-tools-panel-call")

    # A %%codemode run appears among the panel's recent runs: labelled by cell and first
    # line, drawn by the same renderer, its call rows readable at the sidebar's width.
    run_cells(page, [first_codemode])
    count = cells(page)[first_codemode]["count"]
    run_item = panel.locator(".codemode-RunItem").first
    run_item.wait_for(state="visible")
    assert run_item.get_attribute("data-status") == "ok"
    label = run_item.locator("summary.codemode-RunSummary").inner_text()
    assert f"[{count}]" in label and "readings = [get_weather(city)" in label
    assert re.search(r"\d\d:\d\d:\d\d", label), label
    run_item.locator("summary.codemode-RunSummary").click()
    assert run_item.locator(".codemode-ToolCall").count() == 6
    geometry = page.evaluate(
        """() => {
          const panel = document.querySelector('#codemode-tools');
          const right = panel.getBoundingClientRect().right;
          return {panel: panel.getBoundingClientRect().width, rows: Array.from(
            panel.querySelectorAll('.codemode-RunItem .codemode-CallSummary')).map(row => {
              const text = row.querySelector('.codemode-CallText').getBoundingClientRect();
              const out = row.querySelector('.codemode-CallOutcome').getBoundingClientRect();
              return {text: text.width, out: out.width,
                      inside: row.getBoundingClientRect().right <= right + 1};
            })};
        }"""
    )
    assert geometry["rows"], geometry
    for row in geometry["rows"]:
        assert row["text"] > 60 and row["out"] > 20 and row["inside"], geometry
    run_item.scroll_into_view_if_needed()
    shot(page, "6-tools-panel-runs")
    # Its cell label scrolls the notebook to the cell that ran it.
    page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 0; }")
    run_item.locator("button.codemode-RunCell").click()
    page.wait_for_function(
        "(index) => window.jupyterapp.shell.currentWidget.content.activeCellIndex === index",
        arg=first_codemode,
    )

    # Redefining a function in a cell refreshes its signature and form in the panel.
    new_cell = add_code_cell(
        page,
        'def get_weather(city: str, units: str = "C") -> dict:\n'
        '    """Current weather for a city, in C or F."""\n'
        '    return {"city": city, "temp": 18, "units": units}\n',
    )
    run_cells(page, [new_cell])
    page.wait_for_function(
        """() => {
          const head = document.querySelector(
            '#codemode-tools .codemode-Tool[data-tool="get_weather"] .codemode-ToolHead');
          return head && head.textContent.includes('units: str');
        }"""
    )
    assert tool.locator('input[name="units"]').count() == 1
    assert tool.locator('input[name="city"]').input_value() == "Oslo"  # typed values stay

    errors = console_errors(page)
    assert not errors, errors
    assert time.monotonic() - started < 300


def test_notebook7_renders_saved_and_live_runs(lab, page):
    """A smoke check: the same extension in Notebook 7 (the notebook saved by the test above)."""
    pytest.importorskip("notebook")
    try:
        open_named(page, lab, QUICKSTART.name, ui="notebooks")
        saved = page.locator(f'[data-mime-type="{RUN_MIME}"] .codemode-RunCard')
        saved.first.wait_for(state="visible")
        assert saved.count() >= 5
        shot(page, "7-notebook7-saved")
        first_codemode = cell_index(page, "%%codemode")
        tools = cell_index(page, "def get_weather(city: str) -> dict")
        run_cells(page, [cell_index(page, "%load_ext"), tools])
        slow = add_code_cell(page, SLOW_CELL)
        start_cell(page, slow)
        wait_cell_shows(page, slow, '.codemode-RunCard[data-status="running"]')
        assert wait_cell_done(page) == "ok"
        card = cell_node(page, slow).locator(".codemode-RunCard")
        assert card.count() == 1 and card.get_attribute("data-status") == "ok"
        card.scroll_into_view_if_needed()
        shot(page, "8-notebook7-live")
        assert first_codemode < slow
    except BaseException:
        shot(page, "failure-notebook7")
        raise
