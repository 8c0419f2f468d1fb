/**
 * The Tools panel's recent runs: one collapsible card per run of the kernel (cells, agents'
 * runs, the tasks of a `--map` cell), newest first, drawn by the notebook's run renderer.
 */
import { el, openKeys, renderRunView } from './card';
import { IRunRecord } from './client';
import { DisplayHost } from './displays';
import { toRunView } from './model';

/** The list of recent runs; `scrollToCell` is asked to show the cell of a run. */
export class RunList {
  constructor(
    doc: Document,
    private _scrollToCell: (count: number | null) => void
  ) {
    this.count = el(doc, 'span', 'codemode-Count');
    this.empty = el(
      doc,
      'p',
      'codemode-Empty',
      'No %%codemode runs yet in this kernel.'
    );
    this.list = el(doc, 'ol', 'codemode-RunList');
  }

  /** The run count, the empty note and the list: the panel places them. */
  readonly count: HTMLElement;
  readonly empty: HTMLElement;
  readonly list: HTMLElement;
  /** The displays of the drawn runs (set by the panel while it follows a notebook). */
  host: DisplayHost | null = null;

  /** Draw `runs`; `ready` says the kernel answers (else no "no runs" note). */
  render(runs: readonly IRunRecord[], ready: boolean): void {
    const doc = this.list.ownerDocument;
    this.count.textContent = `(${runs.length})`;
    this.empty.hidden = runs.length > 0 || !ready;
    // The client replaces its run list only when the kernel sends one: tool pushes and
    // call replies need not rebuild up to 20 cards.
    if (runs === this._shown) {
      return;
    }
    this._shown = runs;
    // Keep open what the user opened (runs keyed by execution count and finish time).
    const open = openKeys(this.list);
    this.host?.beginDraw();
    const items = runs.map(run => this._item(doc, run, open));
    this.host?.endDraw();
    this.list.replaceChildren(...items.reverse()); // newest first
  }

  private _item(
    doc: Document,
    run: IRunRecord,
    open: ReadonlySet<string>
  ): HTMLElement {
    const view = toRunView(run.payload);
    const key = `run-${run.executionCount}-${run.finishedAt}`;
    const firstLine = run.code
      .split('\n')
      .map(line => line.trim())
      .find(line => line && !line.startsWith('#') && !line.startsWith('%%'));
    const agent = run.source === 'agent';
    const task = run.source === 'map';
    const cell = el(
      doc,
      'button',
      agent ? 'codemode-RunCell codemode-RunCell-agent' : 'codemode-RunCell',
      agent
        ? 'agent'
        : run.executionCount !== null
          ? `[${run.executionCount}]`
          : '[ ]'
    ) as HTMLButtonElement;
    cell.type = 'button';
    cell.title = agent
      ? "An agent's run (%codemode serve): scroll to the cell that serves it"
      : task
        ? 'A task of a %%codemode --map cell: scroll to that cell'
        : 'Scroll to the cell that ran this';
    cell.addEventListener('click', event => {
      event.preventDefault();
      event.stopPropagation();
      this._scrollToCell(run.executionCount);
    });
    const summary = el(
      doc,
      'summary',
      'codemode-RunSummary',
      el(
        doc,
        'span',
        `codemode-Badge codemode-Badge-${view.severity}`,
        view.statusLabel
      ),
      cell,
      el(doc, 'code', 'codemode-RunFirstLine', firstLine || '(empty)'),
      el(doc, 'span', 'codemode-RunTime', formatTime(run.finishedAt))
    );
    const details = el(
      doc,
      'details',
      'codemode-RunDetails',
      summary,
      renderRunView(doc, view, {
        showCode: true,
        showError: true,
        showValue: true,
        open,
        host: this.host ?? undefined,
        keyPrefix: `${key}:`
      })
    );
    details.dataset.key = key;
    if (open.has(key)) {
      details.setAttribute('open', '');
    }
    const item = el(doc, 'li', 'codemode-RunItem', details);
    item.dataset.status = view.status;
    return item;
  }

  /** Draw the next runs given even if they are the ones drawn (a new display host). */
  forget(): void {
    this._shown = null;
  }

  private _shown: readonly IRunRecord[] | null = null;
}

/** `14:03:07` in the browser's time zone ('' if unknown). */
function formatTime(seconds: number | null): string {
  if (seconds === null) {
    return '';
  }
  const date = new Date(seconds * 1000);
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map(n => String(n).padStart(2, '0'))
    .join(':');
}
