"""JupyterLab in headless Chromium for the browser tests: the server, the page, page helpers.

`lab_server(notebooks)` starts `jupyter lab` on 127.0.0.1 (a free port, a temporary root
holding copies of the given notebooks with their outputs cleared, private settings, no
windowing so every cell is in the DOM); `browser_page()` drives Debian's Chromium through
Playwright. Every wait is on an explicit condition in the page; nothing sleeps to synchronise.
Screenshots, the console and the server log go to test-artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
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

#: The marks every browser test module carries.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is missing (bash .ci/install-browser.sh installs Debian's chromium)",
    ),
]


# --- the server ----------------------------------------------------------------------------


def cleared_copy(source: Path, target: Path) -> None:
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


def _private_settings(settings: Path) -> None:
    # No news prompt; every cell rendered (no windowing), so far outputs are in the DOM.
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))


@contextmanager
def lab_server(home: Path, notebooks: list[Path], log_name: str) -> Iterator[dict[str, Any]]:
    """A running `jupyter lab`: yields {"base", "token", "root"}; stopped on exit."""
    for notebook in notebooks:
        if not notebook.exists():
            pytest.fail(f"{notebook} is missing")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    root = home / "root"
    root.mkdir()
    for notebook in notebooks:
        cleared_copy(notebook, root / notebook.name)
    settings = home / "settings"
    _private_settings(settings)

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
    log = ARTIFACTS / log_name
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
                "--JupyterNotebookApp.expose_app_in_browser=True",
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


@contextmanager
def browser_page(console_name: str) -> Iterator[Any]:
    """A Chromium page; `page.console_messages` collects its console (saved on exit)."""
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
            (ARTIFACTS / console_name).write_text("\n".join(console) + "\n")
            context.close()
            browser.close()


# --- page helpers -------------------------------------------------------------------------

# The notebook panel's cells, through the app the server exposes to the page.
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


def open_notebook(page, lab: dict[str, Any], name: str, ui: str = "lab") -> None:
    """Open `name` in JupyterLab (`ui="lab"`) or Notebook 7 (`ui="notebooks"`) and wait for
    its kernel to be idle."""
    page.goto(f"{lab['base']}/{'lab/tree' if ui == 'lab' else ui}/{name}?token={lab['token']}")
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


def wait_cell_shows(page, index: int, selector: str) -> None:
    """Wait until the cell at `index` holds a node matching the CSS `selector`."""
    page.wait_for_function(
        """([index, selector]) => {
          const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
          return !!cell.node.querySelector(selector);
        }""",
        arg=[index, selector],
        timeout=LONG,
    )


def save_notebook(page) -> None:
    """Save the current notebook and wait until the file holds what the page shows."""
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function(
        "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=LONG
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
        start_cell(page, index)
        outcome = wait_cell_done(page)
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


def start_cell(page, index: int) -> None:
    """Start running a cell without waiting for it (see `run_cells`)."""
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


def wait_cell_done(page) -> str:
    page.wait_for_function("() => window.__codemodeRun !== 'running'", timeout=LONG)
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
        " === 'idle'",
        timeout=LONG,
    )
    return page.evaluate("() => window.__codemodeRun")


def console_errors(page) -> list[str]:
    """Errors the page logged that concern codemode."""
    return [
        line
        for line in page.console_messages
        if line.startswith(("[error]", "[pageerror]")) and "codemode" in line.lower()
    ]
