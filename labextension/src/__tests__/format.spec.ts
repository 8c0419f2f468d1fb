import {
  clip,
  formatCount,
  formatDuration,
  pyArgs,
  pyString,
  pyValue
} from '../format';

describe('format', () => {
  it('formats durations by the same rules as the Python side', () => {
    expect(
      [0.00085, 0.0123, 0.154, 1.234, 12.5, 125].map(formatDuration)
    ).toEqual(['850 µs', '12.3 ms', '154 ms', '1.23 s', '12.5 s', '2 min 5 s']);
    expect(formatDuration(-1)).toBe('');
    expect(formatDuration(NaN)).toBe('');
  });

  it('formats counts without locale dependence', () => {
    expect(formatCount(1234567)).toBe('1,234,567');
    expect(formatCount(12)).toBe('12');
  });

  it('clips at a boundary with an ellipsis', () => {
    expect(clip('alpha beta gamma delta', 14)).toBe('alpha beta…');
    expect(clip('short', 14)).toBe('short');
    expect(clip('x'.repeat(50), 10)).toBe('xxxxxxxxx…');
  });

  it('writes JSON values as the Python program sees them', () => {
    expect(pyValue({ city: 'Paris', ok: true, n: null, xs: [1, 2.5] })).toBe(
      "{'city': 'Paris', 'ok': True, 'n': None, 'xs': [1, 2.5]}"
    );
    expect(pyString("it's")).toBe('"it\'s"');
    expect(pyString('a\nb\'"')).toBe("'a\\nb\\'\"'");
    expect(pyArgs({ city: 'Paris', n: 3 })).toBe("city='Paris', n=3");
    expect(pyArgs(undefined)).toBe('');
  });
});
