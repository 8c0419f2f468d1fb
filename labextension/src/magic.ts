/**
 * Pure logic for `%%codemode` cells: where the magic line is, and what it holds.
 *
 * JupyterLab 4 parses an IPython cell with the plain Python grammar, so the body of a
 * `%%codemode` cell is already highlighted as Python; the magic line itself reads as
 * Python arithmetic (`%%` an error, `--timeout 5` a subtraction). The editor extension
 * in highlight.ts marks that line as a magic using these ranges.
 */

/** A range in the cell's text, with the role it plays. */
export interface IMagicRange {
  from: number;
  to: number;
  role: 'prefix' | 'name' | 'args';
}

const MAGIC_LINE = /^(%%)(codemode)(?=\s|$)([^\n]*)/;

/** Ranges of the `%%codemode ...` line at the top of a cell, or [] if there is none. */
export function codemodeMagicRanges(text: string): IMagicRange[] {
  const match = MAGIC_LINE.exec(text);
  if (!match) {
    return [];
  }
  const ranges: IMagicRange[] = [
    { from: 0, to: 2, role: 'prefix' },
    { from: 2, to: 2 + match[2].length, role: 'name' }
  ];
  const argsStart = 2 + match[2].length;
  const args = match[3];
  const trimmedEnd = args.replace(/\s+$/, '').length;
  const leading = args.length - args.replace(/^\s+/, '').length;
  if (trimmedEnd > leading) {
    ranges.push({
      from: argsStart + leading,
      to: argsStart + trimmedEnd,
      role: 'args'
    });
  }
  return ranges;
}

/** Whether a cell is a `%%codemode` cell. */
export function isCodemodeCell(text: string): boolean {
  return MAGIC_LINE.test(text);
}
