/**
 * Pure logic: turn an `application/vnd.codemode.run+json` payload into a card model.
 *
 * Nothing here touches the DOM or JupyterLab, so it is unit-tested with plain jest.
 * The payload comes from a saved notebook: treat every field as untrusted and possibly
 * missing (older or newer versions, hand-edited files), and never throw.
 */

/** The MIME type the kernel extension writes for each finished `%%codemode` cell. */
export const RUN_MIME_TYPE = 'application/vnd.codemode.run+json';

/** The payload version this renderer was written for. */
export const SUPPORTED_VERSION = 1;

/** An error as RunResult.to_dict() writes it. */
export interface IRunError {
  type: string;
  message: string;
  traceback?: string;
}

/** One tool call as RunResult.to_dict() writes it. */
export interface IToolCall {
  id: number;
  name: string;
  args: Record<string, unknown>;
  round: number;
  result: unknown;
  error: IRunError | null;
  duration: number;
}

/** A preview (a port the program serves). */
export interface IPreview {
  port: number;
  url: string;
}

/** RunResult.to_dict(). */
export interface IRunResult {
  ok: boolean;
  status: string;
  stdout: string;
  stderr: string;
  value: unknown;
  value_repr: string | null;
  error: IRunError | null;
  tool_calls: IToolCall[];
  rounds: number;
  previews: IPreview[];
  duration: number;
  state_lost: boolean;
  stdout_dropped: number;
  stderr_dropped: number;
  backend: string;
  isolation: string;
}

/** The whole MIME bundle value. */
export interface IRunPayload {
  version: number;
  code: string;
  result: IRunResult;
}

/** How a status is shown: its label and the severity that picks its colour. */
export type Severity = 'ok' | 'error' | 'warning';

/** One row of the tool-call timeline. */
export interface IToolCallRow {
  id: number;
  index: number;
  name: string;
  /** `name(a=1, b="x")`, truncated. */
  call: string;
  /** Pretty-printed arguments (full, for the expanded view). */
  argsText: string;
  ok: boolean;
  /** The result as JSON, or `ErrorType: message`; truncated. */
  outcome: string;
  /** The error's traceback when the tool raised. */
  traceback: string;
  round: number;
  duration: number;
  durationText: string;
  /** Start of the bar in the timeline, 0..1 of the run (cumulative tool time, estimated). */
  barStart: number;
  /** Width of the bar, 0..1 of the run. */
  barWidth: number;
}

/** A text section of the card (stdout, stderr, value, error). */
export interface ITextSection {
  kind: 'stdout' | 'stderr' | 'value' | 'error' | 'code';
  title: string;
  text: string;
  /** A note under the text (e.g. "1,024 characters dropped"). */
  note?: string;
}

/** Everything the card shows, already formatted. */
export interface ICardModel {
  valid: boolean;
  /** Why the payload could not be shown, when `valid` is false. */
  problem?: string;
  status: string;
  statusLabel: string;
  severity: Severity;
  /** Short facts shown next to the status: duration, tool calls, rounds, backend. */
  facts: string[];
  /** Warnings shown under the header (state lost, unknown version). */
  warnings: string[];
  code: string;
  sections: ITextSection[];
  toolCalls: IToolCallRow[];
  previews: IPreview[];
}

const STATUS_LABELS: Record<string, [string, Severity]> = {
  ok: ['ok', 'ok'],
  error: ['error', 'error'],
  timeout: ['timed out', 'error'],
  interrupted: ['interrupted', 'warning'],
  crashed: ['runtime crashed', 'error'],
  limit: ['tool-call limit reached', 'error']
};

/** Longest text kept for a value inside one line (call arguments, results). */
export const INLINE_LIMIT = 200;

/** Longest text kept for a block (stdout, a tool result in full). */
export const BLOCK_LIMIT = 100_000;

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

/** Shorten text to `limit` characters, marking the cut. */
export function truncate(text: string, limit: number): string {
  if (text.length <= limit) {
    return text;
  }
  const dropped = text.length - limit;
  return `${text.slice(0, limit)}… (${formatCount(dropped)} more characters)`;
}

/** 1234567 -> "1,234,567" (no locale dependence, so tests are stable). */
export function formatCount(n: number): string {
  const sign = n < 0 ? '-' : '';
  const digits = Math.abs(Math.trunc(n)).toString();
  return sign + digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** Seconds -> a short human duration: "850 µs", "12.3 ms", "1.24 s", "2 min 5 s". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 0.001) {
    return `${Math.round(seconds * 1e6)} µs`;
  }
  if (seconds < 1) {
    const ms = seconds * 1000;
    return `${ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)} ms`;
  }
  if (seconds < 60) {
    return `${seconds < 10 ? seconds.toFixed(2) : seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  const rest = Math.round(seconds - minutes * 60);
  return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
}

/** A JSON-ish value as compact text; never throws (cycles, BigInt, undefined). */
export function formatValue(value: unknown, indent?: number): string {
  if (value === undefined) {
    return 'undefined';
  }
  try {
    const text = JSON.stringify(value, null, indent);
    return text === undefined ? String(value) : text;
  } catch {
    return String(value);
  }
}

/** `name(a=1, b="x")`, like the Python call the program made. */
export function formatCall(name: string, args: unknown): string {
  let inner = '';
  if (isObject(args)) {
    inner = Object.entries(args)
      .map(([key, value]) => `${key}=${formatValue(value)}`)
      .join(', ');
  } else if (Array.isArray(args)) {
    inner = args.map(value => formatValue(value)).join(', ');
  } else if (args !== undefined && args !== null) {
    inner = formatValue(args);
  }
  return `${name}(${inner})`;
}

/** The URL if it is a plain http(s) link, else '' (saved notebooks are untrusted). */
export function safeUrl(url: string): string {
  return /^https?:\/\//i.test(url.trim()) ? url.trim() : '';
}

/** "ErrorType: message" (or just the type). */
export function formatError(error: IRunError): string {
  return error.message ? `${error.type}: ${error.message}` : error.type;
}

/** Status label and severity; unknown statuses are shown as they are. */
export function describeStatus(status: string): [string, Severity] {
  return STATUS_LABELS[status] ?? [status || 'unknown', 'warning'];
}

function plural(n: number, word: string): string {
  return `${formatCount(n)} ${word}${n === 1 ? '' : 's'}`;
}

/** Normalise one tool call from untrusted JSON. */
function readToolCall(value: unknown, index: number): IToolCall {
  const data = isObject(value) ? value : {};
  return {
    id: asNumber(data.id, index + 1),
    name: asString(data.name, '?'),
    args: isObject(data.args) ? data.args : {},
    round: asNumber(data.round),
    result: data.result,
    error: asError(data.error),
    duration: asNumber(data.duration)
  };
}

/** Normalise a RunResult from untrusted JSON (missing fields get neutral defaults). */
export function readRunResult(value: unknown): IRunResult {
  const data = isObject(value) ? value : {};
  const error = asError(data.error);
  const status = asString(data.status, data.ok === false ? 'error' : 'ok');
  return {
    ok: typeof data.ok === 'boolean' ? data.ok : status === 'ok',
    status,
    stdout: asString(data.stdout),
    stderr: asString(data.stderr),
    value: data.value,
    value_repr:
      typeof data.value_repr === 'string' ? (data.value_repr as string) : null,
    error,
    tool_calls: Array.isArray(data.tool_calls)
      ? data.tool_calls.map(readToolCall)
      : [],
    rounds: asNumber(data.rounds),
    previews: Array.isArray(data.previews)
      ? data.previews.filter(isObject).map(p => ({
          port: asNumber(p.port),
          url: asString(p.url)
        }))
      : [],
    duration: asNumber(data.duration),
    state_lost: data.state_lost === true,
    stdout_dropped: asNumber(data.stdout_dropped),
    stderr_dropped: asNumber(data.stderr_dropped),
    backend: asString(data.backend),
    isolation: asString(data.isolation)
  };
}

/** Rows of the tool-call timeline, with bars laid out along the run's duration. */
export function toolCallRows(
  calls: IToolCall[],
  runDuration: number
): IToolCallRow[] {
  const toolTime = calls.reduce((sum, call) => sum + call.duration, 0);
  // The payload has no start times: lay the calls out one after another, spread over
  // the run. Bars are proportional to each call's share of the run's time.
  const total = Math.max(runDuration, toolTime, 1e-9);
  const gap = calls.length ? (total - toolTime) / (calls.length + 1) : 0;
  let cursor = gap;
  return calls.map((call, index) => {
    const start = cursor / total;
    const width = call.duration / total;
    cursor += call.duration + gap;
    const outcome = call.error
      ? formatError(call.error)
      : formatValue(call.result);
    return {
      id: call.id,
      index: index + 1,
      name: call.name,
      call: truncate(formatCall(call.name, call.args), INLINE_LIMIT),
      argsText: truncate(formatValue(call.args, 2), BLOCK_LIMIT),
      ok: call.error === null,
      outcome: truncate(outcome, INLINE_LIMIT),
      traceback: call.error?.traceback ?? '',
      round: call.round,
      duration: call.duration,
      durationText: formatDuration(call.duration),
      barStart: Math.min(Math.max(start, 0), 1),
      barWidth: Math.min(Math.max(width, 0), 1)
    };
  });
}

function droppedNote(dropped: number): string | undefined {
  return dropped > 0
    ? `${formatCount(dropped)} characters dropped (output limit)`
    : undefined;
}

/** Check the MIME data's shape; returns the problem, or null when it can be shown. */
export function payloadProblem(data: unknown): string | null {
  if (!isObject(data)) {
    return 'The run data is not a JSON object.';
  }
  if (!isObject(data.result)) {
    return 'The run data has no result.';
  }
  return null;
}

/**
 * Put back what the kernel keeps out of the compared output data.
 *
 * The output's `data` holds only what is the same on every run (nbval compares it); the
 * timings, backend, isolation, previews and tracebacks live in the output's `metadata`
 * under the same MIME type, with the same shape: `{"result": {...varying}}`. Keys of the
 * varying result replace the stable ones, except `tool_calls`, merged call by call.
 */
export function mergeVarying(data: unknown, metadata: unknown): unknown {
  if (!isObject(data) || !isObject(metadata) || !isObject(metadata.result)) {
    return data;
  }
  const stable = isObject(data.result) ? data.result : {};
  const merged: Record<string, unknown> = { ...stable };
  for (const [key, value] of Object.entries(metadata.result)) {
    if (key === 'tool_calls') {
      const calls = Array.isArray(stable.tool_calls) ? stable.tool_calls : [];
      const extras = Array.isArray(value) ? value : [];
      merged.tool_calls = calls.map((call, index) =>
        isObject(call) && isObject(extras[index])
          ? { ...call, ...(extras[index] as Record<string, unknown>) }
          : call
      );
    } else {
      merged[key] = value;
    }
  }
  return { ...data, result: merged };
}

/** Build the card model from the MIME bundle's JSON value. */
export function toCardModel(data: unknown): ICardModel {
  const problem = payloadProblem(data);
  if (problem !== null) {
    return {
      valid: false,
      problem,
      status: 'unknown',
      statusLabel: 'unreadable run',
      severity: 'warning',
      facts: [],
      warnings: [],
      code: '',
      sections: [],
      toolCalls: [],
      previews: []
    };
  }
  const payload = data as Record<string, unknown>;
  const result = readRunResult(payload.result);
  const version = asNumber(payload.version, SUPPORTED_VERSION);
  const [statusLabel, severity] = describeStatus(result.status);

  const facts: string[] = [];
  if (result.duration > 0) {
    facts.push(formatDuration(result.duration));
  }
  facts.push(plural(result.tool_calls.length, 'tool call'));
  if (result.rounds > 1) {
    facts.push(plural(result.rounds, 'round'));
  }
  if (result.backend) {
    facts.push(
      result.isolation
        ? `${result.backend} (isolation: ${result.isolation})`
        : result.backend
    );
  }

  const warnings: string[] = [];
  if (version > SUPPORTED_VERSION) {
    warnings.push(
      `This run was saved by a newer codemode-jupyter (format ${version}); some details may be missing.`
    );
  }
  if (result.state_lost) {
    warnings.push(
      'The sandbox runtime was replaced: variables from earlier cells are gone.'
    );
  }
  if (result.isolation === 'none') {
    warnings.push('The program ran without sandbox isolation.');
  }

  const sections: ITextSection[] = [];
  const streams = [
    ['stdout', result.stdout, result.stdout_dropped],
    ['stderr', result.stderr, result.stderr_dropped]
  ] as const;
  for (const [kind, text, dropped] of streams) {
    if (text || dropped) {
      sections.push({
        kind,
        title: kind,
        text: truncate(text, BLOCK_LIMIT),
        note: droppedNote(dropped)
      });
    }
  }
  const valueText =
    result.value_repr ??
    (result.value === undefined || result.value === null
      ? ''
      : formatValue(result.value, 2));
  if (valueText) {
    sections.push({
      kind: 'value',
      title: 'value',
      text: truncate(valueText, BLOCK_LIMIT)
    });
  }
  if (result.error) {
    sections.push({
      kind: 'error',
      title: formatError(result.error),
      text: truncate(result.error.traceback || '', BLOCK_LIMIT)
    });
  }

  return {
    valid: true,
    status: result.status,
    statusLabel,
    severity,
    facts,
    warnings,
    code: asString(payload.code),
    sections,
    toolCalls: toolCallRows(result.tool_calls, result.duration),
    previews: result.previews
      .map(p => ({ port: p.port, url: safeUrl(p.url) }))
      .filter(p => p.url || p.port)
  };
}
