/**
 * Build the DOM of a run card from its model.
 *
 * Only `textContent` and attributes are set (never innerHTML): a saved notebook and the
 * program's output are untrusted. No JupyterLab imports, so jsdom tests can use it.
 */
import { ICardModel, IToolCallRow, ITextSection, toCardModel } from './model';

/** Options for {@link renderCard}. */
export interface ICardOptions {
  /** Show the cell's code (collapsed). The saved-run renderer shows it; the panel too. */
  showCode?: boolean;
  /** Open the code section. */
  codeOpen?: boolean;
}

type Child = Node | string | null | undefined | false;

/** Create an element with classes and children (strings become text nodes). */
export function el(
  doc: Document,
  tag: string,
  className?: string,
  ...children: Child[]
): HTMLElement {
  const node = doc.createElement(tag);
  if (className) {
    node.className = className;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.appendChild(
      typeof child === 'string' ? doc.createTextNode(child) : child
    );
  }
  return node;
}

function textSection(doc: Document, section: ITextSection): HTMLElement {
  const node = el(
    doc,
    'div',
    `codemode-Section codemode-Section-${section.kind}`,
    el(doc, 'div', 'codemode-SectionTitle', section.title),
    section.text ? el(doc, 'pre', 'codemode-Pre', section.text) : null,
    section.note ? el(doc, 'div', 'codemode-Note', section.note) : null
  );
  node.dataset.kind = section.kind;
  return node;
}

function toolCallRow(doc: Document, row: IToolCallRow): HTMLElement {
  const bar = el(doc, 'span', 'codemode-Bar');
  const fill = el(doc, 'span', 'codemode-BarFill');
  fill.style.left = `${(row.barStart * 100).toFixed(2)}%`;
  fill.style.width = `max(2px, ${(row.barWidth * 100).toFixed(2)}%)`;
  bar.appendChild(fill);

  const summary = el(
    doc,
    'summary',
    'codemode-ToolCallSummary',
    el(doc, 'span', 'codemode-ToolCallIndex', `${row.index}`),
    el(doc, 'code', 'codemode-ToolCallCall', row.call),
    el(doc, 'span', 'codemode-ToolCallArrow', row.ok ? '→' : '✗'),
    el(doc, 'code', 'codemode-ToolCallOutcome', row.outcome),
    el(doc, 'span', 'codemode-ToolCallDuration', row.durationText),
    bar
  );
  summary.title = row.ok ? 'returned' : 'raised';

  const details = el(
    doc,
    'details',
    'codemode-ToolCallDetails',
    summary,
    el(
      doc,
      'div',
      'codemode-ToolCallBody',
      el(doc, 'div', 'codemode-SectionTitle', 'arguments'),
      el(doc, 'pre', 'codemode-Pre', row.argsText),
      row.traceback
        ? el(doc, 'div', 'codemode-SectionTitle', 'traceback')
        : null,
      row.traceback ? el(doc, 'pre', 'codemode-Pre', row.traceback) : null,
      `round ${row.round}`
    )
  );
  const item = el(
    doc,
    'li',
    `codemode-ToolCall ${row.ok ? 'codemode-ToolCall-ok' : 'codemode-ToolCall-error'}`,
    details
  );
  item.dataset.tool = row.name;
  return item;
}

/** The card for a card model. */
export function renderCardModel(
  doc: Document,
  model: ICardModel,
  options: ICardOptions = {}
): HTMLElement {
  const card = el(
    doc,
    'div',
    `codemode-RunCard codemode-RunCard-${model.severity}`
  );
  card.dataset.status = model.status;

  const header = el(
    doc,
    'div',
    'codemode-RunHeader',
    el(
      doc,
      'span',
      `codemode-Badge codemode-Badge-${model.severity}`,
      model.statusLabel
    ),
    el(doc, 'span', 'codemode-RunTitle', 'Code Mode run'),
    el(doc, 'span', 'codemode-Facts', model.facts.join(' · '))
  );
  // When a live view of the same run sits above the card (a live session), CSS shows only
  // the header; this button opens the rest. Without a live view the card is always open.
  const toggle = el(
    doc,
    'button',
    'codemode-Toggle',
    'details'
  ) as HTMLButtonElement;
  toggle.type = 'button';
  toggle.title = 'Show or hide the details of this run';
  toggle.addEventListener('click', () => {
    const expanded = card.classList.toggle('codemode-mod-expanded');
    toggle.textContent = expanded ? 'hide details' : 'details';
  });
  header.appendChild(toggle);
  card.appendChild(header);
  const body = el(doc, 'div', 'codemode-RunBody');
  card.appendChild(body);

  if (!model.valid) {
    body.appendChild(el(doc, 'div', 'codemode-Warning', model.problem));
    return card;
  }

  for (const warning of model.warnings) {
    body.appendChild(el(doc, 'div', 'codemode-Warning', warning));
  }

  if (options.showCode !== false && model.code) {
    const lines = model.code.replace(/\n+$/, '').split('\n').length;
    const code = el(
      doc,
      'details',
      'codemode-Code',
      el(doc, 'summary', '', `code (${lines} line${lines === 1 ? '' : 's'})`),
      el(doc, 'pre', 'codemode-Pre', model.code.replace(/\n+$/, ''))
    );
    if (options.codeOpen) {
      code.setAttribute('open', '');
    }
    body.appendChild(code);
  }

  for (const section of model.sections) {
    if (section.kind !== 'error') {
      body.appendChild(textSection(doc, section));
    }
  }

  if (model.toolCalls.length) {
    const list = el(doc, 'ol', 'codemode-Timeline');
    for (const row of model.toolCalls) {
      list.appendChild(toolCallRow(doc, row));
    }
    body.appendChild(
      el(
        doc,
        'div',
        'codemode-Section codemode-Section-tools',
        el(doc, 'div', 'codemode-SectionTitle', 'tool calls'),
        list
      )
    );
  }

  for (const section of model.sections) {
    if (section.kind === 'error') {
      body.appendChild(textSection(doc, section));
    }
  }

  if (model.previews.length) {
    const list = el(doc, 'ul', 'codemode-Previews');
    for (const preview of model.previews) {
      const label = `port ${preview.port}`;
      if (preview.url) {
        const link = el(doc, 'a', '', `${label}: ${preview.url}`);
        link.setAttribute('href', preview.url);
        link.setAttribute('target', '_blank');
        link.setAttribute('rel', 'noopener noreferrer');
        list.appendChild(el(doc, 'li', '', link));
      } else {
        list.appendChild(el(doc, 'li', '', label));
      }
    }
    body.appendChild(
      el(
        doc,
        'div',
        'codemode-Section codemode-Section-previews',
        el(doc, 'div', 'codemode-SectionTitle', 'previews'),
        list
      )
    );
  }
  return card;
}

/** The card for raw MIME data. */
export function renderCard(
  doc: Document,
  data: unknown,
  options: ICardOptions = {}
): HTMLElement {
  return renderCardModel(doc, toCardModel(data), options);
}
