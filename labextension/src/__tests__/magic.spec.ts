import { codemodeMagicRanges, isCodemodeCell } from '../magic';

describe('codemodeMagicRanges', () => {
  it('finds the magic name and its options on the first line', () => {
    const text = '%%codemode --timeout 5 --fresh\nfor x in y:\n    pass\n';
    expect(codemodeMagicRanges(text)).toEqual([
      { from: 0, to: 2, role: 'prefix' },
      { from: 2, to: 10, role: 'name' },
      { from: 11, to: 30, role: 'args' }
    ]);
    expect(text.slice(11, 30)).toBe('--timeout 5 --fresh');
  });

  it('handles a bare magic line', () => {
    expect(codemodeMagicRanges('%%codemode\nprint(1)')).toEqual([
      { from: 0, to: 2, role: 'prefix' },
      { from: 2, to: 10, role: 'name' }
    ]);
    expect(codemodeMagicRanges('%%codemode   \nx')).toHaveLength(2);
    expect(isCodemodeCell('%%codemode')).toBe(true);
  });

  it('ignores other cells', () => {
    for (const text of [
      'print(1)',
      '%codemode tools',
      '%%codemodex\n',
      ' %%codemode\n',
      '%%bash\n',
      'x = 1\n%%codemode\n'
    ]) {
      expect(codemodeMagicRanges(text)).toEqual([]);
      expect(isCodemodeCell(text)).toBe(false);
    }
  });
});
