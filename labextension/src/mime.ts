/**
 * The run renderer: draws `application/vnd.codemode.run+json`, live and saved, and the
 * display marker, which draws nothing.
 *
 * While a cell runs, the kernel updates one display in place with the run so far (JupyterLab
 * hands each update to the same renderer, which keeps what the user opened and the displays
 * it drew); the finished run is the output the notebook saves. It needs no kernel and no
 * widget state, so a notebook opened after a restart (or on a machine without the kernel
 * extension) shows every run the same way.
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { openKeys, renderRun } from './card';
import { DisplayHost } from './displays';
import { DISPLAY_MARKER_MIME_TYPE, mergeVarying, RUN_MIME_TYPE } from './model';

const CLASS_NAME = 'codemode-RunRenderer';

/** A widget that renders one run. */
export class RunRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    // Displays in the card get the renderers, sanitizer and resolver outputs get.
    this._host = new DisplayHost(options);
    this.addClass(CLASS_NAME);
    // As JupyterLab's own renderers do: lets tests and styles find what drew an output.
    this.node.dataset.mimeType = options.mimeType;
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    // Timings, backend, tracebacks and images are kept in the output's metadata (model.ts).
    const metadata = model.metadata
      ? model.metadata[this._mimeType]
      : undefined;
    const data = mergeVarying(model.data[this._mimeType], metadata);
    this._host.trusted = model.trusted;
    this._host.beginDraw();
    // The cell shows the code above, its Out[n] the value and its traceback the error.
    const view = renderRun(this.node.ownerDocument, data, {
      open: openKeys(this.node),
      host: this._host
    });
    this._host.endDraw();
    this.node.replaceChildren(view);
    return Promise.resolve();
  }

  dispose(): void {
    this._host.dispose();
    super.dispose();
  }

  private _mimeType: string;
  private _host: DisplayHost;
}

/**
 * The marker on a display's own output when the run card shows it: drawn as nothing, and
 * its output area is hidden (style/base.css), so each display is shown once, in the card.
 */
export class DisplayMarker extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this.addClass('codemode-DisplayMarker');
    this.node.dataset.mimeType = options.mimeType;
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    return Promise.resolve();
  }
}

/** Creates a renderer for the run MIME type. */
export const rendererFactory: IRenderMime.IRendererFactory = {
  // The card sets text itself; displays in it are drawn with the output's trust.
  safe: true,
  mimeTypes: [RUN_MIME_TYPE],
  // Below text/html's 50: a saved run also carries an HTML fallback, and the card wins.
  defaultRank: 40,
  createRenderer: options => new RunRenderer(options)
};

/** The marker's factory: safe and ranked first, so it wins over the display's own types. */
export const markerFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [DISPLAY_MARKER_MIME_TYPE],
  defaultRank: 1,
  createRenderer: options => new DisplayMarker(options)
};

const extensions: IRenderMime.IExtension[] = [
  {
    id: 'codemode-jupyter:run-renderer',
    description:
      'Renders saved Code Mode runs (application/vnd.codemode.run+json).',
    rendererFactory,
    rank: 40,
    dataType: 'json'
  },
  {
    id: 'codemode-jupyter:display-marker',
    description:
      'Hides the own output of a display that the Code Mode run card shows.',
    rendererFactory: markerFactory,
    rank: 1,
    dataType: 'json'
  }
];

export default extensions;
