/**
 * The front-end side of the `codemode.tools` comm protocol (docs/ARCHITECTURE.md).
 *
 * Pure logic over a minimal comm interface, so it is unit-tested with a fake comm; the
 * Tools panel wires it to a real kernel comm.
 */
import { asString, isObject } from './model';

/** The part of a kernel comm the client needs. */
export interface ICommLike {
  send(data: Record<string, unknown>): void;
  close(): void;
}

/** A tool as the kernel lists it. */
export interface IToolInfo {
  name: string;
  signature: string;
  doc: string;
  is_async: boolean;
  schema: Record<string, unknown> | null;
}

/** A recent run as the kernel lists it: the run payload and where it ran. */
export interface IRunRecord {
  code: string;
  /** The whole run+json payload (version 2: timeline and result), nothing split off. */
  payload: Record<string, unknown>;
  /** The cell's execution count, to find the cell; null if unknown. */
  executionCount: number | null;
  /** When the run finished, in seconds since the epoch; null if unknown. */
  finishedAt: number | null;
  /** Who ran it: a notebook cell, or an agent through `%codemode serve`. */
  source: 'cell' | 'agent' | 'map';
}

/** The reply to a `call`. */
export interface ICallResult {
  request_id: string;
  ok: boolean;
  result: unknown;
  error: { type: string; message: string; traceback: string } | null;
  duration: number;
  /** What the tool printed while it ran, in order. */
  output: { stream: 'stdout' | 'stderr'; text: string }[];
}

/**
 * Where the client stands:
 * - `detached`: no comm (no kernel yet, or the kernel is restarting);
 * - `connecting`: comm opened, no reply yet;
 * - `ready`: the kernel extension answers;
 * - `unavailable`: the kernel closed the comm (the extension is not loaded).
 */
export type ClientState = 'detached' | 'connecting' | 'ready' | 'unavailable';

/** The comm target the kernel extension registers. */
export const COMM_TARGET = 'codemode.tools';

/** The hint shown when the kernel does not answer on the comm. */
export const LOAD_HINT =
  'The Code Mode kernel extension is not loaded in this kernel. Run %load_ext codemode_jupyter in a cell.';

/** Normalise the kernel's tool list (untrusted shape). */
export function readTools(value: unknown): IToolInfo[] {
  if (!Array.isArray(value)) {
    return [];
  }
  return value.filter(isObject).map(tool => ({
    name: asString(tool.name),
    signature: asString(tool.signature),
    doc: asString(tool.doc),
    is_async: tool.is_async === true,
    schema: isObject(tool.schema) ? tool.schema : null
  }));
}

/** Normalise the kernel's run list (untrusted shape). */
export function readRuns(value: unknown): IRunRecord[] {
  if (!Array.isArray(value)) {
    return [];
  }
  return value.filter(isObject).map(run => ({
    code: asString(run.code),
    payload: run,
    executionCount:
      typeof run.execution_count === 'number' ? run.execution_count : null,
    finishedAt: typeof run.finished_at === 'number' ? run.finished_at : null,
    source: run.source === 'agent' || run.source === 'map' ? run.source : 'cell'
  }));
}

function readCallResult(data: Record<string, unknown>): ICallResult {
  const error = isObject(data.error)
    ? {
        type: asString(data.error.type) || 'Error',
        message: asString(data.error.message),
        traceback: asString(data.error.traceback)
      }
    : null;
  return {
    request_id: asString(data.request_id),
    ok: data.ok === true && error === null,
    result: data.result,
    error,
    duration: typeof data.duration === 'number' ? data.duration : 0,
    output: readPrinted(data.output)
  };
}

/** `[[stream, text], ...]` from the kernel, pairs that are not strings dropped. */
function readPrinted(value: unknown): ICallResult['output'] {
  if (!Array.isArray(value)) {
    return [];
  }
  return value
    .filter(
      (pair): pair is [string, string] =>
        Array.isArray(pair) &&
        typeof pair[0] === 'string' &&
        typeof pair[1] === 'string'
    )
    .map(([stream, text]) => ({
      stream: stream === 'stderr' ? 'stderr' : 'stdout',
      text
    }));
}

/** A placeholder value for a JSON-schema property, for the arguments template. */
function placeholder(schema: unknown): unknown {
  if (!isObject(schema)) {
    return null;
  }
  if ('default' in schema) {
    return schema.default;
  }
  if (Array.isArray(schema.enum) && schema.enum.length) {
    return schema.enum[0];
  }
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'string':
      return '';
    case 'integer':
    case 'number':
      return 0;
    case 'boolean':
      return false;
    case 'array':
      return [];
    case 'object':
      return {};
    default:
      // anyOf/oneOf (e.g. Optional[int]): use the first alternative.
      for (const key of ['anyOf', 'oneOf']) {
        const options = schema[key];
        if (Array.isArray(options) && options.length) {
          return placeholder(options[0]);
        }
      }
      return null;
  }
}

/** A JSON arguments template from a tool's parameters schema: `{"city": ""}`. */
export function argsTemplate(schema: Record<string, unknown> | null): string {
  const properties = schema && schema.properties;
  if (!isObject(properties)) {
    return '{}';
  }
  const args: Record<string, unknown> = {};
  for (const [name, property] of Object.entries(properties)) {
    args[name] = placeholder(property);
  }
  const text = JSON.stringify(args);
  return text.length > 60 ? JSON.stringify(args, null, 2) : text;
}

/** Parse the user's JSON arguments: an object, or an error message. */
export function parseArgs(
  text: string
): { args: Record<string, unknown> } | { error: string } {
  const trimmed = text.trim();
  if (!trimmed) {
    return { args: {} };
  }
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch (reason) {
    return { error: `Arguments are not valid JSON: ${asString(reason)}` };
  }
  if (!isObject(value)) {
    return {
      error:
        'Arguments must be a JSON object of keyword arguments, e.g. {"city": "Paris"}.'
    };
  }
  return { args: value };
}

interface IPending {
  resolve: (result: ICallResult) => void;
  reject: (reason: Error) => void;
}

/**
 * Keeps the tool list and recent runs of one kernel, and matches call replies to calls.
 */
export class ToolsClient {
  get state(): ClientState {
    return this._state;
  }

  get tools(): readonly IToolInfo[] {
    return this._tools;
  }

  get runs(): readonly IRunRecord[] {
    return this._runs;
  }

  /** Call `listener` on every change of state, tools or runs; returns an unsubscribe. */
  onChange(listener: () => void): () => void {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  /** Start talking over a freshly opened comm: ask for the tools and the runs. */
  attach(comm: ICommLike): void {
    this.detach();
    this._comm = comm;
    this._setState('connecting');
    this.refresh();
  }

  /** Forget the comm (kernel gone or restarting); pending calls fail. */
  detach(): void {
    const comm = this._comm;
    this._comm = null;
    this._failPending('The kernel connection was lost.');
    if (comm) {
      try {
        comm.close();
      } catch {
        // already closed or disposed
      }
    }
    this._tools = [];
    this._runs = [];
    this._setState('detached');
  }

  /** Ask the kernel again for its tools and runs. */
  refresh(): void {
    this._send({ op: 'list' });
    this._send({ op: 'runs' });
  }

  /** A message the kernel sent on the comm. */
  handleMessage(data: unknown): void {
    if (!isObject(data)) {
      return;
    }
    switch (data.op) {
      case 'tools':
        this._tools = readTools(data.tools);
        break;
      case 'runs':
        this._runs = readRuns(data.runs);
        break;
      case 'call_result': {
        const result = readCallResult(data);
        const pending = this._pending.get(result.request_id);
        if (pending) {
          this._pending.delete(result.request_id);
          pending.resolve(result);
        }
        break;
      }
      default:
        return;
    }
    if (this._state === 'connecting' || this._state === 'unavailable') {
      this._state = 'ready';
    }
    this._emit();
  }

  /** The kernel closed the comm: the extension is not loaded (or was unloaded). */
  handleClose(): void {
    this._comm = null;
    this._failPending('The kernel closed the tools connection.');
    this._tools = [];
    this._runs = [];
    this._setState('unavailable', true);
  }

  /** Call a tool in the kernel with keyword arguments. */
  call(name: string, args: Record<string, unknown>): Promise<ICallResult> {
    if (!this._comm || this._state !== 'ready') {
      return Promise.reject(
        new Error('The kernel is not ready for tool calls.')
      );
    }
    const requestId = `call-${++this._counter}-${Date.now().toString(36)}`;
    return new Promise<ICallResult>((resolve, reject) => {
      this._pending.set(requestId, { resolve, reject });
      try {
        this._send({ op: 'call', request_id: requestId, name, args });
      } catch (reason) {
        this._pending.delete(requestId);
        reject(reason instanceof Error ? reason : new Error(asString(reason)));
      }
    });
  }

  /** How many calls await a reply. */
  get pendingCalls(): number {
    return this._pending.size;
  }

  private _send(data: Record<string, unknown>): void {
    if (this._comm) {
      this._comm.send(data);
    }
  }

  private _failPending(message: string): void {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const { reject } of pending) {
      reject(new Error(message));
    }
  }

  private _setState(state: ClientState, force = false): void {
    if (this._state !== state || force) {
      this._state = state;
      this._emit();
    }
  }

  private _emit(): void {
    for (const listener of [...this._listeners]) {
      try {
        listener();
      } catch (reason) {
        console.error('codemode-jupyter: tools panel listener failed', reason);
      }
    }
  }

  private _comm: ICommLike | null = null;
  private _state: ClientState = 'detached';
  private _tools: IToolInfo[] = [];
  private _runs: IRunRecord[] = [];
  private _pending = new Map<string, IPending>();
  private _listeners = new Set<() => void>();
  private _counter = 0;
}
