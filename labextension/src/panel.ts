/**
 * The Tools panel: the tools the next `%%codemode` cell would get, a way to call each
 * one with JSON arguments, and the kernel's recent runs. It follows the active notebook's
 * kernel and talks to the kernel extension over the `codemode.tools` comm.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { el, renderCardModel } from './card';
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
import { formatDuration, formatError, formatValue, toCardModel } from './model';

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
  args: HTMLTextAreaElement;
  result: HTMLElement;
  button: HTMLButtonElement;
  key: string;
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
    const args = el(
      doc,
      'textarea',
      'codemode-ToolArgs jp-mod-styled'
    ) as HTMLTextAreaElement;
    args.spellcheck = false;
    args.rows = 2;
    args.setAttribute('aria-label', `JSON arguments for ${tool.name}`);
    args.value = argsTemplate(tool.schema);
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
      el(doc, 'div', 'codemode-ToolCallRow', args, button),
      result
    );
    node.dataset.tool = tool.name;
    const view: IToolView = {
      node,
      head,
      doc: docNode,
      args,
      result,
      button,
      key: ''
    };
    button.addEventListener(
      'click',
      () => void this._callTool(view, tool.name)
    );
    args.addEventListener('keydown', event => {
      if (
        event.key === 'Enter' &&
        (event.ctrlKey || event.metaKey || event.shiftKey)
      ) {
        event.preventDefault();
        void this._callTool(view, tool.name);
      }
    });
    return view;
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
    const parsed = parseArgs(view.args.value);
    if ('error' in parsed) {
      this._showResult(doc, view, 'error', [
        el(doc, 'div', 'codemode-ResultTitle', parsed.error)
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
          formatValue(reply.result, 2)
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
    // Keep open the runs the user opened (keyed by position from the oldest).
    const open = new Set<string>();
    for (const item of Array.from(this._runList.children)) {
      const details = item.querySelector('details');
      if (details?.open) {
        open.add((item as HTMLElement).dataset.key ?? '');
      }
    }
    const items: HTMLElement[] = [];
    runs.forEach((run, index) => {
      const model = toCardModel({
        version: 1,
        code: run.code,
        result: run.result
      });
      const key = `${index}:${run.code.length}`;
      const firstLine =
        run.code
          .split('\n')
          .find(line => line.trim() && !line.startsWith('%%')) ?? '';
      const summary = el(
        doc,
        'summary',
        'codemode-RunSummary',
        el(
          doc,
          'span',
          `codemode-Badge codemode-Badge-${model.severity}`,
          model.statusLabel
        ),
        el(doc, 'code', 'codemode-RunFirstLine', firstLine.trim() || '(empty)'),
        el(doc, 'span', 'codemode-Facts', model.facts.slice(0, 2).join(' · '))
      );
      const details = el(
        doc,
        'details',
        'codemode-RunDetails',
        summary,
        renderCardModel(doc, model, { showCode: true, codeOpen: true })
      );
      if (open.has(key)) {
        details.setAttribute('open', '');
      }
      const item = el(doc, 'li', 'codemode-RunItem', details);
      item.dataset.key = key;
      item.dataset.status = model.status;
      items.unshift(item); // newest first
    });
    this._runList.replaceChildren(...items);
  }

  private _client = new ToolsClient();
  private _panel: NotebookPanel | null = null;
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
