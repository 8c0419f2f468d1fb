/**
 * The serving cell in JupyterLab (see records.ts for what it keeps): the feed display's
 * renderer, and the connector that follows a notebook's kernel, listens on the
 * `codemode.feed` comm and writes each run's record into the serving cell.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { MimeModel } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { PanelLayout, Widget } from '@lumino/widgets';

import { isObject } from './model';
import {
  applyOutputs,
  FEED_COMM_TARGET,
  FEED_MIME_TYPE,
  FeedState,
  feedOf,
  IOutputLike,
  IOutputsLike,
  IRunRecord,
  planRecords,
  stoppedText,
  WIDGET_MIME_TYPE
} from './records';

/** Creates the renderer of a cell's widget view (the notebook's rendermime has it). */
export type WidgetRendererSource = () => IRenderMime.IRenderer | null;

/**
 * The serving cell's feed display: the live widget while its feed is live in this kernel,
 * else what the server was (its tools, its approvals) and that it is not running.
 */
export class FeedRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(state: FeedState, widgets: WidgetRendererSource) {
    super();
    this._state = state;
    this._widgets = widgets;
    this.addClass('codemode-FeedRenderer');
    this.node.dataset.mimeType = FEED_MIME_TYPE;
    this.layout = new PanelLayout();
    this._unlisten = state.listen(() => void this._draw());
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this._model = model;
    return this._draw();
  }

  private async _draw(): Promise<void> {
    const model = this._model;
    if (!model || this.isDisposed) {
      return;
    }
    const payload = isObject(model.data[FEED_MIME_TYPE])
      ? (model.data[FEED_MIME_TYPE] as Record<string, unknown>)
      : {};
    const feed = typeof payload.feed === 'string' ? payload.feed : '';
    const live =
      !!feed && this._state.isLive(feed) && !!model.data[WIDGET_MIME_TYPE];
    this.toggleClass('codemode-FeedLive', live);
    this.node.dataset.state = live ? 'live' : 'stopped';
    if (live && this._view) {
      return; // already drawn: the widget updates itself
    }
    this._clear();
    if (live) {
      const renderer = this._widgets();
      if (renderer) {
        this._view = renderer;
        (this.layout as PanelLayout).addWidget(renderer);
        await renderer.renderModel(
          new MimeModel({
            data: { [WIDGET_MIME_TYPE]: model.data[WIDGET_MIME_TYPE] as any },
            metadata: model.metadata,
            trusted: model.trusted
          })
        );
        return;
      }
    }
    const note = this.node.ownerDocument.createElement('pre');
    // Live without ipywidgets in the page: the server's text; else, that it is not running.
    note.className = live ? 'codemode-FeedText' : 'codemode-FeedStopped';
    note.textContent = live ? String(payload.text ?? '') : stoppedText(payload);
    this.node.appendChild(note);
  }

  private _clear(): void {
    if (this._view) {
      this._view.dispose();
      this._view = null;
    }
    this.node
      .querySelectorAll('.codemode-FeedStopped')
      .forEach(n => n.remove());
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._unlisten();
    this._clear();
    super.dispose();
  }

  private _state: FeedState;
  private _widgets: WidgetRendererSource;
  private _unlisten: () => void;
  private _model: IRenderMime.IMimeModel | null = null;
  private _view: IRenderMime.IRenderer | null = null;
}

/** The notebook's renderer of a widget view (null: ipywidgets is not installed). */
function widgetRenderer(panel: NotebookPanel): IRenderMime.IRenderer | null {
  const rendermime = panel.content.rendermime;
  if (!rendermime.mimeTypes.includes(WIDGET_MIME_TYPE)) {
    return null;
  }
  return rendermime.createRenderer(WIDGET_MIME_TYPE);
}

/** Ranked before ipywidgets' view (-10), so the serving cell's display is drawn here. */
export const FEED_RANK = -20;

/** Follow `panel`'s kernel: draw its serving cells and keep their records. */
export function connectFeeds(panel: NotebookPanel): void {
  const state = new FeedState();
  panel.content.rendermime.addFactory(
    {
      safe: true,
      mimeTypes: [FEED_MIME_TYPE],
      createRenderer: () => new FeedRenderer(state, () => widgetRenderer(panel))
    },
    FEED_RANK
  );
  const context = panel.sessionContext;
  const follow = (): void => {
    state.clear();
    const kernel = context.session?.kernel;
    if (kernel) {
      listen(panel, kernel, state);
    }
  };
  context.kernelChanged.connect(follow);
  context.statusChanged.connect((_, status) => {
    if (
      status === 'restarting' ||
      status === 'dead' ||
      status === 'autorestarting'
    ) {
      state.clear(); // the kernel's feeds ended with it
    }
  });
  follow();
}

function listen(
  panel: NotebookPanel,
  kernel: Kernel.IKernelConnection,
  state: FeedState
): void {
  const handle = (comm: Kernel.IComm, data: unknown): void => {
    if (!isObject(data) || typeof data.feed !== 'string') {
      return;
    }
    const feed = data.feed;
    if (data.op === 'open') {
      state.setLive(feed, true);
      comm.onClose = () => state.setLive(feed, false);
    } else if (data.op === 'run') {
      writeRecord(panel, data as unknown as IRunRecord);
    } else if (data.op === 'stopped') {
      state.setLive(feed, false);
    }
  };
  const attach = (comm: Kernel.IComm): void => {
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) =>
      handle(comm, msg.content.data);
  };
  kernel.registerCommTarget(FEED_COMM_TARGET, (comm, msg) => {
    attach(comm);
    handle(comm, msg.content.data);
  });
  // A page opened while a server runs: join its comm and ask which feed it is.
  kernel
    .requestCommInfo({ target_name: FEED_COMM_TARGET })
    .then(reply => {
      const comms = reply.content.status === 'ok' ? reply.content.comms : {};
      for (const id of Object.keys(comms)) {
        if (kernel.hasComm(id)) {
          continue;
        }
        const comm = kernel.createComm(FEED_COMM_TARGET, id);
        attach(comm);
        comm.send({ op: 'hello' });
      }
    })
    .catch(reason => {
      console.warn('codemode-jupyter: cannot list the agent feeds', reason);
    });
}

/** Write a run's record into the serving cell of its feed (if this notebook has it). */
function writeRecord(panel: NotebookPanel, record: IRunRecord): void {
  for (const cell of panel.content.widgets) {
    if (cell.model.type !== 'code') {
      continue;
    }
    const outputs = (cell.model as any).outputs as IOutputsLike;
    const current = outputs.toJSON() as IOutputLike[];
    if (feedOf(current) === record.feed) {
      applyOutputs(outputs, planRecords(current, record));
      return;
    }
  }
}
