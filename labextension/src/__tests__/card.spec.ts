/**
 * @jest-environment jsdom
 */
import okFixture from './fixtures/quickstart-ok.json';
import errorFixture from './fixtures/quickstart-error.json';
import { renderCard } from '../card';
import { mergeVarying } from '../model';

describe('renderCard', () => {
  it('draws status, output, value and one row per tool call', () => {
    const card = renderCard(
      document,
      mergeVarying(okFixture.data, okFixture.metadata)
    );
    expect(card.dataset.status).toBe('ok');
    expect(card.querySelector('.codemode-Badge')!.textContent).toBe('ok');
    expect(card.querySelector('.codemode-Facts')!.textContent).toBe(
      '122 ms · 6 tool calls · 6 rounds · local (isolation: bubblewrap)'
    );
    expect(
      card.querySelector('[data-kind="stdout"] pre')!.textContent
    ).toContain('Lima: 24 °C = 75.2 °F');
    expect(card.querySelector('[data-kind="value"] pre')!.textContent).toBe(
      "'Lima'"
    );
    const rows = card.querySelectorAll('.codemode-ToolCall');
    expect(rows).toHaveLength(6);
    expect(rows[0].querySelector('.codemode-ToolCallCall')!.textContent).toBe(
      'get_weather(city="Paris")'
    );
    expect((rows[0] as HTMLElement).dataset.tool).toBe('get_weather');
    expect(card.querySelector('details.codemode-Code pre')!.textContent).toBe(
      okFixture.data.code.trimEnd()
    );
  });

  it('draws the error with its traceback after the tool calls', () => {
    const card = renderCard(
      document,
      mergeVarying(errorFixture.data, errorFixture.metadata)
    );
    expect(card.classList.contains('codemode-RunCard-error')).toBe(true);
    const sections = Array.from(card.querySelectorAll('.codemode-Section')).map(
      s => (s as HTMLElement).dataset.kind ?? 'tools'
    );
    expect(sections).toEqual(['tools', 'error']);
    const error = card.querySelector('[data-kind="error"]')!;
    expect(error.querySelector('.codemode-SectionTitle')!.textContent).toBe(
      'ZeroDivisionError: division by zero'
    );
    expect(error.querySelector('pre')!.textContent).toContain('line 3');
  });

  it('treats everything from the run as text, and links only http(s)', () => {
    const card = renderCard(document, {
      version: 1,
      code: '<script>alert(1)</script>',
      result: {
        status: 'ok',
        stdout: '<img src=x onerror="alert(1)">',
        tool_calls: [{ name: '<b>x</b>', args: {}, result: '<i>y</i>' }],
        previews: [
          { port: 1, url: 'javascript:alert(1)' },
          { port: 2, url: 'http://localhost:2/' }
        ]
      }
    });
    expect(card.querySelector('img')).toBeNull();
    expect(card.querySelector('script')).toBeNull();
    expect(card.querySelector('b')).toBeNull();
    expect(card.querySelector('[data-kind="stdout"] pre')!.textContent).toBe(
      '<img src=x onerror="alert(1)">'
    );
    const links = card.querySelectorAll('a');
    expect(links).toHaveLength(1);
    expect(links[0].getAttribute('href')).toBe('http://localhost:2/');
    expect(links[0].getAttribute('rel')).toBe('noopener noreferrer');
    expect(card.querySelector('.codemode-Previews')!.textContent).toContain(
      'port 1'
    );
  });

  it('says so when the data cannot be read', () => {
    const card = renderCard(document, 'nonsense');
    expect(card.querySelector('.codemode-Warning')!.textContent).toBe(
      'The run data is not a JSON object.'
    );
    expect(card.querySelector('.codemode-Badge')!.textContent).toBe(
      'unreadable run'
    );
  });
});

describe('the details toggle', () => {
  it('marks the card expanded and says what the next click does', () => {
    const card = renderCard(document, okFixture.data);
    const toggle = card.querySelector('button.codemode-Toggle') as HTMLElement;
    expect(card.querySelector('.codemode-RunBody')).not.toBeNull();
    expect(toggle.textContent).toBe('details');
    toggle.click();
    expect(card.classList.contains('codemode-mod-expanded')).toBe(true);
    expect(toggle.textContent).toBe('hide details');
    toggle.click();
    expect(card.classList.contains('codemode-mod-expanded')).toBe(false);
  });

  it('counts code lines without the trailing newline', () => {
    const card = renderCard(document, okFixture.data);
    expect(
      card.querySelector('details.codemode-Code summary')!.textContent
    ).toBe('code (5 lines)');
  });
});
