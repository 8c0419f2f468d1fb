"""The view fixes of issue 20, as a person sees them in JupyterLab and Notebook 7.

A saved notebook (no kernel needed to draw it) holds a run with a warning and a failed call:
  - the warning banner's text reaches WCAG AA contrast (4.5:1) in the light and dark themes,
    computed from the colours the browser rendered;
  - a call's error title is shown as written, not uppercased;
  - Notebook 7's View menu opens the Code Mode Tools panel.
In a kernel (JupyterLab):
  - a tool's print is drawn under its call, in time order, and the Tools panel shows what a
    tool it called printed;
  - a `--map` cell saved and reopened after a restart shows its progress and summary as plain
    outputs (no "Error displaying widget"), and its tasks are in the panel's recent runs.
Screenshots go to test-artifacts/browser/ (fixes-*.png).
"""

from __future__ import annotations

import json

import pytest
from browser_lab import (
    BROWSER_MARKS,
    LONG,
    RUN_MIME,
    add_code_cell,
    browser_page,
    cell_node,
    lab_server,
    open_notebook,
    run_cells,
    save_notebook,
    shot,
    wait_cell_shows,
)

pytestmark = BROWSER_MARKS

NAME = "fixes.ipynb"
LIVE = "live.ipynb"
WARNING = "--preview 8000 with the local backend needs --network"
PAYLOAD = {
    "version": 2,
    "code": "check(n=5)\n",
    "timeline": [
        {
            "kind": "call",
            "id": 1,
            "name": "check",
            "round": 1,
            "args": "n=5",
            "state": "error",
            "result": "",
            "error": {"type": "ValueError", "message": "n too big: 5"},
        }
    ],
    "result": {"status": "error", "value": None, "error": None},
    "warnings": [WARNING],
}


def saved_notebook() -> dict:
    output = {
        "output_type": "display_data",
        "data": {RUN_MIME: PAYLOAD, "text/plain": "codemode run"},
        "metadata": {},
    }
    cell = {
        "cell_type": "code",
        "execution_count": 1,
        "id": "c1",
        "metadata": {},
        "source": "%%codemode\ncheck(n=5)",
        "outputs": [output],
    }
    return {
        "cells": [cell],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_server(tmp_path_factory.mktemp("lab"), [], "jupyter-lab-fixes.log") as lab:
        (lab["root"] / NAME).write_text(json.dumps(saved_notebook()))
        empty = saved_notebook()
        empty["cells"] = []
        (lab["root"] / LIVE).write_text(json.dumps(empty))
        yield lab


def open_saved(page, lab, ui: str) -> None:
    """Open the saved notebook and wait until its card is drawn (no kernel is needed)."""
    page.goto(f"{lab['base']}/{'lab/tree' if ui == 'lab' else ui}/{NAME}?token={lab['token']}")
    page.wait_for_function(
        """() => {
          const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
          return !!(panel && panel.content && panel.content.widgets
                    && panel.content.widgets.length > 0);
        }""",
        timeout=LONG,
    )
    wait_cell_shows(page, 0, ".codemode-RunCard .codemode-Warning")


# The contrast ratio (WCAG 2) of an element's text on the background behind it: the first
# ancestor with an opaque background; a translucent text colour is blended over it first.
JS_CONTRAST = """(selector) => {
  const rgba = s => s.match(/[\\d.]+/g).map(Number).concat([1]).slice(0, 4);
  const node = document.querySelector(selector);
  let back = node, bg = null;
  while (back) {
    const c = rgba(getComputedStyle(back).backgroundColor);
    if (c[3] === 1) { bg = c; break; }
    back = back.parentElement;
  }
  bg = bg || [255, 255, 255, 1];
  const fg = rgba(getComputedStyle(node).color);
  const blend = [0, 1, 2].map(i => fg[i] * fg[3] + bg[i] * (1 - fg[3]));
  const lum = c => {
    const [r, g, b] = c.map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [a, b] = [lum(blend), lum(bg.slice(0, 3))].sort((x, y) => y - x);
  return {ratio: (a + 0.05) / (b + 0.05), fg: getComputedStyle(node).color,
          bg: 'rgb(' + bg.slice(0, 3).join(',') + ')'};
}"""


def set_theme(page, theme: str) -> None:
    page.evaluate(
        "(theme) => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme
    )
    page.wait_for_function(
        "(light) => document.body.dataset.jpThemeLight === light",
        arg="true" if theme == "JupyterLab Light" else "false",
        timeout=LONG,
    )


def test_warning_banner_contrast_in_both_themes_and_error_titles_as_written(lab):
    with browser_page("console-fixes-lab.log") as page:
        try:
            open_saved(page, lab, "lab")
            card = cell_node(page, 0).locator(".codemode-RunCard")
            card.locator(".codemode-ToolCall summary").first.click()
            title = card.locator(".codemode-ErrorTitle")
            title.wait_for(state="visible")
            assert title.inner_text() == "ValueError: n too big: 5"
            for theme in ("JupyterLab Light", "JupyterLab Dark"):
                set_theme(page, theme)
                contrast = page.evaluate(JS_CONTRAST, ".codemode-RunCard .codemode-Warning")
                card.scroll_into_view_if_needed()
                shot(page, f"fixes-warning-{theme.split()[-1].lower()}")
                assert contrast["ratio"] >= 4.5, (theme, contrast)
        except BaseException:
            shot(page, "fixes-failure-lab")
            raise
        finally:
            set_theme(page, "JupyterLab Light")


def test_notebook7_view_menu_opens_the_tools_panel(lab):
    pytest.importorskip("notebook")
    with browser_page("console-fixes-notebook7.log") as page:
        try:
            open_saved(page, lab, "notebooks")
            page.locator(".lm-MenuBar-itemLabel", has_text="View").first.click()
            item = page.locator(".lm-Menu-itemLabel", has_text="Code Mode: Show Tools Panel")
            item.wait_for(state="visible")
            shot(page, "fixes-notebook7-view-menu")
            item.click()
            page.locator("#codemode-tools").wait_for(state="visible")
            shot(page, "fixes-notebook7-tools-panel")
        except BaseException:
            shot(page, "fixes-failure-notebook7")
            raise


SHOUT = (
    "%load_ext codemode_jupyter\n"
    "def shout(word: str) -> str:\n"
    "    print('shouting', word)\n"
    "    return word.upper()\n"
    "cities = ['Oslo', 'Lima']"
)

# A cell's card timeline: program output, calls, and tools' prints (by their call).
JS_ROWS = """(index) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
  const list = cell.node.querySelector('.jp-OutputArea .codemode-Timeline');
  return list ? Array.from(list.children).map(li =>
    li.classList.contains('codemode-ToolCall') ? 'call:' + li.dataset.tool
    : li.classList.contains('codemode-ToolPrint') ? 'printed:' + li.textContent
    : 'out:' + li.textContent) : null;
}"""


def test_tool_prints_under_their_call_and_map_cells_after_a_restart(lab):
    with browser_page("console-fixes-live.log") as page:
        try:
            open_notebook(page, lab, LIVE)
            run_cells(page, [add_code_cell(page, SHOUT)])
            cell = add_code_cell(page, "%%codemode\nprint('before')\nshout('hi')\nprint('after')")
            run_cells(page, [cell])
            wait_cell_shows(page, cell, '.codemode-RunCard[data-status="ok"]')
            assert page.evaluate(JS_ROWS, cell) == [
                "out:before",
                "call:shout",
                "printed:shouting hi",
                "out:after",
            ]
            outputs = cell_node(page, cell).locator(".jp-OutputArea-output").all_inner_texts()
            assert len(outputs) == 1, outputs  # the card alone: no stream above it
            cell_node(page, cell).scroll_into_view_if_needed()
            shot(page, "fixes-tool-print-under-call")

            page.evaluate("() => window.jupyterapp.commands.execute('codemode:open-tools')")
            tool = page.locator('#codemode-tools .codemode-Tool[data-tool="shout"]')
            tool.locator("input").fill("hey")
            tool.locator(".codemode-ToolCallButton").click()
            printed = tool.locator(".codemode-ToolPrinted")
            printed.wait_for(state="visible")
            assert printed.inner_text() == "shouting hey\n"
            shot(page, "fixes-tools-panel-printed")

            mapped = add_code_cell(
                page, "%%codemode --map cities --as city\nprint('task', city)\nshout(city)"
            )
            run_cells(page, [mapped])
            map_tasks = page.locator(
                '#codemode-tools .codemode-RunCell[title^="A task of a %%codemode --map"]'
            )
            map_tasks.nth(1).wait_for(state="attached")
            save_notebook(page)
            page.evaluate(
                "async () => {"
                " await window.jupyterapp.shell.currentWidget.sessionContext.restartKernel(); }"
            )
            page.reload()
            open_notebook(page, lab, LIVE)
            wait_cell_shows(page, mapped, ".jp-OutputArea-output")
            text = cell_node(page, mapped).locator(".jp-OutputArea").inner_text()
            assert "Error displaying widget" not in text and "model not found" not in text
            assert "2/2 done, 2 ok" in text, text
            assert "#0 printed:\n    task Oslo" in text and "NaN" not in text, text
            cell_node(page, mapped).scroll_into_view_if_needed()
            shot(page, "fixes-map-after-restart")
        except BaseException:
            shot(page, "fixes-failure-live")
            raise
