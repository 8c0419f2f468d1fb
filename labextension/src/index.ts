/**
 * codemode-jupyter's JupyterLab plugins: the Tools panel and the `%%codemode` magic-line
 * highlighting. The saved-run renderer is the MIME extension in mime.ts.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import {
  EditorExtensionRegistry,
  IEditorExtensionRegistry
} from '@jupyterlab/codemirror';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

import { IInsertCellDetail, INSERT_CELL_EVENT } from './card';
import { connectFeeds } from './feed';
import { codemodeMagicExtension } from './highlight';
import { ToolsPanel } from './panel';

/** Command ids. */
export namespace CommandIDs {
  export const openTools = 'codemode:open-tools';
}

const toolsPanelPlugin: JupyterFrontEndPlugin<void> = {
  id: 'codemode-jupyter:tools-panel',
  description:
    'A sidebar listing the active kernel’s Code Mode tools, calling them, and showing recent runs.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const panel = new ToolsPanel(tracker);
    app.shell.add(panel, 'right', { rank: 900 });
    if (restorer) {
      restorer.add(panel, panel.id);
    }
    app.commands.addCommand(CommandIDs.openTools, {
      label: 'Code Mode: Show Tools Panel',
      caption: 'Open the Code Mode tools panel for the active notebook',
      execute: () => {
        app.shell.activateById(panel.id);
      }
    });
    if (palette) {
      palette.addItem({ command: CommandIDs.openTools, category: 'Code Mode' });
    }
  }
};

const magicHighlightPlugin: JupyterFrontEndPlugin<void> = {
  id: 'codemode-jupyter:magic-highlight',
  description:
    'Marks the %%codemode line of a cell as a magic; the body keeps Python highlighting.',
  autoStart: true,
  requires: [IEditorExtensionRegistry],
  activate: (_: JupyterFrontEnd, extensions: IEditorExtensionRegistry) => {
    extensions.addExtension({
      name: 'codemode-jupyter:magic-line',
      factory: () =>
        EditorExtensionRegistry.createImmutableExtension(codemodeMagicExtension)
    });
  }
};

const agentFeedPlugin: JupyterFrontEndPlugin<void> = {
  id: 'codemode-jupyter:agent-feed',
  description:
    'The serving cell of %codemode serve: its live feed, its saved record, and "Insert as cell".',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    tracker.forEach(panel => connectFeeds(panel));
    tracker.widgetAdded.connect((_, panel) => connectFeeds(panel));
    document.addEventListener(INSERT_CELL_EVENT, event => {
      const detail = (event as CustomEvent<IInsertCellDetail>).detail;
      const target = event.target as Node | null;
      const panel =
        tracker.find(p => !!target && p.node.contains(target)) ??
        tracker.currentWidget;
      if (panel && detail && typeof detail.source === 'string') {
        insertBelow(panel, target, detail.source);
      }
    });
  }
};

/** A code cell holding `source`, below the cell that holds `target` (else below the
 * active cell), made the active cell. */
function insertBelow(
  panel: NotebookPanel,
  target: Node | null,
  source: string
): void {
  const notebook = panel.content;
  const found = notebook.widgets.findIndex(
    cell => !!target && cell.node.contains(target)
  );
  const index = (found >= 0 ? found : notebook.activeCellIndex) + 1;
  notebook.model?.sharedModel.insertCell(index, {
    cell_type: 'code',
    source
  });
  notebook.activeCellIndex = index;
}

export default [toolsPanelPlugin, magicHighlightPlugin, agentFeedPlugin];
