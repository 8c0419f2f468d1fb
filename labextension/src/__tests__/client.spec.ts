import {
  argsTemplate,
  ICommLike,
  LOAD_HINT,
  parseArgs,
  readTools,
  ToolsClient
} from '../client';

class FakeComm implements ICommLike {
  sent: Record<string, unknown>[] = [];
  closed = false;
  send(data: Record<string, unknown>): void {
    this.sent.push(data);
  }
  close(): void {
    this.closed = true;
  }
}

const TOOLS = {
  op: 'tools',
  tools: [
    {
      name: 'get_weather',
      signature: '(city: str) -> dict',
      doc: 'Current weather for a city.',
      is_async: false,
      schema: {
        type: 'object',
        properties: { city: { type: 'string', title: 'City' } },
        required: ['city']
      }
    }
  ]
};

describe('ToolsClient', () => {
  it('asks for the tools and runs when attached, and becomes ready on a reply', () => {
    const client = new ToolsClient();
    const comm = new FakeComm();
    const changes: string[] = [];
    client.onChange(() => changes.push(client.state));
    client.attach(comm);
    expect(client.state).toBe('connecting');
    expect(comm.sent).toEqual([{ op: 'list' }, { op: 'runs' }]);
    client.handleMessage(TOOLS);
    expect(client.state).toBe('ready');
    expect(client.tools.map(t => t.name)).toEqual(['get_weather']);
    client.handleMessage({
      op: 'runs',
      runs: [
        { code: 'print(1)', result: { status: 'ok' }, execution_count: 3 },
        'junk',
        { code: 'x = 1', result: { status: 'ok' }, source: 'agent' }
      ]
    });
    expect(client.runs).toEqual([
      {
        code: 'print(1)',
        payload: {
          code: 'print(1)',
          result: { status: 'ok' },
          execution_count: 3
        },
        executionCount: 3,
        finishedAt: null,
        source: 'cell'
      },
      {
        code: 'x = 1',
        payload: { code: 'x = 1', result: { status: 'ok' }, source: 'agent' },
        executionCount: null,
        finishedAt: null,
        source: 'agent'
      }
    ]);
    expect(changes).toEqual(['connecting', 'ready', 'ready']);
  });

  it('matches call results to calls by request id', async () => {
    const client = new ToolsClient();
    const comm = new FakeComm();
    client.attach(comm);
    client.handleMessage(TOOLS);
    const first = client.call('get_weather', { city: 'Paris' });
    const second = client.call('get_weather', { city: 'Oslo' });
    const requests = comm.sent.filter(m => m.op === 'call');
    expect(requests).toHaveLength(2);
    expect(requests[0]).toMatchObject({
      name: 'get_weather',
      args: { city: 'Paris' }
    });
    expect(requests[0].request_id).not.toBe(requests[1].request_id);
    // replies may arrive in any order
    client.handleMessage({
      op: 'call_result',
      request_id: requests[1].request_id,
      ok: false,
      result: null,
      error: { type: 'KeyError', message: "'Oslo'", traceback: 'Traceback...' },
      duration: 0.01
    });
    client.handleMessage({
      op: 'call_result',
      request_id: requests[0].request_id,
      ok: true,
      result: { city: 'Paris', temp_c: 18 },
      error: null,
      duration: 0.002
    });
    await expect(first).resolves.toMatchObject({
      ok: true,
      result: { city: 'Paris', temp_c: 18 },
      error: null
    });
    await expect(second).resolves.toMatchObject({
      ok: false,
      error: { type: 'KeyError', message: "'Oslo'", traceback: 'Traceback...' }
    });
    expect(client.pendingCalls).toBe(0);
  });

  it('keeps what the tool printed, in order, and drops what is not text', async () => {
    const client = new ToolsClient();
    const comm = new FakeComm();
    client.attach(comm);
    client.handleMessage(TOOLS);
    const call = client.call('get_weather', { city: 'Paris' });
    const [request] = comm.sent.filter(m => m.op === 'call');
    client.handleMessage({
      op: 'call_result',
      request_id: request.request_id,
      ok: true,
      result: 1,
      error: null,
      duration: 0.001,
      output: [['stdout', 'a\n'], ['stderr', 'b\n'], [1, 2], 'x']
    });
    await expect(call).resolves.toMatchObject({
      output: [
        { stream: 'stdout', text: 'a\n' },
        { stream: 'stderr', text: 'b\n' }
      ]
    });
  });

  it('reports a closed comm as the missing kernel extension and fails pending calls', async () => {
    const client = new ToolsClient();
    client.attach(new FakeComm());
    client.handleClose();
    expect(client.state).toBe('unavailable');
    expect(LOAD_HINT).toContain('%load_ext codemode_jupyter');
    await expect(client.call('x', {})).rejects.toThrow('not ready');

    client.attach(new FakeComm());
    client.handleMessage(TOOLS);
    const pending = client.call('get_weather', { city: 'Lima' });
    client.handleClose();
    await expect(pending).rejects.toThrow('closed');
    expect(client.tools).toEqual([]);
  });

  it('closes the old comm when detached or re-attached', () => {
    const client = new ToolsClient();
    const first = new FakeComm();
    client.attach(first);
    const second = new FakeComm();
    client.attach(second);
    expect(first.closed).toBe(true);
    expect(second.closed).toBe(false);
    client.detach();
    expect(second.closed).toBe(true);
    expect(client.state).toBe('detached');
  });

  it('ignores unknown messages', () => {
    const client = new ToolsClient();
    client.attach(new FakeComm());
    client.handleMessage({ op: 'error', message: 'unknown op' });
    client.handleMessage('junk');
    expect(client.state).toBe('connecting');
  });
});

describe('arguments', () => {
  it('builds a template from the parameters schema', () => {
    expect(argsTemplate(TOOLS.tools[0].schema)).toBe('{"city":""}');
    expect(
      argsTemplate({
        properties: {
          a: { type: 'integer' },
          b: { type: 'integer', default: 1 },
          c: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
          d: { enum: ['x', 'y'] },
          e: {}
        }
      })
    ).toBe('{"a":0,"b":1,"c":false,"d":"x","e":null}');
    expect(argsTemplate(null)).toBe('{}');
    expect(argsTemplate({ error: 'no schema' })).toBe('{}');
  });

  it('parses JSON objects and explains anything else', () => {
    expect(parseArgs('{"city": "Paris"}')).toEqual({ args: { city: 'Paris' } });
    expect(parseArgs('  ')).toEqual({ args: {} });
    expect(parseArgs('[1]')).toEqual({
      error: expect.stringContaining('JSON object')
    });
    expect(parseArgs('{city: 1}')).toEqual({
      error: expect.stringContaining('not valid JSON')
    });
  });

  it('normalises the tool list', () => {
    expect(readTools([{ name: 'f' }, 3])).toEqual([
      { name: 'f', signature: '', doc: '', is_async: false, schema: null }
    ]);
    expect(readTools('x')).toEqual([]);
  });
});
