"""`codemode-jupyter serve FILE.py` over stdio, driven by the official mcp client."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap

import pytest

pytest.importorskip("mcp")
from mcp import Client, StdioServerParameters

from codemode_jupyter.cli import main

TOOLS = textwrap.dedent('''
    """Shop tools."""
    import json

    def price(item: str) -> float:
        """The price of an item."""
        print("price looked up")  # a tool's print must not corrupt the stdio channel
        return {"apple": 0.5, "pear": 0.75}[item]

    async def stock(item: str) -> int:
        """How many are in stock."""
        return 3

    def _helper() -> None:
        pass
''')


def test_a_module_served_over_stdio(tmp_path):
    (tmp_path / "shop.py").write_text(TOOLS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "codemode_jupyter.cli", "serve", str(tmp_path / "shop.py")],
        env=env,
    )

    async def agent():
        async with Client(params) as client:
            listed = (await client.list_tools()).tools
            result = await client.call_tool(
                "run_code",
                {
                    "code": (
                        "total = price('apple') * await stock_async('apple')\nprint(total)\ntotal"
                    )
                },
            )
            missing = await client.call_tool("run_code", {"code": "price('kiwi')"})
            return listed, result, missing

    listed, result, missing = asyncio.run(agent())
    assert [t.name for t in listed] == ["run_code"]
    description = listed[0].description
    assert "def price(item: str) -> float:" in description
    assert "async def stock(item: str) -> int:" in description and "_helper" not in description
    assert result.structured_content["value"] == 1.5
    assert "stdout:\n1.5" in result.content[0].text
    assert "status: error" in missing.content[0].text and "KeyError" in missing.content[0].text


def test_bad_targets_say_what_is_wrong(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty.py").write_text("X = 1\n")
    assert main(["serve", str(tmp_path / "empty.py")]) == 2
    assert "defines no public functions" in capsys.readouterr().err
