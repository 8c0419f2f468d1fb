/**
 * @jest-environment jsdom
 */
import okV2 from './fixtures/quickstart-v2-ok.json';
import errorV2 from './fixtures/quickstart-v2-error.json';
import { openKeys, renderRun } from '../card';
import { mergeVarying } from '../model';

describe('renderRun', () => {
  it('draws the timeline in time order, one row per call', () => {
    const card = renderRun(document, mergeVarying(okV2.data, okV2.metadata));
    expect(card.dataset.status).toBe('ok');
    expect(card.querySelector('.codemode-Badge')!.textContent).toBe('ok');
    const items = Array.from(card.querySelectorAll('.codemode-Timeline > li'));
    expect(items.map(i => i.className.split(' ')[0])).toEqual([
      'codemode-ToolCall',
      'codemode-ToolCall',
      'codemode-ToolCall',
      'codemode-ToolCall',
      'codemode-Output',
      'codemode-ToolCall',
      'codemode-Output',
      'codemode-ToolCall',
      'codemode-Output'
    ]);
    const first = items[0];
    expect(first.querySelector('.codemode-CallText')!.textContent).toBe(
      "get_weather(city='Paris')"
    );
    expect(first.querySelector('.codemode-CallOutcome')!.textContent).toBe(
      "{'city': 'Paris', 'temp_c': 18}"
    );
    expect(first.querySelector('.codemode-CallDuration')!.textContent).toMatch(
      /µs|ms/
    );
    // The cell has the code, Out[n] the value: the notebook view leaves both out.
    expect(card.querySelector('.codemode-Code')).toBeNull();
    expect(card.querySelector('[data-kind="value"]')).toBeNull();
  });

  it('leaves the error to the traceback unless asked', () => {
    const data = mergeVarying(errorV2.data, errorV2.metadata);
    expect(
      renderRun(document, data).querySelector('[data-kind="error"]')
    ).toBeNull();
    const panel = renderRun(document, data, {
      showError: true,
      showCode: true
    });
    expect(panel.querySelector('[data-kind="error"]')!.textContent).toContain(
      'ZeroDivisionError: division by zero'
    );
    expect(panel.querySelector('.codemode-Code summary')!.textContent).toBe(
      'code (3 lines)'
    );
  });

  it('cuts long values on the row; the full value is one click away', () => {
    const long = `'${'word '.repeat(100)}'`;
    const card = renderRun(document, {
      version: 2,
      timeline: [
        {
          kind: 'call',
          id: 1,
          name: 'f',
          round: 1,
          args: `x=${long}`,
          state: 'ok',
          result: long
        }
      ],
      result: { status: 'ok' }
    });
    const row = card.querySelector('.codemode-CallOutcome')!.textContent!;
    expect(row.length).toBeLessThanOrEqual(120);
    expect(row.endsWith('…')).toBe(true);
    const full = card.querySelectorAll('.codemode-CallBody pre');
    expect(full[1].textContent).toBe(long);
  });

  it("draws a tool's prints under its call, before the program's later output", () => {
    const card = renderRun(document, {
      version: 2,
      timeline: [
        {
          kind: 'call',
          id: 1,
          name: 'double',
          round: 1,
          args: 'x=21',
          state: 'ok',
          result: '42'
        },
        { kind: 'output', stream: 'stdout', text: 'double 21\n', call: 1 },
        { kind: 'output', stream: 'stdout', text: '42\n' }
      ],
      result: { status: 'ok' }
    });
    const rows = Array.from(card.querySelectorAll('.codemode-Timeline > li'));
    expect(rows.map(li => li.className)).toEqual([
      'codemode-ToolCall codemode-ToolCall-ok',
      'codemode-Output codemode-Output-stdout codemode-ToolPrint',
      'codemode-Output codemode-Output-stdout'
    ]);
    expect((rows[1] as HTMLElement).dataset.call).toBe('1');
    expect(rows[1].textContent).toBe('double 21');
  });

  it('shows cancelled calls and keeps open what the user opened', () => {
    const data = {
      version: 2,
      timeline: [
        {
          kind: 'call',
          id: 7,
          name: 'slow',
          round: 1,
          args: '',
          state: 'cancelled'
        }
      ],
      result: { status: 'interrupted' }
    };
    const first = renderRun(document, data);
    expect(
      first.querySelector('.codemode-ToolCall')!.getAttribute('data-state')
    ).toBe('cancelled');
    expect(first.querySelector('.codemode-CallOutcome')!.textContent).toBe(
      'cancelled'
    );
    first.querySelector('details')!.setAttribute('open', '');
    const again = renderRun(document, data, { open: openKeys(first) });
    expect(again.querySelector('details')!.hasAttribute('open')).toBe(true);
  });

  it('treats everything as text and links only http(s) previews', () => {
    const card = renderRun(document, {
      version: 2,
      timeline: [
        {
          kind: 'output',
          stream: 'stdout',
          text: '<img src=x onerror=alert(1)>'
        },
        { kind: 'preview', port: 80, url: 'javascript:alert(1)' },
        { kind: 'preview', port: 81, url: 'https://example.org/' }
      ],
      result: { status: 'ok' }
    });
    expect(card.querySelector('img')).toBeNull();
    const links = card.querySelectorAll('a');
    expect(links).toHaveLength(1);
    expect(links[0].getAttribute('href')).toBe('https://example.org/');
  });

  it('says so when the data cannot be read', () => {
    const card = renderRun(document, 'nonsense');
    expect(card.querySelector('.codemode-Warning')!.textContent).toBe(
      'The run data is not a JSON object.'
    );
  });
});
