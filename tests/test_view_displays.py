"""Displays and artifacts in the run view's payload: their place in the timeline, the live
budget and pace, what the saved payload compares, and what an artifact carries for a link."""

from __future__ import annotations

from codemode_jupyter.jupyter.views import live as view_module
from codemode_jupyter.jupyter.views.artifacts import describe_artifacts
from codemode_jupyter.jupyter.views.live import RichView, live_text
from codemode_jupyter.jupyter.views.transcript import merged_payload, run_payload
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.result import RunResult
from codemode_jupyter.model.timeline import Timeline, stub_displays

PNG = "iVBORw0KGgo" * 10


def png_display(n: int, size: int = 100) -> ev.Display:
    return ev.Display(
        {"text/plain": f"<Figure {n}>", "image/png": "A" * size},
        {"image/png": {"width": 640}},
    )


def test_displays_take_their_place_among_output_and_calls() -> None:
    timeline = Timeline()
    timeline.apply(ev.Output("stdout", "start\n"))
    timeline.apply(png_display(1))
    timeline.apply(ev.ToolCallStarted(1, "f", {}, 1))
    timeline.apply(ev.Output("stdout", "end\n"))
    timeline.apply(ev.Display({"text/plain": "t", "text/html": "<b>t</b>"}, {}))
    kinds = [e["kind"] for e in timeline.snapshot()]
    assert kinds == ["output", "display", "call", "output", "display"]
    assert timeline.snapshot()[1]["metadata"] == {"image/png": {"width": 640}}


def test_a_live_update_embeds_the_newest_displays_within_its_budget() -> None:
    entries = [
        {"kind": "display", "data": {"text/plain": f"<{n}>", "image/png": "A" * 100}}
        for n in range(5)
    ]
    kept = stub_displays(entries, 250)
    assert kept == 2 * (100 + 3)
    assert [e.get("omitted", 0) for e in entries] == [103, 103, 103, 0, 0]
    assert entries[0]["data"] == {"text/plain": "<0>"}
    assert entries[4]["data"]["image/png"] == "A" * 100


def test_the_live_view_paces_itself_by_the_size_of_its_updates(monkeypatch) -> None:
    monkeypatch.setattr(view_module, "LIVE_DISPLAY_CHARS", 50_000)
    monkeypatch.setattr(view_module, "LIVE_CHARS_PER_SECOND", 100_000)
    view = RichView("code", rate=10)
    view.on_event(ev.Output("stdout", "hi\n"))
    view._live_bundle()
    assert view.pause() == 0.1  # small: the rate bounds it
    for n in range(100):
        view.on_event(png_display(n, size=10_000))
    bundle = view._live_bundle()
    payload = bundle["application/vnd.codemode.run+json"]
    shown = [e for e in payload["timeline"] if e["kind"] == "display"]
    assert len(shown) == 100
    embedded = [e for e in shown if "image/png" in e["data"]]
    assert 1 <= len(embedded) <= 5 and embedded[-1]["data"]["text/plain"] == "<Figure 99>"
    assert all("omitted" in e for e in shown[: -len(embedded)])
    assert view.pause() > 0.4  # about 50 000 characters at 100 000 a second
    assert "<Figure 99>" in live_text(payload)


def test_the_saved_payload_keeps_images_and_metadata_with_what_varies() -> None:
    timeline = Timeline()
    timeline.apply(ev.Display({"text/plain": "fig", "image/png": PNG}, {"image/png": {"a": 1}}))
    timeline.apply(ev.Display({"text/plain": "t", "text/html": "<b>t</b>"}, {}))
    result = RunResult(ok=True, status="ok")
    data, metadata = run_payload("code", result, timeline.snapshot())
    assert data["timeline"][0] == {"kind": "display", "data": {"text/plain": "fig"}}
    assert data["timeline"][1]["data"] == {"text/plain": "t", "text/html": "<b>t</b>"}
    assert metadata["timeline"]["0"] == {
        "data": {"image/png": PNG},
        "metadata": {"image/png": {"a": 1}},
    }
    assert "1" not in metadata["timeline"]


def test_the_panel_payload_leaves_older_displays_as_text(monkeypatch) -> None:
    from codemode_jupyter.jupyter.views import transcript

    monkeypatch.setattr(transcript, "PANEL_DISPLAY_CHARS", 150)
    timeline = Timeline()
    for n in range(3):
        timeline.apply(png_display(n))
    entries = timeline.snapshot()
    payload = merged_payload("code", RunResult(ok=True, status="ok"), entries)
    assert [e.get("omitted", 0) for e in payload["timeline"]] == [110, 110, 0]
    assert "image/png" in entries[0]["data"]  # the run's own entries are left whole
    assert "displays" not in payload["result"]


def test_an_artifact_carries_a_path_for_its_link_and_a_csv_its_first_lines(tmp_path) -> None:
    folder = tmp_path / "codemode-outputs" / "s" / "run-1"
    folder.mkdir(parents=True)
    (folder / "t.csv").write_text("".join(f"{i},{i * i}\n" for i in range(20)))
    (folder / "p.png").write_bytes(b"\x89PNG")
    outside = tmp_path.parent / "elsewhere.csv"
    items = [
        {"name": "t.csv", "size": 1, "path": str(folder / "t.csv")},
        {"name": "p.png", "size": 4, "path": str(folder / "p.png")},
        {"name": "x.csv", "size": 0, "path": str(outside)},
    ]
    described = describe_artifacts(items, cwd=tmp_path)
    assert described[0]["rel"] == "codemode-outputs/s/run-1/t.csv"
    assert described[0]["head"] == ["0,0", "1,1", "2,4", "3,9", "4,16", "5,25"]
    assert described[1]["rel"] == "codemode-outputs/s/run-1/p.png" and "head" not in described[1]
    assert "rel" not in described[2] and "head" not in described[2]  # missing and outside
