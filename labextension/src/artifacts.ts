/**
 * The files a run brought back, as a section of the run card: each a link that opens the
 * file through the Jupyter server, images previewed inline, CSVs as a small table of their
 * first lines (the kernel put them in the payload), and what was left behind.
 *
 * Only `textContent` and attributes are set (never innerHTML). No JupyterLab imports: the
 * link's URL comes from the host (the renderer's resolver), so jsdom tests can use it.
 */
import { formatCount } from './format';
import { IArtifact } from './model';

/** Turns a path relative to the notebook into a URL that opens the file ('' if none). */
export type FileUrl = (path: string) => Promise<string>;

const IMAGE_SUFFIX = /\.(png|jpe?g|gif|svg|webp)$/i;
/** Rows and columns of a CSV preview. */
const TABLE_ROWS = 6;
const TABLE_COLUMNS = 12;

/** Bytes as "812 B", "12.3 KiB", "4.5 MiB". */
export function formatBytes(size: number): string {
  if (size < 1024) {
    return `${formatCount(size)} B`;
  }
  const units = ['KiB', 'MiB', 'GiB'];
  let value = size / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** One CSV line as fields (quotes as in RFC 4180; a TSV when `tab`). */
export function splitCsvLine(line: string, tab = false): string[] {
  const sep = tab ? '\t' : ',';
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (ch === '"') {
        quoted = false;
      } else {
        field += ch;
      }
    } else if (ch === '"' && field === '') {
      quoted = true;
    } else if (ch === sep) {
      fields.push(field);
      field = '';
    } else {
      field += ch;
    }
  }
  fields.push(field);
  return fields;
}

function csvTable(doc: Document, artifact: IArtifact): HTMLElement {
  const tab = /\.tsv$/i.test(artifact.name);
  const table = doc.createElement('table');
  table.className = 'codemode-ArtifactTable';
  artifact.head.slice(0, TABLE_ROWS).forEach((line, row) => {
    const tr = doc.createElement('tr');
    for (const value of splitCsvLine(line, tab).slice(0, TABLE_COLUMNS)) {
      const cell = doc.createElement(row === 0 ? 'th' : 'td');
      cell.textContent = value;
      tr.appendChild(cell);
    }
    table.appendChild(tr);
  });
  return table;
}

function artifactItem(
  doc: Document,
  artifact: IArtifact,
  fileUrl: FileUrl | undefined
): HTMLElement {
  const item = doc.createElement('li');
  item.className = 'codemode-Artifact';
  item.dataset.name = artifact.name;
  const link = doc.createElement('a');
  link.className = 'codemode-ArtifactLink';
  link.textContent = artifact.name;
  link.title = artifact.path || artifact.name;
  const size = doc.createElement('span');
  size.className = 'codemode-ArtifactSize';
  size.textContent = ` ${formatBytes(artifact.size)}`;
  item.append(link, size);
  if (artifact.head.length) {
    item.appendChild(csvTable(doc, artifact));
  }
  if (!fileUrl || !artifact.rel) {
    // Not under the notebook's folder (or no server to ask): the name and where it is.
    return item;
  }
  void fileUrl(artifact.rel).then(
    url => {
      if (!url) {
        return;
      }
      link.setAttribute('href', url);
      link.setAttribute('target', '_blank');
      link.setAttribute('rel', 'noopener noreferrer');
      if (IMAGE_SUFFIX.test(artifact.name)) {
        const img = doc.createElement('img');
        img.className = 'codemode-ArtifactImage';
        img.alt = artifact.name;
        img.setAttribute('src', url);
        item.appendChild(img);
      }
    },
    () => undefined // no link: the name stays as text
  );
  return item;
}

/** The card's files section (null when the run brought back nothing and left nothing). */
export function artifactsSection(
  doc: Document,
  artifacts: IArtifact[],
  left: string[],
  fileUrl: FileUrl | undefined
): HTMLElement | null {
  if (!artifacts.length && !left.length) {
    return null;
  }
  const node = doc.createElement('div');
  node.className = 'codemode-Section codemode-Section-files';
  node.dataset.kind = 'files';
  const title = doc.createElement('div');
  title.className = 'codemode-SectionTitle';
  title.textContent = `files (${artifacts.length})`;
  node.appendChild(title);
  if (artifacts.length) {
    const list = doc.createElement('ul');
    list.className = 'codemode-Artifacts';
    for (const artifact of artifacts) {
      list.appendChild(artifactItem(doc, artifact, fileUrl));
    }
    node.appendChild(list);
  }
  if (left.length) {
    const note = doc.createElement('div');
    note.className = 'codemode-Warning codemode-ArtifactsLeft';
    note.textContent = `Not brought back: ${left.join(', ')}`;
    node.appendChild(note);
  }
  return node;
}
