/**
 * The Tools panel: the tools the next `%%codemode` cell would get, a form to call each one,
 * and the kernel's recent runs. This module follows the active notebook's kernel, keeps the
 * `codemode.tools` comm (client.ts speaks its protocol) and lays out the panel; a tool's row
 * is toolview.ts, the recent runs runlist.ts.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { el } from './card';
import { DisplayHost } from './displays';
import {
  COMM_TARGET,
  ICallResult,
  IToolInfo,
  LOAD_HINT,
  parseArgs,
  ToolsClient
} from './client';
import { checkArgs, readForm } from './form';
import { codemodeIcon } from './icon';
import { RunList } from './runlist';
import {
  createToolView,
  formValues,
  IToolView,
  showReply,
  showResult,
  updateToolView
} from './toolview';

export { codemodeIcon } from './icon';

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
    this._runs = new RunList(doc, count => this._scrollToCell(count));

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
        el(doc, 'h3', '', 'Recent runs ', this._runs.count),
        this._runs.empty,
        this._runs.list
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
      this._runs.host = new DisplayHost(panel.content.rendermime);
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
    this._runs.host?.dispose();
    this._runs.host = null;
    this._runs.forget(); // drawn again with the next notebook's host
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
    this._runs.render(this._client.runs, this._client.state === 'ready');
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
        view = createToolView(
          doc,
          tool,
          shown => void this._callTool(shown, tool.name)
        );
        this._toolViews.set(tool.name, view);
      }
      updateToolView(doc, view, tool);
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

  private async _callTool(view: IToolView, name: string): Promise<void> {
    const doc = this.node.ownerDocument;
    // The JSON section, when open, says it all; else the form does.
    const parsed = view.json.open
      ? parseArgs(view.args.value)
      : readForm(view.fields, formValues(view));
    const problem =
      'error' in parsed ? parsed.error : checkArgs(view.schema, parsed.args);
    if (problem !== null || 'error' in parsed) {
      showResult(doc, view, 'error', [
        el(doc, 'div', 'codemode-ResultTitle', problem ?? '')
      ]);
      return;
    }
    view.button.disabled = true;
    showResult(doc, view, 'pending', [
      el(doc, 'div', 'codemode-ResultTitle', `Calling ${name}…`)
    ]);
    let reply: ICallResult;
    try {
      reply = await this._client.call(name, parsed.args);
    } catch (reason) {
      view.button.disabled = false;
      const message = reason instanceof Error ? reason.message : String(reason);
      showResult(doc, view, 'error', [
        el(doc, 'div', 'codemode-ResultTitle', message)
      ]);
      return;
    }
    view.button.disabled = false;
    showReply(doc, view, reply);
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
  private _comm: Kernel.IComm | null = null;
  private _executed = false;
  private _toolViews = new Map<string, IToolView>();
  private _refreshButton: HTMLButtonElement;
  private _context: HTMLElement;
  private _status: HTMLElement;
  private _toolCount: HTMLElement;
  private _toolsEmpty: HTMLElement;
  private _toolList: HTMLElement;
  private _runs: RunList;
}
