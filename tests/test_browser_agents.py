"""JupyterLab in headless Chromium: an agent's run in the serve cell's feed, and a person who
clicks Approve and Reject on real approval cards.

The test writes a small notebook into the lab root: the extension, two notebook functions
(`send` needs approval, `ping` does not), and `%codemode serve` on a port and token the test
chose. From this process the official `mcp` client (Streamable HTTP, on a thread of its own)
sends a program that calls `send` twice, catches the rejection of the second call, and calls
`ping`. In the page the test approves the first card, types a reason into the second and
rejects it; the MCP result and the feed (the run drawn by our run renderer, the decided
cards) say what happened. "Insert as cell" on the run puts the agent's program below the
serving cell as a `%%codemode --session agent-1` cell (the client's own session). `%codemode
serve --stop` closes the port
and the serving cell then shows its saved record (the run, the decisions) instead of the live
widget. Saved, with its kernel shut down and the page reloaded, the notebook draws the same
record again, and no "model not found". Every wait is on a condition in the page or on the
client's result; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("mcp")
import httpx2
from browser_lab import (
    BROWSER_MARKS,
    LONG,
    RUN_MIME,
    browser_page,
    cell_node,
    cells,
    console_errors,
    lab_server,
    open_notebook,
    run_cells,
    save_notebook,
    shot,
)
from conftest import free_port
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

pytestmark = BROWSER_MARKS

NOTEBOOK = "agent-feed.ipynb"
TOKEN = "browser-agent-token-0123456789"
TOOLS = '''sent = []


def send(to: str) -> str:
    """Send a message (a person approves each one)."""
    sent.append(to)
    return f"sent to {to}"


def ping() -> str:
    """Answers pong."""
    return "pong"'''
PROGRAM = (
    "print('first:', send('ann'))\n"
    "try:\n    send('bob')\n"
    "except ToolRejected as e:\n    print('rejected:', e)\n"
    "ping()"
)
SERVE_CELL = 2
STOP_CELL = 4  # after the cell "Insert as cell" adds below the serving cell
RUN_CARD = f'[data-mime-type="{RUN_MIME}"] .codemode-RunCard'
#: The serving cell's saved record of a run (an output of the cell, not of the widget).
RECORD = f"{RUN_CARD}[data-agent-record]"
#: The run as the live widget draws it.
LIVE_CARD = f"{RUN_CARD}:not([data-agent-record])"


def write_notebook(directory: Path, port: int) -> Path:
    """The notebook the page runs (lab_server copies it into the lab root)."""
    sources = [
        "%load_ext codemode_jupyter",
        TOOLS,
        f"%codemode serve --port {port} --token {TOKEN} --approve send",
        "%codemode serve --stop",
    ]
    cells = [
        {"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
        for s in sources
    ]
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = directory / NOTEBOOK
    path.write_text(json.dumps(notebook, indent=1))
    return path


async def agent(url: str) -> object:
    """The agent: one run_code call over Streamable HTTP, with the bearer token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=LONG / 1000) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        # Bounded: a failed page check must not leave this thread waiting for a click.
        return await asyncio.wait_for(client.call_tool("run_code", {"code": PROGRAM}), LONG / 1000)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_agent_run_in_the_feed_with_approve_and_reject_clicked(tmp_path):
    port = free_port()
    notebook = write_notebook(tmp_path, port)
    (tmp_path / "home").mkdir()
    with (
        lab_server(tmp_path / "home", [notebook], "agent-jupyter-lab.log") as lab,
        browser_page("agent-console.log") as page,
    ):
        try:
            scenario(lab, page, port)
        except BaseException:
            shot(page, "agent-failure")
            raise


def scenario(lab, page, port: int) -> None:
    open_notebook(page, lab, NOTEBOOK)
    run_cells(page, [0, 1, SERVE_CELL])
    serve = cell_node(page, SERVE_CELL)
    serve.locator(".codemode-AgentFeed").wait_for(timeout=LONG)
    assert port_open(port)
    shot(page, "agent-serving")

    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(asyncio.run, agent(f"http://127.0.0.1:{port}/mcp"))

        # The first call waits: its card is under the run, whose live view says running.
        first = serve.locator(".codemode-ApprovalCard-waiting", has_text="send(to='ann')")
        first.wait_for(timeout=LONG)
        serve.locator(f'{LIVE_CARD}[data-status="running"]').wait_for()
        first.scroll_into_view_if_needed()
        shot(page, "agent-approval-waiting")
        first.get_by_role("button", name="Approve").click()

        second = serve.locator(".codemode-ApprovalCard-waiting", has_text="send(to='bob')")
        second.wait_for(timeout=LONG)
        second.locator("input").fill("not today")
        second.scroll_into_view_if_needed()
        shot(page, "agent-reject-reason")
        second.get_by_role("button", name="Reject").click()
        result = answer.result(timeout=LONG / 1000)

    # What the agent got: the first call's result, the rejection with its reason, the value.
    text = result.content[0].text
    assert not result.is_error, text
    assert "first: sent to ann" in text
    assert "rejected: send: the call was rejected (not today); send did not run" in text
    assert result.structured_content["value"] == "pong"

    # The feed: the finished run drawn by our renderer, its calls in order, the decided cards.
    card = serve.locator(f'{LIVE_CARD}[data-status="ok"]')
    card.wait_for(timeout=LONG)
    states = card.locator(".codemode-ToolCall").evaluate_all(
        "rows => rows.map(r => r.dataset.state)"
    )
    assert states == ["ok", "error", "ok"]
    rows = card.locator(".codemode-ToolCall").all_inner_texts()
    assert "send" in rows[0] and "ann" in rows[0] and "bob" in rows[1] and "ping" in rows[2]
    assert "first: sent to ann" in card.inner_text()
    assert serve.locator(".codemode-AgentRunHeader", has_text="agent run 1").count() == 1
    approved = serve.locator(".codemode-ApprovalCard-approve")
    rejected = serve.locator(".codemode-ApprovalCard-reject")
    # Each card names the run's own call number, and who decided.
    assert "call #1 send(to='ann') approved in the notebook" in approved.inner_text()
    assert "call #2 send(to='bob') rejected in the notebook: not today" in rejected.inner_text()
    for decided in (approved, rejected):
        for button in decided.get_by_role("button").all():
            assert button.is_disabled()
    assert serve.locator(".codemode-ApprovalCard-waiting").count() == 0
    card.scroll_into_view_if_needed()
    shot(page, "agent-feed")

    # "Insert as cell": the agent's program, below the serving cell, in its client's session.
    card.locator(".codemode-InsertCell").click()
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.widgets.length === 5"
    )
    inserted = cells(page)[SERVE_CELL + 1]
    assert inserted["type"] == "code"
    assert inserted["source"] == f"%%codemode --session agent-1\n{PROGRAM}\n"
    shot(page, "agent-inserted-cell")

    # While the server runs, the cell's saved record of the run stays hidden under the widget.
    record = serve.locator(RECORD)
    record.wait_for(state="attached", timeout=LONG)
    assert not record.is_visible()

    run_cells(page, [STOP_CELL])
    stopped = cell_node(page, STOP_CELL).locator(".jp-OutputArea-output").inner_text()
    assert "MCP server stopped" in stopped
    assert not port_open(port)
    # The serving cell no longer shows the URL or the live widget: it says the server is not
    # running and shows the record of the run, with the decisions.
    serve.locator(".codemode-FeedStopped").wait_for(timeout=LONG)
    check_record(serve, port)
    serve.scroll_into_view_if_needed()
    shot(page, "agent-stopped")
    assert console_errors(page) == []

    # Saved, kernel shut down, page reloaded: the same record, and no dead widget.
    save_notebook(page)
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.sessionContext.session")
    open_notebook(page, lab, NOTEBOOK)
    serve = cell_node(page, SERVE_CELL)
    serve.locator(RECORD).wait_for(timeout=LONG)
    check_record(serve, port)
    assert page.get_by_text("model not found").count() == 0
    serve.scroll_into_view_if_needed()
    shot(page, "agent-reloaded")
    saved = json.loads((lab["root"] / NOTEBOOK).read_text())
    # The token is where the person typed it (--token), never in what the notebook saved.
    outputs = [c.get("outputs", []) for c in saved["cells"]]
    assert TOKEN not in json.dumps([outputs, saved["metadata"]])


def check_record(serve, port: int) -> None:
    """The serving cell shows the run's record: calls, who decided, the value; no URL."""
    record = serve.locator(RECORD)
    assert record.count() == 1 and record.is_visible()
    assert record.get_attribute("data-status") == "ok"
    rows = record.locator(".codemode-ToolCall")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.approval || '')") == [
        "approve",
        "reject",
        "",
    ]
    approvals = record.locator(".codemode-CallApproval").all_inner_texts()
    assert approvals == ["approved in the notebook", "rejected in the notebook: not today"]
    assert "'pong'" in record.locator('[data-kind="value"]').inner_text()
    assert "send('bob')" in record.locator('[data-kind="program"]').inner_text()
    note = serve.locator(".codemode-FeedStopped").inner_text()
    assert "not running" in note and "approval was asked for: send" in note
    assert f":{port}/mcp" not in serve.inner_text()
