/**
 * A CodeMirror 6 extension that marks the `%%codemode` line of a cell as a magic.
 *
 * The body keeps JupyterLab's Python highlighting (see magic.ts for why); this only
 * replaces the misleading arithmetic colours of the magic line and tags the editor with
 * `codemode-cell` so the body can be styled.
 */
import { RangeSetBuilder } from '@codemirror/state';
import {
  Decoration,
  DecorationSet,
  EditorView,
  ViewPlugin,
  ViewUpdate
} from '@codemirror/view';

import { codemodeMagicRanges } from './magic';

const MARKS = {
  prefix: Decoration.mark({ class: 'codemode-magic codemode-magic-prefix' }),
  name: Decoration.mark({ class: 'codemode-magic codemode-magic-name' }),
  args: Decoration.mark({ class: 'codemode-magic codemode-magic-args' })
};

const LINE = Decoration.line({ class: 'codemode-magic-line' });

function build(view: EditorView): DecorationSet {
  const doc = view.state.doc;
  // Only the first line matters: read at most that much.
  const firstLine = doc.line(1);
  const ranges = codemodeMagicRanges(firstLine.text);
  if (!ranges.length) {
    return Decoration.none;
  }
  const builder = new RangeSetBuilder<Decoration>();
  builder.add(firstLine.from, firstLine.from, LINE);
  for (const range of ranges) {
    builder.add(range.from, range.to, MARKS[range.role]);
  }
  return builder.finish();
}

/** The editor extension: decorations, plus a class on the editor of %%codemode cells. */
export const codemodeMagicExtension = [
  ViewPlugin.fromClass(
    class {
      decorations: DecorationSet;
      constructor(view: EditorView) {
        this.decorations = build(view);
      }
      update(update: ViewUpdate): void {
        if (update.docChanged) {
          this.decorations = build(update.view);
        }
      }
    },
    { decorations: plugin => plugin.decorations }
  ),
  EditorView.editorAttributes.compute(['doc'], state => {
    const attrs: Record<string, string> = {};
    if (codemodeMagicRanges(state.doc.line(1).text).length) {
      attrs.class = 'codemode-cell';
    }
    return attrs;
  })
];
