import okV1 from './fixtures/quickstart-ok.json';
import errorV1 from './fixtures/quickstart-error.json';
import okV2 from './fixtures/quickstart-v2-ok.json';
import errorV2 from './fixtures/quickstart-v2-error.json';
import { describeStatus, mergeVarying, readEntry, toRunView } from '../model';

describe('toRunView', () => {
  it('reads a version-2 run: the timeline in order, timings from the metadata', () => {
    const view = toRunView(mergeVarying(okV2.data, okV2.metadata));
    expect(view.valid).toBe(true);
    expect(view.status).toBe('ok');
    expect(view.facts.slice(1)).toEqual([
      '6 tool calls',
      '6 rounds',
      'local (isolation: bubblewrap)'
    ]);
    const kinds = view.entries.map(e => e.kind);
    expect(kinds).toEqual([
      'call',
      'call',
      'call',
      'call',
      'output',
      'call',
      'output',
      'call',
      'output'
    ]);
    const first = view.entries[0];
    expect(first.kind === 'call' && first.args).toBe("city='Paris'");
    expect(first.kind === 'call' && first.result).toBe(
      "{'city': 'Paris', 'temp_c': 18}"
    );
    expect(first.kind === 'call' && first.duration).toBeGreaterThan(0);
    expect(view.value).toBe("'Lima'");
  });

  it('has no timings without the metadata', () => {
    const view = toRunView(okV2.data);
    expect(view.facts[0]).toBe('6 tool calls');
    const first = view.entries[0];
    expect(first.kind === 'call' && first.duration).toBeNull();
  });

  it('reads a version-1 run as output, then calls, in Python-literal style', () => {
    const view = toRunView(mergeVarying(okV1.data, okV1.metadata));
    expect(view.entries[0]).toEqual({
      kind: 'output',
      stream: 'stdout',
      text: expect.stringContaining('Lima: 24 °C = 75.2 °F')
    });
    const call = view.entries[1];
    expect(call.kind === 'call' && call.args).toBe("city='Paris'");
    expect(call.kind === 'call' && call.result).toBe(
      "{'city': 'Paris', 'temp_c': 18}"
    );
    expect(view.facts).toContain('local (isolation: bubblewrap)');
  });

  it('keeps the error and its traceback, from either version', () => {
    for (const fixture of [errorV1, errorV2]) {
      const view = toRunView(mergeVarying(fixture.data, fixture.metadata));
      expect(view.severity).toBe('error');
      expect(view.error!.type).toBe('ZeroDivisionError');
      expect(view.error!.traceback).toContain('File "<cell>", line');
    }
  });

  it('shows a live update as running, with calls in flight', () => {
    const view = toRunView({
      version: 2,
      code: 'x',
      timeline: [
        {
          kind: 'call',
          id: 1,
          name: 'slow',
          round: 1,
          args: '',
          state: 'running'
        }
      ],
      warnings: ['no isolation'],
      result: { status: 'running', duration: 1.5 }
    });
    expect(view.live).toBe(true);
    expect(view.statusLabel).toBe('running');
    expect(view.facts[0]).toBe('1.50 s');
    expect(view.warnings).toEqual(['no isolation']);
    expect(view.entries[0]).toMatchObject({ state: 'running', duration: null });
  });

  it('labels every status and keeps unknown ones', () => {
    expect(describeStatus('timeout')).toEqual(['timed out', 'error']);
    expect(describeStatus('interrupted')).toEqual(['interrupted', 'warning']);
    expect(describeStatus('weird')).toEqual(['weird', 'warning']);
  });

  it('never throws on unreadable payloads or entries', () => {
    expect(toRunView(null).valid).toBe(false);
    expect(toRunView({ version: 2 }).problem).toBe(
      'The run data has no result.'
    );
    expect(readEntry({ kind: 'call' }, 0)).toMatchObject({
      name: '?',
      state: 'ok'
    });
    expect(readEntry({ kind: 'future' }, 0)).toEqual({
      kind: 'unknown',
      name: 'future'
    });
    expect(
      readEntry({ kind: 'preview', port: 1, url: 'javascript:x' }, 0)
    ).toEqual({
      kind: 'preview',
      port: 1,
      url: ''
    });
  });
});
