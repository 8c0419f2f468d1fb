"""The typed run model: its JSON Schema, the payloads the views write, the extension's types.

Two files in the repository are generated from the Python side and checked here:
labextension/schema/run.schema.json (the schema of `RunPayload`) and the payloads the
labextension's jest tests read (src/__tests__/fixtures/python-payloads.json). When the model
changes, rewrite them with

    UPDATE_RUN_MODEL=1 python -m pytest tests/test_run_model.py

and update model.ts's `IWire...` interfaces: a test below fails while they differ.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from codemode_jupyter.jupyter.approval_marks import with_approvals
from codemode_jupyter.jupyter.views.live import RichView
from codemode_jupyter.jupyter.views.transcript import (
    MIME_RUN,
    merge_varying,
    merged_payload,
    run_bundle,
)
from codemode_jupyter.model import events as ev
from codemode_jupyter.model.entries import run_schema
from codemode_jupyter.model.result import Artifact, Preview, RunError, RunResult
from codemode_jupyter.model.timeline import Timeline

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "labextension" / "schema" / "run.schema.json"
FIXTURE_FILE = ROOT / "labextension" / "src" / "__tests__" / "fixtures" / "python-payloads.json"
MODEL_TS = ROOT / "labextension" / "src" / "model.ts"


def sample_timeline() -> Timeline:
    """A run with one of each kind of entry, in the order the engine reports them."""
    timeline = Timeline(output_cap=80)
    timeline.apply(ev.RunStarted("local", "bubblewrap", True))
    timeline.apply(ev.Output("stdout", "before the call\n"))
    timeline.apply(ev.ToolCallStarted(1, "get_weather", {"city": "Paris"}, 1))
    timeline.apply(ev.ToolCallFinished(1, "get_weather", 1, {"temp_c": 18}, None, 0.002))
    timeline.apply(ev.Output("stdout", "after the call\n"))
    timeline.apply(ev.ToolCallStarted(2, "boom", {"n": 5}, 2))
    error = RunError("ValueError", "n too big: 5", "Traceback (most recent call last):\n...")
    timeline.apply(ev.ToolCallFinished(2, "boom", 2, None, error, 0.001))
    timeline.apply(ev.Output("stderr", "a warning\n"))
    timeline.apply(ev.Display({"text/plain": "<Figure>", "image/png": "iVBORw0KGgo="}, {}))
    timeline.apply(ev.ToolCallStarted(3, "ask", {}, 3))
    timeline.apply(ev.ToolCallFinished(3, "ask", 3, "yes", None, 1.5))
    timeline.apply(ev.Output("stdout", "x" * 60 + "\n"))  # over the cap: a gap
    timeline.apply(ev.ToolCallStarted(4, "slow", {}, 4))
    timeline.apply(ev.PreviewAnnounced(Preview(8000, "https://8000.example/")))
    return timeline


def sample_result() -> RunResult:
    return RunResult(
        ok=False,
        status="error",
        stdout="",
        value=None,
        error=RunError("ValueError", "n too big: 5", "Traceback ...\nValueError: n too big: 5"),
        rounds=4,
        previews=[Preview(8000, "https://8000.example/")],
        duration=2.25,
        backend="local",
        isolation="bubblewrap",
        artifacts=[Artifact("table.csv", 12, "0" * 64, "/elsewhere/table.csv")],
        artifacts_left=["big.bin: over the size cap"],
    )


def sample_entries() -> list[dict[str, Any]]:
    timeline = sample_timeline()
    timeline.finish(sample_result())
    marks = {3: {"decision": "return", "by": "cell", "waited": 1.0, "value": "yes"}}
    return with_approvals(timeline.snapshot(), marks)


def merge_run(data: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """What the labextension's `mergeVarying` does: the saved payload with what varies."""
    merged = dict(data)
    merged["result"] = merge_varying(data["result"], metadata.get("result", {}))
    extras = metadata.get("timeline", {})
    timeline = []
    for index, entry in enumerate(data["timeline"]):
        entry = dict(entry)
        for key, value in extras.get(str(index), {}).items():
            base = entry.get(key)
            entry[key] = {**base, **value} if isinstance(base, dict) else value
        timeline.append(entry)
    merged["timeline"] = timeline
    if "warnings" in metadata:
        merged["warnings"] = metadata["warnings"]
    return merged


def payloads() -> dict[str, Any]:
    """The payloads the views write for the sample run: saved (data and metadata), the Tools
    panel's, a live update's (its elapsed time fixed) and an agent's record."""
    result, entries = sample_result(), sample_entries()
    data, metadata = run_bundle("print('x')", result, entries, warnings=["no network"])
    view = RichView("print('x')")
    view.timeline = sample_timeline()
    live = view._live_bundle()[MIME_RUN]
    live["result"]["duration"] = 1.0
    agent = merged_payload("1 + 1", result, entries)
    agent["agent"] = {"run": 3, "session": "s1", "record": True, "tool_output": [["stdout", "x"]]}
    return {
        "saved": {"data": data[MIME_RUN], "metadata": metadata[MIME_RUN]},
        "panel": merged_payload("print('x')", result, entries),
        "live": live,
        "agent": agent,
    }


def expected_files() -> dict[Path, str]:
    fixtures = json.loads(json.dumps(payloads(), default=str))
    return {
        SCHEMA_FILE: json.dumps(run_schema(), indent=2, ensure_ascii=False) + "\n",
        FIXTURE_FILE: json.dumps(fixtures, indent=2, ensure_ascii=False) + "\n",
    }


@pytest.mark.parametrize("path", list(expected_files()), ids=lambda p: p.name)
def test_generated_files_are_current(path: Path) -> None:
    text = expected_files()[path]
    if os.environ.get("UPDATE_RUN_MODEL"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, (
        f"{path.relative_to(ROOT)} is stale: rewrite it with "
        "UPDATE_RUN_MODEL=1 python -m pytest tests/test_run_model.py"
    )


def test_every_payload_the_views_write_fits_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(run_schema())
    written = payloads()
    saved = written.pop("saved")
    written["saved (merged)"] = merge_run(saved["data"], saved["metadata"])
    kinds = set()
    for name, payload in written.items():
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(payload)]
        assert not errors, (name, errors)
        kinds |= {entry["kind"] for entry in payload["timeline"]}
    assert kinds == {"output", "call", "preview", "gap", "display"}


def test_the_schema_rejects_what_the_model_does_not_allow() -> None:
    validator = jsonschema.Draft202012Validator(run_schema())
    payload = payloads()["panel"]
    payload["timeline"].append({"kind": "call", "id": 9, "name": "f", "args": "", "round": 1})
    assert not validator.is_valid(payload)  # a call without its state


def ts_interfaces() -> dict[str, dict[str, bool]]:
    """model.ts's `IWire...` interfaces: name -> {property: required}."""
    source = MODEL_TS.read_text(encoding="utf-8")
    found = {}
    for name, body in re.findall(r"export interface IWire(\w+) \{\n(.*?)\n\}", source, re.S):
        props = re.findall(r"^  (\w+)(\??):", body, re.M)
        found[name] = {prop: not optional for prop, optional in props}
    return found


def schema_definitions() -> dict[str, dict[str, bool]]:
    schema = run_schema()
    definitions = {**schema["$defs"], "RunPayload": schema}
    return {
        name: {prop: prop in definition.get("required", []) for prop in definition["properties"]}
        for name, definition in definitions.items()
    }


def test_the_extension_types_match_the_schema() -> None:
    """Every type of the schema has an `IWire...` interface in model.ts with the same fields,
    required or optional alike."""
    assert ts_interfaces() == schema_definitions()


def test_the_fallbacks_keep_time_order() -> None:
    data, _ = run_bundle("code", sample_result(), sample_entries())
    for text in (data["text/plain"], data["text/html"]):
        places = [
            text.index(part)
            for part in ("before the call", "get_weather(city=", "after the call", "boom(n=5)")
        ]
        assert places == sorted(places), text
    assert "  ask() = 'yes', tool not run" in data["text/plain"].splitlines()
    assert "<script" not in data["text/html"] and "ValueError: n too big: 5" in data["text/html"]
