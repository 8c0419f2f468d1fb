/**
 * @jest-environment jsdom
 */
import { agentCellSource, INSERT_CELL_EVENT, renderRun } from '../card';
import {
  applyOutputs,
  feedOf,
  IOutputLike,
  planRecords,
  stoppedText
} from '../records';

/** An agent run's record: a call approved, one rejected, one answered with a stand-in. */
function agentRun(record: boolean): Record<string, unknown> {
  return {
    version: 2,
    code: "send('ann')\nsend('bob')",
    agent: {
      run: 3,
      session: 'agent-2',
      record,
      tool_output: [['stdout', 'sending\n']]
    },
    result: { status: 'ok', value_repr: "'done'" },
    timeline: [
      {
        kind: 'call',
        id: 2,
        name: 'send',
        round: 1,
        args: "to='ann'",
        state: 'ok',
        result: "'sent'",
        duration: 0.002,
        waited: 4.5,
        approval: { decision: 'approve', by: 'notebook' }
      },
      {
        kind: 'call',
        id: 3,
        name: 'send',
        round: 2,
        args: "to='bob'",
        state: 'error',
        error: { type: 'ToolRejected', message: 'no', traceback: '' },
        approval: { decision: 'reject', by: 'notebook', reason: 'not today' }
      },
      {
        kind: 'call',
        id: 4,
        name: 'send',
        round: 3,
        args: "to='cy'",
        state: 'ok',
        result: '{}',
        approval: { decision: 'return', by: 'cell', stand_in: true }
      },
      {
        kind: 'call',
        id: 5,
        name: 'send',
        round: 4,
        args: "to='dee'",
        state: 'waiting',
        approval: { decision: 'waiting' }
      }
    ]
  };
}

describe('an agent run', () => {
  it('says who decided each paused call, and keeps the wait out of the duration', () => {
    const card = renderRun(document, agentRun(false));
    const rows = Array.from(card.querySelectorAll('.codemode-ToolCall'));
    expect(rows.map(r => (r as HTMLElement).dataset.approval)).toEqual([
      'approve',
      'reject',
      'stand-in',
      'waiting'
    ]);
    expect(rows[0].querySelector('.codemode-CallApproval')!.textContent).toBe(
      'approved in the notebook'
    );
    expect(
      rows[0].querySelector('.codemode-CallDuration')!.textContent
    ).toMatch(/ms/);
    expect(rows[0].textContent).toContain('waited 4.50 s for a decision');
    expect(rows[1].querySelector('.codemode-CallApproval')!.textContent).toBe(
      'rejected in the notebook: not today'
    );
    // A stand-in value is not a result: the tool did not run.
    expect(rows[2].querySelector('.codemode-CallMark')!.textContent).toBe('=');
    expect(rows[2].querySelector('.codemode-CallOutcome')!.textContent).toBe(
      '{}, tool not run'
    );
    expect(rows[3].querySelector('.codemode-CallOutcome')!.textContent).toBe(
      'waiting for approval'
    );
    expect(card.querySelector('.codemode-RunTitle')!.textContent).toBe(
      'agent run 3 (session agent-2)'
    );
    // The live view leaves the program, prints and value to the feed's own outputs.
    expect(card.querySelector('[data-kind="program"]')).toBeNull();
  });

  it('as the saved record, shows its program, its tools prints and its value', () => {
    const card = renderRun(document, agentRun(true));
    expect(card.dataset.agentRecord).toBe('true');
    expect(card.querySelector('[data-kind="program"]')!.textContent).toContain(
      "send('bob')"
    );
    expect(
      card.querySelector('[data-kind="tool-output"]')!.textContent
    ).toContain('sending');
    expect(card.querySelector('[data-kind="value"]')!.textContent).toContain(
      "'done'"
    );
  });

  it('"Insert as cell" sends the program as a %%codemode --session cell', () => {
    const card = renderRun(document, agentRun(true));
    document.body.appendChild(card);
    const seen: string[] = [];
    document.addEventListener(INSERT_CELL_EVENT, event => {
      seen.push((event as CustomEvent).detail.source);
    });
    (card.querySelector('.codemode-InsertCell') as HTMLElement).click();
    expect(seen).toEqual([
      "%%codemode --session agent-2\nsend('ann')\nsend('bob')\n"
    ]);
    // A session name that is not a plain word is not pasted into the magic line.
    expect(agentCellSource('1', 'x --fresh')).toBe(
      '%%codemode --session agent\n1\n'
    );
  });
});

function record(run: number, text: string): IOutputLike {
  return {
    output_type: 'display_data',
    data: { 'text/plain': text },
    metadata: { codemode_feed: { feed: 'F', run } }
  };
}

const FEED: IOutputLike = {
  output_type: 'display_data',
  data: {
    'application/vnd.codemode.feed+json': { feed: 'F', tools: ['send'] },
    'text/plain': 'feed'
  },
  metadata: {}
};

describe('the serving cell record', () => {
  it('replaces a run in place, appends new runs and drops what the feed let go', () => {
    const now = [FEED, record(1, 'one'), record(2, 'two')];
    expect(feedOf(now)).toBe('F');
    const updated = planRecords(now, {
      feed: 'F',
      run: 1,
      outputs: [record(1, 'one, done')],
      keep: [1, 2]
    });
    expect(updated.map(o => o.data!['text/plain'])).toEqual([
      'feed',
      'one, done',
      'two'
    ]);
    const next = planRecords(updated, {
      feed: 'F',
      run: 3,
      outputs: [record(3, 'three')],
      keep: [2, 3]
    });
    expect(next.map(o => o.data!['text/plain'])).toEqual([
      'feed',
      'two',
      'three'
    ]);
  });

  it('changes only the outputs that differ', () => {
    const list = [FEED, record(1, 'one'), record(2, 'two')];
    const calls: string[] = [];
    const model = {
      get length() {
        return list.length;
      },
      toJSON: () => list.map(o => ({ ...o })),
      set: (index: number, output: IOutputLike) => {
        calls.push(`set ${index}`);
        list[index] = output;
      },
      add: (output: IOutputLike) => {
        calls.push('add');
        return list.push(output);
      },
      remove: (index: number) => {
        calls.push(`remove ${index}`);
        list.splice(index, 1);
      }
    };
    applyOutputs(model, [FEED, record(2, 'two'), record(3, 'three')]);
    expect(calls).toEqual(['set 1', 'set 2']);
    applyOutputs(model, [FEED]);
    expect(calls.slice(2)).toEqual(['remove 2', 'remove 1']);
  });

  it('says a saved serving cell is not running, with what it offered', () => {
    expect(stoppedText({ tools: ['send', 'ping'], approve: ['send'] })).toBe(
      'codemode: the MCP server of this cell is not running (%codemode serve starts one)\n' +
        'tools agents could call: send, ping\napproval was asked for: send'
    );
  });
});
