"""Rich output in the real local jail: display(), figures, rich values, caps; and the checks
the host makes on display frames."""

from __future__ import annotations

import base64
import json

import pytest

from codemode_jupyter import CodeMode
from codemode_jupyter.engine.connection import FrameError, check_frame
from codemode_jupyter.model import events as ev

pytestmark = pytest.mark.timeout(120)

PNG = b"\x89PNG\r\n\x1a\n-not-really"


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@pytest.fixture(scope="module")
def cm():
    with CodeMode(tools=[add], outputs_dir=None) as session:
        yield session


def test_displays_arrive_as_mime_bundles_in_order_with_output_and_calls(cm: CodeMode) -> None:
    events: list[ev.Event] = []
    code = f"""
from codemode import HTML, Markdown, SVG, display as show
class Rich:
    def _repr_html_(self): return "<b>rich</b>"
    def _repr_markdown_(self): return "**rich**"
    def _repr_svg_(self): return "<svg/>"
    def _repr_png_(self): return {PNG!r}
    def _repr_json_(self): return {{"k": [1, 2]}}
    def __repr__(self): return "Rich()"
class Bundled:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {{"text/html": "<p>b</p>"}}, {{"text/html": {{"isolated": True}}}}
print("one")
display(Rich())
x = add(1, 2)
show(HTML("<table><tr><td>1</td></tr></table>"), Markdown("*m*"))
print("two", x)
display(Bundled(), SVG("<svg></svg>"))
display({{"text/plain": "raw", "text/html": "<i>raw</i>"}}, raw=True)
"""
    result = cm.run(code, on_event=events.append, timeout=60)
    assert result.ok, result.error
    order = [type(e).__name__ for e in events if not isinstance(e, ev.RunStarted | ev.RunFinished)]
    assert order == [
        "Output",
        "Display",
        "ToolCallStarted",
        "ToolCallFinished",
        "Display",
        "Display",
        "Output",
        "Display",
        "Display",
        "Display",
    ]
    rich = result.displays[0]["data"]
    assert rich["text/html"] == "<b>rich</b>" and rich["text/markdown"] == "**rich**"
    assert rich["image/svg+xml"] == "<svg/>" and rich["application/json"] == {"k": [1, 2]}
    assert base64.b64decode(rich["image/png"]) == PNG and rich["text/plain"] == "Rich()"
    assert result.displays[1]["data"]["text/html"].startswith("<table>")
    assert result.displays[2]["data"]["text/markdown"] == "*m*"
    assert result.displays[3] == {
        "data": {"text/html": "<p>b</p>", "text/plain": result.displays[3]["data"]["text/plain"]},
        "metadata": {"text/html": {"isolated": True}},
    }
    assert result.displays[5]["data"] == {"text/plain": "raw", "text/html": "<i>raw</i>"}
    shown = [e for e in events if isinstance(e, ev.Display)]
    assert [e.data for e in shown] == [d["data"] for d in result.displays]
    json.dumps(result.to_dict())  # displays are JSON-able as they are


def test_a_failing_repr_is_skipped_with_a_warning_and_text_stays(cm: CodeMode) -> None:
    result = cm.run(
        "class Bad:\n    def _repr_html_(self): raise ValueError('no')\n"
        "    def __repr__(self): return 'Bad()'\ndisplay(Bad())",
        timeout=30,
    )
    assert result.ok, result.error
    assert result.displays[0]["data"] == {"text/plain": "Bad()"}
    assert "_repr_html_ raised ValueError: no" in result.stderr


def test_rich_value_keeps_its_bundle_beside_value_and_repr(cm: CodeMode) -> None:
    result = cm.run(
        "class V:\n    def _repr_html_(self): return '<b>v</b>'\n"
        "    def __repr__(self): return 'V()'\nV()",
        timeout=30,
    )
    assert result.value is None and result.value_repr == "V()"
    assert result.value_bundle == {"text/html": "<b>v</b>", "text/plain": "V()"}
    plain = cm.run("[1, 2]", timeout=30)
    assert plain.value == [1, 2] and plain.value_bundle is None


def test_dataframe_value_and_display_are_html_tables(cm: CodeMode) -> None:
    result = cm.run(
        "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': [3, 4]})\ndisplay(df)\ndf",
        timeout=60,
    )
    assert result.ok, result.error
    assert "<table" in result.displays[0]["data"]["text/html"]
    assert "<table" in result.value_bundle["text/html"]
    assert result.value_repr.split() == ["a", "b", "0", "1", "3", "1", "2", "4"]


def test_figures_show_as_png_on_show_and_at_the_end_without_set_up(cm: CodeMode) -> None:
    code = (
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\n"
        "print('between')\nfig, ax = plt.subplots()\nax.bar(['a', 'b'], [1, 2])\n"
    )
    first = cm.run(code, timeout=90)
    assert first.ok, first.error
    assert first.stdout == "between\n"
    pngs = [base64.b64decode(d["data"]["image/png"]) for d in first.displays]
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG") for p in pngs)
    assert all(b"Software" not in p and b"tIME" not in p for p in pngs)
    again = cm.run(code, timeout=90, fresh=True)  # a new interpreter draws the same bytes
    assert [d["data"]["image/png"] for d in again.displays] == [
        d["data"]["image/png"] for d in first.displays
    ]
    closed = cm.run("len(plt.get_fignums())", timeout=30)
    assert closed.value == 0 and closed.displays == []


def test_matplotlib_is_not_imported_unless_the_program_does() -> None:
    with CodeMode(outputs_dir=None) as session:
        result = session.run(
            "import sys\n[m for m in sys.modules if 'matplotlib' in m]", timeout=30
        )
    assert result.value == []


def test_display_flood_is_capped_and_said() -> None:
    with CodeMode(max_displays=20, max_display_bytes=200_000, outputs_dir=None) as session:
        flood = session.run("for i in range(2000):\n    display(i)\nprint('end')", timeout=60)
        assert flood.ok and flood.stdout == "end\n"
        assert len(flood.displays) == 20 and flood.displays_dropped == 1980
        assert "1980 display(s)" in flood.stderr
        big = session.run(
            "from codemode import HTML\ndisplay(HTML('x' * 300_000))\n"
            "display(HTML('y' * 150_000))\ndisplay(HTML('z' * 150_000))",
            timeout=60,
        )
    assert big.ok
    # The first is over one display's cap: the runtime leaves it out and says so; the third
    # is over the run's total: the host drops it and counts it.
    assert "more than the 0.190735 MiB one display may take" in big.stderr
    assert [d["data"]["text/html"][0] for d in big.displays] == ["y"]
    assert big.displays_dropped == 1 and "1 display(s)" in big.stderr


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "display", "data": {"text/html": "<b>"}},  # no text/plain
        {"t": "display", "data": {"text/plain": "x", "image/png": 5}},
        {"t": "display", "data": {"text/plain": "x", "nomime": "y"}},
        {"t": "display", "data": {"text/plain": "x"}, "metadata": []},
        {"t": "display", "data": []},
        {"t": "done", "id": "r", "ok": True, "bundle": {"text/html": "<b>"}},
        {"t": "artifact", "name": "a", "d": "", "more": 1},
    ],
)
def test_malformed_display_frames_are_faults(frame: dict) -> None:
    with pytest.raises(FrameError):
        check_frame(frame)


def test_well_formed_display_frames_pass() -> None:
    check_frame(
        {
            "t": "display",
            "data": {
                "text/plain": "x",
                "application/json": {"a": [1]},
                "application/vnd.x+json": [1],
            },
            "metadata": {},
        }
    )
    check_frame({"t": "done", "id": "r", "ok": True, "bundle": {"text/plain": "x"}})
