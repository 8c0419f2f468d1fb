/**
 * The one renderer of a run: header, then the timeline in the order things happened (output,
 * tool calls, displays, previews), then the files it brought back and the ending. The
 * notebook output (live and saved) and the Tools panel both draw runs with it.
 *
 * Only `textContent` and attributes are set (never innerHTML): a saved notebook and the
 * program's output are untrusted. Displays are drawn by the host (JupyterLab's own renderers,
 * see displays.ts), which knows about trust. No JupyterLab imports, so jsdom tests can use it.
 */
import { artifactsSection, FileUrl } from './artifacts';
import { clip, formatCount, formatDuration } from './format';
import {
  Entry,
  formatError,
  IAgentInfo,
  IApproval,
  IDisplayEntry,
  IRunView,
  toRunView
} from './model';

/** The DOM event an agent run's "Insert as cell" button sends (it bubbles to the notebook,
 * whose plugin inserts the cell below the one that holds the button). */
export const INSERT_CELL_EVENT = 'codemode:insert-cell';

/** What {@link INSERT_CELL_EVENT} carries. */
export interface IInsertCellDetail {
  /** The cell's source: `%%codemode --session NAME` and the agent's program. */
  source: string;
}

/** The cell that reruns an agent's program in the agent's session. */
export function agentCellSource(code: string, session: string): string {
  const name = /^[A-Za-z0-9_.-]+$/.test(session) ? session : 'agent';
  return `%%codemode --session ${name}\n${code.replace(/\n+$/, '')}\n`;
}

/** Characters of a call's arguments or result shown on its row; a click shows them all. */
export const INLINE_LIMIT = 120;

/** Options for {@link renderRunView}. */
export interface IRenderOptions {
  /** Show the program's code (collapsed). The notebook output leaves it out: the cell has it. */
  showCode?: boolean;
  /** Show the run's error. A notebook cell leaves it to the red traceback below. */
  showError?: boolean;
  /** Show the value. A notebook cell leaves it to Out[n]. */
  showValue?: boolean;
  /** Keys of the `details` to draw open (what the user opened before a redraw). */
  open?: ReadonlySet<string>;
  /** Draws displays and resolves file links; without it a display shows its text. */
  host?: IRichHost;
  /** Prefix of the display keys (the Tools panel draws many runs with one host). */
  keyPrefix?: string;
}

/** What the card needs from JupyterLab to show rich output (see displays.ts). */
export interface IRichHost {
  /**
   * A node showing the display, or null to fall back to its text. `key` names the entry's
   * place: the same key with the same bundle may return the node of the last redraw.
   */
  display(entry: IDisplayEntry, key: string): HTMLElement | null;
  /** The URL that opens a file at a path relative to the notebook. */
  fileUrl?: FileUrl;
}

type Child = Node | string | null | undefined | false;

/** Create an element with classes and children (strings become text nodes). */
export function el(
  doc: Document,
  tag: string,
  className?: string,
  ...children: Child[]
): HTMLElement {
  const node = doc.createElement(tag);
  if (className) {
    node.className = className;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.appendChild(
      typeof child === 'string' ? doc.createTextNode(child) : child
    );
  }
  return node;
}

/** Keys of the open `details` under `root`, to keep them open across a redraw. */
export function openKeys(root: Element): Set<string> {
  const keys = new Set<string>();
  root.querySelectorAll('details[open][data-key]').forEach(node => {
    keys.add((node as HTMLElement).dataset.key ?? '');
  });
  return keys;
}

function details(
  doc: Document,
  className: string,
  key: string,
  open: ReadonlySet<string> | undefined,
  summary: HTMLElement,
  ...body: Child[]
): HTMLElement {
  const node = el(doc, 'details', className, summary, ...body);
  node.dataset.key = key;
  if (open?.has(key)) {
    node.setAttribute('open', '');
  }
  return node;
}

const MARKS: Record<string, string> = {
  running: '…',
  waiting: '⏸',
  ok: '✓',
  error: '✗',
  cancelled: '⊘'
};

/** Who decided, as a call row says it. */
const DECIDERS: Record<string, string> = {
  notebook: 'in the notebook',
  cell: "at the cell's prompt",
  timeout: 'by the timeout',
  client: "in the agent's client",
  'run ended': 'as the run ended'
};

/** A decided approval in words: `approved in the notebook`, `rejected …: reason`. */
export function approvalText(approval: IApproval): string {
  const who = DECIDERS[approval.by] ?? (approval.by ? `by ${approval.by}` : '');
  const said: Record<string, string> = {
    approve: 'approved',
    reject: 'rejected',
    return: 'answered with a stand-in value',
    waiting: 'waiting for approval'
  };
  const text = [said[approval.decision] ?? approval.decision, who]
    .filter(part => part)
    .join(' ');
  return approval.reason ? `${text}: ${approval.reason}` : text;
}

type CallEntry = Extract<Entry, { kind: 'call' }>;

/** What the row says after the call: its result, its error, or where it is. */
function callOutcome(entry: CallEntry): string {
  if (entry.state === 'ok' && entry.approval?.standIn) {
    return `${clip(entry.result, INLINE_LIMIT)}, tool not run`;
  }
  if (entry.state === 'ok') {
    return clip(entry.result, INLINE_LIMIT);
  }
  if (entry.state === 'error' && entry.error) {
    return clip(formatError(entry.error), INLINE_LIMIT);
  }
  return entry.state === 'waiting' ? 'waiting for approval' : entry.state;
}

function callEntry(
  doc: Document,
  entry: CallEntry,
  options: IRenderOptions
): HTMLElement {
  const standIn = entry.state === 'ok' && !!entry.approval?.standIn;
  const outcome = callOutcome(entry);
  const took = entry.duration !== null ? formatDuration(entry.duration) : '';
  const decided =
    entry.approval && entry.approval.decision !== 'waiting'
      ? el(doc, 'span', 'codemode-CallApproval', approvalText(entry.approval))
      : null;
  // The call and its outcome flow as one line of text that wraps where it must, so the
  // row stays readable in a narrow sidebar; the mark and the duration keep their columns.
  const summary = el(
    doc,
    'summary',
    'codemode-CallSummary',
    el(
      doc,
      'span',
      'codemode-CallMark',
      standIn ? '=' : (MARKS[entry.state] ?? '?')
    ),
    el(
      doc,
      'span',
      'codemode-CallLine',
      el(
        doc,
        'code',
        'codemode-CallText',
        el(doc, 'span', 'codemode-CallName', entry.name),
        `(${clip(entry.args, INLINE_LIMIT)})`
      ),
      entry.state === 'ok'
        ? el(doc, 'span', 'codemode-CallArrow', standIn ? ' = ' : ' → ')
        : ' ',
      el(doc, 'code', 'codemode-CallOutcome', outcome),
      decided ? ' ' : null,
      decided
    ),
    el(doc, 'span', 'codemode-CallDuration', took)
  );
  const body = el(
    doc,
    'div',
    'codemode-CallBody',
    el(doc, 'div', 'codemode-SectionTitle', 'arguments'),
    el(doc, 'pre', 'codemode-Pre', entry.args || '(none)'),
    entry.state === 'ok'
      ? el(
          doc,
          'div',
          'codemode-SectionTitle',
          standIn ? 'stand-in value (the tool did not run)' : 'result'
        )
      : null,
    entry.state === 'ok' ? el(doc, 'pre', 'codemode-Pre', entry.result) : null,
    entry.error
      ? el(
          doc,
          'div',
          'codemode-SectionTitle codemode-ErrorTitle',
          formatError(entry.error)
        )
      : null,
    entry.error?.traceback
      ? el(doc, 'pre', 'codemode-Pre codemode-Traceback', entry.error.traceback)
      : null,
    el(
      doc,
      'div',
      'codemode-Note',
      [
        `call ${entry.id} · round ${entry.round}`,
        entry.waited !== null
          ? `waited ${formatDuration(entry.waited)} for a decision`
          : ''
      ]
        .filter(part => part)
        .join(' · ')
    )
  );
  const item = el(
    doc,
    'li',
    `codemode-ToolCall codemode-ToolCall-${entry.state}`,
    details(
      doc,
      'codemode-CallDetails',
      `call-${entry.id}`,
      options.open,
      summary,
      body
    )
  );
  item.dataset.tool = entry.name;
  item.dataset.state = entry.state;
  if (entry.approval) {
    item.dataset.approval = standIn ? 'stand-in' : entry.approval.decision;
  }
  return item;
}

function displayEntry(
  doc: Document,
  entry: IDisplayEntry,
  key: string,
  options: IRenderOptions
): HTMLElement {
  const item = el(doc, 'li', 'codemode-Display');
  if (entry.omitted) {
    // A live update leaves older displays out; the finished run has them all.
    item.dataset.omitted = String(entry.omitted);
    item.append(
      el(doc, 'pre', 'codemode-Pre', entry.text),
      el(
        doc,
        'div',
        'codemode-Note',
        `(${formatCount(entry.omitted)} characters of this display are shown when the run ends)`
      )
    );
    return item;
  }
  const rendered = options.host?.display(entry, key) ?? null;
  item.appendChild(rendered ?? el(doc, 'pre', 'codemode-Pre', entry.text));
  return item;
}

function entryNode(
  doc: Document,
  entry: Entry,
  index: number,
  options: IRenderOptions
): HTMLElement {
  switch (entry.kind) {
    case 'output': {
      const printed = entry.call !== undefined;
      const item = el(
        doc,
        'li',
        `codemode-Output codemode-Output-${entry.stream}` +
          (printed ? ' codemode-ToolPrint' : ''),
        el(doc, 'pre', 'codemode-Pre', entry.text.replace(/\n$/, ''))
      );
      item.dataset.stream = entry.stream;
      if (printed) {
        // Under its call: printed by the tool on the host, while the call ran.
        item.dataset.call = String(entry.call);
        item.title = `printed by the tool of call ${entry.call}, on the host`;
      }
      return item;
    }
    case 'call':
      return callEntry(doc, entry, options);
    case 'preview': {
      const label = `preview: port ${entry.port}`;
      let content: Node = doc.createTextNode(label);
      if (entry.url) {
        const link = el(doc, 'a', '', `↗ ${label}`);
        link.setAttribute('href', entry.url);
        link.setAttribute('target', '_blank');
        link.setAttribute('rel', 'noopener noreferrer');
        link.title = entry.url;
        content = link;
      }
      return el(doc, 'li', 'codemode-Preview', content);
    }
    case 'gap':
      return el(
        doc,
        'li',
        'codemode-Gap',
        `… ${formatCount(entry.chars)} characters of output not shown here …`
      );
    case 'display':
      return displayEntry(
        doc,
        entry,
        `${options.keyPrefix ?? ''}display-${index}`,
        options
      );
    default:
      return el(
        doc,
        'li',
        'codemode-Note',
        `(an entry of kind "${entry.name}" this version cannot show)`
      );
  }
}

/** The view of a run. */
export function renderRunView(
  doc: Document,
  view: IRunView,
  options: IRenderOptions = {}
): HTMLElement {
  const card = el(
    doc,
    'div',
    `codemode-RunCard codemode-RunCard-${view.severity}`
  );
  card.dataset.status = view.status;
  card.appendChild(
    el(
      doc,
      'div',
      'codemode-RunHeader',
      el(
        doc,
        'span',
        `codemode-Badge codemode-Badge-${view.severity}`,
        view.statusLabel
      ),
      el(
        doc,
        'span',
        'codemode-RunTitle',
        view.agent
          ? `agent run ${view.agent.run} (session ${view.agent.session})`
          : 'Code Mode'
      ),
      el(doc, 'span', 'codemode-Facts', view.facts.join(' · ')),
      view.agent ? insertButton(doc, view.code, view.agent) : null
    )
  );
  if (view.agent) {
    card.dataset.agentRun = String(view.agent.run);
    if (view.agent.record) {
      card.dataset.agentRecord = 'true';
    }
  }
  const record = view.agent?.record === true;
  if (!view.valid) {
    card.appendChild(el(doc, 'div', 'codemode-Warning', view.problem));
    return card;
  }
  for (const warning of view.warnings) {
    card.appendChild(el(doc, 'div', 'codemode-Warning', warning));
  }
  if (record && view.code) {
    card.appendChild(
      section(
        doc,
        'program',
        'program',
        el(doc, 'pre', 'codemode-Pre', view.code.replace(/\n+$/, ''))
      )
    );
  }
  if (options.showCode && view.code) {
    const code = view.code.replace(/\n+$/, '');
    const lines = code.split('\n').length;
    card.appendChild(
      details(
        doc,
        'codemode-Code',
        'code',
        options.open,
        el(doc, 'summary', '', `code (${lines} line${lines === 1 ? '' : 's'})`),
        el(doc, 'pre', 'codemode-Pre', code)
      )
    );
  }
  if (view.entries.length) {
    const list = el(doc, 'ol', 'codemode-Timeline');
    view.entries.forEach((entry, index) => {
      list.appendChild(entryNode(doc, entry, index, options));
    });
    card.appendChild(list);
  }
  const files = artifactsSection(
    doc,
    view.artifacts,
    view.artifactsLeft,
    options.host?.fileUrl
  );
  if (files) {
    card.appendChild(files);
  }
  if (record && view.agent?.toolOutput.length) {
    const printed = el(doc, 'pre', 'codemode-Pre');
    printed.textContent = view.agent.toolOutput.map(part => part.text).join('');
    card.appendChild(
      section(doc, 'tool-output', 'printed by the tools on the host', printed)
    );
  }
  if ((options.showValue || record) && view.value) {
    card.appendChild(
      section(doc, 'value', 'value', el(doc, 'pre', 'codemode-Pre', view.value))
    );
  }
  if ((options.showError || record) && view.error) {
    const trace = view.error.traceback
      ? el(doc, 'pre', 'codemode-Pre', view.error.traceback)
      : null;
    card.appendChild(section(doc, 'error', formatError(view.error), trace));
  }
  return card;
}

/** "Insert as cell": the agent's program becomes a `%%codemode --session NAME` cell below. */
function insertButton(
  doc: Document,
  code: string,
  agent: IAgentInfo
): HTMLElement {
  const button = el(doc, 'button', 'codemode-InsertCell', 'Insert as cell');
  button.setAttribute('type', 'button');
  button.title = `Insert the agent's program below, as a %%codemode --session ${agent.session} cell`;
  button.addEventListener('click', event => {
    event.preventDefault();
    const detail: IInsertCellDetail = {
      source: agentCellSource(code, agent.session)
    };
    button.dispatchEvent(
      new CustomEvent(INSERT_CELL_EVENT, { bubbles: true, detail })
    );
  });
  return button;
}

/** A titled section of the card (`data-kind` says which, for styles and tests). */
function section(
  doc: Document,
  kind: string,
  title: string,
  body: HTMLElement | null
): HTMLElement {
  const node = el(
    doc,
    'div',
    `codemode-Section codemode-Section-${kind}`,
    el(doc, 'div', 'codemode-SectionTitle', title),
    body
  );
  node.dataset.kind = kind;
  return node;
}

/** The view of a run from raw MIME data (its varying part already merged back). */
export function renderRun(
  doc: Document,
  data: unknown,
  options: IRenderOptions = {}
): HTMLElement {
  return renderRunView(doc, toRunView(data), options);
}
