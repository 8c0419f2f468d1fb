"""Displays from the sandbox as real display outputs of the cell, in a real kernel: HTML,
Markdown, PNG, SVG, a custom object, a matplotlib figure and a DataFrame, in order with the
program's prints and tool calls."""

from __future__ import annotations

import base64

import pytest
from conftest import loaded_kernel

pytestmark = pytest.mark.timeout(180)

SETUP = """
import sys
from codemode_jupyter import CodeMode
from codemode_jupyter import events as ev
from codemode_jupyter.jupyter.display_out import CellDisplays

def temps() -> list:
    return [3, 5, 4]

cm = CodeMode(tools=[temps], outputs_dir=None)

def run(code):
    displays = CellDisplays()
    def on_event(event):
        if isinstance(event, ev.Output):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, ev.ToolCallFinished):
            print(f"[tool] {event.name}", flush=True)
        displays.on_event(event)
    return cm.run(code, on_event=on_event, timeout=120)
"""

PROGRAM = """
from codemode import HTML, Markdown, SVG, Image
print("start")
display(HTML("<b>bold</b>"), Markdown("# title"))
t = temps()
print("temps", t)
display(Image(b"\\x89PNG\\r\\n\\x1a\\nfake"), SVG("<svg></svg>"))
class Card:
    def _repr_html_(self): return "<div class='card'>card</div>"
display(Card())
import matplotlib.pyplot as plt
plt.plot(t)
plt.show()
import pandas as pd
display(pd.DataFrame({"t": t}))
print("end")
"""


def test_displays_become_display_outputs_of_the_cell_in_order() -> None:
    with loaded_kernel() as k:
        assert k.execute(SETUP).ok
        done = k.execute(f"r = run({PROGRAM!r})\nprint(r.status, len(r.displays))", timeout=150)
        assert done.ok, done.error
        parent = {m["parent_header"]["msg_id"] for m in done.messages}
        assert len(parent) == 1  # every output belongs to this cell
        timeline = []
        for m in done.messages:
            if m["msg_type"] == "stream":
                timeline += [("text", line) for line in m["content"]["text"].splitlines()]
            elif m["msg_type"] == "display_data":
                data = m["content"]["data"]
                kind = next(
                    k
                    for k in ("text/html", "text/markdown", "image/png", "image/svg+xml")
                    if k in data
                )
                timeline.append((kind, data[kind][:30]))
        assert [kind for kind, _ in timeline] == [
            "text",
            "text/html",
            "text/markdown",
            "text",
            "text",
            "image/png",
            "image/svg+xml",
            "text/html",
            "image/png",
            "text/html",
            "text",
            "text",
        ]
        assert timeline[0] == ("text", "start") and timeline[3] == ("text", "[tool] temps")
        assert timeline[-1] == ("text", "ok 7")
        figure = done.displays("image/png")[1]
        assert base64.b64decode(figure).startswith(b"\x89PNG")
        assert "<table" in done.displays("text/html")[-1]
        k.execute("cm.close()")
