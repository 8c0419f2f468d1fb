"""What a finished `%%codemode` cell keeps: a deterministic transcript and the run+json bundle.

nbval compares every mimetype of an output's `data` except images and widget views, and it
never compares `metadata`. So `data` holds only what is the same on every run of the same
program (and on every machine): the text/plain transcript and the run+json payload without
timings, backend, isolation or preview URLs. Those live in the output's `metadata` under the
same mimetype and the same shape, and a renderer deep-merges them back (see `merge_varying`).
A display entry keeps its PNG and JPEG there too (the bytes of a plot may differ between
matplotlib versions; nbval skips those types in outputs of their own for the same reason),
and its metadata; the rest of its bundle (HTML, Markdown, SVG, text) stays compared.
"""

from __future__ import annotations

from typing import Any

from codemode_jupyter.jupyter.views.artifacts import describe_artifacts
from codemode_jupyter.jupyter.views.fallback import fallback_html, transcript_text
from codemode_jupyter.model.entries import Entry, RunPayload
from codemode_jupyter.model.result import RunResult
from codemode_jupyter.model.timeline import stub_displays

MIME_RUN = "application/vnd.codemode.run+json"
#: 2: the payload holds the run's timeline; renderers still read version 1 (no timeline).
PAYLOAD_VERSION = 2

#: Result fields that differ between two runs of the same program, or between machines.
VARYING_FIELDS = (
    "duration",
    "backend",
    "isolation",
    "previews",
    "artifacts",
    "artifacts_left",
)
#: Shown by outputs of their own (display_data, Out[n]), so the run's payload leaves them out.
OWN_OUTPUT_FIELDS = ("displays", "value_bundle")
#: Result fields the timeline carries in version 2 (kept out of `result` to save the space).
TIMELINE_FIELDS = ("stdout", "stderr", "tool_calls")
#: Timeline entry fields that vary between runs: a call's duration, a traceback, a URL.
VARYING_ENTRY_FIELDS = ("duration", "url", "waited")
#: A display's MIME types kept with what varies (nbval does not compare them either).
VARYING_DISPLAY_TYPES = ("image/png", "image/jpeg")
#: Characters of display bundles a run in the Tools panel carries (up to 20 runs are sent
#: at once); older displays travel as their text/plain.
PANEL_DISPLAY_CHARS = 1 << 20


def split_varying(result_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a RunResult dict into its deterministic part and what varies between runs.

    Varying: timings, backend, isolation, preview URLs, artifacts (their host paths name the
    session), and tracebacks (host paths name the kernel's temporary files; sandbox paths
    name the sandbox's Python version).
    """
    stable = {
        k: v
        for k, v in result_dict.items()
        if k not in VARYING_FIELDS and k not in OWN_OUTPUT_FIELDS
    }
    varying = {k: result_dict[k] for k in VARYING_FIELDS if k in result_dict}
    if result_dict.get("error"):
        stable["error"] = _without_traceback(result_dict["error"])
        varying["error"] = result_dict["error"]
    stable_calls, varying_calls = [], []
    for call in result_dict.get("tool_calls") or []:
        stable_call = {k: v for k, v in call.items() if k != "duration"}
        extra: dict[str, Any] = {"duration": call.get("duration", 0.0)}
        if call.get("error"):
            stable_call["error"] = _without_traceback(call["error"])
            extra["error"] = call["error"]
        stable_calls.append(stable_call)
        varying_calls.append(extra)
    stable["tool_calls"] = stable_calls
    varying["tool_calls"] = varying_calls
    return stable, varying


def _without_traceback(error: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in error.items() if k != "traceback"}


def merge_varying(stable: dict[str, Any], varying: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `split_varying`, as a renderer does it.

    Keys of `varying` replace those of `stable`, except `tool_calls`, merged call by call.
    """
    merged = dict(stable)
    for key, value in varying.items():
        if key == "tool_calls":
            merged[key] = [
                {**call, **extra} for call, extra in zip(stable.get(key, []), value, strict=False)
            ]
        else:
            merged[key] = value
    return merged


def split_timeline(
    entries: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Timeline entries without what varies, and that part keyed by the entry's index."""
    stable, varying = [], {}
    for index, entry in enumerate(entries):
        extra = {k: entry[k] for k in VARYING_ENTRY_FIELDS if k in entry}
        kept = {k: v for k, v in entry.items() if k not in VARYING_ENTRY_FIELDS}
        if entry["kind"] == "display":
            kept, extra = _split_display(entry)
        elif entry.get("error"):
            kept["error"] = _without_traceback(entry["error"])
            extra["error"] = entry["error"]
        stable.append(kept)
        if extra:
            varying[str(index)] = extra
    return stable, varying


def _split_display(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A display entry: images and metadata apart (the renderer merges `data` key by key)."""
    data = entry.get("data") or {}
    kept = {k: v for k, v in entry.items() if k not in ("data", "metadata")}
    kept["data"] = {m: v for m, v in data.items() if m not in VARYING_DISPLAY_TYPES}
    extra: dict[str, Any] = {}
    images = {m: v for m, v in data.items() if m in VARYING_DISPLAY_TYPES}
    if images:
        extra["data"] = images
    if entry.get("metadata"):
        extra["metadata"] = entry["metadata"]
    return kept, extra


def run_payload(
    code: str,
    result: RunResult,
    timeline: list[Entry],
    warnings: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run+json value (what nbval compares) and its metadata (what varies)."""
    full = _result_fields(result)
    stable, varying = split_varying(full)
    stable.pop("tool_calls", None)
    varying.pop("tool_calls", None)
    stable_entries, varying_entries = split_timeline(timeline)
    data = {
        "version": PAYLOAD_VERSION,
        "code": code,
        "timeline": stable_entries,
        "result": stable,
    }
    metadata = {"version": PAYLOAD_VERSION, "result": varying, "timeline": varying_entries}
    if warnings:
        # Warnings may name the machine (why isolation is off): kept out of compared data.
        metadata["warnings"] = list(warnings)
    return data, metadata


def run_bundle(
    code: str,
    result: RunResult,
    timeline: list[Entry],
    *,
    streams: bool = True,
    value: bool = True,
    warnings: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(data, metadata) of the display_data a finished cell keeps.

    Front ends without the extension show the text/html or text/plain fallback, both the
    timeline in time order (fallback.py). `streams=False`: they leave out stdout and stderr
    (the text view streamed them into the cell already); the timeline always has them.
    `value=False`: they leave out the value (the cell's Out[n] shows it).
    """
    payload, varying = run_payload(code, result, timeline, warnings)
    data = {
        "text/plain": transcript_text(result, timeline, streams=streams, value=value),
        "text/html": fallback_html(result, timeline, streams=streams, value=value),
        MIME_RUN: payload,
    }
    return data, {MIME_RUN: varying}


def merged_payload(code: str, result: RunResult, timeline: list[Entry]) -> RunPayload:
    """The whole payload, nothing split off (the Tools panel's recent runs), the older
    displays beyond `PANEL_DISPLAY_CHARS` as their text."""
    entries = list(timeline)
    stub_displays(entries, PANEL_DISPLAY_CHARS)
    full = _result_fields(result)
    return {"version": PAYLOAD_VERSION, "code": code, "timeline": entries, "result": full}


def _result_fields(result: RunResult) -> dict[str, Any]:
    """The result as the payload carries it: the timeline has the output and calls, and each
    artifact says where it is for a link (see artifact_info.py)."""
    full = result.to_dict()
    for key in (*TIMELINE_FIELDS, "displays"):
        full.pop(key, None)
    full["artifacts"] = describe_artifacts(full.get("artifacts") or [])
    return full
