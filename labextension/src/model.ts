/**
 * Pure logic: turn an `application/vnd.codemode.run+json` payload (live or saved) into the
 * run view model, a timeline of entries in the order they happened and the ending.
 *
 * Nothing here touches the DOM or JupyterLab, so it is unit-tested with plain jest. The
 * payload may come from a saved notebook: treat every field as untrusted and possibly missing
 * (older or newer versions, hand-edited files), and never throw.
 */
import { formatDuration, plural, pyArgs, pyValue } from './format';

// Errors are written as text in format.ts, with every other value; readers import it here too.
export { formatError } from './format';

/** The MIME type the kernel extension writes for each `%%codemode` run. */
export const RUN_MIME_TYPE = 'application/vnd.codemode.run+json';

/**
 * The marker type on a display's own output when the run card shows that display: the
 * labextension renders it as nothing (and hides its output area), so the display is shown
 * once, in the card. Front ends without the extension show the display's own output.
 */
export const DISPLAY_MARKER_MIME_TYPE = 'application/vnd.codemode.display+json';

/** The payload version this renderer was written for (it reads 1 too). */
export const SUPPORTED_VERSION = 2;

/*
 * The payload as the kernel writes it, field for field: the typed run model of
 * codemode_jupyter/model/entries.py. Both are checked against labextension/schema/run.schema.json
 * (generated from the Python types): tests/test_run_model.py compares these interfaces' fields
 * with the schema, and model.spec.ts reads payloads the Python side wrote. The view model
 * below (`Entry`, `IRunView`) is what the card draws, read from untrusted JSON by `readEntry`
 * and `toRunView`.
 */

/** An exception as the model keeps it. */
export interface IWireErrorInfo {
  type: string;
  message: string;
  traceback?: string;
}

/** Text the program wrote. */
export interface IWireOutputEntry {
  kind: 'output';
  stream: 'stdout' | 'stderr';
  text: string;
  /** What this tool call printed on the host while it ran (its entry comes first). */
  call?: number;
}

/** A paused call's approval. */
export interface IWireApproval {
  decision: string;
  by?: string;
  reason?: string;
  stand_in?: boolean;
}

/** A tool call, where it started. */
export interface IWireCallEntry {
  kind: 'call';
  id: number;
  name: string;
  round: number;
  args: string;
  state: CallState;
  result?: string;
  error?: IWireErrorInfo;
  duration?: number;
  approval?: IWireApproval;
  waited?: number;
}

/** A port the program serves. */
export interface IWirePreviewEntry {
  kind: 'preview';
  port: number;
  url?: string;
}

/** Output dropped here to keep within a cap. */
export interface IWireGapEntry {
  kind: 'gap';
  chars: number;
}

/** A display() of the program. */
export interface IWireDisplayEntry {
  kind: 'display';
  data: Record<string, unknown>;
  metadata?: Record<string, unknown>;
  omitted?: number;
}

/** One entry of a timeline as the kernel writes it. */
export type WireEntry =
  | IWireOutputEntry
  | IWireCallEntry
  | IWirePreviewEntry
  | IWireGapEntry
  | IWireDisplayEntry;

/** A file the program left under outputs/. */
export interface IWireArtifactInfo {
  name: string;
  size: number;
  sha256?: string;
  path?: string;
  rel?: string;
  head?: string[];
}

/** A port and the URL that reaches it. */
export interface IWirePreviewInfo {
  port: number;
  url: string;
}

/** The result part of the payload (a live update has only some of it). */
export interface IWireResultInfo {
  ok?: boolean;
  status?: string;
  value?: unknown;
  value_repr?: string | null;
  error?: IWireErrorInfo | null;
  rounds?: number;
  previews?: IWirePreviewInfo[];
  duration?: number;
  state_lost?: boolean;
  stdout_dropped?: number;
  stderr_dropped?: number;
  backend?: string;
  isolation?: string;
  executions?: number;
  displays_dropped?: number;
  value_bundle?: Record<string, unknown> | null;
  artifacts?: IWireArtifactInfo[];
  artifacts_left?: string[];
}

/** A run an agent sent. */
export interface IWireAgentInfo {
  run: number;
  session: string;
  record?: boolean;
  tool_output?: string[][];
}

/** `application/vnd.codemode.run+json`, live or finished (its varying part merged back). */
export interface IWireRunPayload {
  version: number;
  code: string;
  timeline: WireEntry[];
  result: IWireResultInfo;
  warnings?: string[];
  agent?: IWireAgentInfo;
}

const WIRE_REQUIRED: Record<WireEntry['kind'], string[]> = {
  output: ['stream', 'text'],
  call: ['id', 'name', 'round', 'args', 'state'],
  preview: ['port'],
  gap: ['chars'],
  display: ['data']
};

/** Whether `value` is a timeline entry as the kernel writes it (its kind's fields there). */
export function isWireEntry(value: unknown): value is WireEntry {
  if (!isObject(value) || typeof value.kind !== 'string') {
    return false;
  }
  const required = WIRE_REQUIRED[value.kind as WireEntry['kind']];
  return required !== undefined && required.every(key => key in value);
}

/** An error as RunResult.to_dict() writes it. */
export interface IRunError {
  type: string;
  message: string;
  traceback: string;
}

/** The state of a tool call (`waiting`: paused until a person decides). */
export type CallState = 'running' | 'waiting' | 'ok' | 'error' | 'cancelled';

/** A paused call's approval (`approve`, `reject`, `return`: a stand-in value; `waiting`). */
export interface IApproval {
  decision: string;
  /** Who decided: `notebook`, `cell`, `timeout`, `client`, `run ended`. */
  by: string;
  reason: string;
  /** The tool did not run: its result is the value a person gave. */
  standIn: boolean;
}

/** A run an agent sent (`%codemode serve`): who ran it and, in the serving cell's record,
 * what the feed shows around the run. */
export interface IAgentInfo {
  run: number;
  session: string;
  /** The serving cell's saved record: the card shows the program, tools' prints, ending. */
  record: boolean;
  toolOutput: { stream: string; text: string }[];
}

/** One entry of a run's timeline. */
export type Entry =
  | {
      kind: 'output';
      stream: 'stdout' | 'stderr';
      text: string;
      /** Set when a tool printed it on the host: the id of that call. */
      call?: number;
    }
  | {
      kind: 'call';
      id: number;
      name: string;
      round: number;
      /** Keyword arguments as Python literals: `city='Paris'`. */
      args: string;
      state: CallState;
      /** The result as a Python literal (when ok). */
      result: string;
      error: IRunError | null;
      /** Seconds; null while running or when the saved data has no timings. */
      duration: number | null;
      /** Its approval, when the call waited for a person. */
      approval: IApproval | null;
      /** Seconds the call waited for a decision (not part of `duration`). */
      waited: number | null;
    }
  | { kind: 'preview'; port: number; url: string }
  | { kind: 'gap'; chars: number }
  | IDisplayEntry
  | { kind: 'unknown'; name: string };

/** A display() of the program: a MIME bundle, shown by JupyterLab's own renderers. */
export interface IDisplayEntry {
  kind: 'display';
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
  /** Its text/plain (what is shown where the bundle cannot be rendered). */
  text: string;
  /** Characters of the bundle a live update left out (0: all there). */
  omitted: number;
}

/** A file the program wrote, now on the host. */
export interface IArtifact {
  name: string;
  size: number;
  /** Path relative to the notebook's folder ('' when the file is not under it). */
  rel: string;
  /** Where the file is on the host. */
  path: string;
  /** The first lines of a CSV (empty for other files). */
  head: string[];
}

/** How a status is shown: the severity picks its colour. */
export type Severity = 'ok' | 'error' | 'warning' | 'running';

/** Everything a run view shows, already read and checked. */
export interface IRunView {
  valid: boolean;
  /** Why the payload could not be shown, when `valid` is false. */
  problem: string;
  status: string;
  statusLabel: string;
  severity: Severity;
  /** Still running (a live update). */
  live: boolean;
  /** Short facts next to the status: duration, tool calls, rounds, backend. */
  facts: string[];
  /** Warnings under the header (state lost, no isolation, dropped output, newer format). */
  warnings: string[];
  code: string;
  entries: Entry[];
  /** The program's value as its repr ('' for none). */
  value: string;
  error: IRunError | null;
  callCount: number;
  /** Files the program brought back, and those left behind (each with why). */
  artifacts: IArtifact[];
  artifactsLeft: string[];
  /** Set for a run an agent sent. */
  agent: IAgentInfo | null;
}

const STATUS_LABELS: Record<string, [string, Severity]> = {
  running: ['running', 'running'],
  ok: ['ok', 'ok'],
  error: ['error', 'error'],
  timeout: ['timed out', 'error'],
  interrupted: ['interrupted', 'warning'],
  crashed: ['runtime crashed', 'error'],
  limit: ['tool-call limit reached', 'error']
};

/** A JSON object (not null, not an array). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `value` as text; `fallback` for null and undefined. */
export function asString(value: unknown, fallback = ''): string {
  if (typeof value === 'string') {
    return value;
  }
  if (value === null || value === undefined) {
    return fallback;
  }
  return String(value);
}

function asNumber(value: unknown, fallback = 0): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : fallback;
}

function asError(value: unknown): IRunError | null {
  if (!isObject(value)) {
    return null;
  }
  return {
    type: asString(value.type, 'Error'),
    message: asString(value.message),
    traceback: asString(value.traceback)
  };
}

/** Status label and severity; unknown statuses are shown as they are. */
export function describeStatus(status: string): [string, Severity] {
  return STATUS_LABELS[status] ?? [status || 'unknown', 'warning'];
}

/** The URL if it is a plain http(s) link, else '' (saved notebooks are untrusted). */
export function safeUrl(url: string): string {
  return /^https?:\/\//i.test(url.trim()) ? url.trim() : '';
}

/**
 * Put back what the kernel keeps out of the compared output data.
 *
 * The output's `data` holds only what is the same on every run (nbval compares it); the
 * timings, backend, isolation, URLs, tracebacks and warnings live in the output's `metadata`
 * under the same MIME type: `{"result": {...}, "timeline": {"<index>": {...}},
 * "warnings": [...]}` (version 2) or
 * `{"result": {..., "tool_calls": [...]}}` (version 1, merged call by call).
 */
export function mergeVarying(data: unknown, metadata: unknown): unknown {
  if (!isObject(data) || !isObject(metadata)) {
    return data;
  }
  const merged: Record<string, unknown> = { ...data };
  if (isObject(metadata.result)) {
    const stable = isObject(data.result) ? data.result : {};
    const result: Record<string, unknown> = { ...stable };
    for (const [key, value] of Object.entries(metadata.result)) {
      if (key === 'tool_calls') {
        const calls = Array.isArray(stable.tool_calls) ? stable.tool_calls : [];
        const extras = Array.isArray(value) ? value : [];
        result.tool_calls = calls.map((call, index) =>
          isObject(call) && isObject(extras[index])
            ? { ...call, ...(extras[index] as Record<string, unknown>) }
            : call
        );
      } else {
        result[key] = value;
      }
    }
    merged.result = result;
  }
  if (Array.isArray(metadata.warnings)) {
    merged.warnings = metadata.warnings;
  }
  if (Array.isArray(data.timeline) && isObject(metadata.timeline)) {
    const extras = metadata.timeline;
    merged.timeline = data.timeline.map((entry, index) => {
      const extra = extras[String(index)];
      return isObject(entry) && isObject(extra)
        ? mergeEntry(entry, extra)
        : entry;
    });
  }
  return merged;
}

/**
 * An entry with its varying part: objects in both merge key by key (a display's `data` keeps
 * its text and HTML and gets its images back), anything else is replaced.
 */
function mergeEntry(
  entry: Record<string, unknown>,
  extra: Record<string, unknown>
): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...entry };
  for (const [key, value] of Object.entries(extra)) {
    const base = entry[key];
    merged[key] =
      isObject(base) && isObject(value) ? { ...base, ...value } : value;
  }
  return merged;
}

/** Normalise one timeline entry from untrusted JSON. */
export function readEntry(value: unknown, index: number): Entry {
  const data = isObject(value) ? value : {};
  switch (data.kind) {
    case 'output':
      return {
        kind: 'output',
        stream: data.stream === 'stderr' ? 'stderr' : 'stdout',
        text: asString(data.text),
        ...(typeof data.call === 'number' ? { call: data.call } : {})
      };
    case 'call': {
      const error = asError(data.error);
      const state = asString(data.state);
      const waited = data.waited;
      return {
        kind: 'call',
        id: asNumber(data.id, index + 1),
        name: asString(data.name, '?'),
        round: asNumber(data.round, 1),
        args: asString(data.args),
        state: (['running', 'waiting', 'ok', 'error', 'cancelled'].includes(
          state
        )
          ? state
          : error
            ? 'error'
            : 'ok') as CallState,
        result: asString(data.result),
        error,
        duration: typeof data.duration === 'number' ? data.duration : null,
        approval: readApproval(data.approval),
        waited: typeof waited === 'number' && waited >= 0 ? waited : null
      };
    }
    case 'preview':
      return {
        kind: 'preview',
        port: asNumber(data.port),
        url: safeUrl(asString(data.url))
      };
    case 'gap':
      return { kind: 'gap', chars: asNumber(data.chars) };
    case 'display': {
      const bundle = isObject(data.data) ? data.data : {};
      return {
        kind: 'display',
        data: bundle,
        metadata: isObject(data.metadata) ? data.metadata : {},
        text: asString(bundle['text/plain']),
        omitted: asNumber(data.omitted)
      };
    }
    default:
      return { kind: 'unknown', name: asString(data.kind, '?') };
  }
}

/** A call's approval from untrusted JSON (null when there is none). */
export function readApproval(value: unknown): IApproval | null {
  if (!isObject(value) || typeof value.decision !== 'string') {
    return null;
  }
  return {
    decision: value.decision,
    by: asString(value.by),
    reason: asString(value.reason),
    standIn: value.stand_in === true || value.decision === 'return'
  };
}

/** The agent part of a payload from untrusted JSON (null for a cell's run). */
export function readAgent(value: unknown): IAgentInfo | null {
  if (!isObject(value)) {
    return null;
  }
  const printed = Array.isArray(value.tool_output) ? value.tool_output : [];
  return {
    run: asNumber(value.run),
    session: asString(value.session),
    record: value.record === true,
    toolOutput: printed
      .filter(item => Array.isArray(item) && item.length === 2)
      .map(item => ({ stream: asString(item[0]), text: asString(item[1]) }))
  };
}

/** A version-1 result (no timeline): its output, then its calls, then its previews. */
export function timelineOfResult(result: Record<string, unknown>): Entry[] {
  const entries: Entry[] = [];
  for (const stream of ['stdout', 'stderr'] as const) {
    const text = asString(result[stream]);
    if (text) {
      entries.push({ kind: 'output', stream, text });
    }
    const dropped = asNumber(result[`${stream}_dropped`]);
    if (dropped) {
      entries.push({ kind: 'gap', chars: dropped });
    }
  }
  const calls = Array.isArray(result.tool_calls) ? result.tool_calls : [];
  calls.forEach((value, index) => {
    const call = isObject(value) ? value : {};
    const error = asError(call.error);
    entries.push({
      kind: 'call',
      id: asNumber(call.id, index + 1),
      name: asString(call.name, '?'),
      round: asNumber(call.round, 1),
      args: pyArgs(call.args),
      state: error ? 'error' : 'ok',
      result: error ? '' : pyValue(call.result),
      error,
      duration: typeof call.duration === 'number' ? call.duration : null,
      approval: null,
      waited: null
    });
  });
  const previews = Array.isArray(result.previews) ? result.previews : [];
  for (const preview of previews.filter(isObject)) {
    entries.push({
      kind: 'preview',
      port: asNumber(preview.port),
      url: safeUrl(asString(preview.url))
    });
  }
  return entries;
}

function invalid(problem: string): IRunView {
  return {
    valid: false,
    problem,
    status: 'unknown',
    statusLabel: 'unreadable run',
    severity: 'warning',
    live: false,
    facts: [],
    warnings: [],
    code: '',
    entries: [],
    value: '',
    error: null,
    callCount: 0,
    artifacts: [],
    artifactsLeft: [],
    agent: null
  };
}

/** The artifacts of a result (untrusted JSON). */
export function readArtifacts(value: unknown): IArtifact[] {
  const items = Array.isArray(value) ? value.filter(isObject) : [];
  return items.map(item => ({
    name: asString(item.name, '?'),
    size: asNumber(item.size),
    rel: relativePath(asString(item.rel)),
    path: asString(item.path),
    head: Array.isArray(item.head) ? item.head.map(line => asString(line)) : []
  }));
}

/** A relative path without `..` segments or a scheme, else '' (saved notebooks are untrusted). */
function relativePath(path: string): string {
  if (!path || path.startsWith('/') || /^[a-z][a-z0-9+.-]*:/i.test(path)) {
    return '';
  }
  return path.split('/').some(part => part === '..') ? '' : path;
}

/** Build the run view from the MIME data (with its varying part merged back). */
export function toRunView(data: unknown): IRunView {
  if (!isObject(data)) {
    return invalid('The run data is not a JSON object.');
  }
  if (!isObject(data.result)) {
    return invalid('The run data has no result.');
  }
  const result = data.result;
  const version = asNumber(data.version, 1);
  const entries = Array.isArray(data.timeline)
    ? data.timeline.map(readEntry)
    : timelineOfResult(result);
  const status = asString(result.status, 'unknown');
  const [statusLabel, severity] = describeStatus(status);
  const calls = entries.filter(e => e.kind === 'call');
  const rounds = asNumber(
    result.rounds,
    Math.max(0, ...calls.map(c => (c.kind === 'call' ? c.round : 0)))
  );

  const facts: string[] = [];
  const duration = asNumber(result.duration, -1);
  if (duration >= 0) {
    facts.push(formatDuration(duration));
  }
  facts.push(plural(calls.length, 'tool call'));
  if (rounds > 1) {
    facts.push(plural(rounds, 'round'));
  }
  const backend = asString(result.backend);
  const isolation = asString(result.isolation);
  if (backend) {
    facts.push(isolation ? `${backend} (isolation: ${isolation})` : backend);
  }

  const warnings: string[] = [];
  if (version > SUPPORTED_VERSION) {
    warnings.push(
      `This run was saved by a newer codemode-jupyter (format ${version}); some details may be missing.`
    );
  }
  const given = Array.isArray(data.warnings)
    ? data.warnings.map(w => asString(w)).filter(w => w)
    : [];
  warnings.push(...given);
  if (!given.length && isolation === 'none') {
    warnings.push('The program ran without sandbox isolation.');
  }
  const displaysDropped = asNumber(result.displays_dropped);
  if (displaysDropped) {
    warnings.push(
      `${plural(displaysDropped, 'display')} went over the display limits and were not kept.`
    );
  }
  if (result.state_lost === true) {
    warnings.push(
      'The sandbox runtime was replaced: variables from earlier cells are gone.'
    );
  }
  if (Array.isArray(data.timeline)) {
    // Version 1 shows dropped output as gaps in its timeline already.
    for (const stream of ['stdout', 'stderr']) {
      const dropped = asNumber(result[`${stream}_dropped`]);
      if (dropped) {
        warnings.push(
          `${plural(dropped, 'character')} of ${stream} went over the output limit and were not kept.`
        );
      }
    }
  }

  const valueRepr = result.value_repr;
  let value = '';
  if (typeof valueRepr === 'string') {
    value = valueRepr === 'None' ? '' : valueRepr;
  } else if (result.value !== undefined && result.value !== null) {
    value = pyValue(result.value);
  }

  return {
    valid: true,
    problem: '',
    status,
    statusLabel,
    severity,
    live: status === 'running',
    facts,
    warnings,
    code: asString(data.code),
    entries,
    value,
    error: status === 'ok' ? null : asError(result.error),
    callCount: calls.length,
    artifacts: readArtifacts(result.artifacts),
    artifactsLeft: Array.isArray(result.artifacts_left)
      ? result.artifacts_left.map(item => asString(item)).filter(item => item)
      : [],
    agent: readAgent(data.agent)
  };
}
