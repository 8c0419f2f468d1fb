"""`%codemode serve` in a real kernel, driven by the official mcp client from this process."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("mcp")
import httpx2
from conftest import loaded_kernel
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

TOKEN = "kernel-test-token-0123456789"
SERVE = (
    "from codemode_jupyter.jupyter.extension import get_magics\n"
    "from codemode_jupyter.jupyter.commands import serve as serve_cmd\n"
    "_magics = get_magics(get_ipython())\n"
    "_server = serve_cmd.serve(_magics, {line!r})\n"
)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_an_agent_runs_notebook_functions_in_the_kernel():
    with loaded_kernel() as kernel:
        assert kernel.execute("def add(a: int, b: int) -> int:\n    return a + b").ok
        started = kernel.execute(SERVE.format(line=f"--token {TOKEN}"))
        assert started.ok, started.error
        (printed,) = started.displays()  # the feed: the server's settings, then the runs
        url = re.search(r"at (http://127\.0\.0\.1:\d+/mcp)", printed).group(1)
        assert "tools agents may call (the notebook's public functions): add" in printed
        assert (
            '"mcpServers"' in printed and "Bearer <TOKEN: %codemode serve --show-token>" in printed
        )
        # The token is in nothing the notebook would save; --show-token prints it on demand.
        assert TOKEN not in json.dumps(started.messages, default=str)
        assert kernel.execute("_serving = _server").ok
        shown = kernel.execute(SERVE.format(line="--show-token"))
        assert f"token: {TOKEN}" in shown.stream() and f"Bearer {TOKEN}" in shown.stream()
        port = int(url.rsplit(":", 1)[1].split("/")[0])

        async def agent():
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=60) as http,
                # subscriptions/listen is a 2026-07-28 request: a client that speaks it (the
                # server's discover offers the handshake era, for a session per client).
                Client(streamable_http_client(url, http_client=http), mode="2026-07-28") as client,
            ):
                first = await client.call_tool("run_code", {"code": "total = add(2, 3)\ntotal"})
                before = (await client.list_tools()).tools[0].description
                async with client.listen(tools_list_changed=True) as subscription:
                    defined = await asyncio.to_thread(
                        kernel.execute, "def mul(a: int, b: int) -> int:\n    return a * b"
                    )
                    await asyncio.wait_for(anext(aiter(subscription)), 30)
                after = (await client.list_tools()).tools[0].description
                second = await client.call_tool("run_code", {"code": "mul(total, 10)"})
                return first, before, defined, after, second

        first, before, defined, after, second = asyncio.run(agent())
        assert first.structured_content["value"] == 5
        assert "def add(a: int, b: int) -> int:" in before and "def mul" not in before
        assert defined.ok and "def mul(a: int, b: int) -> int:" in after
        assert second.structured_content["value"] == 50  # the agent session kept `total`

        # The agent's variables live in the `agent` session (a stateless client has no MCP
        # session of its own: it shares NAME), not in the person's cells.
        checked = kernel.execute(
            "print(sorted(k[1] for k in _magics.pool.sessions if k[0] == 'named'), "
            "'total' in dir())\n"
            "print(_magics.pool.named('agent').last_result.value)"
        )
        assert checked.stream() == "['agent'] False\n50\n"

        # The agent's runs are in the Tools panel's recent runs, marked as an agent's.
        listed = kernel.execute(
            "from codemode_jupyter.jupyter.extension import _loaded\n"
            "ext = next(iter(_loaded.values()))\n"
            "runs = ext.comm.runs_message()['runs']\n"
            "print([(r['source'], r['code']) for r in runs])"
        )
        assert "('agent', 'mul(total, 10)')" in listed.stream(), listed.messages

        # `%codemode status` lists the server and the sessions its agents ran in.
        status = kernel.execute("%codemode status").stream()
        assert re.search(r"mcp_server +" + re.escape(url), status), status
        assert re.search(r"agent_sessions +agent \(last run ok\)", status), status
        helped = kernel.execute("%codemode serve --help").stream()
        for option in ("--host", "--token", "--approval-timeout", "--allow-remote", "--tools"):
            assert option in helped
        assert "--shared" in helped and "--show-token" in helped and "--budget" in helped

        stopped = kernel.execute(SERVE.format(line="--stop"))
        assert "MCP server stopped" in stopped.stream()
        assert not _port_open(port)
        assert "not running" in kernel.execute("%codemode status").stream()
        # The serving cell's feed no longer states the URL: the server is gone.
        about = kernel.execute("print(_serving.feed.widget.children[0].value)").stream()
        assert "MCP server stopped" in about and url not in about
        threads = kernel.execute(
            "import threading\nprint(sorted(t.name for t in threading.enumerate() "
            "if t.name.startswith('codemode-mcp') or t.name.startswith('codemode-agent')))"
        )
        assert threads.stream() == "[]\n"


def test_serve_refuses_bad_options_clearly():
    with loaded_kernel() as kernel:
        remote = kernel.execute(SERVE.format(line="--host 0.0.0.0"))
        bad = kernel.execute(SERVE.format(line="--port notaport"))
        none = kernel.execute(SERVE.format(line="--stop"))
        unknown = kernel.execute(SERVE.format(line="--tools nosuch"))
    # IPython shows a UsageError as one line on stderr, without a traceback.
    assert not remote.ok and "UsageError" in remote.stream("stderr")
    assert "allow_remote=True (--allow-remote)" in remote.stream("stderr")
    assert not bad.ok and "invalid int value: 'notaport'" in bad.stream("stderr")
    assert none.ok and "no MCP server is running" in none.stream()
    assert not unknown.ok and "--tools" in unknown.stream("stderr")
    assert "nosuch" in unknown.stream("stderr")


TOOLS = (
    "sent = []\n"
    "def send(to: str) -> str:\n"
    '    """Send a message (a person approves each one)."""\n'
    "    sent.append(to)\n"
    "    return f'sent to {to}'\n"
    "def ping() -> str:\n"
    '    """Answers pong."""\n'
    "    print('ponging')\n"
    "    return 'pong'\n"
)
PROGRAM = (
    "print('first:', send('ann'))\n"
    "try:\n    send('bob')\n"
    "except ToolRejected as e:\n    print('rejected:', e)\n"
    "ping()"
)
# Kernel-side helpers: the feed's runs as JSON, a bounded wait, the card's widget ids.
HELPERS = r"""
import json, time
from codemode_jupyter.jupyter.views.transcript import MIME_RUN

def _wait(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError('the feed did not get there')
        time.sleep(0.05)

def _payload(run):
    found = [o['data'][MIME_RUN] for o in run.output.outputs if MIME_RUN in o.get('data', {})]
    return found[0] if found else None

def _last(output):
    if output['output_type'] == 'error':
        return output['ename']
    return output['data'].get('text/plain')

def _feed():
    runs = []
    for run in _server.feed.runs():
        payload = _payload(run)
        timeline = payload['timeline'] if payload else []
        runs.append({
            'number': run.number,
            'kinds': [o['output_type'] for o in run.output.outputs],
            'streams': [o['text'] for o in run.output.outputs if o['output_type'] == 'stream'],
            'header': run.output.outputs[0]['data']['text/plain'],
            'last': _last(run.output.outputs[-1]),
            'status': payload['result']['status'] if payload else None,
            'calls': [[e['name'], e['state']] for e in timeline if e['kind'] == 'call'],
            'output': ''.join(e['text'] for e in timeline if e['kind'] == 'output'),
            'cards': [c.children[0].value for c in run.cards.children],
            'disabled': [b.disabled for c in run.cards.children for b in c.children[1].children],
        })
    return runs

def _card_ids():
    request = _server.approver.wait_for_request(60)
    row = _server.approver.card(request.id).children[1].children
    return {'describe': request.describe(), 'approve': row[0].model_id,
            'reject': row[1].model_id, 'reason': row[2].model_id}
"""


def _comm_msg(kernel, comm_id: str, data: dict) -> None:
    """What the front end sends when a person clicks a button or types in a text box."""
    kernel.kc.shell_channel.send(
        kernel.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
    )


def _click(kernel, comm_id: str) -> None:
    _comm_msg(kernel, comm_id, {"method": "custom", "content": {"event": "click"}})


def _type(kernel, comm_id: str, text: str) -> None:
    _comm_msg(kernel, comm_id, {"method": "update", "state": {"value": text}, "buffer_paths": []})


def _json(execution) -> object:
    assert execution.ok, execution.error
    return json.loads(execution.stream().strip().splitlines()[-1])


def test_the_feed_shows_agent_runs_as_run_views_and_cards_decide_calls():
    with loaded_kernel() as kernel:
        assert kernel.execute(TOOLS).ok
        # A small bound, to see the feed drop its oldest run.
        assert kernel.execute(
            "from codemode_jupyter.jupyter.views import agent_feed\nagent_feed.MAX_RUNS = 2"
        ).ok
        started = kernel.execute(SERVE.format(line=f"--token {TOKEN} --approve send"))
        assert started.ok, started.error
        (about,) = started.displays()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/mcp)", about).group(1)
        assert "approval: calls to send wait for a person" in about
        assert kernel.execute(HELPERS).ok

        async def agent(programs):
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=120) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                return [await client.call_tool("run_code", {"code": p}) for p in programs]

        with ThreadPoolExecutor(1) as pool:
            results = pool.submit(asyncio.run, agent([PROGRAM]))
            first = _json(kernel.execute("print(json.dumps(_card_ids()))"))
            assert first["describe"] == "send(to='ann')"
            # While the call waits, the feed's live view shows the run with the call running.
            live = _json(
                kernel.execute(
                    "_wait(lambda: _feed() and _feed()[-1]['calls'] == [['send', 'waiting']])\n"
                    "print(json.dumps(_feed()))"
                )
            )
            assert live[-1]["status"] == "running" and live[-1]["cards"]
            assert "waits for approval" in live[-1]["cards"][0]
            _click(kernel, first["approve"])
            second = _json(kernel.execute("print(json.dumps(_card_ids()))"))
            assert second["describe"] == "send(to='bob')"
            _type(kernel, second["reason"], "not today")
            _click(kernel, second["reject"])
            (result,) = results.result(timeout=120)

        text = result.content[0].text
        assert "first: sent to ann" in text
        assert "rejected: send: the call was rejected (not today); send did not run" in text
        assert result.structured_content["value"] == "pong"
        feed = _json(
            kernel.execute(
                "_wait(lambda: _feed()[-1]['status'] == 'ok')\nprint(json.dumps(_feed()))"
            )
        )
        (run,) = feed
        assert run["number"] == 1 and run["header"].startswith(
            "agent run 1 (session agent-1)\nprint('first:'"
        )
        # What the tool printed on the host is in the run, under its call, in no cell's output.
        assert run["kinds"] == ["display_data", "display_data", "display_data"]
        assert run["streams"] == [] and "ponging\n" in run["output"]
        assert run["calls"] == [["send", "ok"], ["send", "error"], ["ping", "ok"]]
        assert (
            "first: sent to ann\nrejected: send: the call was rejected (not today)" in run["output"]
        )
        assert run["last"] == "'pong'"  # the value, below the run as a cell's Out[n]
        assert run["cards"][0].endswith("approved in the notebook")
        assert run["cards"][1].endswith("rejected in the notebook: not today")
        # The serving cell's record of the run (what the page writes into the cell and the
        # notebook saves): the run bundle with the decisions, and the program.
        record = _json(
            kernel.execute(
                "_rec = _server.feed.runs()[-1].record(_server.feed.id)\n"
                "_p = _rec['data'][MIME_RUN]\n"
                "print(json.dumps([_p['agent'], [e.get('approval') for e in _p['timeline']"
                " if e['kind'] == 'call'], _rec['metadata']['codemode_feed']['run']]))"
            )
        )
        agent_info, approvals, number = record
        # The tool's print is in the timeline under its call; nothing was printed outside a call.
        assert agent_info["record"] and agent_info["tool_output"] == []
        assert approvals == [
            {"decision": "approve", "by": "notebook"},
            {"decision": "reject", "by": "notebook", "reason": "not today"},
            None,
        ]
        assert number == 1
        assert all(run["disabled"])  # decided: the buttons are off
        assert _json(kernel.execute("print(json.dumps(sent))")) == ["ann"]
        # The Tools panel's recent run has the timeline in the order things happened.
        panel = _json(
            kernel.execute(
                "from codemode_jupyter.jupyter.extension import _loaded\n"
                "_run = next(iter(_loaded.values())).comm.runs_message()['runs'][-1]\n"
                "print(json.dumps([_run['source']] + [e['kind'] for e in _run['timeline']]))"
            )
        )
        # The last output is what the ping tool printed, under its call.
        assert panel == ["agent", "call", "output", "call", "output", "call", "output"]

        # Newest last, bounded: two more runs push the first out and close its widgets.
        assert kernel.execute("_first = _server.feed.runs()[0]").ok
        more = asyncio.run(agent(["print('two')", "1 / 0"]))
        assert "stdout:\ntwo" in more[0].content[0].text  # output is in the text, not the data
        assert more[1].structured_content["status"] == "error"
        feed = _json(
            kernel.execute(
                "_wait(lambda: _feed()[0]['number'] == 2 and _feed()[-1]['status'] == 'error')\n"
                "print(json.dumps(_feed()))"
            )
        )
        assert [r["number"] for r in feed] == [2, 3]
        assert feed[0]["output"] == "two\n" and feed[1]["last"] == "ZeroDivisionError"
        assert feed[1]["kinds"][-1] == "error"
        closed = kernel.execute(
            "print(_first.number, _first.output.comm is None, len(_server.feed.widget.children))"
        )
        assert closed.stream() == "1 True 3\n"  # the server's settings, then two runs
        stopped = kernel.execute(SERVE.format(line="--stop"))
        assert "MCP server stopped" in stopped.stream()
        threads = kernel.execute(
            "import threading\nprint(sorted(t.name for t in threading.enumerate() "
            "if t.name.startswith('codemode-view')))"
        )
        assert threads.stream() == "[]\n"


def test_step_numbers_calls_as_the_run_does_and_records_stand_ins():
    """`%%codemode --step`: each prompt names the run's call; `= {bad json` is refused and
    asked again; a value typed instead is recorded as a stand-in (the tool did not run)."""
    with loaded_kernel() as kernel:
        assert kernel.execute(
            "ran = []\ndef lookup(city: str) -> dict:\n    ran.append(city)\n"
            "    return {'city': city, 'temp': 21}"
        ).ok
        stepped = kernel.execute(
            "%%codemode --step\n[lookup('Oslo')['temp'], lookup('Rome')['temp']]",
            stdin=["a", "= {bad json", '= {"city": "Rome", "temp": -3}'],
        )
        assert stepped.ok, stepped.messages
        assert stepped.result == "[21, -3]"
        prompts = [
            m["content"]["prompt"] for m in stepped.messages if m["msg_type"] == "input_request"
        ]
        assert [p.split(" lookup")[0] for p in prompts] == [
            "codemode: call #1",
            "codemode: call #2",
            "codemode: call #2",
        ]
        assert "'{bad json' is not a JSON value" in stepped.stream()
        # The finished run fills the live display, above the prompts (the last update).
        final = stepped.of_type("update_display_data")[-1]["content"]["data"]
        run = final["application/vnd.codemode.run+json"]
        assert not stepped.displays("application/vnd.codemode.run+json")
        calls = [e for e in run["timeline"] if e["kind"] == "call"]
        assert [c["approval"] for c in calls] == [
            {"decision": "approve", "by": "cell"},
            {"decision": "return", "by": "cell", "stand_in": True},
        ]
        text = final["text/plain"]  # the transcript says so too
        assert "lookup(city='Rome') = {'city': 'Rome', 'temp': -3}, tool not run" in text, text
        assert kernel.execute("print(ran)").stream() == "['Oslo']\n"
        last = kernel.execute("%codemode last").stream()
        assert "waited" in last and "(a stand-in value; not run)" in last, last
