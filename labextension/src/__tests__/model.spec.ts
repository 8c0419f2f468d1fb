import okFixture from './fixtures/quickstart-ok.json';
import errorFixture from './fixtures/quickstart-error.json';
import {
  describeStatus,
  formatCall,
  formatCount,
  formatDuration,
  formatValue,
  mergeVarying,
  readRunResult,
  safeUrl,
  toCardModel,
  truncate
} from '../model';

describe('formatting helpers', () => {
  it('formats durations from microseconds to minutes', () => {
    expect(formatDuration(0.0000059)).toBe('6 µs');
    expect(formatDuration(0.00123)).toBe('1.23 ms');
    expect(formatDuration(0.0456)).toBe('45.6 ms');
    expect(formatDuration(0.123)).toBe('123 ms');
    expect(formatDuration(1.234)).toBe('1.23 s');
    expect(formatDuration(12.34)).toBe('12.3 s');
    expect(formatDuration(125)).toBe('2 min 5 s');
    expect(formatDuration(120)).toBe('2 min');
    expect(formatDuration(-1)).toBe('');
    expect(formatDuration(NaN)).toBe('');
  });

  it('formats counts without locale dependence', () => {
    expect(formatCount(0)).toBe('0');
    expect(formatCount(999)).toBe('999');
    expect(formatCount(1234567)).toBe('1,234,567');
    expect(formatCount(-1000)).toBe('-1,000');
  });

  it('truncates long text and says how much was cut', () => {
    expect(truncate('short', 10)).toBe('short');
    expect(truncate('x'.repeat(1500), 1000)).toBe(
      'x'.repeat(1000) + '… (500 more characters)'
    );
  });

  it('formats calls like the Python call the program made', () => {
    expect(formatCall('get_weather', { city: 'Paris' })).toBe(
      'get_weather(city="Paris")'
    );
    expect(formatCall('add', { a: 1, b: [1, 2], c: null })).toBe(
      'add(a=1, b=[1,2], c=null)'
    );
    expect(formatCall('f', {})).toBe('f()');
    expect(formatCall('f', undefined)).toBe('f()');
  });

  it('never throws on values JSON cannot encode', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(formatValue(cyclic)).toBe('[object Object]');
    expect(formatValue(undefined)).toBe('undefined');
    expect(formatValue(BigInt(3))).toBe('3');
  });

  it('labels every RunResult status', () => {
    expect(describeStatus('ok')).toEqual(['ok', 'ok']);
    expect(describeStatus('error')).toEqual(['error', 'error']);
    expect(describeStatus('timeout')).toEqual(['timed out', 'error']);
    expect(describeStatus('interrupted')).toEqual(['interrupted', 'warning']);
    expect(describeStatus('crashed')).toEqual(['runtime crashed', 'error']);
    expect(describeStatus('limit')).toEqual([
      'tool-call limit reached',
      'error'
    ]);
    expect(describeStatus('brand-new')).toEqual(['brand-new', 'warning']);
  });

  it('keeps only http(s) preview links', () => {
    expect(safeUrl('http://127.0.0.1:8000/')).toBe('http://127.0.0.1:8000/');
    expect(safeUrl(' https://x.example ')).toBe('https://x.example');
    expect(safeUrl('javascript:alert(1)')).toBe('');
    expect(safeUrl('data:text/html,hi')).toBe('');
  });
});

describe('mergeVarying', () => {
  it('puts timings, backend and tracebacks back from the output metadata', () => {
    const merged = mergeVarying(
      errorFixture.data,
      errorFixture.metadata
    ) as any;
    expect(merged.code).toBe(errorFixture.data.code);
    expect(merged.result.duration).toBeCloseTo(0.002877956999896014);
    expect(merged.result.backend).toBe('local');
    expect(merged.result.isolation).toBe('bubblewrap');
    expect(merged.result.error.traceback).toContain('ZeroDivisionError');
    expect(merged.result.tool_calls).toHaveLength(2);
    expect(merged.result.tool_calls[0].name).toBe('get_weather');
    expect(merged.result.tool_calls[0].duration).toBeCloseTo(
      1.0845999895536806e-5
    );
    // the input is not modified
    expect((errorFixture.data.result as any).duration).toBeUndefined();
  });

  it('returns the data as it is without usable metadata', () => {
    expect(mergeVarying(okFixture.data, undefined)).toBe(okFixture.data);
    expect(mergeVarying(okFixture.data, { result: 'x' })).toBe(okFixture.data);
    expect(mergeVarying(null, okFixture.metadata)).toBeNull();
  });
});

describe('toCardModel', () => {
  it('shows a successful run with its tool-call timeline', () => {
    const model = toCardModel(mergeVarying(okFixture.data, okFixture.metadata));
    expect(model.valid).toBe(true);
    expect(model.status).toBe('ok');
    expect(model.severity).toBe('ok');
    expect(model.facts).toEqual([
      '122 ms',
      '6 tool calls',
      '6 rounds',
      'local (isolation: bubblewrap)'
    ]);
    expect(model.warnings).toEqual([]);
    expect(model.code).toContain('readings = [get_weather(city)');
    expect(model.sections.map(s => s.kind)).toEqual(['stdout', 'value']);
    expect(model.sections[0].text).toContain('Paris: 18 °C = 64.4 °F');
    expect(model.sections[1].text).toBe("'Lima'");
    expect(model.toolCalls).toHaveLength(6);
    const first = model.toolCalls[0];
    expect(first.call).toBe('get_weather(city="Paris")');
    expect(first.outcome).toBe('{"city":"Paris","temp_c":18}');
    expect(first.ok).toBe(true);
    expect(first.durationText).toBe('59 µs');
    expect(model.toolCalls[3].call).toBe('to_fahrenheit(temp_c=18)');
    expect(model.toolCalls[3].outcome).toBe('64.4');
    let lastEnd = 0;
    for (const row of model.toolCalls) {
      expect(row.barStart).toBeGreaterThanOrEqual(lastEnd);
      expect(row.barStart + row.barWidth).toBeLessThanOrEqual(1);
      lastEnd = row.barStart + row.barWidth;
    }
  });

  it('shows a failed run with its error and traceback', () => {
    const model = toCardModel(
      mergeVarying(errorFixture.data, errorFixture.metadata)
    );
    expect(model.status).toBe('error');
    expect(model.severity).toBe('error');
    const error = model.sections.find(s => s.kind === 'error')!;
    expect(error.title).toBe('ZeroDivisionError: division by zero');
    expect(error.text).toContain('File "<cell>", line 3');
    expect(model.toolCalls.map(r => r.index)).toEqual([1, 2]);
  });

  it('shows the saved data alone (no metadata) without timings', () => {
    const model = toCardModel(errorFixture.data);
    expect(model.facts).toEqual(['2 tool calls', '2 rounds']);
    const error = model.sections.find(s => s.kind === 'error')!;
    expect(error.title).toBe('ZeroDivisionError: division by zero');
    expect(error.text).toBe('');
  });

  it('shows tool errors, stderr, dropped output, previews and warnings', () => {
    const model = toCardModel({
      version: 2,
      code: 'x',
      result: {
        ok: false,
        status: 'crashed',
        stdout: 'a',
        stderr: 'oops\n',
        stdout_dropped: 2048,
        state_lost: true,
        isolation: 'none',
        backend: 'local',
        duration: 1.5,
        rounds: 1,
        tool_calls: [
          {
            id: 1,
            name: 'fetch',
            args: { url: 'x' },
            round: 1,
            result: null,
            error: {
              type: 'ValueError',
              message: 'bad url',
              traceback: 'Traceback...\nValueError: bad url'
            },
            duration: 0.5
          }
        ],
        previews: [
          { port: 8000, url: 'http://127.0.0.1:8000/' },
          { port: 9000, url: 'javascript:alert(1)' }
        ]
      }
    });
    expect(model.statusLabel).toBe('runtime crashed');
    expect(model.warnings).toHaveLength(3);
    expect(model.warnings[0]).toContain('newer codemode-jupyter');
    expect(model.warnings[1]).toContain(
      'variables from earlier cells are gone'
    );
    expect(model.warnings[2]).toContain('without sandbox isolation');
    const stdout = model.sections.find(s => s.kind === 'stdout')!;
    expect(stdout.note).toBe('2,048 characters dropped (output limit)');
    expect(model.sections.find(s => s.kind === 'stderr')!.text).toBe('oops\n');
    const row = model.toolCalls[0];
    expect(row.ok).toBe(false);
    expect(row.outcome).toBe('ValueError: bad url');
    expect(row.traceback).toContain('Traceback');
    expect(row.barWidth).toBeCloseTo(0.5 / 1.5);
    expect(model.previews).toEqual([
      { port: 8000, url: 'http://127.0.0.1:8000/' },
      { port: 9000, url: '' }
    ]);
  });

  it('truncates huge values in one-line places', () => {
    const model = toCardModel({
      version: 1,
      code: '',
      result: {
        status: 'ok',
        tool_calls: [
          {
            name: 'big',
            args: { s: 'y'.repeat(5000) },
            result: 'z'.repeat(5000)
          }
        ]
      }
    });
    const row = model.toolCalls[0];
    expect(row.call.length).toBeLessThan(260);
    expect(row.outcome.length).toBeLessThan(260);
    expect(row.argsText.length).toBeGreaterThan(5000);
  });

  it('copes with unreadable payloads', () => {
    for (const data of [null, 'text', 42, [], {}, { result: 'x' }]) {
      const model = toCardModel(data);
      expect(model.valid).toBe(false);
      expect(model.problem).toBeTruthy();
    }
  });

  it('fills missing fields with neutral defaults', () => {
    const result = readRunResult({
      ok: false,
      tool_calls: [null, { name: 7 }]
    });
    expect(result.status).toBe('error');
    expect(result.tool_calls).toHaveLength(2);
    expect(result.tool_calls[0]).toMatchObject({ id: 1, name: '?', args: {} });
    expect(result.tool_calls[1].name).toBe('7');
    expect(result.previews).toEqual([]);
    const model = toCardModel({ result: { status: 'ok' } });
    expect(model.valid).toBe(true);
    expect(model.facts).toEqual(['0 tool calls']);
    expect(model.sections).toEqual([]);
  });
});
