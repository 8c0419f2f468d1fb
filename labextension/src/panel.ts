/**
 * The Tools panel: the tools the next `%%codemode` cell would get, a form to call each one
 * (built from its schema, or raw JSON), and the kernel's recent runs drawn by the same
 * renderer as the notebook's outputs. It follows the active notebook's
 * kernel and talks to the kernel extension over the `codemode.tools` comm.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { el, openKeys, renderRunView } from './card';
import { DisplayHost } from './displays';
import {
  argsTemplate,
  COMM_TARGET,
  ICallResult,
  IRunRecord,
  IToolInfo,
  LOAD_HINT,
  parseArgs,
  ToolsClient
} from './client';
import { checkArgs, FormValues, formFields, IField, readForm } from './form';
import { formatDuration, pyValue } from './format';
import { formatError, toRunView } from './model';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M8.6 16.6 4 12l4.6-4.6L7.2 6 1.2 12l6 6zm6.8 0L20 12l-4.6-4.6L16.8 6l6 6-6 6z"/>
    <path d="M13.4 4h-2.1l-2.7 16h2.1z"/>
  </g>
</svg>`;

/** The sidebar icon. */
export const codemodeIcon = new LabIcon({
  name: 'codemode-jupyter:tools',
  svgstr: ICON_SVG
});

/** Per-tool DOM kept across refreshes, so typed arguments and results survive. */
interface IToolView {
  node: HTMLElement;
  head: HTMLElement;
  doc: HTMLElement;
  /** One input per parameter. */
  form: HTMLElement;
  fields: IField[];
  inputs: Map<string, HTMLInputElement | HTMLTextAreaElement>;
  /** Raw JSON arguments, used when its section is open. */
  json: HTMLDetailsElement;
  args: HTMLTextAreaElement;
  result: HTMLElement;
  button: HTMLButtonElement;
  key: string;
  schema: Record<string, unknown> | null;
}

/** The Tools panel widget. */
export class ToolsPanel extends Widget {
  constructor(tracker: INotebookTracker) {
    super();
    this.id = 'codemode-tools';
    this.addClass('codemode-ToolsPanel');
    this.title.icon = codemodeIcon;
    this.title.caption = 'Code Mode tools';

    const doc = this.node.ownerDocument;
    this._refreshButton = el(
      doc,
      'button',
      'codemode-RefreshButton jp-mod-styled',
      'Refresh'
    ) as HTMLButtonElement;
    this._refreshButton.title = 'Ask the kernel again for its tools and runs';
    this._refreshButton.addEventListener('click', () => this._refresh());
    this._context = el(doc, 'div', 'codemode-PanelContext');
    this._status = el(doc, 'div', 'codemode-PanelStatus');
    this._toolCount = el(doc, 'span', 'codemode-Count');
    this._toolsEmpty = el(
      doc,
      'p',
      'codemode-Empty',
      'No tools yet. Functions defined in notebook cells become tools for the next %%codemode cell.'
    );
    this._toolList = el(doc, 'ul', 'codemode-ToolList');
    this._runCount = el(doc, 'span', 'codemode-Count');
    this._runsEmpty = el(
      doc,
      'p',
      'codemode-Empty',
      'No %%codemode runs yet in this kernel.'
    );
    this._runList = el(doc, 'ol', 'codemode-RunList');

    this.node.append(
      el(
        doc,
        'div',
        'codemode-PanelHeader',
        el(doc, 'h2', 'codemode-PanelTitle', 'Code Mode tools'),
        this._refreshButton
      ),
      this._context,
      this._status,
      el(
        doc,
        'section',
        'codemode-PanelSection codemode-ToolsSection',
        el(doc, 'h3', '', 'Tools ', this._toolCount),
        this._toolsEmpty,
        this._toolList
      ),
      el(
        doc,
        'section',
        'codemode-PanelSection codemode-RunsSection',
        el(doc, 'h3', '', 'Recent runs ', this._runCount),
        this._runsEmpty,
        this._runList
      )
    );

    this._client.onChange(() => this._render());
    tracker.currentChanged.connect((_, panel) => this._follow(panel), this);
    this._follow(tracker.currentWidget);
  }

  /** The client, for tests and other plugins. */
  get client(): ToolsClient {
    return this._client;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._unfollow();
    this._client.detach();
    super.dispose();
  }

  /** Follow another notebook (or none). */
  private _follow(panel: NotebookPanel | null): void {
    if (panel === this._panel) {
      return;
    }
    this._unfollow();
    this._panel = panel;
    if (panel) {
      // Runs' displays drawn as the notebook's outputs are (its sanitizer and resolver);
      // untrusted: the panel's runs include programs an agent wrote.
      this._runHost = new DisplayHost(panel.content.rendermime);
      const ctx = panel.sessionContext;
      ctx.kernelChanged.connect(this._onKernelChanged, this);
      ctx.statusChanged.connect(this._onStatus, this);
      ctx.iopubMessage.connect(this._onIopub, this);
      panel.disposed.connect(this._onPanelDisposed, this);
      ctx.ready
        .then(() => {
          if (this._panel === panel && this._client.state === 'detached') {
            this._connect();
          }
        })
        .catch(() => {
          // No session (the kernel failed to start): the panel says there is no kernel.
        });
    }
    this._connect();
  }

  private _unfollow(): void {
    const panel = this._panel;
    if (panel) {
      const ctx = panel.sessionContext;
      ctx.kernelChanged.disconnect(this._onKernelChanged, this);
      ctx.statusChanged.disconnect(this._onStatus, this);
      ctx.iopubMessage.disconnect(this._onIopub, this);
      panel.disposed.disconnect(this._onPanelDisposed, this);
    }
    this._runHost?.dispose();
    this._runHost = null;
    this._shownRuns = null; // drawn again with the next notebook's host
    this._panel = null;
    this._dropComm();
  }

  private _onPanelDisposed(): void {
    this._follow(null);
  }

  private _onKernelChanged(): void {
    this._connect();
  }

  /** Notice executions (any client's): after one, refresh or retry on the next idle. */
  private _onIopub(_: ISessionContext, msg: KernelMessage.IMessage): void {
    if (msg.header.msg_type === 'execute_input') {
      this._executed = true;
    }
  }

  private _onStatus(_: ISessionContext, status: Kernel.Status): void {
    switch (status) {
      case 'restarting':
      case 'autorestarting':
      case 'dead':
      case 'terminating':
        this._dropComm();
        this._render();
        break;
      case 'idle': {
        const executed = this._executed;
        this._executed = false;
        const state = this._client.state;
        if (state === 'detached') {
          // A fresh or restarted kernel: open the comm now that it answers.
          this._connect();
        } else if (executed && state === 'ready') {
          // Fallback for kernels that do not push after a cell.
          this._client.refresh();
        } else if (executed && state === 'unavailable') {
          // The cell may have been `%load_ext codemode_jupyter`: try again. Only after
          // an execution, since opening a comm itself makes the kernel busy then idle.
          this._connect();
        }
        break;
      }
      default:
        break;
    }
  }

  private _kernel(): Kernel.IKernelConnection | null {
    return this._panel?.sessionContext.session?.kernel ?? null;
  }

  private _dropComm(): void {
    this._comm = null;
    this._client.detach();
  }

  /** Open the comm to the current kernel's extension. */
  private _connect(): void {
    this._dropComm();
    const kernel = this._kernel();
    if (!kernel || kernel.isDisposed) {
      this._render();
      return;
    }
    let comm: Kernel.IComm;
    try {
      comm = kernel.createComm(COMM_TARGET);
    } catch (reason) {
      console.warn('codemode-jupyter: cannot open the tools comm', reason);
      this._render();
      return;
    }
    this._comm = comm;
    comm.onMsg = msg => {
      if (this._comm === comm) {
        this._client.handleMessage(msg.content.data);
      }
    };
    comm.onClose = () => {
      if (this._comm === comm) {
        this._comm = null;
        this._client.handleClose();
      }
    };
    try {
      comm.open({});
    } catch (reason) {
      console.warn('codemode-jupyter: cannot open the tools comm', reason);
      this._comm = null;
      this._render();
      return;
    }
    this._client.attach({
      send: data => {
        if (!comm.isDisposed) {
          comm.send(data as any);
        }
      },
      close: () => {
        if (this._comm === comm) {
          this._comm = null;
        }
        if (!comm.isDisposed) {
          comm.close();
        }
      }
    });
  }

  private _refresh(): void {
    if (this._client.state === 'ready') {
      this._client.refresh();
    } else {
      this._connect();
    }
  }

  /** Redraw from the client's state (tools are reconciled, not rebuilt). */
  private _render(): void {
    const panel = this._panel;
    const kernel = this._kernel();
    const state = this._client.state;
    this._context.textContent = panel
      ? `${panel.title.label || panel.context.path} · ${kernel ? kernel.name : 'no kernel'}`
      : 'No notebook is active.';

    let status = '';
    if (!panel) {
      status = 'Open a notebook to see its tools.';
    } else if (!kernel) {
      status = 'This notebook has no kernel.';
    } else if (state === 'detached' || state === 'connecting') {
      status = 'Connecting to the kernel…';
    } else if (state === 'unavailable') {
      status = LOAD_HINT;
    }
    this._status.textContent = status;
    this._status.dataset.state = panel && kernel ? state : 'no-kernel';
    this.node.dataset.state = this._status.dataset.state;

    this._renderTools(this._client.tools);
    this._renderRuns(this._client.runs);
  }

  private _renderTools(tools: readonly IToolInfo[]): void {
    const doc = this.node.ownerDocument;
    this._toolCount.textContent = `(${tools.length})`;
    this._toolsEmpty.hidden =
      tools.length > 0 || this._client.state !== 'ready';
    const seen = new Set<string>();
    let previous: HTMLElement | null = null;
    for (const tool of tools) {
      seen.add(tool.name);
      let view = this._toolViews.get(tool.name);
      if (!view) {
        view = this._createToolView(doc, tool);
        this._toolViews.set(tool.name, view);
      }
      this._updateToolView(doc, view, tool);
      // Keep the kernel's order.
      const expected: ChildNode | null = previous
        ? previous.nextSibling
        : this._toolList.firstChild;
      if (expected !== view.node) {
        this._toolList.insertBefore(view.node, expected);
      }
      previous = view.node;
    }
    for (const [name, view] of [...this._toolViews]) {
      if (!seen.has(name)) {
        view.node.remove();
        this._toolViews.delete(name);
      }
    }
  }

  private _createToolView(doc: Document, tool: IToolInfo): IToolView {
    const head = el(doc, 'div', 'codemode-ToolHead');
    const docNode = el(doc, 'pre', 'codemode-ToolDoc');
    const form = el(doc, 'div', 'codemode-ToolForm');
    const args = el(
      doc,
      'textarea',
      'codemode-ToolArgs jp-mod-styled'
    ) as HTMLTextAreaElement;
    args.spellcheck = false;
    args.rows = 2;
    args.setAttribute('aria-label', `JSON arguments for ${tool.name}`);
    args.value = argsTemplate(tool.schema);
    const json = el(
      doc,
      'details',
      'codemode-ToolJson',
      el(doc, 'summary', '', 'arguments as JSON'),
      args
    ) as HTMLDetailsElement;
    const button = el(
      doc,
      'button',
      'codemode-ToolCallButton jp-mod-styled jp-mod-accept',
      'Call'
    ) as HTMLButtonElement;
    const result = el(doc, 'div', 'codemode-ToolResult');
    const node = el(
      doc,
      'li',
      'codemode-Tool',
      head,
      docNode,
      form,
      json,
      el(doc, 'div', 'codemode-ToolCallRow', button),
      result
    );
    node.dataset.tool = tool.name;
    const view: IToolView = {
      node,
      head,
      doc: docNode,
      form,
      fields: [],
      inputs: new Map(),
      json,
      args,
      result,
      button,
      key: '',
      schema: tool.schema
    };
    button.addEventListener(
      'click',
      () => void this._callTool(view, tool.name)
    );
    node.addEventListener('keydown', event => {
      const target = event.target as HTMLElement;
      const submit =
        event.key === 'Enter' &&
        (target.tagName === 'INPUT' ||
          event.ctrlKey ||
          event.metaKey ||
          event.shiftKey);
      if (
        submit &&
        (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA')
      ) {
        event.preventDefault();
        void this._callTool(view, tool.name);
      }
    });
    return view;
  }

  /** One labelled input per parameter; values typed before a redefinition are kept. */
  private _buildForm(doc: Document, view: IToolView): void {
    const typed: FormValues = this._formValues(view);
    view.fields = formFields(view.schema);
    view.inputs.clear();
    const rows = view.fields.map(field => {
      let input: HTMLInputElement | HTMLTextAreaElement;
      if (field.kind === 'json') {
        input = el(
          doc,
          'textarea',
          'codemode-FieldInput jp-mod-styled'
        ) as HTMLTextAreaElement;
        input.rows = 1;
        input.spellcheck = false;
      } else {
        input = el(
          doc,
          'input',
          'codemode-FieldInput jp-mod-styled'
        ) as HTMLInputElement;
        input.type = field.kind === 'boolean' ? 'checkbox' : 'text';
        if (field.kind === 'integer' || field.kind === 'number') {
          input.inputMode = 'decimal';
        }
      }
      input.name = field.name;
      input.placeholder =
        (field.kind === 'json' ? 'JSON' : field.kind) +
        (field.defaultText ? ` (default ${field.defaultText})` : '');
      const previous = typed[field.name];
      if (input instanceof HTMLInputElement && input.type === 'checkbox') {
        input.checked =
          typeof previous === 'boolean'
            ? previous
            : field.defaultText === 'true';
      } else if (typeof previous === 'string') {
        input.value = previous;
      }
      input.setAttribute('aria-label', `${field.name} (${field.kind})`);
      view.inputs.set(field.name, input);
      const label = el(
        doc,
        'label',
        'codemode-FieldLabel',
        el(doc, 'code', '', field.name),
        field.required ? el(doc, 'span', 'codemode-Required', '*') : null
      );
      label.title = field.description || `${field.name}: ${field.kind}`;
      const row = el(doc, 'div', 'codemode-Field', label, input);
      row.dataset.field = field.name;
      row.dataset.kind = field.kind;
      return row;
    });
    view.form.replaceChildren(...rows);
    view.form.hidden = rows.length === 0;
  }

  private _formValues(view: IToolView): FormValues {
    const values: FormValues = {};
    for (const [name, input] of view.inputs) {
      values[name] =
        input instanceof HTMLInputElement && input.type === 'checkbox'
          ? input.checked
          : input.value;
    }
    return values;
  }

  private _updateToolView(
    doc: Document,
    view: IToolView,
    tool: IToolInfo
  ): void {
    const key = JSON.stringify([
      tool.signature,
      tool.doc,
      tool.is_async,
      tool.schema
    ]);
    if (key === view.key) {
      return;
    }
    const redefined = view.key !== '';
    view.key = key;
    view.head.replaceChildren(
      el(doc, 'code', 'codemode-ToolName', tool.name),
      el(doc, 'code', 'codemode-ToolSignature', tool.signature || '()')
    );
    if (tool.is_async) {
      view.head.appendChild(el(doc, 'span', 'codemode-Tag', 'async'));
    }
    view.doc.textContent = tool.doc;
    view.doc.hidden = !tool.doc;
    view.schema = tool.schema;
    this._buildForm(doc, view);
    if (redefined) {
      // The function changed: offer the new template unless the user typed something.
      const template = argsTemplate(tool.schema);
      if (view.args.dataset.template === view.args.value) {
        view.args.value = template;
      }
      view.args.dataset.template = template;
    } else {
      view.args.dataset.template = view.args.value;
    }
  }

  private async _callTool(view: IToolView, name: string): Promise<void> {
    const doc = this.node.ownerDocument;
    // The JSON section, when open, says it all; else the form does.
    const parsed = view.json.open
      ? parseArgs(view.args.value)
      : readForm(view.fields, this._formValues(view));
    const problem =
      'error' in parsed ? parsed.error : checkArgs(view.schema, parsed.args);
    if (problem !== null || 'error' in parsed) {
      this._showResult(doc, view, 'error', [
        el(doc, 'div', 'codemode-ResultTitle', problem ?? '')
      ]);
      return;
    }
    view.button.disabled = true;
    this._showResult(doc, view, 'pending', [
      el(doc, 'div', 'codemode-ResultTitle', `Calling ${name}…`)
    ]);
    let reply: ICallResult;
    try {
      reply = await this._client.call(name, parsed.args);
    } catch (reason) {
      view.button.disabled = false;
      const message = reason instanceof Error ? reason.message : String(reason);
      this._showResult(doc, view, 'error', [
        el(doc, 'div', 'codemode-ResultTitle', message)
      ]);
      return;
    }
    view.button.disabled = false;
    const took = formatDuration(reply.duration);
    if (reply.ok) {
      this._showResult(doc, view, 'ok', [
        el(
          doc,
          'div',
          'codemode-ResultTitle',
          `returned${took ? ` in ${took}` : ''}`
        ),
        el(
          doc,
          'pre',
          'codemode-Pre codemode-ResultValue',
          pyValue(reply.result)
        )
      ]);
    } else {
      const error = reply.error ?? {
        type: 'Error',
        message: '',
        traceback: ''
      };
      this._showResult(doc, view, 'error', [
        el(
          doc,
          'div',
          'codemode-ResultTitle',
          `${formatError(error)}${took ? ` (after ${took})` : ''}`
        ),
        // Bad arguments or an unknown tool come without frames: the title says it all.
        error.traceback.startsWith('Traceback')
          ? el(doc, 'pre', 'codemode-Pre codemode-Traceback', error.traceback)
          : null
      ]);
    }
  }

  private _showResult(
    doc: Document,
    view: IToolView,
    state: string,
    children: (Node | null)[]
  ): void {
    view.result.dataset.state = state;
    view.result.replaceChildren(
      ...children.filter((c): c is Node => c !== null)
    );
  }

  private _renderRuns(runs: readonly IRunRecord[]): void {
    const doc = this.node.ownerDocument;
    this._runCount.textContent = `(${runs.length})`;
    this._runsEmpty.hidden = runs.length > 0 || this._client.state !== 'ready';
    // The client replaces its run list only when the kernel sends one: tool pushes and
    // call replies need not rebuild up to 20 cards.
    if (runs === this._shownRuns) {
      return;
    }
    this._shownRuns = runs;
    // Keep open what the user opened (runs keyed by execution count and finish time).
    const open = openKeys(this._runList);
    this._runHost?.beginDraw();
    const items = runs.map(run => this._runItem(doc, run, open));
    this._runHost?.endDraw();
    this._runList.replaceChildren(...items.reverse()); // newest first
  }

  private _runItem(
    doc: Document,
    run: IRunRecord,
    open: ReadonlySet<string>
  ): HTMLElement {
    const view = toRunView(run.payload);
    const key = `run-${run.executionCount}-${run.finishedAt}`;
    const firstLine = run.code
      .split('\n')
      .map(line => line.trim())
      .find(line => line && !line.startsWith('#') && !line.startsWith('%%'));
    const agent = run.source === 'agent';
    const cell = el(
      doc,
      'button',
      agent ? 'codemode-RunCell codemode-RunCell-agent' : 'codemode-RunCell',
      agent
        ? 'agent'
        : run.executionCount !== null
          ? `[${run.executionCount}]`
          : '[ ]'
    ) as HTMLButtonElement;
    cell.type = 'button';
    cell.title = agent
      ? "An agent's run (%codemode serve): scroll to the cell that serves it"
      : 'Scroll to the cell that ran this';
    cell.addEventListener('click', event => {
      event.preventDefault();
      event.stopPropagation();
      this._scrollToCell(run.executionCount);
    });
    const summary = el(
      doc,
      'summary',
      'codemode-RunSummary',
      el(
        doc,
        'span',
        `codemode-Badge codemode-Badge-${view.severity}`,
        view.statusLabel
      ),
      cell,
      el(doc, 'code', 'codemode-RunFirstLine', firstLine || '(empty)'),
      el(doc, 'span', 'codemode-RunTime', formatTime(run.finishedAt))
    );
    const details = el(
      doc,
      'details',
      'codemode-RunDetails',
      summary,
      renderRunView(doc, view, {
        showCode: true,
        showError: true,
        showValue: true,
        open,
        host: this._runHost ?? undefined,
        keyPrefix: `${key}:`
      })
    );
    details.dataset.key = key;
    if (open.has(key)) {
      details.setAttribute('open', '');
    }
    const item = el(doc, 'li', 'codemode-RunItem', details);
    item.dataset.status = view.status;
    return item;
  }

  /** Scroll the notebook to the cell whose execution count is `count`. */
  private _scrollToCell(count: number | null): void {
    const notebook = this._panel?.content;
    if (!notebook || count === null) {
      return;
    }
    const index = notebook.widgets.findIndex(
      cell =>
        cell.model.type === 'code' &&
        (cell.model as any).executionCount === count
    );
    if (index < 0) {
      return;
    }
    notebook.activeCellIndex = index;
    void notebook.scrollToItem(index, 'center');
  }

  private _client = new ToolsClient();
  private _panel: NotebookPanel | null = null;
  private _runHost: DisplayHost | null = null;
  private _comm: Kernel.IComm | null = null;
  private _executed = false;
  private _toolViews = new Map<string, IToolView>();
  private _shownRuns: readonly IRunRecord[] | null = null;
  private _refreshButton: HTMLButtonElement;
  private _context: HTMLElement;
  private _status: HTMLElement;
  private _toolCount: HTMLElement;
  private _toolsEmpty: HTMLElement;
  private _toolList: HTMLElement;
  private _runCount: HTMLElement;
  private _runsEmpty: HTMLElement;
  private _runList: HTMLElement;
}

/** `14:03:07` in the browser's time zone ('' if unknown). */
function formatTime(seconds: number | null): string {
  if (seconds === null) {
    return '';
  }
  const date = new Date(seconds * 1000);
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map(n => String(n).padStart(2, '0'))
    .join(':');
}
