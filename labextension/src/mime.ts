/**
 * The run renderer: draws `application/vnd.codemode.run+json`, live and saved.
 *
 * While a cell runs, the kernel updates one display in place with the run so far (JupyterLab
 * hands each update to the same renderer, which keeps what the user opened); the finished run
 * is the output the notebook saves. It needs no kernel and no widget state, so a notebook
 * opened after a restart (or on a machine without the kernel extension) shows every run the
 * same way.
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { openKeys, renderRun } from './card';
import { mergeVarying, RUN_MIME_TYPE } from './model';

const CLASS_NAME = 'codemode-RunRenderer';

/** A widget that renders one run. */
export class RunRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass(CLASS_NAME);
    // As JupyterLab's own renderers do: lets tests and styles find what drew an output.
    this.node.dataset.mimeType = options.mimeType;
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    // Timings, backend and tracebacks are kept in the output's metadata (see model.ts).
    const metadata = model.metadata
      ? model.metadata[this._mimeType]
      : undefined;
    const data = mergeVarying(model.data[this._mimeType], metadata);
    // The cell shows the code above, its Out[n] the value and its traceback the error.
    const view = renderRun(this.node.ownerDocument, data, {
      open: openKeys(this.node)
    });
    this.node.replaceChildren(view);
    return Promise.resolve();
  }

  private _mimeType: string;
}

/** Creates a renderer for the run MIME type. */
export const rendererFactory: IRenderMime.IRendererFactory = {
  // The card only sets text, so it is safe to show in untrusted notebooks.
  safe: true,
  mimeTypes: [RUN_MIME_TYPE],
  defaultRank: 50,
  createRenderer: options => new RunRenderer(options)
};

const extension: IRenderMime.IExtension = {
  id: 'codemode-jupyter:run-renderer',
  description:
    'Renders saved Code Mode runs (application/vnd.codemode.run+json).',
  rendererFactory,
  rank: 50,
  dataType: 'json'
};

export default extension;
