/**
 * Displays inside the run card, drawn by JupyterLab's own renderers (HTML, Markdown, images,
 * SVG, LaTeX, JSON, text), with the sanitizer, resolver and link handler the notebook's
 * outputs get, and the trust of the output that holds the run.
 *
 * A live card is redrawn on every update: a display already drawn at the same place with the
 * same bundle keeps its node, so an image is not decoded again and a table keeps its scroll.
 */
import {
  MimeModel,
  RenderMimeRegistry,
  standardRendererFactories
} from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';

import { IRichHost } from './card';
import { IDisplayEntry, isObject } from './model';

/** What the nested registry takes from the renderer's options (or a notebook's registry). */
export type RendererContext = Pick<
  IRenderMime.IRendererOptions,
  | 'sanitizer'
  | 'resolver'
  | 'linkHandler'
  | 'latexTypesetter'
  | 'markdownParser'
  | 'translator'
>;

type Bundle = IRenderMime.IMimeModel['data'];

interface IDrawn {
  data: Record<string, unknown>;
  trusted: boolean;
  node: HTMLElement;
  renderer: IRenderMime.IRenderer;
}

/** Two bundles with the same types and values (strings compared as strings). */
export function sameBundle(
  a: Record<string, unknown>,
  b: Record<string, unknown>
): boolean {
  if (a === b) {
    return true;
  }
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) {
    return false;
  }
  return keys.every(key => {
    const x = a[key];
    const y = b[key];
    if (typeof x === 'string' || typeof y === 'string') {
      return x === y;
    }
    return JSON.stringify(x) === JSON.stringify(y);
  });
}

/** Draws a card's displays; one per renderer (or per Tools panel). */
export class DisplayHost implements IRichHost {
  constructor(context: RendererContext) {
    this._context = context;
  }

  /** Trust of the output being drawn (set before each redraw). */
  trusted = false;

  display(entry: IDisplayEntry, key: string): HTMLElement | null {
    this._used.add(key);
    const drawn = this._drawn.get(key);
    if (
      drawn &&
      drawn.trusted === this.trusted &&
      sameBundle(drawn.data, entry.data)
    ) {
      return drawn.node;
    }
    drawn?.renderer.dispose();
    this._drawn.delete(key);
    const registry = this._registry();
    const bundle = entry.data as Bundle;
    const mimeType = registry.preferredMimeType(
      bundle,
      this.trusted ? 'any' : 'ensure'
    );
    if (!mimeType) {
      return null;
    }
    const renderer = registry.createRenderer(mimeType);
    const metadata = (isObject(entry.metadata) ? entry.metadata : {}) as Bundle;
    const model = new MimeModel({
      data: bundle,
      metadata,
      trusted: this.trusted
    });
    const node = renderer.node;
    node.classList.add('codemode-DisplayOutput');
    renderer.renderModel(model).catch(error => {
      const pre = node.ownerDocument.createElement('pre');
      pre.textContent = `Display error: ${error?.message ?? error}`;
      node.appendChild(pre);
    });
    this._drawn.set(key, {
      data: entry.data,
      trusted: this.trusted,
      node,
      renderer
    });
    return node;
  }

  /** Start a redraw: displays not drawn again before `endDraw` are let go. */
  beginDraw(): void {
    this._used.clear();
  }

  endDraw(): void {
    for (const [key, drawn] of this._drawn) {
      if (!this._used.has(key)) {
        drawn.renderer.dispose();
        this._drawn.delete(key);
      }
    }
  }

  fileUrl = async (path: string): Promise<string> => {
    const resolver = this._context.resolver;
    if (!resolver) {
      return '';
    }
    const url = await resolver.resolveUrl(path);
    return resolver.getDownloadUrl(url);
  };

  dispose(): void {
    for (const drawn of this._drawn.values()) {
      drawn.renderer.dispose();
    }
    this._drawn.clear();
  }

  private _registry(): RenderMimeRegistry {
    if (!this._rendermime) {
      const c = this._context;
      this._rendermime = new RenderMimeRegistry({
        initialFactories: standardRendererFactories,
        sanitizer: c.sanitizer,
        resolver: c.resolver ?? undefined,
        linkHandler: c.linkHandler ?? undefined,
        latexTypesetter: c.latexTypesetter ?? undefined,
        markdownParser: c.markdownParser ?? undefined,
        translator: c.translator
      });
    }
    return this._rendermime;
  }

  private _context: RendererContext;
  private _rendermime: RenderMimeRegistry | null = null;
  private _drawn = new Map<string, IDrawn>();
  private _used = new Set<string>();
}
