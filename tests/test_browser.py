"""JupyterLab in headless Chromium: the live widget, the saved-run renderer, the Tools panel.

Starts `jupyter lab` on 127.0.0.1 (a free port, a temporary root with a copy of
notebooks/quickstart.ipynb with its outputs cleared) and drives Debian's Chromium with
Playwright. Every wait is on an explicit condition in the page; nothing sleeps to synchronise.
Screenshots and the server log go to test-artifacts/browser/.

One scenario, in order (each step needs the previous one):
  1. run the notebook: the live widget shows the program's output and tool calls; the
     %%codemode cell body is highlighted as Python and its magic line marked;
  2. save, restart the kernel, reload the page: every run is still there as a card drawn
     by the saved-run renderer, from the notebook file alone;
  3. the Tools panel says the kernel extension is not loaded, then, after the first cells
     run again, lists the tools, calls one (result) and another with bad arguments (error
     with traceback), shows recent runs, and follows a redefined function.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "notebooks" / "quickstart.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
RUN_MIME = "application/vnd.codemode.run+json"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# Generous: a 2-core machine building the page, starting kernels and sandboxes.
LONG = 90_000
MEDIUM = 45_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is missing (bash .ci/install-browser.sh installs Debian's chromium)",
    ),
]


# --- the server ----------------------------------------------------------------------------


def _cleared_copy(source: Path, target: Path) -> None:
    """The notebook without outputs or saved widget state: what the page shows is this run's."""
    nb = json.loads(source.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb["metadata"].pop("widgets", None)
    target.write_text(json.dumps(nb, indent=1))


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        # Polling a server that is starting: the one wait that is not on a page condition.
        time.sleep(0.25)
    raise TimeoutError(f"jupyter lab did not answer {url} in {timeout} s; see {log}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not QUICKSTART.exists():
        pytest.fail(f"{QUICKSTART} is missing")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "failure.png").unlink(missing_ok=True)
    home = tmp_path_factory.mktemp("lab")
    root = home / "root"
    root.mkdir()
    _cleared_copy(QUICKSTART, root / "quickstart.ipynb")

    # Private settings and workspaces: no restored layout, no news prompt.
    settings = home / "settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Render every cell (no windowing), so outputs far down the notebook are in the DOM.
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))

    port = free_port()
    token = secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
        PYTHONUNBUFFERED="1",
    )
    log = ARTIFACTS / "jupyter-lab.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter", "lab",
                "--no-browser",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--ServerApp.root_dir={root}",
                f"--IdentityProvider.token={token}",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(root),
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{base}/api/status?token={token}", proc, log)
        yield {"base": base, "token": token, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(home / "runtime", ignore_errors=True)


@pytest.fixture(scope="module")
def page(lab):
    sync_api = pytest.importorskip("playwright.sync_api")
    console: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(MEDIUM)
        page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda exc: console.append(f"[pageerror] {exc}"))
        page.console_messages = console  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            (ARTIFACTS / "console.log").write_text("\n".join(console) + "\n")
            context.close()
            browser.close()


# --- page helpers -------------------------------------------------------------------------

# The notebook panel and its cells, through the app the server exposes to the page.
JS_PANEL = "() => window.jupyterapp.shell.currentWidget"
JS_CELLS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.widgets) return null;
  return panel.content.widgets.map(cell => ({
    type: cell.model.type,
    source: cell.model.sharedModel.getSource(),
    count: cell.model.type === 'code' ? cell.model.executionCount : null,
    outputs: cell.model.type === 'code'
      ? Array.from({length: cell.model.outputs.length}, (_, i) => {
          const o = cell.model.outputs.get(i);
          return {type: o.type, mimes: Object.keys(o.data || {})};
        })
      : [],
  }));
}"""


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def open_notebook(page, lab) -> None:
    page.goto(f"{lab['base']}/lab/tree/quickstart.ipynb?token={lab['token']}")
    page.wait_for_function(
        """() => {
          const app = window.jupyterapp;
          const panel = app && app.shell.currentWidget;
          return !!(panel && panel.sessionContext && panel.context && panel.context.isReady
                    && panel.sessionContext.session && panel.sessionContext.session.kernel
                    && panel.sessionContext.session.kernel.status === 'idle'
                    && panel.content.widgets.length > 0);
        }""",
        timeout=LONG,
    )


def cells(page) -> list[dict]:
    return page.evaluate(JS_CELLS)


def cell_index(page, startswith: str, nth: int = 0) -> int:
    matches = [i for i, c in enumerate(cells(page)) if c["source"].startswith(startswith)]
    assert len(matches) > nth, f"no cell #{nth} starting with {startswith!r}"
    return matches[nth]


def cell_node(page, index: int):
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)


def run_cells(page, indices: list[int]) -> None:
    """Run the given cells one after the other, waiting for each to finish.

    `notebook:run-cell` resolves when the kernel has replied (true, or false if the cell
    raised); the page records that and the test waits for it.
    """
    for index in indices:
        page.evaluate(
            """(index) => {
              const app = window.jupyterapp;
              const panel = app.shell.currentWidget;
              panel.content.activeCellIndex = index;
              panel.content.deselectAll();
              window.__codemodeRun = 'running';
              app.commands.execute('notebook:run-cell').then(
                ok => { window.__codemodeRun = ok ? 'ok' : 'failed'; },
                err => { window.__codemodeRun = 'error: ' + err; });
            }""",
            index,
        )
        page.wait_for_function("() => window.__codemodeRun !== 'running'", timeout=LONG)
        page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
            " === 'idle'",
            timeout=LONG,
        )
        outcome = page.evaluate("() => window.__codemodeRun")
        assert not outcome.startswith("error"), outcome


def add_code_cell(page, source: str) -> int:
    """Append a code cell; returns its index."""
    return page.evaluate(
        """(source) => {
          const panel = window.jupyterapp.shell.currentWidget;
          const shared = panel.content.model.sharedModel;
          shared.insertCell(shared.cells.length, {cell_type: 'code', source});
          return shared.cells.length - 1;
        }""",
        source,
    )


def open_tools_panel(page):
    page.evaluate("() => window.jupyterapp.commands.execute('codemode:open-tools')")
    panel = page.locator("#codemode-tools")
    panel.wait_for(state="visible")
    return panel


# --- the scenario -------------------------------------------------------------------------


def test_live_widget_saved_runs_and_tools_panel(lab, page):
    try:
        scenario(lab, page)
    except BaseException:
        shot(page, "failure")
        raise


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
    # The live view: a widget showing the program's output and each tool call.
    # (ipywidgets' renderer does not mark its node with data-mime-type; its views carry
    # the `jupyter-widgets` class.)
    widget = cell.locator(".jp-OutputArea-output .jupyter-widgets.widget-vbox").first
    widget.wait_for(state="visible")
    page.wait_for_function(
        """(index) => {
          const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
          const text = cell.node.querySelector('.jp-OutputArea').innerText;
          return text.includes("get_weather(city='Paris')") && text.includes('Lima: 24');
        }""",
        arg=first_codemode,
    )
    widget_text = widget.inner_text()
    assert "to_fahrenheit(temp_c=18)" in widget_text
    # The final status, the calls/rounds counter, backend and isolation, the duration.
    widget.locator(".codemode-live-badge[data-status='ok']").wait_for(state="visible")
    header = widget.locator(".codemode-live-header").inner_text()
    assert "6 tool calls · 6 rounds" in header and "local (isolation:" in header
    assert re.search(r"\d+(\.\d+)? (µs|ms|s) ·", header), header

    # The run card below it, drawn by the saved-run renderer from the run+json output.
    card = cell.locator(f'[data-mime-type="{RUN_MIME}"] .codemode-RunCard')
    card.wait_for(state="visible")
    assert card.get_attribute("data-status") == "ok"
    assert card.locator(".codemode-ToolCall").count() == 6
    # Next to the live widget the card keeps to its header until asked for details.
    assert card.locator(".codemode-RunBody").is_hidden()
    cell.scroll_into_view_if_needed()
    shot(page, "1-live-widget")
    card.locator("button.codemode-Toggle").click()
    card.locator(".codemode-RunBody").wait_for(state="visible")

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

    shot(page, "1b-live-card-details")

    # The failing cell: its card shows the error with the sandbox traceback.
    error_card = cell_node(page, failing).locator(
        f'[data-mime-type="{RUN_MIME}"] .codemode-RunCard'
    )
    error_card.wait_for(state="visible")
    assert error_card.get_attribute("data-status") == "error"
    assert "ZeroDivisionError: division by zero" in error_card.text_content()

    # ---- 2. save, restart the kernel, reload: the runs are still readable ----
    page.evaluate(
        """async () => {
          const panel = window.jupyterapp.shell.currentWidget;
          await panel.context.save();
        }"""
    )
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
    saved = json.loads((lab["root"] / "quickstart.ipynb").read_text())
    saved_runs = [
        o for c in saved["cells"] for o in c.get("outputs", []) if RUN_MIME in o.get("data", {})
    ]
    assert len(saved_runs) >= 3, "the saved notebook holds no run+json outputs"

    page.evaluate(
        "async () => {"
        " await window.jupyterapp.shell.currentWidget.sessionContext.restartKernel(); }"
    )
    page.reload()
    open_notebook(page, lab)
    cards = page.locator(f'[data-mime-type="{RUN_MIME}"] .codemode-RunCard')
    cards.first.wait_for(state="visible")
    assert cards.count() == len(saved_runs)
    first_card = cell_node(page, first_codemode).locator(".codemode-RunCard")
    assert first_card.get_attribute("data-status") == "ok"
    # No live widget any more: the whole card shows, without a details toggle.
    assert first_card.locator(".codemode-RunBody").is_visible()
    assert first_card.locator("button.codemode-Toggle").is_hidden()
    first_card_text = first_card.inner_text()
    assert 'get_weather(city="Paris")' in first_card_text
    assert "Lima: 24 °C = 75.2 °F" in first_card_text
    assert "local (isolation:" in first_card_text  # backend and timings come from metadata
    # Open a tool call: its arguments and outcome are there.
    first_card.locator(".codemode-ToolCallSummary").first.click()
    assert '"city": "Paris"' in first_card.locator(".codemode-ToolCallBody").first.inner_text()
    error_card = cell_node(page, failing).locator(".codemode-RunCard")
    assert error_card.get_attribute("data-status") == "error"
    # The sandbox traceback counts lines as the editor does (`%%codemode` is line 1).
    assert 'File "<cell>", line 4' in error_card.locator('[data-kind="error"]').inner_text()
    # The live views' widget state was not saved: no "Loading widget..." stays behind.
    leftovers = page.evaluate(
        """() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))
              .filter(node => node.offsetParent !== null)
              .map(node => node.textContent)
              .filter(text => /Loading widget|Error displaying widget/.test(text))"""
    )
    assert not leftovers, leftovers
    first_card.scroll_into_view_if_needed()
    shot(page, "2-saved-runs-after-restart")

    # ---- 3. the Tools panel ----
    panel = open_tools_panel(page)
    # The restarted kernel has not loaded the extension: the panel says what to do.
    status = panel.locator(".codemode-PanelStatus")
    page.wait_for_function(
        "() => document.querySelector('#codemode-tools .codemode-PanelStatus')"
        ".dataset.state === 'unavailable'"
    )
    assert "%load_ext codemode_jupyter" in status.inner_text()
    shot(page, "3-tools-panel-not-loaded")

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

    # Call a tool with JSON arguments: its result.
    tool.locator("textarea.codemode-ToolArgs").fill('{"city": "Oslo"}')
    tool.locator("button.codemode-ToolCallButton").click()
    result = tool.locator('.codemode-ToolResult[data-state="ok"]')
    result.wait_for(state="visible")
    assert '"temp_c": 7' in result.inner_text()

    # Bad arguments: the validation error, checked on the host, and no host stack.
    f_tool = panel.locator('.codemode-Tool[data-tool="to_fahrenheit"]')
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
    c_tool.locator("textarea.codemode-ToolArgs").fill('{"city": "Atlantis"}')
    c_tool.locator("button.codemode-ToolCallButton").click()
    raised = c_tool.locator('.codemode-ToolResult[data-state="error"]')
    raised.wait_for(state="visible")
    trace = raised.locator(".codemode-Traceback").inner_text()
    assert trace.startswith("Traceback (most recent call last):")
    assert 'raise KeyError(f"unknown city {city!r}")' in trace
    assert "KeyError: \"unknown city 'Atlantis'\"" in trace
    assert "codemode_jupyter" not in trace  # the panel's own machinery is not shown
    c_tool.scroll_into_view_if_needed()
    shot(page, "4-tools-panel-call")

    # A %%codemode run appears among the panel's recent runs, with its tool calls.
    run_cells(page, [first_codemode])
    run_item = panel.locator(".codemode-RunItem").first
    run_item.wait_for(state="visible")
    assert run_item.get_attribute("data-status") == "ok"
    run_item.locator("summary.codemode-RunSummary").click()
    assert run_item.locator(".codemode-ToolCall").count() == 6

    # Redefining a function in a cell refreshes its signature in the panel.
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
    shot(page, "5-tools-panel-runs")

    errors = [
        line
        for line in page.console_messages  # type: ignore[attr-defined]
        if line.startswith(("[error]", "[pageerror]")) and "codemode" in line.lower()
    ]
    assert not errors, errors
    assert time.monotonic() - started < 240
