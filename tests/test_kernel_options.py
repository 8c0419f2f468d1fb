"""The `%%codemode` options and `%codemode` commands that join the parts together, in a real
kernel: named sessions, stepping through calls, uploads, displays and rich values, --map,
`%codemode pip` and `%codemode serve` usage."""

from __future__ import annotations

import base64

from conftest import loaded_kernel


def shown(run) -> str:
    """What the cell showed as text: streams and the run view's transcript (a `--step`
    cell's finished run replaces its live view: the last update)."""
    updates = [
        m["content"]["data"].get("text/plain", "") for m in run.of_type("update_display_data")
    ]
    return run.stream() + "\n".join(str(d) for d in run.displays() + updates[-1:])


TOOLS = """
def lookup(city: str) -> dict:
    return {"city": city, "temp": 21}
"""


def test_named_sessions_keep_their_own_variables() -> None:
    with loaded_kernel() as kernel:
        assert kernel.execute(TOOLS).ok
        assert kernel.execute("%%codemode --session scratch\nsecret = 41").ok
        mine = kernel.execute("%%codemode\n'secret' in globals()")
        assert mine.ok and mine.result == "False"
        again = kernel.execute("%%codemode --session scratch\nsecret + 1")
        assert again.ok and again.result == "42"


def test_step_asks_before_each_call_and_can_return_a_value_instead() -> None:
    with loaded_kernel() as kernel:
        assert kernel.execute(TOOLS).ok
        stepped = kernel.execute(
            "%%codemode --step\n[lookup('Oslo')['temp'], lookup('Rome')['temp']]",
            stdin=["a", '={"city": "Rome", "temp": -3}'],
        )
        assert stepped.ok, stepped.messages
        assert stepped.result == "[21, -3]"
        prompts = [m for m in stepped.messages if m["msg_type"] == "input_request"]
        assert len(prompts) == 2 and "lookup" in prompts[0]["content"]["prompt"]
        rejected = kernel.execute(
            "%%codemode --step\ntry:\n    lookup('Oslo')\nexcept ToolRejected as e:\n"
            "    print('rejected:', e)",
            stdin=["r not now"],
        )
        assert rejected.ok and "rejected:" in shown(rejected) and "not now" in shown(rejected)


def test_upload_displays_and_a_rich_value(tmp_path) -> None:
    data = tmp_path / "numbers.csv"
    data.write_text("a,b\n1,2\n")
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    with loaded_kernel() as kernel:
        cell = (
            f"%%codemode --upload {data}:in/numbers.csv\n"
            "print(open('in/numbers.csv').read().splitlines()[1])\n"
            "from codemode import HTML, Image\n"
            "display(HTML('<b>bold</b>'))\n"
            f"display(Image(data={png!r}))\n"
            "class Table:\n"
            "    def _repr_html_(self):\n"
            "        return '<table><tr><td>1</td></tr></table>'\n"
            "    def __repr__(self):\n"
            "        return 'Table()'\n"
            "Table()"
        )
        run = kernel.execute(cell)
        assert run.ok, run.messages
        assert "1,2" in shown(run)
        assert "<b>bold</b>" in run.displays("text/html")
        assert run.displays("image/png")
        out = run.of_type("execute_result")[0]["content"]["data"]
        assert out["text/plain"] == "Table()" and "<table>" in out["text/html"]


def test_map_runs_the_cell_once_per_item() -> None:
    with loaded_kernel() as kernel:
        assert kernel.execute("def double(x: int) -> int:\n    return 2 * x\ncities = [1, 2, 3]").ok
        run = kernel.execute(
            "%%codemode --map cities --concurrency 2 --as n --out table\ndouble(n)"
        )
        assert run.ok, run.messages
        values = kernel.execute(
            "rows = table.to_dict('records') if hasattr(table, 'to_dict') else table\n"
            "[r['value'] for r in rows]"
        )
        assert values.result == "[2, 4, 6]"


def test_commands_that_parse_their_own_words_say_how_to_use_them() -> None:
    with loaded_kernel() as kernel:
        bad = kernel.execute("%codemode pip uninstall x")
        assert "usage: %codemode pip install" in bad.stream("stderr")
        helped = kernel.execute("%codemode help")
        assert "%codemode serve" in helped.stream() and "--map NAME" in helped.stream()
