/**
 * The serving cell of `%codemode serve`: its live feed and its saved record.
 *
 * The kernel draws the live feed as an ipywidgets box (runs, approval cards) and, over the
 * `codemode.feed` comm, sends each run's record: one output holding the run bundle. This
 * module writes those outputs into the serving cell (so the notebook saves them and draws
 * them again without a kernel) and draws the cell's feed display
 * (`application/vnd.codemode.feed+json`): the widget while the server runs in this kernel,
 * else a line saying it stopped, never a dead widget ("model not found"). While the feed is
 * live, the records are hidden (the widget shows the same runs; style/base.css).
 *
 * This module is the pure part (jest-tested); feed.ts holds what needs JupyterLab.
 */
import { isObject } from './model';

/** The serving cell's display of its feed (next to the widget's view). */
export const FEED_MIME_TYPE = 'application/vnd.codemode.feed+json';
/** ipywidgets' view of a widget. */
export const WIDGET_MIME_TYPE = 'application/vnd.jupyter.widget-view+json';
/** The comm the kernel opens per `%codemode serve`. */
export const FEED_COMM_TARGET = 'codemode.feed';

/** An output as nbformat has it (only what is read here). */
export interface IOutputLike {
  output_type: string;
  data?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
  [key: string]: unknown;
}

/** A `run` message of the feed comm. */
export interface IRunRecord {
  feed: string;
  run: number;
  outputs: IOutputLike[];
  keep: number[];
}

/** The feed and run an output is the record of (null: not a record of `feed`). */
export function recordOf(output: IOutputLike, feed: string): number | null {
  const mark = isObject(output.metadata) ? output.metadata.codemode_feed : null;
  if (!isObject(mark) || mark.feed !== feed || typeof mark.run !== 'number') {
    return null;
  }
  return mark.run;
}

/** The feed id a cell's outputs display (null: not a serving cell). */
export function feedOf(outputs: IOutputLike[]): string | null {
  for (const output of outputs) {
    const payload = isObject(output.data) ? output.data[FEED_MIME_TYPE] : null;
    if (isObject(payload) && typeof payload.feed === 'string') {
      return payload.feed;
    }
  }
  return null;
}

/**
 * The serving cell's outputs once `record` is applied: its own outputs first, as they are,
 * then one group per run (in the order the runs came), run `record.run`'s replaced, the runs
 * the feed no longer keeps left out.
 */
export function planRecords(
  current: IOutputLike[],
  record: IRunRecord
): IOutputLike[] {
  const own: IOutputLike[] = [];
  const groups = new Map<number, IOutputLike[]>();
  for (const output of current) {
    const run = recordOf(output, record.feed);
    if (run === null) {
      own.push(output);
    } else {
      groups.set(run, [...(groups.get(run) ?? []), output]);
    }
  }
  groups.set(record.run, record.outputs);
  const keep = new Set(record.keep);
  const kept = [...groups.entries()].filter(([run]) => keep.has(run));
  return [...own, ...kept.flatMap(([, outputs]) => outputs)];
}

/** The text of a serving cell whose server is not running here (saved, or stopped). */
export function stoppedText(payload: Record<string, unknown>): string {
  const lines = [
    'codemode: the MCP server of this cell is not running (%codemode serve starts one)'
  ];
  const list = (value: unknown): string =>
    Array.isArray(value) ? value.map(item => String(item)).join(', ') : '';
  const tools = list(payload.tools);
  if (tools) {
    lines.push(`tools agents could call: ${tools}`);
  }
  const approve = list(payload.approve);
  if (approve) {
    lines.push(`approval was asked for: ${approve}`);
  }
  return lines.join('\n');
}

/** What a cell output area offers to write outputs (IOutputAreaModel's part). */
export interface IOutputsLike {
  readonly length: number;
  toJSON(): IOutputLike[];
  set(index: number, output: IOutputLike): void;
  add(output: IOutputLike): number;
  remove(index: number): void;
}

/** Bring `model` to `wanted` with the fewest changes: outputs that stay the same are left
 * alone (the live widget among them keeps its view and what a person typed in it). */
export function applyOutputs(model: IOutputsLike, wanted: IOutputLike[]): void {
  const current = model.toJSON();
  wanted.forEach((output, index) => {
    if (index >= current.length) {
      model.add(output);
    } else if (JSON.stringify(current[index]) !== JSON.stringify(output)) {
      model.set(index, output);
    }
  });
  for (let index = current.length - 1; index >= wanted.length; index--) {
    model.remove(index);
  }
}

/** Which feeds are live in one notebook's kernel; `changed` fires when that changes. */
export class FeedState {
  isLive(feed: string): boolean {
    return this._live.has(feed);
  }

  setLive(feed: string, live: boolean): void {
    const was = this._live.has(feed);
    if (live) {
      this._live.add(feed);
    } else {
      this._live.delete(feed);
    }
    if (was !== live) {
      this._listeners.forEach(listener => listener());
    }
  }

  /** Every feed ended (the kernel restarted, changed or died). */
  clear(): void {
    const feeds = [...this._live];
    feeds.forEach(feed => this.setLive(feed, false));
  }

  /** Call `listener` on each change; returns what stops it. */
  listen(listener: () => void): () => void {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  private _live = new Set<string>();
  private _listeners = new Set<() => void>();
}
