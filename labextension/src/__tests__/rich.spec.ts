/**
 * @jest-environment jsdom
 */
import { splitCsvLine, formatBytes } from '../artifacts';
import { IRichHost, renderRun } from '../card';
import { IDisplayEntry, mergeVarying } from '../model';

const PNG = 'iVBORw0KGgo=';

/** A saved run: output, a display (its PNG in the metadata), a call, a display. */
const SAVED = {
  data: {
    version: 2,
    timeline: [
      { kind: 'output', stream: 'stdout', text: 'start\n' },
      {
        kind: 'display',
        data: { 'text/plain': '<Figure>' }
      },
      {
        kind: 'call',
        id: 1,
        name: 'temps',
        round: 1,
        args: '',
        state: 'ok',
        result: '[3, 5]'
      },
      {
        kind: 'display',
        data: { 'text/plain': 'df', 'text/html': '<table></table>' }
      }
    ],
    result: { status: 'ok' }
  },
  metadata: {
    version: 2,
    result: {
      artifacts: [
        {
          name: 'sales.csv',
          size: 40,
          rel: 'out/sales.csv',
          head: ['a,b', '1,"x, y"']
        },
        { name: 'chart.png', size: 2048, rel: 'out/chart.png' },
        { name: 'far.txt', size: 1, rel: '../etc/passwd' }
      ],
      artifacts_left: ['big.bin (over the 10 bytes a run may bring back)']
    },
    timeline: {
      '1': {
        data: { 'image/png': PNG },
        metadata: { 'image/png': { width: 10 } }
      },
      '2': { duration: 0.001 }
    }
  }
};

/** A host that records what it was asked and draws the preferred type as a marked div. */
class FakeHost implements IRichHost {
  calls: [string, IDisplayEntry][] = [];
  display(entry: IDisplayEntry, key: string): HTMLElement | null {
    this.calls.push([key, entry]);
    if (!('image/png' in entry.data) && !('text/html' in entry.data)) {
      return null;
    }
    const node = document.createElement('div');
    node.className = 'fake-display';
    node.dataset.types = Object.keys(entry.data).sort().join(' ');
    return node;
  }
  fileUrl = (path: string): Promise<string> =>
    Promise.resolve(`/files/nb/${path}`);
}

describe('displays in the run card', () => {
  it('merges a display back: its images and metadata from the output metadata', () => {
    const merged = mergeVarying(SAVED.data, SAVED.metadata) as any;
    expect(merged.timeline[1].data).toEqual({
      'text/plain': '<Figure>',
      'image/png': PNG
    });
    expect(merged.timeline[1].metadata).toEqual({ 'image/png': { width: 10 } });
    expect(merged.timeline[2].duration).toBe(0.001);
    expect(merged.timeline[3].data['text/html']).toBe('<table></table>');
  });

  it('draws displays in time order through the host, keyed by their place', () => {
    const host = new FakeHost();
    const card = renderRun(document, mergeVarying(SAVED.data, SAVED.metadata), {
      host,
      keyPrefix: 'run-1:'
    });
    const kinds = Array.from(
      card.querySelectorAll('.codemode-Timeline > li')
    ).map(li => li.className.split(' ')[0]);
    expect(kinds).toEqual([
      'codemode-Output',
      'codemode-Display',
      'codemode-ToolCall',
      'codemode-Display'
    ]);
    expect(host.calls.map(([key]) => key)).toEqual([
      'run-1:display-1',
      'run-1:display-3'
    ]);
    const drawn = card.querySelectorAll('.codemode-Display .fake-display');
    expect(
      Array.from(drawn).map(n => (n as HTMLElement).dataset.types)
    ).toEqual(['image/png text/plain', 'text/html text/plain']);
  });

  it('shows the text without a host, and a stub of a live update as text and a note', () => {
    const card = renderRun(document, {
      version: 2,
      timeline: [
        { kind: 'display', data: { 'text/plain': 'old' }, omitted: 12345 },
        { kind: 'display', data: { 'text/plain': 'new', 'text/html': '<b>' } }
      ],
      result: { status: 'running' }
    });
    const items = card.querySelectorAll('.codemode-Display');
    expect(items[0].textContent).toContain('old');
    expect(items[0].textContent).toContain('12,345 characters');
    expect((items[0] as HTMLElement).dataset.omitted).toBe('12345');
    expect(items[1].querySelector('pre')!.textContent).toBe('new');
  });
});

describe('files in the run card', () => {
  it('links each file, previews images and CSVs, says what was left behind', async () => {
    const card = renderRun(document, mergeVarying(SAVED.data, SAVED.metadata), {
      host: new FakeHost()
    });
    const section = card.querySelector('[data-kind="files"]')!;
    expect(section.querySelector('.codemode-SectionTitle')!.textContent).toBe(
      'files (3)'
    );
    await Promise.resolve(); // the links' URLs resolve
    await Promise.resolve();
    const links = Array.from(section.querySelectorAll('a'));
    expect(links.map(a => [a.textContent, a.getAttribute('href')])).toEqual([
      ['sales.csv', '/files/nb/out/sales.csv'],
      ['chart.png', '/files/nb/out/chart.png'],
      ['far.txt', null] // a path out of the notebook's folder gets no link
    ]);
    const img = section.querySelector('img')!;
    expect(img.getAttribute('src')).toBe('/files/nb/out/chart.png');
    const rows = Array.from(section.querySelectorAll('table tr')).map(tr =>
      Array.from(tr.children).map(c => `${c.tagName}:${c.textContent}`)
    );
    expect(rows).toEqual([
      ['TH:a', 'TH:b'],
      ['TD:1', 'TD:x, y']
    ]);
    expect(section.querySelector('.codemode-ArtifactsLeft')!.textContent).toBe(
      'Not brought back: big.bin (over the 10 bytes a run may bring back)'
    );
  });

  it('splits CSV lines and formats sizes', () => {
    expect(splitCsvLine('a,"b ""c""",,d')).toEqual(['a', 'b "c"', '', 'd']);
    expect(splitCsvLine('a\tb', true)).toEqual(['a', 'b']);
    expect(formatBytes(812)).toBe('812 B');
    expect(formatBytes(2048)).toBe('2.0 KiB');
    expect(formatBytes(5 * 1024 * 1024)).toBe('5.0 MiB');
  });
});
