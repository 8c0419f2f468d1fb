/**
 * One tool's row in the Tools panel: its signature and doc, a form built from its schema (or
 * raw JSON arguments), the Call button, and what the call returned, raised and printed.
 */
import { el } from './card';
import { argsTemplate, ICallResult, IToolInfo } from './client';
import { FormValues, formFields, IField } from './form';
import { formatDuration, pyValue } from './format';
import { formatError } from './model';

/** Per-tool DOM kept across refreshes, so typed arguments and results survive. */
export interface IToolView {
  node: HTMLElement;
  head: HTMLElement;
  doc: HTMLElement;
  /** One input per parameter. */
  form: HTMLElement;
  fields: IField[];
  inputs: Map<string, HTMLInputElement | HTMLTextAreaElement>;
  /** Raw JSON arguments, used when its section is open. */
  json: HTMLDetailsElement;
  args: HTMLTextAreaElement;
  result: HTMLElement;
  button: HTMLButtonElement;
  key: string;
  schema: Record<string, unknown> | null;
}

/** A tool's row: head, doc, form, JSON arguments, Call button and result; `onCall` runs
 * when the person asks for a call (the button, or Enter in an input). */
export function createToolView(
  doc: Document,
  tool: IToolInfo,
  onCall: (view: IToolView) => void
): IToolView {
  const head = el(doc, 'div', 'codemode-ToolHead');
  const docNode = el(doc, 'pre', 'codemode-ToolDoc');
  const form = el(doc, 'div', 'codemode-ToolForm');
  const args = el(
    doc,
    'textarea',
    'codemode-ToolArgs jp-mod-styled'
  ) as HTMLTextAreaElement;
  args.spellcheck = false;
  args.rows = 2;
  args.setAttribute('aria-label', `JSON arguments for ${tool.name}`);
  args.value = argsTemplate(tool.schema);
  const json = el(
    doc,
    'details',
    'codemode-ToolJson',
    el(doc, 'summary', '', 'arguments as JSON'),
    args
  ) as HTMLDetailsElement;
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
    form,
    json,
    el(doc, 'div', 'codemode-ToolCallRow', button),
    result
  );
  node.dataset.tool = tool.name;
  const view: IToolView = {
    node,
    head,
    doc: docNode,
    form,
    fields: [],
    inputs: new Map(),
    json,
    args,
    result,
    button,
    key: '',
    schema: tool.schema
  };
  button.addEventListener('click', () => onCall(view));
  node.addEventListener('keydown', event => {
    const target = event.target as HTMLElement;
    const submit =
      event.key === 'Enter' &&
      (target.tagName === 'INPUT' ||
        event.ctrlKey ||
        event.metaKey ||
        event.shiftKey);
    if (
      submit &&
      (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA')
    ) {
      event.preventDefault();
      onCall(view);
    }
  });
  return view;
}

/** One labelled input per parameter; values typed before a redefinition are kept. */
function buildForm(doc: Document, view: IToolView): void {
  const typed: FormValues = formValues(view);
  view.fields = formFields(view.schema);
  view.inputs.clear();
  const rows = view.fields.map(field => {
    let input: HTMLInputElement | HTMLTextAreaElement;
    if (field.kind === 'json') {
      input = el(
        doc,
        'textarea',
        'codemode-FieldInput jp-mod-styled'
      ) as HTMLTextAreaElement;
      input.rows = 1;
      input.spellcheck = false;
    } else {
      input = el(
        doc,
        'input',
        'codemode-FieldInput jp-mod-styled'
      ) as HTMLInputElement;
      input.type = field.kind === 'boolean' ? 'checkbox' : 'text';
      if (field.kind === 'integer' || field.kind === 'number') {
        input.inputMode = 'decimal';
      }
    }
    input.name = field.name;
    input.placeholder =
      (field.kind === 'json' ? 'JSON' : field.kind) +
      (field.defaultText ? ` (default ${field.defaultText})` : '');
    const previous = typed[field.name];
    if (input instanceof HTMLInputElement && input.type === 'checkbox') {
      input.checked =
        typeof previous === 'boolean' ? previous : field.defaultText === 'true';
    } else if (typeof previous === 'string') {
      input.value = previous;
    }
    input.setAttribute('aria-label', `${field.name} (${field.kind})`);
    view.inputs.set(field.name, input);
    const label = el(
      doc,
      'label',
      'codemode-FieldLabel',
      el(doc, 'code', '', field.name),
      field.required ? el(doc, 'span', 'codemode-Required', '*') : null
    );
    label.title = field.description || `${field.name}: ${field.kind}`;
    const row = el(doc, 'div', 'codemode-Field', label, input);
    row.dataset.field = field.name;
    row.dataset.kind = field.kind;
    return row;
  });
  view.form.replaceChildren(...rows);
  view.form.hidden = rows.length === 0;
}

/** What is typed in the form, by parameter. */
export function formValues(view: IToolView): FormValues {
  const values: FormValues = {};
  for (const [name, input] of view.inputs) {
    values[name] =
      input instanceof HTMLInputElement && input.type === 'checkbox'
        ? input.checked
        : input.value;
  }
  return values;
}

/** Redraw a tool's row after the kernel's description of it changed (typing is kept). */
export function updateToolView(
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
  view.schema = tool.schema;
  buildForm(doc, view);
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

/** The result area of a tool's row: its state and contents. */
export function showResult(
  doc: Document,
  view: IToolView,
  state: string,
  children: (Node | null)[]
): void {
  view.result.dataset.state = state;
  view.result.replaceChildren(...children.filter((c): c is Node => c !== null));
}

/** A finished call's reply in its row: the value or the error, then what the tool printed. */
export function showReply(
  doc: Document,
  view: IToolView,
  reply: ICallResult
): void {
  const took = formatDuration(reply.duration);
  const printed = printedNode(doc, reply);
  if (reply.ok) {
    showResult(doc, view, 'ok', [
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
        pyValue(reply.result)
      ),
      printed
    ]);
  } else {
    const error = reply.error ?? {
      type: 'Error',
      message: '',
      traceback: ''
    };
    showResult(doc, view, 'error', [
      el(
        doc,
        'div',
        'codemode-ResultTitle',
        `${formatError(error)}${took ? ` (after ${took})` : ''}`
      ),
      // Bad arguments or an unknown tool come without frames: the title says it all.
      error.traceback.startsWith('Traceback')
        ? el(doc, 'pre', 'codemode-Pre codemode-Traceback', error.traceback)
        : null,
      printed
    ]);
  }
}

/** What the tool printed during the call (stdout and stderr in order), or null. */
function printedNode(doc: Document, reply: ICallResult): HTMLElement | null {
  if (!reply.output.length) {
    return null;
  }
  const pre = el(doc, 'pre', 'codemode-Pre codemode-ToolPrinted');
  for (const part of reply.output) {
    pre.appendChild(
      el(doc, 'span', `codemode-Printed-${part.stream}`, part.text)
    );
  }
  return el(
    doc,
    'div',
    'codemode-ToolPrintedSection',
    el(doc, 'div', 'codemode-SectionTitle', 'printed'),
    pre
  );
}
