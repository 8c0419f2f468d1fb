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
from codemode_jupyter.jupyter.views.display_out import CellDisplays

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


CARD_TOOLS = '''
def temps() -> list:
    """Three temperatures."""
    return [3, 5, 4]
'''

CARD_CELL = """%%codemode
from codemode import HTML
print("start")
display(HTML("<b>bold</b>"))
t = temps()
print("temps", t)
import matplotlib.pyplot as plt
plt.plot(t)
plt.show()
import os
os.makedirs("outputs", exist_ok=True)
with open("outputs/t.csv", "w") as f:
    f.write("i,t\\n" + "".join(f"{i},{v}\\n" for i, v in enumerate(t)))
print("end")
"""

RUN_MIME = "application/vnd.codemode.run+json"
MARKER = "application/vnd.codemode.display+json"


def test_the_saved_card_holds_displays_in_time_order_with_images_in_metadata(
    tmp_path, monkeypatch
) -> None:
    # The kernel's working directory (where codemode-outputs/ goes) is this test's.
    monkeypatch.chdir(tmp_path)
    with loaded_kernel() as k:
        assert k.execute(CARD_TOOLS).ok
        done = k.execute(CARD_CELL, timeout=150)
        assert done.ok, done.error
        outputs = [m["content"] for m in done.of_type("display_data")]
        cards = [o for o in outputs if o["data"].get(RUN_MIME)]
        assert len(cards) == 1
        data, metadata = cards[0]["data"][RUN_MIME], cards[0]["metadata"][RUN_MIME]
        kinds = [
            e["kind"] + (":" + e["text"].split()[0] if e["kind"] == "output" else "")
            for e in data["timeline"]
        ]
        assert kinds == [
            "output:start",
            "display",
            "call",
            "output:temps",
            "display",
            "output:end",
        ]
        html, figure = data["timeline"][1], data["timeline"][4]
        assert html["data"]["text/html"] == "<b>bold</b>"
        # The figure's PNG is kept with what varies (nbval does not compare it); its text stays.
        assert "image/png" not in figure["data"] and "Figure" in figure["data"]["text/plain"]
        png = metadata["timeline"]["4"]["data"]["image/png"]
        assert base64.b64decode(png).startswith(b"\x89PNG")
        # Each display is its own output too, marked as shown in the card.
        own = [o for o in outputs if "text/plain" in o["data"] and RUN_MIME not in o["data"]]
        assert [sorted(o["data"]) for o in own] == [
            [MARKER, "text/html", "text/plain"],
            [MARKER, "image/png", "text/plain"],
        ]
        assert all(o["data"][MARKER] == {"shown_in": "run"} for o in own)
        # The artifact: a path under the kernel's folder for the link, a CSV's first lines.
        (artifact,) = metadata["result"]["artifacts"]
        assert artifact["name"] == "t.csv"
        assert (tmp_path / artifact["rel"]).read_text().startswith("i,t\n")
        assert artifact["head"] == ["i,t", "0,3", "1,5", "2,4"]
        assert "artifacts" not in data["result"]
