/**
 * Text → rows, as the HF `wikitext` dataset script makes them:
 * the file is read in Python text mode (universal newlines: "\r\n" and a lone
 * "\r" become "\n"), iterated line by line keeping each line's "\n", and a
 * line that is only whitespace (Python `str.isspace`, i.e. `row.strip()` is
 * empty) becomes "". For files with plain "\n" endings this is exactly "split
 * after each \n, whitespace-only lines → ''".
 */

/** Python's `str.isspace` characters (what `str.strip()` removes). */
function isPySpace(c: number): boolean {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c === 0x85 || c === 0xa0 ||
    c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 ||
    c === 0x202f || c === 0x205f || c === 0x3000;
}

/** True when Python's `row.strip()` would be empty. */
export function isBlank(row: string): boolean {
  for (let i = 0; i < row.length; i++) if (!isPySpace(row.charCodeAt(i))) return false;
  return true;
}

/** Python text-mode newline translation: "\r\n" → "\n", then a lone "\r" → "\n". */
export function universalNewlines(text: string): string {
  return text.includes("\r") ? text.replace(/\r\n?/g, "\n") : text;
}

/**
 * Rows of a `.tokens` / `.raw` / `.txt` text: one per line (the last line may
 * lack "\n"; an empty tail after a final "\n" is no row), each keeping its
 * "\n", whitespace-only lines as "".
 */
export function textToRows(text: string): string[] {
  const t = universalNewlines(text);
  const rows: string[] = [];
  let start = 0;
  while (start < t.length) {
    const nl = t.indexOf("\n", start);
    const end = nl < 0 ? t.length : nl + 1;
    const row = t.slice(start, end);
    rows.push(isBlank(row) ? "" : row);
    start = end;
  }
  return rows;
}
