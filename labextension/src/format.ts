/**
 * One text format for every view: durations, counts, Python-literal values, clipping.
 *
 * The one place the extension writes a value, a duration or an error as text. The rules
 * mirror codemode_jupyter/model/format.py, which writes the terminal view, the transcripts
 * and the fallbacks; the saved timeline already holds arguments and results as Python
 * literals.
 */

/** 1234567 -> "1,234,567" (no locale dependence, so tests are stable). */
export function formatCount(n: number): string {
  const sign = n < 0 ? '-' : '';
  const digits = Math.abs(Math.trunc(n)).toString();
  return sign + digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** `1 tool call`, `2 tool calls`. */
export function plural(n: number, word: string): string {
  return `${formatCount(n)} ${word}${n === 1 ? '' : 's'}`;
}

/** Seconds -> "850 µs", "12.3 ms", "154 ms", "1.23 s", "12.5 s", "2 min 5 s". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 0.001) {
    return `${Math.round(seconds * 1e6)} µs`;
  }
  if (seconds < 1) {
    const ms = seconds * 1000;
    return `${ms.toFixed(ms < 10 ? 2 : ms < 100 ? 1 : 0)} ms`;
  }
  if (seconds < 60) {
    return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  const rest = Math.round(seconds - minutes * 60);
  return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
}

/** "ErrorType: message" (or just the type). */
export function formatError(error: { type: string; message: string }): string {
  return error.message ? `${error.type}: ${error.message}` : error.type;
}

const BOUNDARY = ' ,;)]}';

/**
 * `text` cut to at most `limit` characters, at a boundary (a space or punctuation) in the
 * last quarter when there is one, ending in `…`. Returns the text unchanged when it fits.
 */
export function clip(text: string, limit: number): string {
  if (text.length <= limit) {
    return text;
  }
  let cut = Math.max(limit - 1, 1);
  const lowest = Math.max(Math.floor((cut * 3) / 4), 1);
  for (let index = cut; index >= lowest; index--) {
    if (BOUNDARY.includes(text[index - 1])) {
      cut = index;
      break;
    }
  }
  return `${text.slice(0, cut).trimEnd()}…`;
}

/** A Python string literal, quoted as Python's repr quotes it. */
export function pyString(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = '';
  for (const ch of text) {
    if (ch === '\\') {
      out += '\\\\';
    } else if (ch === quote) {
      out += `\\${ch}`;
    } else if (ch === '\n') {
      out += '\\n';
    } else if (ch === '\r') {
      out += '\\r';
    } else if (ch === '\t') {
      out += '\\t';
    } else if (ch < ' ') {
      out += `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`;
    } else {
      out += ch;
    }
  }
  return quote + out + quote;
}

/**
 * A JSON value as the Python program sees it: `{'city': 'Paris', 'ok': True}`.
 * Used for runs saved before the timeline held Python reprs (payload version 1).
 */
export function pyValue(value: unknown, depth = 0): string {
  if (value === null || value === undefined) {
    return 'None';
  }
  if (value === true) {
    return 'True';
  }
  if (value === false) {
    return 'False';
  }
  if (typeof value === 'string') {
    return pyString(value);
  }
  if (typeof value === 'number') {
    return Number.isFinite(value) ? String(value) : 'nan';
  }
  if (depth > 20) {
    return '...';
  }
  if (Array.isArray(value)) {
    return `[${value.map(item => pyValue(item, depth + 1)).join(', ')}]`;
  }
  if (typeof value === 'object') {
    const items = Object.entries(value as Record<string, unknown>).map(
      ([key, item]) => `${pyString(key)}: ${pyValue(item, depth + 1)}`
    );
    return `{${items.join(', ')}}`;
  }
  return String(value);
}

/** `a=1, b='x'`: keyword arguments as the program wrote them. */
export function pyArgs(args: unknown): string {
  if (typeof args === 'object' && args !== null && !Array.isArray(args)) {
    return Object.entries(args as Record<string, unknown>)
      .map(([key, value]) => `${key}=${pyValue(value)}`)
      .join(', ');
  }
  if (Array.isArray(args)) {
    return args.map(value => pyValue(value)).join(', ');
  }
  return args === undefined || args === null ? '' : pyValue(args);
}
